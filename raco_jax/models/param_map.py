"""The map between Hugging Face parameter names and the `Decoder`'s NNX paths, both ways.

* :func:`hf_param_map`: HF name -> (module path in the `Decoder`, kernel input axes);
* :func:`model_from_tensors`: HF-named numpy arrays (``[out, in]`` linear layout) to a `Decoder`,
  built abstractly with `nnx.eval_shape` and filled tensor by tensor, each placed directly onto
  its `NamedSharding` when a mesh is given (the full model never sits on one device first);
* :func:`model_to_tensors`: the inverse, a `Decoder`'s parameters as HF-named arrays.

Safetensors files (:mod:`raco_jax.models.hf_io`), GGUF files (:mod:`raco_jax.models.gguf_io`)
and PEFT adapters (:mod:`raco_jax.models.lora`) all go through this one map.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from raco_jax.models.config import ModelConfig
from raco_jax.models.decoder import Decoder
from raco_jax.models.sharding import Rules, logical_axes, named_sharding

__all__ = [
    "IGNORED_SUFFIXES",
    "hf_param_map",
    "model_from_tensors",
    "model_to_tensors",
    "text_tensors",
]

logger = logging.getLogger(__name__)

# Tensors of multimodal Gemma 3 checkpoints that belong to the vision side.
_VISION_PREFIXES = (
    "vision_tower.",
    "multi_modal_projector.",
    "model.vision_tower.",
    "model.multi_modal_projector.",
)
#: Buffers some older checkpoints carry; they are recomputed, never loaded.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class _Entry:
    path: tuple[str | int, ...]
    in_ndim: int  # 0: copied as is; n > 0: HF [out, in] linear whose kernel has n input axes


def hf_param_map(config: ModelConfig) -> dict[str, tuple[tuple[str | int, ...], int]]:
    """HF parameter name -> (module path in `Decoder`, number of kernel input axes or 0).

    Linear weights (``in_ndim > 0``) are transposed from HF's ``[out, in]`` and reshaped to the
    kernel's ``in_features + out_features``; the others are copied.

    Example:
        >>> from raco_jax.models import ModelConfig
        >>> from raco_jax.models.param_map import hf_param_map
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> hf_param_map(c)["model.layers.0.self_attn.o_proj.weight"]
        (('layers', 0, 'self_attn', 'o_proj', 'kernel'), 2)
    """
    return {key: (entry.path, entry.in_ndim) for key, entry in _param_map(config).items()}


def _param_map(config: ModelConfig) -> dict[str, _Entry]:
    out = {
        "model.embed_tokens.weight": _Entry(("embed_tokens", "embedding"), 0),
        "model.norm.weight": _Entry(("norm", "weight"), 0),
    }
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = _Entry(("lm_head", "kernel"), 1)
    norms = ["input_layernorm", "post_attention_layernorm"]
    if config.is_gemma:
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for i in range(config.num_layers):
        prefix = f"model.layers.{i}."
        for norm in norms:
            out[f"{prefix}{norm}.weight"] = _Entry(("layers", i, norm, "weight"), 0)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[f"{prefix}self_attn.{proj}.weight"] = _Entry(
                ("layers", i, "self_attn", proj, "kernel"), 2 if proj == "o_proj" else 1
            )
        if config.qk_norm:
            for norm in ("q_norm", "k_norm"):
                out[f"{prefix}self_attn.{norm}.weight"] = _Entry(
                    ("layers", i, "self_attn", norm, "weight"), 0
                )
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out[f"{prefix}mlp.{proj}.weight"] = _Entry(("layers", i, "mlp", proj, "kernel"), 1)
    return out


def _hf_shape(model_shape: tuple[int, ...], in_ndim: int) -> tuple[int, ...]:
    if in_ndim == 0:
        return model_shape
    return (math.prod(model_shape[in_ndim:]), math.prod(model_shape[:in_ndim]))


def _to_model_layout(array: np.ndarray, model_shape: tuple[int, ...], in_ndim: int) -> np.ndarray:
    if in_ndim == 0:
        return array
    return array.T.reshape(model_shape)


def _to_hf_layout(array: np.ndarray, in_ndim: int) -> np.ndarray:
    if in_ndim == 0:
        return np.ascontiguousarray(array)
    shape = array.shape
    flat = array.reshape(math.prod(shape[:in_ndim]), math.prod(shape[in_ndim:]))
    return np.ascontiguousarray(flat.T)


_LANGUAGE_MODEL = re.compile(r"^(model\.)?language_model\.")


def text_tensors(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Renames multimodal (Gemma 3) text keys to the causal-LM layout and drops vision keys.

    Example:
        >>> import numpy as np
        >>> from raco_jax.models.param_map import text_tensors
        >>> sorted(text_tensors({"language_model.model.norm.weight": np.ones(2),
        ...                      "vision_tower.x": np.ones(1)}))
        ['model.norm.weight']
    """
    if not any(_LANGUAGE_MODEL.match(key) for key in tensors):
        return dict(tensors)
    out: dict[str, Any] = {}
    skipped = 0
    for key, value in tensors.items():
        match = _LANGUAGE_MODEL.match(key)
        if match:
            rest = key[match.end() :]
            new_key = rest if rest.startswith(("model.", "lm_head.")) else "model." + rest
        elif key.startswith(_VISION_PREFIXES):
            skipped += 1
            continue
        else:
            new_key = key  # e.g. a top-level lm_head.weight
        if new_key in out:
            raise ValueError(f"checkpoint holds {new_key!r} twice (as {key!r} and another key)")
        out[new_key] = value
    if skipped:
        logger.warning(
            "multimodal checkpoint: loaded the text model and skipped %d vision/projector "
            "tensors (%s)",
            skipped,
            ", ".join(sorted({p.rstrip(".") for p in _VISION_PREFIXES})),
        )
    return out


