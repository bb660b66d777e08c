"""Hugging Face checkpoint IO for the decoders: safetensors in, safetensors out.

* `from_pretrained` reads a local directory (one ``*.safetensors`` file, or several with
  ``model.safetensors.index.json``) or downloads ``*.safetensors``/``*.json`` of a hub repo.
* `model_from_tensors` is the core: HF-named numpy arrays (``[out, in]`` linear layout) to a
  `Decoder`, built abstractly with `nnx.eval_shape` and filled tensor by tensor, each placed
  directly onto its `NamedSharding` when a mesh is given (the full model never sits on one
  device first).
* `save_pretrained` writes ``model.safetensors`` (or shards + index) and a transformers-5
  ``config.json`` that `transformers.AutoModelForCausalLM` loads back.

Only safetensors are read (never pickle). Multimodal Gemma 3 checkpoints contribute their text
model (``language_model.`` / ``model.language_model.`` keys); vision and projector tensors are
skipped and counted in a logged warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from raco_jax.models.config import ModelConfig
from raco_jax.models.decoder import Decoder
from raco_jax.models.sharding import Rules, logical_axes, named_sharding

__all__ = [
    "from_pretrained",
    "hf_param_map",
    "load_hf_tensors",
    "load_tokenizer",
    "model_from_tensors",
    "read_safetensors",
    "save_pretrained",
]

logger = logging.getLogger(__name__)

_SAFETENSORS_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}

# Tensors of multimodal Gemma 3 checkpoints that belong to the vision side.
_VISION_PREFIXES = (
    "vision_tower.",
    "multi_modal_projector.",
    "model.vision_tower.",
    "model.multi_modal_projector.",
)
# Buffers some older checkpoints carry; they are recomputed, never loaded.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)

_INDEX_FILE = "model.safetensors.index.json"


# -- safetensors reading -----------------------------------------------------------------------


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-map a ``.safetensors`` file: name -> read-only numpy array (bf16 via ml_dtypes).

    Raises:
        ValueError: naming the file when its header or offsets are corrupt or truncated.

    Example:
        >>> import tempfile, numpy as np, safetensors.numpy
        >>> from raco_jax.models.hf_io import read_safetensors
        >>> path = tempfile.mkdtemp() + "/w.safetensors"
        >>> safetensors.numpy.save_file({"w": np.ones((2, 3), np.float32)}, path)
        >>> read_safetensors(path)["w"].shape
        (2, 3)
    """
    path = pathlib.Path(path)

    def corrupt(reason: str) -> ValueError:
        return ValueError(f"corrupt safetensors file {path}: {reason}")

    try:
        size = path.stat().st_size
    except OSError as err:
        raise ValueError(f"cannot read safetensors file {path}: {err}") from err
    if size < 8:
        raise corrupt(f"only {size} bytes, too short for a header")
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if header_len == 0 or header_len > size - 8:
            raise corrupt(f"header length {header_len} does not fit in {size} bytes")
        raw_header = f.read(header_len)
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise corrupt(f"header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    data_start = 8 + header_len
    data_len = size - data_start
    buffer = (
        np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(data_len,))
        if data_len > 0
        else np.zeros((0,), np.uint8)
    )
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise corrupt(f"bad header entry for tensor {name!r}: {info!r}") from err
        expected = math.prod(shape) * dtype.itemsize
        if not 0 <= begin <= end <= data_len or end - begin != expected:
            raise corrupt(
                f"tensor {name!r} has data_offsets [{begin}, {end}] for {expected} bytes but "
                f"the data section holds {data_len} bytes (truncated file?)"
            )
        tensors[name] = buffer[begin:end].view(dtype).reshape(shape)
    return tensors


