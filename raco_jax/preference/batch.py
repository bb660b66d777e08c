r"""The preference batch: B pairs, 2B token rows, K sign rows.

``PreferenceBatch`` is the contract between the data pipeline (:mod:`raco_jax.data`) and the
losses and train step. It is a NamedTuple of arrays (a pytree, so it passes through ``jax.jit``
and ``jax.lax.scan``):

==================  ===============  =============================================================
field               dtype, shape     meaning
==================  ===============  =============================================================
``input_ids``       int32 [2B, T]    rows 0..B-1: prompt + response a of pairs 0..B-1; rows
                                     B..2B-1: prompt + response b of the same pairs. a is the
                                     FIRST response of the pair, b the second (not chosen /
                                     rejected: which one wins depends on the objective's sign).
``attention_mask``  int32 [2B, T]    1 on real tokens, 0 on padding (left or right padding).
``loss_mask``       float32 [2B, T]  1 where the token AT that position is a response token whose
                                     log-prob counts, so row n's summed log-prob is
                                     :math:`\sum_{t\ge1}` loss_mask[n, t] *
                                     log p(input_ids[n, t] | input_ids[n, :t]); column 0 must
                                     be 0 (the first token has no prediction); 0 on padding.
``signs``           float32 [K, B]   +1: y_a preferred under objective k; -1: y_b preferred;
                                     0: tie (or unlabeled).
``labeled``         float32 [K, B]   1 if pair i is labeled for objective k at all. An unlabeled
                                     pair does not count in objective k's mean; a tie does.
``ref_logps``       float32 [2B]     precomputed reference summed log-probs (same row layout),
                    or None          or None when the train step computes them online (or the
                                     method is reference-free).
``reward_margins``  float32 [M, B]   only for MODPO: margin-reward differences
                    or None          r_j(x, y_a) - r_j(x, y_b) of the other objectives (M = K-1,
                                     or M = K with the target's row ignored); None otherwise.
``layer_inputs``    float [2B, T,    the residual stream entering the policy's first trained
                    embed] or None   layer (frozen layers below it computed once,
                                     ``Decoder.layer_inputs``); None: the forward starts at the
                                     embedding.
==================  ===============  =============================================================

Helpers: :func:`make_batch` (cast + validate), :func:`validate_batch`, :func:`split_pairs`
(micro-batches that keep each pair's a and b rows together) and :func:`swap_responses`.
Imports jax and numpy only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "PreferenceBatch",
    "make_batch",
    "split_pairs",
    "swap_responses",
    "validate_batch",
]


class PreferenceBatch(NamedTuple):
    """B preference pairs as 2B token rows with K sign rows (see the module docstring)."""

    input_ids: Any
    attention_mask: Any
    loss_mask: Any
    signs: Any
    labeled: Any
    ref_logps: Any = None
    reward_margins: Any = None
    layer_inputs: Any = None

    @property
    def num_pairs(self) -> int:
        """B, the number of pairs (half the token rows)."""
        return int(np.shape(self.input_ids)[0]) // 2

    @property
    def num_objectives(self) -> int:
        """K, the number of sign rows."""
        return int(np.shape(self.signs)[0])


def _cast(value: Any, dtype: Any) -> Any:
    """Casts keeping the array kind: jax arrays (and tracers) stay jax, the rest become NumPy."""
    if value is None:
        return None
    if isinstance(value, jax.Array):
        return value.astype(dtype)
    return np.asarray(value, dtype)


def _concrete(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def make_batch(
    input_ids: Any,
    attention_mask: Any,
    loss_mask: Any,
    signs: Any,
    labeled: Any = None,
    ref_logps: Any = None,
    reward_margins: Any = None,
    validate: bool = True,
    layer_inputs: Any = None,
) -> PreferenceBatch:
    """Builds a :class:`PreferenceBatch`, casting each field to its contract dtype.

    Jax arrays stay jax arrays, anything else becomes a NumPy array (host memory until the step
    runs). ``labeled`` defaults to all ones.

    Args:
      input_ids: int ``[2B, T]``; attention_mask: ``[2B, T]`` 0/1; loss_mask: ``[2B, T]``.
      signs: ``[K, B]`` in {+1, -1, 0} (a ``[B]`` vector is read as one objective).
      labeled: ``[K, B]`` in {0, 1}, or None (all labeled).
      ref_logps: ``[2B]`` reference summed log-probs, or None.
      reward_margins: ``[K - 1 or K, B]`` MODPO margin rewards, or None.
      validate: run :func:`validate_batch` (on concrete values).
      layer_inputs: ``[2B, T, embed]`` float32 residual stream entering the first trained
        layer, or None.

    Returns:
      The batch.

    Raises:
      ValueError: naming the field and what was expected.

    Example:
      >>> from raco_jax.preference import make_batch
      >>> batch = make_batch(
      ...     input_ids=[[5, 6, 7, 0], [5, 8, 0, 0]],  # pair 0: a = [6, 7], b = [8]
      ...     attention_mask=[[1, 1, 1, 0], [1, 1, 0, 0]],
      ...     loss_mask=[[0, 1, 1, 0], [0, 1, 0, 0]],
      ...     signs=[[1], [-1]])  # objective 0 prefers a, objective 1 prefers b
      >>> batch.num_pairs, batch.num_objectives, batch.labeled.tolist()
      (1, 2, [[1.0], [1.0]])
    """
    signs = _cast(signs, np.float32)
    if np.ndim(signs) == 1:
        signs = signs[None]
    if labeled is None:
        labeled = jnp.ones_like(signs) if isinstance(signs, jax.Array) else np.ones_like(signs)
    elif np.ndim(labeled) == 1:
        labeled = _cast(labeled, np.float32)[None]
    batch = PreferenceBatch(
        input_ids=_cast(input_ids, np.int32),
        attention_mask=_cast(attention_mask, np.int32),
        loss_mask=_cast(loss_mask, np.float32),
        signs=signs,
        labeled=_cast(labeled, np.float32),
        ref_logps=_cast(ref_logps, np.float32),
        reward_margins=_cast(reward_margins, np.float32),
        layer_inputs=_cast(layer_inputs, np.float32),
    )
    if validate:
        validate_batch(batch)
    return batch


def validate_batch(batch: PreferenceBatch) -> PreferenceBatch:
    """Checks a batch against the contract; returns it unchanged.

    Shapes are always checked; values (signs in {-1, 0, 1}, labels in {0, 1}, masks, finite
    reference log-probs) only when the arrays are concrete (not under ``jax.jit``).

    Args:
      batch: the batch.

    Returns:
      ``batch``.

    Raises:
      ValueError: naming the field (and the first offending row) and what was expected.

    Example:
      >>> from raco_jax.preference import make_batch, validate_batch
      >>> batch = make_batch([[1, 2], [1, 3]], [[1, 1], [1, 1]], [[0, 1], [0, 1]], [[1]],
      ...                    validate=False)
      >>> validate_batch(batch._replace(signs=batch.signs * 2))
      Traceback (most recent call last):
      ...
      ValueError: signs must hold +1, -1 or 0; objective 0, pair 0 holds 2.0.
    """
    if not isinstance(batch, PreferenceBatch):
        raise TypeError(f"batch must be a PreferenceBatch, got {type(batch).__name__}.")
    ids_shape = np.shape(batch.input_ids)
    if len(ids_shape) != 2 or ids_shape[0] % 2 or ids_shape[0] == 0:
        raise ValueError(
            "input_ids must be [2B, T] (rows 0..B-1 prompt + response a, rows B..2B-1 prompt + "
            f"response b) with B >= 1, got shape {ids_shape}."
        )
    if not np.issubdtype(np.dtype(batch.input_ids.dtype), np.integer):
        raise TypeError(f"input_ids must be integer token ids, got dtype {batch.input_ids.dtype}.")
    num_pairs = ids_shape[0] // 2
    for name in ("attention_mask", "loss_mask"):
        shape = np.shape(getattr(batch, name))
        if shape != ids_shape:
            raise ValueError(f"{name} must have the shape of input_ids {ids_shape}, got {shape}.")
    signs_shape = np.shape(batch.signs)
    if len(signs_shape) != 2 or signs_shape[1] != num_pairs or signs_shape[0] < 1:
        raise ValueError(
            f"signs must be [K, B] with B = {num_pairs} pairs (half the input_ids rows), got "
            f"shape {signs_shape}."
        )
    if np.shape(batch.labeled) != signs_shape:
        raise ValueError(
            f"labeled must have the shape of signs {signs_shape}, got {np.shape(batch.labeled)}."
        )
    if batch.ref_logps is not None and np.shape(batch.ref_logps) != (2 * num_pairs,):
        raise ValueError(
            f"ref_logps must be [2B] = ({2 * num_pairs},) or None, got shape "
            f"{np.shape(batch.ref_logps)}."
        )
    if batch.reward_margins is not None:
        shape = np.shape(batch.reward_margins)
        if len(shape) != 2 or shape[1] != num_pairs:
            raise ValueError(
                f"reward_margins must be [K - 1 or K, B] with B = {num_pairs}, got shape {shape}."
            )
    if batch.layer_inputs is not None:
        shape = np.shape(batch.layer_inputs)
        if len(shape) != 3 or shape[:2] != ids_shape:
            raise ValueError(
                f"layer_inputs must be [2B, T, embed] with [2B, T] = {ids_shape}, got shape "
                f"{shape}."
            )

    signs = _concrete(batch.signs)
    if signs is not None:
        bad = np.argwhere(~np.isin(signs, (-1.0, 0.0, 1.0)))
        if bad.size:
            k, i = bad[0]
            raise ValueError(
                f"signs must hold +1, -1 or 0; objective {k}, pair {i} holds {signs[k, i]}."
            )
    labeled = _concrete(batch.labeled)
    if labeled is not None:
        bad = np.argwhere(~np.isin(labeled, (0.0, 1.0)))
        if bad.size:
            k, i = bad[0]
            raise ValueError(
                f"labeled must hold 0 or 1; objective {k}, pair {i} holds {labeled[k, i]}."
            )
    attention = _concrete(batch.attention_mask)
    loss_mask = _concrete(batch.loss_mask)
    if attention is not None:
        bad = np.argwhere(~np.isin(attention, (0, 1)))
        if bad.size:
            raise ValueError(f"attention_mask must hold 0 or 1; row {bad[0][0]} does not.")
    if loss_mask is not None:
        bad_rows = np.flatnonzero(loss_mask[:, 0] != 0)
        if bad_rows.size:
            raise ValueError(
                "loss_mask[:, 0] must be 0 (the first token has no prediction; the prompt comes "
                f"first); row {bad_rows[0]} is not."
            )
        if np.any(loss_mask < 0):
            raise ValueError(f"loss_mask must be >= 0; row {np.argwhere(loss_mask < 0)[0][0]}.")
        if attention is not None:
            outside = np.argwhere((loss_mask != 0) & (attention == 0))
            if outside.size:
                raise ValueError(
                    f"loss_mask marks padding (attention_mask 0) in row {outside[0][0]}, "
                    f"position {outside[0][1]}."
                )
    ref = _concrete(batch.ref_logps)
    if ref is not None and not np.all(np.isfinite(ref)):
        raise ValueError(
            f"ref_logps must be finite; row {np.flatnonzero(~np.isfinite(ref))[0]} is not."
        )
    return batch


def split_pairs(batch: PreferenceBatch, num_micro_batches: int) -> PreferenceBatch:
    """Splits B pairs into M micro-batches of B / M pairs, stacked on a new leading axis.

    Micro-batch j holds pairs ``j*B/M .. (j+1)*B/M - 1``: its a rows and b rows come from both
    halves of ``input_ids``, so every micro-batch follows the contract (``[M, 2B/M, T]`` token
    rows, ``[M, K, B/M]`` signs, ...). Suitable for ``jax.lax.scan``; works under ``jax.jit``.

    Args:
      batch: the batch (B divisible by ``num_micro_batches``).
      num_micro_batches: M >= 1.

    Returns:
      A PreferenceBatch whose fields have a leading axis of size M.

    Example:
      >>> import numpy as np
      >>> from raco_jax.preference import make_batch, split_pairs
      >>> ids = np.arange(8)[:, None] * np.ones((1, 3), np.int32)  # rows 0-3 a, rows 4-7 b
      >>> batch = make_batch(ids, np.ones((8, 3)), np.zeros((8, 3)), [[1, -1, 1, 0]])
      >>> micro = split_pairs(batch, 2)
      >>> micro.input_ids[:, :, 0].tolist(), micro.signs.tolist()
      ([[0, 1, 4, 5], [2, 3, 6, 7]], [[[1.0, -1.0]], [[1.0, 0.0]]])
    """
    if not isinstance(num_micro_batches, int) or num_micro_batches < 1:
        raise ValueError(f"num_micro_batches must be a positive int, got {num_micro_batches!r}.")
    num_pairs = batch.num_pairs
    if num_pairs % num_micro_batches:
        raise ValueError(
            f"the batch has {num_pairs} pairs, not divisible into {num_micro_batches} "
            "micro-batches."
        )
    m = num_micro_batches
    per = num_pairs // m

    def rows(x: Any) -> Any:
        if x is None:
            return None
        x = jnp.asarray(x)
        a = x[:num_pairs].reshape(m, per, *x.shape[1:])
        b = x[num_pairs:].reshape(m, per, *x.shape[1:])
        return jnp.concatenate([a, b], axis=1)

    def columns(x: Any) -> Any:
        if x is None:
            return None
        x = jnp.asarray(x)
        return jnp.moveaxis(x.reshape(x.shape[0], m, per), 1, 0)

    return PreferenceBatch(
        input_ids=rows(batch.input_ids),
        attention_mask=rows(batch.attention_mask),
        loss_mask=rows(batch.loss_mask),
        signs=columns(batch.signs),
        labeled=columns(batch.labeled),
        ref_logps=rows(batch.ref_logps),
        reward_margins=columns(batch.reward_margins),
        layer_inputs=rows(batch.layer_inputs),
    )


def swap_responses(batch: PreferenceBatch) -> PreferenceBatch:
    """Swaps responses a and b of every pair and negates the signs (and reward margins).

    The losses are invariant under this swap, a useful check and a free augmentation.

    Example:
      >>> from raco_jax.preference import make_batch, swap_responses
      >>> batch = make_batch([[1, 2], [1, 3]], [[1, 1], [1, 1]], [[0, 1], [0, 1]], [[1]])
      >>> swapped = swap_responses(batch)
      >>> swapped.input_ids.tolist(), swapped.signs.tolist()
      ([[1, 3], [1, 2]], [[-1.0]])
    """
    num_pairs = batch.num_pairs

    def rows(x: Any) -> Any:
        if x is None:
            return None
        xp = jnp if isinstance(x, jax.Array) else np
        return xp.concatenate([x[num_pairs:], x[:num_pairs]], axis=0)

    return batch._replace(
        input_ids=rows(batch.input_ids),
        attention_mask=rows(batch.attention_mask),
        loss_mask=rows(batch.loss_mask),
        signs=-batch.signs,
        ref_logps=rows(batch.ref_logps),
        reward_margins=None if batch.reward_margins is None else -batch.reward_margins,
        layer_inputs=rows(batch.layer_inputs),
    )
