"""Summed completion log-probs of every pair's two responses, and their on-disk cache.

Used for the reference log-probs of a run (:func:`raco_jax.align`), MODPO's margin
rewards, and the evaluation of saved runs on preference pairs
(:func:`raco_jax.evaluate.preferences.evaluate_preference_runs`). Where only the layers from
some layer ``L`` on are trained (LoRA on the top layers), :func:`pair_layer_inputs` computes the
stream entering layer ``L`` once per pair (:class:`PairLayerInputs`, cached on disk by
:func:`cached_layer_inputs`), so that every later forward pass starts at ``L``. The cache key is built from
content fingerprints: :func:`weights_fingerprint` (checkpoint files, a GGUF file, or the
parameters) and :func:`tokens_fingerprint` (every token id and prompt length, so the tokenizer,
its chat template, the data and the length limits are all captured): a stale cache is never read.
"""

from __future__ import annotations

import functools
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
from raco_jax.train.step import check_completion_lengths, compute_reference_logps

__all__ = [
    "PairLayerInputs",
    "cached_layer_inputs",
    "cached_pair_logps",
    "host_array",
    "pair_layer_inputs",
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


class PairLayerInputs:
    """The residual stream entering decoder layer ``layer`` for both sequences of every pair.

    One float32 ``[length, embed]`` array per sequence (its real tokens only, in the order of
    :class:`~raco_jax.data.TokenizedPairs`); :meth:`collate` lays them out like
    :meth:`TokenizedPairs.collate <raco_jax.data.TokenizedPairs.collate>` lays out the token
    ids (right padding with zeros, the fill rows of a short batch copied from its pairs).

    Example:
        >>> import numpy as np
        >>> from raco_jax.train.pair_logps import PairLayerInputs
        >>> stream = PairLayerInputs(2, [np.ones((3, 4))], [np.full((2, 4), 2.0)])
        >>> x = stream.collate([0], batch_size=2, width=4)
        >>> x.shape, x[:, :, 0].tolist()
        ((4, 4, 4), [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0], [2.0, 2.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]])
    """

    def __init__(self, layer: int, a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> None:
        if len(a) != len(b):
            raise ValueError(f"a and b must hold one array per pair, got {len(a)} and {len(b)}.")
        self.layer = int(layer)
        self.a = [np.asarray(x, np.float32) for x in a]
        self.b = [np.asarray(x, np.float32) for x in b]

    def __len__(self) -> int:
        return len(self.a)

    def collate(self, indices: Sequence[int], batch_size: int, width: int) -> np.ndarray:
        """``[2 * batch_size, width, embed]``: rows ``r`` (response a) and ``batch_size + r``
        (response b) of the pairs at ``indices``, then copies of them up to ``batch_size``."""
        indices = [int(i) for i in indices]
        rows = indices + [indices[k % len(indices)] for k in range(batch_size - len(indices))]
        embed = self.a[indices[0]].shape[-1]
        out = np.zeros((2 * batch_size, width, embed), np.float32)
        for r, i in enumerate(rows):
            out[r, : len(self.a[i])] = self.a[i]
            out[batch_size + r, : len(self.b[i])] = self.b[i]
        return out


@functools.partial(jax.jit, static_argnames=("graphdef", "layer"))
def _layer_inputs_jit(state: Any, ids: jax.Array, mask: jax.Array, *, graphdef: Any, layer: int):
    return nnx.merge(graphdef, state).layer_inputs(ids, mask, layer=layer)


def _length_order(tokenized: Any) -> list[int]:
    """Pair indices by length, so batches of neighbours pad to the smallest buckets."""
    return np.argsort(tokenized.lengths(), kind="stable").tolist()


def pair_layer_inputs(
    model: Any,
    tokenized: Any,
    layer: int,
    batch_size: int,
    mesh: Any = None,
    progress: str | None = None,
) -> PairLayerInputs:
    """The stream entering decoder layer ``layer`` for every pair's two sequences (forward passes
    through the layers below it only, ``batch_size`` pairs at a time, shortest pairs first).

    Where those layers are frozen, a forward pass from ``layer`` with these inputs
    (``batch.layer_inputs``, ``first_layer=layer``) is the full forward pass: compute them once
    per pair and every training step and evaluation saves the layers below.

    Args:
      model: a :class:`raco_jax.models.Decoder` (the base model: adapters, if any, must lie
        at or above ``layer``).
      tokenized: :class:`~raco_jax.data.TokenizedPairs`.
      layer: ``1 <= layer <= num_layers``.
      batch_size: pairs per forward pass.
      mesh: a ``("data", "fsdp", "tensor")`` mesh, or None (default device).
      progress: a description: show a tqdm progress bar over the pairs (None: no bar).

    Returns:
      :class:`PairLayerInputs`.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.data import PreferencePair, byte_tokenizer, tokenize_pairs
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.train.pair_logps import pair_layer_inputs, pair_logps
        >>> tok = byte_tokenizer("chatml")
        >>> c = ModelConfig(model_type="qwen3", vocab_size=len(tok), hidden_size=16,
        ...                 intermediate_size=32, num_layers=2, num_heads=2)
        >>> model = Decoder(c, rngs=nnx.Rngs(0))
        >>> pairs = [PreferencePair("Hi", "Hello", "Go", {"helpful": 1})] * 3
        >>> data = tokenize_pairs(pairs, tok, ("helpful",), 64, 32)
        >>> stream = pair_layer_inputs(model, data, layer=1, batch_size=2)
        >>> stream.a[0].shape == (len(data.input_ids_a[0]), 16)
        True
        >>> full, _ = pair_logps(model, data, batch_size=2)
        >>> upper, _ = pair_logps(model, data, batch_size=2, layer_inputs=stream)
        >>> bool(np.allclose(full, upper, atol=1e-5))
        True
    """
    layer = int(layer)
    if not 1 <= layer <= model.config.num_layers:
        raise ValueError(f"layer must be in [1, {model.config.num_layers}], got {layer}.")
    graphdef, state = nnx.split(model)
    n = len(tokenized)
    a: list[Any] = [None] * n
    b: list[Any] = [None] * n
    bar = _progress_bar(progress, n)
    order = _length_order(tokenized)
    for start in range(0, n, batch_size):
        indices = order[start : start + batch_size]
        batch = make_batch(**tokenized.collate(indices, batch_size=batch_size), validate=False)
        batch = shard_batch(batch, mesh)
        x = host_array(
            _layer_inputs_jit(
                state, batch.input_ids, batch.attention_mask, graphdef=graphdef, layer=layer
            )
        ).astype(np.float32)
        for r, i in enumerate(indices):
            a[i] = x[r, : len(tokenized.input_ids_a[i])].copy()
            b[i] = x[batch_size + r, : len(tokenized.input_ids_b[i])].copy()
        if bar is not None:
            bar.update(len(indices))
    if bar is not None:
        bar.close()
    return PairLayerInputs(layer, a, b)


def cached_layer_inputs(
    cache_dir: str | os.PathLike,
    key_parts: Sequence[str],
    compute: Callable[[], PairLayerInputs],
    log: Callable[[str], None] | None = None,
) -> PairLayerInputs:
    """``compute()`` once per key: reads or writes ``<cache_dir>/layer-inputs-<key>.npz``
    (atomically; float32, 4 bytes x embed per token).

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from raco_jax.train.pair_logps import PairLayerInputs, cached_layer_inputs
        >>> d, calls = tempfile.mkdtemp(), []
        >>> def compute():
        ...     calls.append(1)
        ...     return PairLayerInputs(3, [np.ones((2, 4))], [np.zeros((1, 4))])
        >>> _ = cached_layer_inputs(d, ["w", "t"], compute)
        >>> again = cached_layer_inputs(d, ["w", "t"], compute)
        >>> len(calls), again.layer, again.b[0].shape
        (1, 3, (1, 4))
    """

    def arrays() -> dict[str, np.ndarray]:
        stream = compute()
        return {
            "layer": np.int64(stream.layer),
            "a": np.concatenate(stream.a),
            "b": np.concatenate(stream.b),
            "lengths_a": np.array([len(x) for x in stream.a], np.int64),
            "lengths_b": np.array([len(x) for x in stream.b], np.int64),
        }

    cached = _npz_cache(cache_dir, "layer-inputs", key_parts, arrays, "layer inputs", log)
    a = np.split(cached["a"], np.cumsum(cached["lengths_a"])[:-1])
    b = np.split(cached["b"], np.cumsum(cached["lengths_b"])[:-1])
    return PairLayerInputs(int(cached["layer"]), a, b)


def _npz_cache(
    cache_dir: str | os.PathLike,
    kind: str,
    key_parts: Sequence[str],
    compute: Callable[[], dict[str, np.ndarray]],
    what: str,
    log: Callable[[str], None] | None,
) -> dict[str, np.ndarray]:
    """``compute()`` once per key: the arrays of ``<cache_dir>/<kind>-<key>.npz``, the key a
    hash of ``key_parts``; written atomically (a crash leaves no partial file), by process 0."""
    cache_dir = pathlib.Path(cache_dir)
    key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:24]
    path = cache_dir / f"{kind}-{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            if log is not None:
                log(f"{what}: cached in {path}")
            return {name: cached[name] for name in cached.files}
    arrays = compute()
    if jax.process_index() == 0:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    return arrays


def _progress_bar(description: str | None, total: int) -> Any:
    if description is None:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="pair", leave=False)