def load_hf_tensors(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a local checkpoint directory (index-listed shards, else every file).

    Raises:
        ValueError: for a missing directory, no safetensors files (pickle ``.bin`` checkpoints
            are not read), a key duplicated across files, or a key the index lists but whose
            file lacks it.

    Example:
        >>> import tempfile, numpy as np, safetensors.numpy
        >>> from raco_jax.models.hf_io import load_hf_tensors
        >>> d = tempfile.mkdtemp()
        >>> safetensors.numpy.save_file({"a": np.zeros(2, np.float32)}, d + "/model.safetensors")
        >>> sorted(load_hf_tensors(d))
        ['a']
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise ValueError(f"checkpoint directory not found: {directory}")
    index_path = directory / _INDEX_FILE
    weight_map: dict[str, str] | None = None
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{index_path} is not a valid safetensors index: {err}") from err
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in directory.glob("*.bin")] + [
            p.name for p in directory.glob("*.pt")
        ]
        hint = f" (found {pickles}: pickle checkpoints are not supported)" if pickles else ""
        raise ValueError(f"no *.safetensors files in {directory}{hint}")
    tensors: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for file in files:
        if not file.is_file():
            raise ValueError(f"{index_path} lists {file.name}, which is missing")
        for name, array in read_safetensors(file).items():
            if weight_map is not None and weight_map.get(name) != file.name:
                continue  # the index assigns this tensor to another file (or not at all)
            if name in tensors:
                raise ValueError(f"tensor {name!r} appears in both {origin[name]} and {file.name}")
            tensors[name] = array
            origin[name] = file.name
    if weight_map is not None:
        for name, file_name in weight_map.items():
            if name not in tensors:
                raise ValueError(
                    f"{index_path} maps tensor {name!r} to {file_name}, which lacks it"
                )
    return tensors


# -- key mapping ---------------------------------------------------------------------------------


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
        >>> from raco_jax.models.hf_io import hf_param_map
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


