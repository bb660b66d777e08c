r"""Summed completion log-probabilities, in float32, without a float32 copy of the logits.

A preference loss needs, for every sequence n, the summed log-probability of its completion
tokens:

.. math:: \log \pi(y_n \mid x_n) = \sum_{t \ge 1} m_{n,t}\,
   \log \operatorname{softmax}(\ell_{n,t-1})[\text{tokens}_{n,t}]

where :math:`\ell_{n,t-1}` are the logits at position t - 1 (they predict token t) and
:math:`m_{n,t}` is the loss mask (1 on completion tokens). ``loss_mask[:, 0]`` is ignored: the
first token has no prediction.

Full-vocabulary logits are the largest activation of a language model (``[N, T, V]``); TRL users
often run out of memory when they are upcast to float32 for the log-softmax. Here the
log-normaliser is a running log-sum-exp over vocabulary chunks (each chunk upcast to float32 on
its own), and the backward pass is one fused elementwise expression, so no float32 copy of the
logits is ever materialised (:func:`token_logps`, :func:`sequence_logps`).
:func:`sequence_logps_from_hidden` goes further and never builds the ``[N, T, V]`` logits at all:
it projects the hidden states chunk by chunk (over the vocabulary for an output kernel, over time
for any head function) and recomputes each chunk in the backward pass.

Imports jax only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["sequence_logps", "sequence_logps_from_hidden", "token_logps"]

DEFAULT_VOCAB_CHUNK = 4096
DEFAULT_TIME_CHUNK = 64


def _check_chunk(chunk_size: int | None, name: str = "chunk_size") -> None:
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError(f"{name} must be a positive int or None, got {chunk_size!r}.")


def _online_update(
    carry: tuple[jax.Array, jax.Array], block: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One step of a running log-sum-exp over the last axis of a float32 ``block``.

    The carry is (running max, running sum of exp(x - shift)); the shifts are stop-gradient'ed
    (the result does not depend on them), so the scan is also correct under autodiff.
    """
    running_max, running_sum = carry
    new_max = jax.lax.stop_gradient(jnp.maximum(running_max, jnp.max(block, axis=-1)))
    new_shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    # An empty running sum (max still -inf) contributes nothing, whatever the new shift.
    scale = jnp.where(jnp.isfinite(running_max), jnp.exp(running_max - new_shift), 0.0)
    running_sum = running_sum * scale + jnp.sum(jnp.exp(block - new_shift[..., None]), axis=-1)
    return new_max, running_sum


def _finish(carry: tuple[jax.Array, jax.Array]) -> jax.Array:
    running_max, running_sum = carry
    shift = jnp.where(jnp.isfinite(running_max), running_max, 0.0)
    return shift + jnp.log(running_sum)


def _chunked_logsumexp(logits: jax.Array, chunk_size: int | None) -> jax.Array:
    """float32 log-sum-exp over the last axis, scanning vocabulary chunks of ``chunk_size``."""
    vocab = logits.shape[-1]
    if chunk_size is None or chunk_size >= vocab:
        return jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
    num_full = vocab // chunk_size
    init = (
        jnp.full(logits.shape[:-1], -jnp.inf, jnp.float32),
        jnp.zeros(logits.shape[:-1], jnp.float32),
    )

    def body(carry: tuple[jax.Array, jax.Array], index: jax.Array) -> tuple[tuple, None]:
        block = jax.lax.dynamic_slice_in_dim(logits, index * chunk_size, chunk_size, axis=-1)
        return _online_update(carry, block.astype(jnp.float32)), None

    carry, _ = jax.lax.scan(body, init, jnp.arange(num_full, dtype=jnp.int32))
    if num_full * chunk_size < vocab:
        carry = _online_update(carry, logits[..., num_full * chunk_size :].astype(jnp.float32))
    return _finish(carry)


