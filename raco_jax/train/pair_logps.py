"""Summed completion log-probs of every pair's two responses, and their on-disk cache.

Used for the reference log-probs of a run (:func:`raco_jax.align`), MODPO's margin
rewards, and the evaluation of saved runs on preference pairs
(:func:`raco_jax.evaluate.preferences.evaluate_preference_runs`). The cache key is built from
content fingerprints: :func:`weights_fingerprint` (checkpoint files, a GGUF file, or the
parameters) and :func:`tokens_fingerprint` (every token id and prompt length, so the tokenizer,
its chat template, the data and the length limits are all captured): a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from raco_jax.models.hf_io import resolve_checkpoint
from raco_jax.preference import make_batch
from raco_jax.train.mesh import shard_batch
from raco_jax.train.step import compute_reference_logps

__all__ = [
    "cached_pair_logps",
    "host_array",
    "pair_logps",
    "tokens_fingerprint",
    "weights_fingerprint",
]


def _hash_files(directory: pathlib.Path) -> str:
    digest = hashlib.sha256()
    files = sorted(
        p for p in directory.iterdir() if p.suffix in (".safetensors", ".json") and p.is_file()
    )
    for path in files:
        if path.name.startswith("tokenizer") or path.name in ("chat_template.json",):
            continue
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _hash_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_state(state: Any) -> str:
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        array = np.asarray(jax.device_get(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def weights_fingerprint(path_or_id: str | os.PathLike | None, model: Any = None) -> str:
    """A content hash of a model's weights: its checkpoint files, its ``.gguf`` file, or (no
    path) the model's ``nnx.Param`` values.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.train.pair_logps import weights_fingerprint
        >>> c = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> a = weights_fingerprint(None, Decoder(c, rngs=nnx.Rngs(0)))
        >>> a == weights_fingerprint(None, Decoder(c, rngs=nnx.Rngs(0)))
        True
        >>> a == weights_fingerprint(None, Decoder(c, rngs=nnx.Rngs(1)))
        False
    """
    if path_or_id and str(path_or_id).lower().endswith(".gguf"):
        return _hash_file(pathlib.Path(path_or_id))
    if path_or_id:
        return _hash_files(resolve_checkpoint(str(path_or_id)))
    return _hash_state(nnx.state(model, nnx.Param))


def tokens_fingerprint(tokenized: Any) -> str:
    """A hash of tokenized pairs: every token id, prompt length, the pad id and the max length.

    Example:
        >>> from raco_jax.data import PreferencePair, byte_tokenizer, tokenize_pairs
        >>> from raco_jax.train.pair_logps import tokens_fingerprint
        >>> tok = byte_tokenizer("chatml")
        >>> pairs = [PreferencePair("Hi", "Hello", "Go", {"helpful": 1})]
        >>> a = tokens_fingerprint(tokenize_pairs(pairs, tok, ("helpful",), 64, 32))
        >>> a == tokens_fingerprint(tokenize_pairs(pairs, tok, ("helpful",), 64, 32))
        True
        >>> a == tokens_fingerprint(tokenize_pairs(pairs, tok, ("helpful",), 8, 4))
        False
    """
    digest = hashlib.sha256()
    for ids in (*tokenized.input_ids_a, *tokenized.input_ids_b):
        digest.update(np.int64(len(ids)).tobytes())
        digest.update(np.asarray(ids, np.int32).tobytes())
    digest.update(np.asarray(tokenized.prompt_lengths_a, np.int32).tobytes())
    digest.update(np.asarray(tokenized.prompt_lengths_b, np.int32).tobytes())
    digest.update(f"pad={tokenized.pad_token_id};max={tokenized.max_length}".encode())
    return digest.hexdigest()


def host_array(value: Any) -> np.ndarray:
    """A (possibly sharded over several hosts) array as a NumPy array on every host.

    Example:
        >>> import jax.numpy as jnp
        >>> from raco_jax.train.pair_logps import host_array
        >>> host_array(jnp.arange(3)).tolist()
        [0, 1, 2]
    """
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(jax.device_get(value))


def pair_logps(
    model: Any,
    tokenized: Any,
    batch_size: int,
    mesh: Any = None,
    time_chunk_size: int | None = None,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed completion log-probs of every pair's two responses under ``model``: ``[N]`` each.

    Forward passes only, ``batch_size`` pairs at a time (the last batch padded), placed on
    ``mesh`` when one is given.

    Args:
      model: a :class:`raco_jax.models.Decoder` (adapters, if any, are used).
      tokenized: :class:`~raco_jax.data.TokenizedPairs`.
      batch_size: pairs per forward pass.
      mesh: a ``("data", "fsdp", "tensor")`` mesh, or None (default device).
      time_chunk_size: project hidden states to logits this many positions at a time.
      progress: a description: show a tqdm progress bar over the pairs (None: no bar).

    Returns:
      ``(logps_a, logps_b)``, float32 ``[N]``.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.data import PreferencePair, byte_tokenizer, tokenize_pairs
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.train.pair_logps import pair_logps
        >>> tok = byte_tokenizer("chatml")
        >>> c = ModelConfig(model_type="qwen3", vocab_size=len(tok), hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> pairs = [PreferencePair("Hi", "Hello", "Go", {"helpful": 1})] * 3
        >>> a, b = pair_logps(Decoder(c, rngs=nnx.Rngs(0)),
        ...                   tokenize_pairs(pairs, tok, ("helpful",), 64, 32), batch_size=2)
        >>> a.shape, bool((a < 0).all()), bool(a[0] == a[2])
        ((3,), True, True)
    """
    n = len(tokenized)
    logps_a = np.zeros(n, np.float32)
    logps_b = np.zeros(n, np.float32)
    bar = None
    if progress is not None:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=progress, unit="pair", leave=False)
    for start in range(0, n, batch_size):
        indices = list(range(start, min(start + batch_size, n)))
        fields = tokenized.collate(indices, batch_size=batch_size)
        batch = make_batch(**fields, validate=False)
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        out = host_array(compute_reference_logps(model, batch, time_chunk_size=time_chunk_size))
        logps_a[indices] = out[: len(indices)]
        logps_b[indices] = out[batch_size : batch_size + len(indices)]
        if bar is not None:
            bar.update(len(indices))
    if bar is not None:
        bar.close()
    return logps_a, logps_b


def cached_pair_logps(
    cache_dir: str | os.PathLike,
    kind: str,
    key_parts: Sequence[str],
    compute: Callable[[], tuple[np.ndarray, np.ndarray]],
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``compute()`` once per key: reads or writes ``<cache_dir>/<kind>-<key>.npz`` (atomically).

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from raco_jax.train.pair_logps import cached_pair_logps
        >>> d, calls = tempfile.mkdtemp(), []
        >>> def compute():
        ...     calls.append(1)
        ...     return np.zeros(2, np.float32), np.ones(2, np.float32)
        >>> _ = cached_pair_logps(d, "reference", ["w", "t"], compute)
        >>> a, b = cached_pair_logps(d, "reference", ["w", "t"], compute)
        >>> len(calls), b.tolist()
        (1, [1.0, 1.0])
    """
    cache_dir = pathlib.Path(cache_dir)
    key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:24]
    path = cache_dir / f"{kind}-{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            if log is not None:
                log(f"{kind}: cached log-probs from {path}")
            return cached["a"], cached["b"]
    logps_a, logps_b = compute()
    if jax.process_index() == 0:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, a=logps_a, b=logps_b)
        os.replace(tmp, path)
    return logps_a, logps_b
