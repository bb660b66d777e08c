"""Hugging Face checkpoint IO for the decoders: safetensors in, safetensors out.

* `from_pretrained` reads a local directory (one ``*.safetensors`` file, or several with
  ``model.safetensors.index.json``), downloads ``*.safetensors``/``*.json`` of a hub repo, or
  reads a ``.gguf`` file (:mod:`raco_jax.models.gguf_io`); the tensors become a `Decoder`
  through the name map of :mod:`raco_jax.models.param_map`.
* `save_pretrained` writes ``model.safetensors`` (or shards + index) and a transformers-5
  ``config.json`` that `transformers.AutoModelForCausalLM` loads back.

Only safetensors are read (never pickle). Multimodal Gemma 3 checkpoints contribute their text
model (``language_model.`` / ``model.language_model.`` keys); vision and projector tensors are
skipped and counted in a logged warning.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy
from flax import nnx

from raco_jax.models.config import ModelConfig
from raco_jax.models.decoder import Decoder
from raco_jax.models.gguf_io import from_gguf, gguf_tokenizer, is_gguf
from raco_jax.models.lora import LoRAParam
from raco_jax.models.param_map import model_from_tensors, model_to_tensors
from raco_jax.models.sharding import Rules

__all__ = [
    "from_pretrained",
    "load_hf_tensors",
    "load_tokenizer",
    "read_safetensors",
    "resolve_checkpoint",
    "save_pretrained",
]

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


# -- from_pretrained / save_pretrained ------------------------------------------------------------


def _looks_like_repo_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", name)) and ".." not in name


def resolve_checkpoint(path_or_id: str | os.PathLike, revision: str | None = None) -> pathlib.Path:
    """The local directory of a checkpoint: the directory itself, or a hub snapshot.

    A hub id downloads only ``*.safetensors`` and ``*.json`` (respecting ``HF_HUB_OFFLINE``).

    Raises:
        ValueError: a file where a directory is expected, a path that does not exist and is no
            hub id, or a hub id that cannot be fetched (the message says why).

    Example:
        >>> import tempfile
        >>> from raco_jax.models.hf_io import resolve_checkpoint
        >>> d = tempfile.mkdtemp()
        >>> str(resolve_checkpoint(d)) == d
        True
    """
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
    if is_gguf(path_or_id):
        return from_gguf(
            path_or_id, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules, remat=remat
        )
    directory = resolve_checkpoint(path_or_id, revision)
    config = ModelConfig.from_hf(directory)
    tensors = load_hf_tensors(directory)
    model = model_from_tensors(
        config, tensors, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules, remat=remat
    )
    return model, config


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
    if is_gguf(path_or_id):
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
    if config is None:
        config = model.config
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    if dataclasses.replace(config, dtype=None) != dataclasses.replace(model.config, dtype=None):
        raise ValueError("config does not match model.config (a different architecture)")
    if jax.tree_util.tree_leaves(nnx.state(model, LoRAParam)):
        raise ValueError(
            "the model has LoRA adapters, which a Hugging Face checkpoint cannot hold: save "
            "raco_jax.models.merge_lora(model) instead (or save the adapters separately)"
        )
    out_dir = pathlib.Path(path)
    out_dir.mkdir(parents=True, exist_ok=True)

    tensors = model_to_tensors(model, config, dtype)
    saved_dtypes = {array.dtype.name for array in tensors.values()}

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