def _format_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def model_from_tensors(
    config: ModelConfig,
    tensors: Mapping[str, np.ndarray],
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: Rules | None = None,
    remat: bool = False,
) -> Decoder:
    """Build a `Decoder` from Hugging Face-named tensors.

    Args:
        config: the architecture (e.g. from `ModelConfig.from_hf`).
        tensors: name -> array in HF naming and layout, e.g.
            ``"model.layers.0.self_attn.q_proj.weight"`` of shape ``[heads * head_dim, embed]``.
            Multimodal Gemma 3 names (``language_model.model.*``, ``model.language_model.*``)
            are accepted and their vision/projector tensors skipped (with a logged count).
        dtype: compute dtype of the model.
        param_dtype: parameter storage dtype (default: ``dtype``).
        mesh: when given, each tensor goes straight onto its `NamedSharding` on this mesh.
        rules: logical-axis rules for ``mesh`` (default `sharding.DEFAULT_RULES`).
        remat: rematerialise layers in the backward pass.

    Returns:
        The model, its parameters in ``param_dtype``.

    Raises:
        ValueError: naming the key for unexpected, missing or wrongly shaped tensors.

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig, model_from_tensors
        >>> from raco_jax.models.param_map import hf_param_map
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> tensors = {}
        >>> for key, (path, in_ndim) in hf_param_map(c).items():
        ...     shape = {"weight": (16,), "embedding": (32, 16)}.get(path[-1])
        ...     tensors[key] = np.zeros(shape or (0,), np.float32)
        >>> shapes = {"q_proj": (16, 16), "k_proj": (16, 16), "v_proj": (16, 16),
        ...           "o_proj": (16, 16), "gate_proj": (32, 16), "up_proj": (32, 16),
        ...           "down_proj": (16, 32), "lm_head": (32, 16)}
        >>> for key in tensors:
        ...     name = key.split(".")[-2]
        ...     if name in shapes:
        ...         tensors[key] = np.zeros(shapes[name], np.float32)
        >>> model = model_from_tensors(c, tensors)
        >>> model.layers[0].self_attn.q_proj.kernel.shape
        (16, 2, 8)
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    param_dtype = dtype if param_dtype is None else param_dtype
    np_param_dtype = np.dtype(param_dtype)
    tensors = text_tensors(tensors)
    mapping = _param_map(config)

    unexpected = []
    for key in sorted(tensors):
        if key in mapping or key.endswith(IGNORED_SUFFIXES):
            continue
        if key == "lm_head.weight" and config.tie_word_embeddings:
            logger.info("tie_word_embeddings=True: ignoring the checkpoint's lm_head.weight")
            continue
        unexpected.append(key)
    if unexpected:
        raise ValueError(
            f"unexpected tensor(s) for a {config.model_type} model with {config.num_layers} "
            f"layers (tie_word_embeddings={config.tie_word_embeddings}): "
            f"{_format_keys(unexpected)}"
        )
    missing = [key for key in mapping if key not in tensors]
    if missing:
        raise ValueError(f"missing tensor(s) in the checkpoint: {_format_keys(missing)}")

    def build() -> Decoder:
        return Decoder(config, dtype=dtype, param_dtype=param_dtype, remat=remat, rngs=nnx.Rngs(0))

    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    key_by_path = {entry.path: key for key, entry in mapping.items()}
    filled = []
    for path, variable in nnx.to_flat_state(state):
        key = key_by_path.get(tuple(path))
        if key is None:  # pragma: no cover - the key map and the module tree disagree
            raise RuntimeError(f"no checkpoint key maps to parameter {path}")
        entry = mapping[key]
        model_shape = tuple(variable.get_value().shape)
        array = tensors[key]
        expected = _hf_shape(model_shape, entry.in_ndim)
        if tuple(np.shape(array)) != expected:
            raise ValueError(
                f"tensor {key!r} has shape {tuple(np.shape(array))}, expected {expected} "
                f"for this config"
            )
        array = _to_model_layout(np.asarray(array), model_shape, entry.in_ndim)
        array = np.ascontiguousarray(array, dtype=np_param_dtype)
        if mesh is not None:
            sharding = named_sharding(logical_axes(variable), model_shape, mesh, rules)
            value = jax.device_put(array, sharding)
        else:
            value = jax.device_put(array)
        filled.append((path, variable.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(filled))


def model_to_tensors(
    model: Decoder, config: ModelConfig | None = None, dtype: Any = None
) -> dict[str, np.ndarray]:
    """A `Decoder`'s parameters as Hugging Face-named numpy arrays (``[out, in]`` layout).

    Sharded parameters are gathered tensor by tensor.

    Args:
        model: the decoder.
        config: its architecture (default: ``model.config``).
        dtype: storage dtype (default: each parameter's own dtype).

    Returns:
        name -> array, the inverse of :func:`model_from_tensors`.

    Raises:
        ValueError: a parameter the map names is missing from the model.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.param_map import model_to_tensors
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> model_to_tensors(Decoder(c, rngs=nnx.Rngs(0)))["model.layers.0.mlp.up_proj.weight"].shape
        (32, 16)
    """
    config = model.config if config is None else config
    state = nnx.state(model, nnx.Param)
    values = {tuple(p): v.get_value() for p, v in nnx.to_flat_state(state)}
    tensors: dict[str, np.ndarray] = {}
    for key, entry in _param_map(config).items():
        if entry.path not in values:
            raise ValueError(f"model has no parameter at {entry.path} (for {key!r})")
        array = np.asarray(jax.device_get(values[entry.path]))
        if dtype is not None:
            array = array.astype(np.dtype(dtype))
        tensors[key] = _to_hf_layout(array, entry.in_ndim)
    return tensors