def _gather_last(values: jax.Array, indices: jax.Array) -> jax.Array:
    return jnp.take_along_axis(values, indices[..., None], axis=-1, mode="clip")[..., 0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _token_logps(logits: jax.Array, targets: jax.Array, chunk_size: int | None) -> jax.Array:
    lse = _chunked_logsumexp(logits, chunk_size)
    return _gather_last(logits, targets).astype(jnp.float32) - lse


def _token_logps_fwd(
    logits: jax.Array, targets: jax.Array, chunk_size: int | None
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    lse = _chunked_logsumexp(logits, chunk_size)
    out = _gather_last(logits, targets).astype(jnp.float32) - lse
    return out, (logits, targets, lse)


def _token_logps_bwd(
    chunk_size: int | None, residuals: tuple[jax.Array, jax.Array, jax.Array], cotangent: jax.Array
) -> tuple[jax.Array, None]:
    del chunk_size
    logits, targets, lse = residuals
    # d/dlogits [logit_target - lse] = onehot(target) - softmax(logits): one fused expression.
    probs = jnp.exp(logits.astype(jnp.float32) - lse[..., None])
    onehot = targets[..., None] == jnp.arange(logits.shape[-1], dtype=targets.dtype)
    grad = cotangent[..., None] * (onehot.astype(jnp.float32) - probs)
    return grad.astype(logits.dtype), None


_token_logps.defvjp(_token_logps_fwd, _token_logps_bwd)


def token_logps(
    logits: jax.Array, targets: jax.Array, chunk_size: int | None = DEFAULT_VOCAB_CHUNK
) -> jax.Array:
    r"""float32 :math:`\log\operatorname{softmax}(\text{logits})[\text{targets}]`, chunked over
    the vocabulary.

    The log-normaliser is a running log-sum-exp over vocabulary chunks of ``chunk_size`` (each
    chunk upcast to float32 separately) and the gradient,
    :math:`\mathrm{onehot}(\text{target}) - \operatorname{softmax}(\text{logits})`, is one fused
    elementwise expression returned in the logits' dtype: no float32 copy of bfloat16 logits.

    Args:
      logits: ``[..., V]`` logits, any float dtype.
      targets: ``[...]`` integer token ids (clipped into ``[0, V)``).
      chunk_size: vocabulary entries per chunk; None (or >= V) computes in one block.

    Returns:
      ``[...]`` float32 log-probabilities of the targets.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.preference import token_logps
      >>> logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
      >>> token_logps(logits, jnp.array([0]), chunk_size=2)
      Array([-0.6931472], dtype=float32)
    """
    _check_chunk(chunk_size)
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"logits must be floating point, got dtype {logits.dtype}.")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}.")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets must have the shape of logits without its last axis, {logits.shape[:-1]}, "
            f"got {targets.shape}."
        )
    targets = jnp.clip(targets, 0, logits.shape[-1] - 1).astype(jnp.int32)
    return _token_logps(logits, targets, chunk_size)