def _text_tensors(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Rename multimodal (Gemma 3) text keys to the causal-LM layout; drop vision keys."""
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
        >>> from raco_jax.models.hf_io import hf_param_map
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
    tensors = _text_tensors(tensors)
    mapping = _param_map(config)

    unexpected = []
    for key in sorted(tensors):
        if key in mapping or key.endswith(_IGNORED_SUFFIXES):
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


# -- from_pretrained / save_pretrained ------------------------------------------------------------


def _looks_like_repo_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", name)) and ".." not in name


def _resolve_checkpoint(path_or_id: str | os.PathLike, revision: str | None) -> pathlib.Path:
    path = pathlib.Path(path_or_id)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(
            f"path_or_id={str(path_or_id)!r} is a file; expected a checkpoint directory"
        )
    name = str(path_or_id)
    if not _looks_like_repo_id(name):
        raise ValueError(f"checkpoint directory not found: {name!r}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover - huggingface_hub is a models dependency
        raise ValueError(
            f"{name!r} is not a local directory and huggingface_hub is not installed"
        ) from err
    try:
        local = snapshot_download(
            repo_id=name, revision=revision, allow_patterns=["*.safetensors", "*.json"]
        )
    except Exception as err:
        raise ValueError(
            f"{name!r} is not a local directory and could not be fetched from the Hugging Face "
            f"Hub (offline mode: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}): {err}"
        ) from err
    return pathlib.Path(local)


def from_pretrained(
    path_or_id: str | os.PathLike,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: Rules | None = None,
    *,
    revision: str | None = None,
    remat: bool = False,
) -> tuple[Decoder, ModelConfig]:
    """Load a Hugging Face Llama 3 / Qwen 3 / Gemma 3 checkpoint into a `Decoder`.

    Args:
        path_or_id: a local directory with ``config.json`` and safetensors (one file, or shards
            with ``model.safetensors.index.json``), a hub repo id (downloads only
            ``*.safetensors`` and ``*.json``; respects ``HF_HUB_OFFLINE``), or a ``.gguf`` file
            (read by :func:`raco_jax.models.gguf_io.from_gguf`).
        dtype: compute dtype.
        param_dtype: parameter dtype (default: ``dtype``).
        mesh: place each tensor directly onto its sharding on this mesh.
        rules: logical-axis rules (default `sharding.DEFAULT_RULES`).
        revision: hub revision (branch, tag or commit) for repo ids.
        remat: rematerialise layers in the backward pass.

    Returns:
        ``(model, config)``.

    Example:
        >>> import tempfile
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig, from_pretrained, save_pretrained
        >>> c = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> d = tempfile.mkdtemp()
        >>> save_pretrained(Decoder(c, rngs=nnx.Rngs(0)), c, d)
        >>> model, config = from_pretrained(d)
        >>> config.model_type
        'qwen3'
    """
    if _is_gguf(path_or_id):
        from raco_jax.models.gguf_io import from_gguf

        return from_gguf(
            path_or_id, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules, remat=remat
        )
    directory = _resolve_checkpoint(path_or_id, revision)
    config = ModelConfig.from_hf(directory)
    tensors = load_hf_tensors(directory)
    model = model_from_tensors(
        config, tensors, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules, remat=remat
    )
    return model, config


def _is_gguf(path_or_id: str | os.PathLike) -> bool:
    return str(path_or_id).lower().endswith(".gguf")


def load_tokenizer(path_or_id: str | os.PathLike) -> Any:
    """The tokenizer of a checkpoint directory, hub id or ``.gguf`` file.

    ``AutoTokenizer.from_pretrained`` for directories and hub ids; for a ``.gguf`` file the
    tokenizer stored in it (:func:`raco_jax.models.gguf_io.gguf_tokenizer`, cached on first use).

    Example:
        >>> import tempfile
        >>> from raco_jax.data import byte_tokenizer
        >>> from raco_jax.models.hf_io import load_tokenizer
        >>> d = tempfile.mkdtemp()
        >>> _ = byte_tokenizer("chatml").save_pretrained(d)
        >>> tokenizer = load_tokenizer(d)
        >>> tokenizer.decode(tokenizer("hi")["input_ids"], skip_special_tokens=True)
        'hi'
    """
    if _is_gguf(path_or_id):
        from raco_jax.models.gguf_io import gguf_tokenizer

        return gguf_tokenizer(path_or_id)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path_or_id)


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def save_pretrained(
    model: Decoder,
    config: ModelConfig | None,
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    max_shard_bytes: int = 5 * 2**30,
) -> None:
    """Write ``model`` as a Hugging Face checkpoint: safetensors + transformers-5 config.json.

    Args:
        model: the decoder to save (sharded parameters are gathered tensor by tensor).
        config: its config (default: ``model.config``); must describe the same architecture.
        path: output directory (created if needed).
        dtype: storage dtype (default: each parameter's own dtype).
        max_shard_bytes: above this total size, write ``model-0000k-of-0000n.safetensors``
            shards and ``model.safetensors.index.json``.

    Example:
        >>> import os, tempfile
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig, save_pretrained
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> d = tempfile.mkdtemp()
        >>> save_pretrained(Decoder(c, rngs=nnx.Rngs(0)), c, d)
        >>> sorted(os.listdir(d))
        ['config.json', 'model.safetensors']
    """
    import safetensors.numpy

    if config is None:
        config = model.config
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    if dataclasses.replace(config, dtype=None) != dataclasses.replace(model.config, dtype=None):
        raise ValueError("config does not match model.config (a different architecture)")
    from raco_jax.models.lora import LoRAParam

    if jax.tree_util.tree_leaves(nnx.state(model, LoRAParam)):
        raise ValueError(
            "the model has LoRA adapters, which a Hugging Face checkpoint cannot hold: save "
            "raco_jax.models.merge_lora(model) instead (or save the adapters separately)"
        )
    out_dir = pathlib.Path(path)
    out_dir.mkdir(parents=True, exist_ok=True)

    state = nnx.state(model, nnx.Param)
    values = {tuple(p): v.get_value() for p, v in nnx.to_flat_state(state)}
    tensors: dict[str, np.ndarray] = {}
    saved_dtypes = set()
    for key, entry in _param_map(config).items():
        if entry.path not in values:
            raise ValueError(f"model has no parameter at {entry.path} (for {key!r})")
        array = np.asarray(jax.device_get(values[entry.path]))
        if dtype is not None:
            array = array.astype(np.dtype(dtype))
        saved_dtypes.add(array.dtype.name)
        tensors[key] = _to_hf_layout(array, entry.in_ndim)

    hf_config = config.to_hf()
    if len(saved_dtypes) == 1:
        hf_config["dtype"] = saved_dtypes.pop()
    metadata = {"format": "pt"}
    total = sum(a.nbytes for a in tensors.values())
    stale_files = [out_dir / "model.safetensors", out_dir / _INDEX_FILE]
    for stale in [*stale_files, *out_dir.glob("model-*-of-*.safetensors")]:
        if stale.exists():
            stale.unlink()
    if total <= max_shard_bytes:
        safetensors.numpy.save_file(tensors, str(out_dir / "model.safetensors"), metadata=metadata)
    else:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for key, array in tensors.items():
            if shards[-1] and size + array.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][key] = array
            size += array.nbytes
        weight_map = {}
        for k, shard in enumerate(shards, start=1):
            name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
            safetensors.numpy.save_file(shard, str(out_dir / name), metadata=metadata)
            weight_map.update(dict.fromkeys(shard, name))
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / _INDEX_FILE).write_text(json.dumps(index, indent=2))
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