def pair_logps(
    model: Any,
    tokenized: Any,
    batch_size: int,
    mesh: Any = None,
    time_chunk_size: int | None = None,
    progress: str | None = None,
    layer_inputs: PairLayerInputs | None = None,
    max_completion_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed completion log-probs of every pair's two responses under ``model``: ``[N]`` each.

    Forward passes only, ``batch_size`` pairs at a time (shortest pairs first, so batches pad
    to small buckets; the last batch padded), placed on ``mesh`` when one is given.

    Args:
      model: a :class:`raco_jax.models.Decoder` (adapters, if any, are used).
      tokenized: :class:`~raco_jax.data.TokenizedPairs`.
      batch_size: pairs per forward pass.
      mesh: a ``("data", "fsdp", "tensor")`` mesh, or None (default device).
      time_chunk_size: project hidden states to logits this many positions at a time.
      progress: a description: show a tqdm progress bar over the pairs (None: no bar).
      layer_inputs: the pairs' :class:`PairLayerInputs`: start every forward pass at their
        layer (the layers below must be those of ``model``, frozen).
      max_completion_length: the pairs' completions hold at most this many tokens: project only
        the positions that score them (:func:`raco_jax.train.step.completion_window`).

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
    bar = _progress_bar(progress, n)
    order = _length_order(tokenized)
    first_layer = 0 if layer_inputs is None else layer_inputs.layer
    for start in range(0, n, batch_size):
        indices = order[start : start + batch_size]
        fields = tokenized.collate(indices, batch_size=batch_size)
        if layer_inputs is not None:
            width = fields["input_ids"].shape[1]
            fields["layer_inputs"] = layer_inputs.collate(indices, batch_size, width)
        batch = make_batch(**fields, validate=False)
        check_completion_lengths(batch, max_completion_length)
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        out = host_array(
            compute_reference_logps(
                model,
                batch,
                time_chunk_size=time_chunk_size,
                first_layer=first_layer,
                max_completion_length=max_completion_length,
            )
        )
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

    def arrays() -> dict[str, np.ndarray]:
        logps_a, logps_b = compute()
        return {"a": logps_a, "b": logps_b}

    cached = _npz_cache(cache_dir, kind, key_parts, arrays, f"{kind} log-probs", log)
    return cached["a"], cached["b"]