def _shifted_targets(tokens: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Targets and mask aligned with the predicting position: position t scores token t + 1."""
    targets = jnp.concatenate([tokens[..., 1:], tokens[..., :1]], axis=-1)
    mask = jnp.concatenate(
        [loss_mask[..., 1:], jnp.zeros_like(loss_mask[..., :1])], axis=-1
    ).astype(jnp.float32)
    return targets, mask


def _check_sequences(name: str, array: jax.Array, tokens: jax.Array, loss_mask: jax.Array) -> None:
    if tokens.ndim < 1 or array.shape[:-1] != tokens.shape:
        raise ValueError(
            f"tokens must have the shape of {name} without its last axis, {array.shape[:-1]}, "
            f"got {tokens.shape}."
        )
    if loss_mask.shape != tokens.shape:
        raise ValueError(
            f"loss_mask must have the shape of tokens {tokens.shape}, got {loss_mask.shape}."
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"tokens must be integer token ids, got dtype {tokens.dtype}.")


def _reduce(token_values: jax.Array, mask: jax.Array, average: bool) -> tuple[jax.Array, jax.Array]:
    # where, not a product: a masked position may hold any value (-inf, or NaN from a bad id).
    summed = jnp.sum(jnp.where(mask != 0, mask * token_values, 0.0), axis=-1)
    counts = jnp.sum(mask, axis=-1)
    if average:
        summed = summed / jnp.where(counts > 0, counts, 1.0)
    return summed, counts


def sequence_logps(
    logits: jax.Array,
    tokens: jax.Array,
    loss_mask: jax.Array,
    average: bool = False,
    chunk_size: int | None = DEFAULT_VOCAB_CHUNK,
) -> tuple[jax.Array, jax.Array]:
    r"""Summed (or averaged) completion log-probabilities of N sequences from their logits.

    .. math:: \log\pi(y_n\mid x_n) = \sum_{t\ge1} m_{n,t}\,
       \log\operatorname{softmax}(\ell_{n,t-1})[\text{tokens}_{n,t}]

    computed in float32 even for bfloat16 logits, over vocabulary chunks (see
    :func:`token_logps`), so a full-vocabulary float32 copy of the logits is never made.

    Args:
      logits: ``[N, T, V]`` (any leading axes) logits; position t predicts token t + 1.
      tokens: ``[N, T]`` the input token ids.
      loss_mask: ``[N, T]`` 1 (or a weight) where the token AT that position is a completion
        token whose log-prob counts; ``loss_mask[:, 0]`` is ignored.
      average: divide each sum by its token count (0 for a sequence with no counted token).
      chunk_size: vocabulary entries per chunk of the log-sum-exp (None: one block).

    Returns:
      ``(logps, counts)``: ``[N]`` float32 summed (or averaged) log-probs and ``[N]`` float32
      numbers of counted tokens.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.preference import sequence_logps
      >>> logits = jnp.zeros((1, 3, 4))  # uniform over 4 tokens
      >>> logps, counts = sequence_logps(logits, jnp.array([[1, 2, 3]]), jnp.array([[0, 1, 1]]))
      >>> round(float(logps[0]), 4), float(counts[0])  # 2 * log(1/4)
      (-2.7726, 2.0)
    """
    _check_chunk(chunk_size)
    logits, tokens, loss_mask = jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(loss_mask)
    _check_sequences("logits", logits, tokens, loss_mask)
    targets, mask = _shifted_targets(tokens, loss_mask)
    values = token_logps(logits, targets, chunk_size)
    return _reduce(values, mask, average)


def _softcap(logits: jax.Array, softcap: float | None) -> jax.Array:
    if softcap is None:
        return logits
    return jnp.tanh(logits / softcap) * softcap


def _logps_vocab_chunked(
    hidden: jax.Array,
    kernel: jax.Array,
    targets: jax.Array,
    chunk_size: int,
    softcap: float | None,
) -> jax.Array:
    """Per-position log-probs from hidden ``[..., D]`` and kernel ``[D, V]`` over vocab chunks."""
    dim, vocab = kernel.shape

    def project(block: jax.Array) -> jax.Array:
        out = jnp.einsum(
            "...d,dv->...v",
            hidden,
            block.astype(hidden.dtype),
            preferred_element_type=jnp.float32,
        )
        return _softcap(out.astype(jnp.float32), softcap)

    target_columns = jnp.take(kernel.T, jnp.clip(targets, 0, vocab - 1), axis=0)  # [..., D]
    target_logits = jnp.einsum(
        "...d,...d->...",
        hidden,
        target_columns.astype(hidden.dtype),
        preferred_element_type=jnp.float32,
    )
    target_logits = _softcap(target_logits.astype(jnp.float32), softcap)

    num_full = vocab // chunk_size
    carry = (
        jnp.full(hidden.shape[:-1], -jnp.inf, jnp.float32),
        jnp.zeros(hidden.shape[:-1], jnp.float32),
    )
    if num_full > 0:
        blocks = kernel[:, : num_full * chunk_size].reshape(dim, num_full, chunk_size)
        blocks = jnp.moveaxis(blocks, 1, 0)  # [num_full, D, chunk]

        @jax.checkpoint
        def body(carry: tuple[jax.Array, jax.Array], block: jax.Array) -> tuple[tuple, None]:
            return _online_update(carry, project(block)), None

        carry, _ = jax.lax.scan(body, carry, blocks)
    if num_full * chunk_size < vocab:
        carry = jax.checkpoint(lambda c, b: _online_update(c, project(b)))(
            carry, kernel[:, num_full * chunk_size :]
        )
    return target_logits - _finish(carry)


def _logps_time_chunked(
    hidden: jax.Array,
    head_fn: Callable[[jax.Array], jax.Array],
    targets: jax.Array,
    mask: jax.Array,
    chunk_size: int,
) -> jax.Array:
    """Masked sums over time of per-position log-probs, projecting ``chunk_size`` steps at a
    time (each chunk's logits recomputed in the backward pass)."""
    length = hidden.shape[-2]
    num_chunks = -(-length // chunk_size)
    pad = num_chunks * chunk_size - length
    lead = hidden.shape[:-2]

    def pad_time(x: jax.Array, time_axis: int) -> jax.Array:
        widths = [(0, 0)] * x.ndim
        widths[time_axis] = (0, pad)
        return jnp.pad(x, widths)

    def to_chunks(x: jax.Array, time_axis: int) -> jax.Array:
        x = pad_time(x, time_axis) if pad else x
        shape = (*x.shape[:time_axis], num_chunks, chunk_size, *x.shape[time_axis + 1 :])
        return jnp.moveaxis(x.reshape(shape), time_axis, 0)

    hidden_chunks = to_chunks(hidden, hidden.ndim - 2)
    target_chunks = to_chunks(targets, targets.ndim - 1)
    mask_chunks = to_chunks(mask, mask.ndim - 1)

    @jax.checkpoint
    def chunk_sum(h: jax.Array, t: jax.Array, m: jax.Array) -> jax.Array:
        logits = jnp.asarray(head_fn(h))
        if logits.shape[:-1] != h.shape[:-1]:
            raise ValueError(
                f"head must map hidden states {h.shape} to logits [..., V], got {logits.shape}."
            )
        logits = logits.astype(jnp.float32)
        lse = jax.nn.logsumexp(logits, axis=-1)
        values = _gather_last(logits, jnp.clip(t, 0, logits.shape[-1] - 1)) - lse
        return jnp.sum(jnp.where(m != 0, m * values, 0.0), axis=-1)

    def body(total: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
        return total + chunk_sum(*xs), None

    total, _ = jax.lax.scan(
        body, jnp.zeros(lead, jnp.float32), (hidden_chunks, target_chunks, mask_chunks)
    )
    return total


def sequence_logps_from_hidden(
    hidden: jax.Array,
    head: jax.Array | Callable[[jax.Array], jax.Array],
    tokens: jax.Array,
    loss_mask: jax.Array,
    chunk_size: int | None = None,
    average: bool = False,
    softcap: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Summed completion log-probs from final hidden states, never building ``[N, T, V]`` logits.

    Same quantity as :func:`sequence_logps`, with the output projection folded in:

    * ``head`` an array (the output kernel ``[D, V]``; pass ``embedding.T`` for tied
      embeddings): the vocabulary is processed ``chunk_size`` columns at a time with a running
      log-sum-exp; each chunk's logits are recomputed in the backward pass
      (``jax.checkpoint``), so only ``[N, T, chunk_size]`` float32 logits exist at once.
    * ``head`` a function ``hidden[..., D] -> logits[..., V]`` (e.g. a model's
      ``logits_from_hidden``, LoRA or soft-capping included): time is processed ``chunk_size``
      positions at a time, each chunk recomputed in the backward pass, so only
      ``[N, chunk_size, V]`` logits exist at once.

    Args:
      hidden: ``[N, T, D]`` final (normed) hidden states; position t predicts token t + 1.
      head: the output kernel ``[D, V]`` or a head function (see above).
      tokens: ``[N, T]`` the input token ids.
      loss_mask: ``[N, T]`` 1 where the token at that position counts (column 0 ignored).
      chunk_size: vocabulary entries per chunk (kernel) or positions per chunk (function);
        defaults 4096 and 64.
      average: divide each sum by its token count.
      softcap: with a kernel, apply ``softcap * tanh(logits / softcap)`` (Gemma 3's final
        logit soft-capping); a head function applies its own.

    Returns:
      ``(logps, counts)``: ``[N]`` float32 summed (or averaged) log-probs and token counts.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from raco_jax.preference import sequence_logps, sequence_logps_from_hidden
      >>> hidden = jax.random.normal(jax.random.key(0), (2, 5, 8))
      >>> kernel = jax.random.normal(jax.random.key(1), (8, 11))
      >>> tokens = jnp.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
      >>> mask = jnp.array([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]])
      >>> a, _ = sequence_logps_from_hidden(hidden, kernel, tokens, mask, chunk_size=4)
      >>> b, _ = sequence_logps_from_hidden(hidden, lambda h: h @ kernel, tokens, mask, 2)
      >>> c, _ = sequence_logps(hidden @ kernel, tokens, mask)
      >>> bool(jnp.allclose(a, c, atol=1e-5)), bool(jnp.allclose(b, c, atol=1e-5))
      (True, True)
    """
    _check_chunk(chunk_size)
    hidden, tokens, loss_mask = jnp.asarray(hidden), jnp.asarray(tokens), jnp.asarray(loss_mask)
    _check_sequences("hidden", hidden, tokens, loss_mask)
    targets, mask = _shifted_targets(tokens, loss_mask)
    if callable(head):
        if softcap is not None:
            raise ValueError("softcap applies to a kernel head only; a head function caps itself.")
        summed = _logps_time_chunked(
            hidden, head, targets.astype(jnp.int32), mask, chunk_size or DEFAULT_TIME_CHUNK
        )
        counts = jnp.sum(mask, axis=-1)
        if average:
            summed = summed / jnp.where(counts > 0, counts, 1.0)
        return summed, counts
    kernel = jnp.asarray(head)
    if kernel.ndim != 2 or kernel.shape[0] != hidden.shape[-1]:
        raise ValueError(
            f"head must be a [D, V] kernel with D = hidden.shape[-1] = {hidden.shape[-1]} (or a "
            f"function), got shape {kernel.shape}."
        )
    values = _logps_vocab_chunked(
        hidden, kernel, targets.astype(jnp.int32), chunk_size or DEFAULT_VOCAB_CHUNK, softcap
    )
    return _reduce(values, mask, average)
