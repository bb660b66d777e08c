"""Flax NNX decoders (Llama 3, Qwen 3, Gemma 3 text) with Hugging Face checkpoint IO.

Importing ``raco_jax.models`` pulls in flax (not transformers or torch). The main names:

* `ModelConfig` / `RopeConfig`: the architecture, read from and written to HF ``config.json``.
* `Decoder`: the NNX model; ``model(input_ids, attention_mask, positions, cache)`` gives float32
  logits. `KVCache` holds keys/values for prefill + decode.
* `from_pretrained`, `save_pretrained`, `model_from_tensors`: safetensors checkpoints.
* `make_mesh`, `DEFAULT_RULES`, `model_shardings`, `shard_model`, ...: logical-axis sharding.

GGUF loading (`from_gguf`), generation (`generate`) and LoRA live in modules loaded on first
use, so a missing optional dependency only fails when that name is used.

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

import importlib
from typing import Any

from raco_jax.models.config import ModelConfig, RopeConfig
from raco_jax.models.decoder import Decoder, KVCache, default_positions
from raco_jax.models.hf_io import (
    from_pretrained,
    hf_param_map,
    load_hf_tensors,
    load_tokenizer,
    model_from_tensors,
    read_safetensors,
    save_pretrained,
)
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

# Names provided by modules written separately, imported on first use.
_LAZY_NAMES = {
    "from_gguf": "raco_jax.models.gguf_io",
    "load_gguf": "raco_jax.models.gguf_io",
    "generate": "raco_jax.models.generation",
    "GenerationConfig": "raco_jax.models.generation",
    "LoRAConfig": "raco_jax.models.lora",
    "apply_lora": "raco_jax.models.lora",
    "merge_lora": "raco_jax.models.lora",
    "lora_params": "raco_jax.models.lora",
    "save_lora_adapters": "raco_jax.models.lora",
    "load_lora_adapters": "raco_jax.models.lora",
}
_LAZY_MODULES = ("raco_jax.models.generation", "raco_jax.models.lora", "raco_jax.models.gguf_io")

__all__ = [
    "DEFAULT_RULES",
    "KV_CACHE_AXES",
    "MESH_AXES",
    "Decoder",
    "KVCache",
    "ModelConfig",
    "RopeConfig",
    "cache_shardings",
    "default_positions",
    "from_pretrained",
    "hf_param_map",
    "load_hf_tensors",
    "load_tokenizer",
    "logical_axes",
    "logical_to_mesh_axes",
    "make_mesh",
    "model_from_tensors",
    "model_shardings",
    "named_sharding",
    "partition_spec",
    "read_safetensors",
    "save_pretrained",
    "shard_model",
]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(f"module 'raco_jax.models' has no attribute {name!r}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    # Names added later to generation.py / lora.py / gguf_io.py without editing this table.
    for module_name in _LAZY_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'raco_jax.models' has no attribute {name!r}")
