"""Gram matrices of stacked per-objective gradients, and their weighted combination.

A *stacked* gradient is any pytree whose leaves carry a leading axis of size K: slice k of every
leaf is the gradient of objective k. Both functions here work leaf by leaf (they never ravel the
tree), so they keep each leaf's sharding and need no more communication than K x K scalars.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "AnchorProducts",
    "anchor_products",
    "combine",
    "combine_with_anchor",
    "gram_matrix",
    "num_objectives",
    "weighted_anchor",
]

_HIGHEST = jax.lax.Precision.HIGHEST


def num_objectives(stacked: Any, *, argname: str = "stacked") -> int:
    """Returns K, the common leading size of every leaf of a stacked gradient tree.

    Args:
      stacked: a pytree whose leaves have shape ``[K, *param_shape]``.
      argname: the argument name used in error messages.

    Returns:
      The number of objectives K.

    Raises:
      ValueError: if the tree has no leaves, a leaf is a scalar, or two leaves disagree on K
        (the message names the first offending leaf path).
      TypeError: if a leaf is not floating point (integer gradients would be truncated by the
        aggregation; the message names the leaf).

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.gram import num_objectives
      >>> num_objectives({"w": jnp.zeros((3, 4, 5)), "b": jnp.zeros((3, 5))})
      3
    """
    leaves = jax.tree_util.tree_leaves_with_path(stacked)
    if not leaves:
        raise ValueError(f"{argname} has no array leaves; expected leaves of shape [K, ...].")
    first_path, first = leaves[0]
    for path, leaf in leaves:
        shape = jnp.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                f"{argname} leaf {jax.tree_util.keystr(path) or '<root>'} is a scalar; every "
                "leaf of a stacked gradient needs a leading objective axis [K, ...]."
            )
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{argname} leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}; "
                "stacked gradients must be floating point (cast integer or boolean leaves to "
                "float32 first)."
            )
        if shape[0] != jnp.shape(first)[0]:
            raise ValueError(
                f"{argname} leaves disagree on the number of objectives: leaf "
                f"{jax.tree_util.keystr(path)} has leading size {shape[0]} but leaf "
                f"{jax.tree_util.keystr(first_path) or '<root>'} has {jnp.shape(first)[0]}."
            )
    return int(jnp.shape(first)[0])


# Sums of products on CPU: rows with at least this many entries are reduced in chunks (see
# _pair_sums), from _MANY_PAIRS products on only rows of _REDUCE_MIN_SIZE_MANY entries; more
# than _MAX_PAIRS products use XLA's dot. The crossovers, measured warm per leaf inside programs
# over many leaves on 2 cores (benchmarks/aggregators.py --crossover-sizes; RESULTS.md,
# 2026-12-07): chunks / dot at K = 4 1.16 at 2^16, 0.77 at 2^17; at K = 8 1.25 at 2^18, 0.66
# at 2^19.
_REDUCE_MIN_SIZE = 1 << 17
_MANY_PAIRS, _REDUCE_MIN_SIZE_MANY = 11, 1 << 19
_MAX_PAIRS = 36  # the Gram of K = 8
_PASS_PAIRS = 28  # more products than this are reduced in two passes (K = 8: 26 + 10)
_CHUNK = 256  # preferred chunk; any divisor of the leaf size in [_CHUNK_MIN, _CHUNK_MAX] works
_CHUNK_MIN, _CHUNK_MAX = 64, 4096


@functools.cache
def _chunk_size(size: int) -> int | None:
    """A divisor of ``size`` in [_CHUNK_MIN, _CHUNK_MAX], the closest to _CHUNK (None: none)."""
    best = None
    for c in range(_CHUNK_MIN, _CHUNK_MAX + 1):
        if size % c == 0 and (best is None or abs(c - _CHUNK) < abs(best - _CHUNK)):
            best = c
    return best


def _tree_sum(x: jax.Array) -> jax.Array:
    """Sums the last axis in blocks of _CHUNK, block sums again (error grows with log n)."""
    while x.shape[-1] > _CHUNK:
        pad = (-x.shape[-1]) % _CHUNK
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
        x = jnp.sum(jnp.reshape(x, (*x.shape[:-1], -1, _CHUNK)), axis=-1)
    return jnp.sum(x, axis=-1)


def _pair_sums(
    rows: Sequence[jax.Array],
    pairs: Sequence[tuple[int, int]],
    by_dot: Callable[[], jax.Array],
    arrange: Callable[[jax.Array], jax.Array] = lambda sums: sums,
) -> jax.Array:
    """``arrange([sum(rows[i] * rows[j]) for i, j in pairs])`` in float32, all products in one
    pass (two beyond _PASS_PAIRS products), or ``by_dot()``, which returns the same arrangement.

    On CPU, XLA's dot for a [K, P] x [P, K] contraction with a small K runs at a fraction of
    the machine's speed (3-7x slower than NumPy's BLAS on a 1e7-entry leaf). One variadic
    reduction instead reads each chunk of about ``_CHUNK`` entries of every row once and
    accumulates all the products together; the chunk sums are then added in a tree, so the
    rounding error grows like the chunk length plus the log of the chunk count, not like P (a
    single sequential reduction, tried before, lost 1e-4 at P = 1e7). Elsewhere (GPU, TPU), for
    small rows, sizes without a divisor in [_CHUNK_MIN, _CHUNK_MAX], float64 rows or more than
    _MAX_PAIRS products, ``by_dot()`` (the same result from XLA's dot, arranged by the caller:
    slicing the pair sums out of a dot's K x K result costs one small kernel per pair on CPU)
    is used.
    """
    flat = [jnp.reshape(r, (-1,)) for r in rows]
    size = int(flat[0].size)
    wide = any(jnp.promote_types(r.dtype, jnp.float32) != jnp.float32 for r in flat)
    min_size = _REDUCE_MIN_SIZE if len(pairs) < _MANY_PAIRS else _REDUCE_MIN_SIZE_MANY
    chunk = None if wide or size < min_size or len(pairs) > _MAX_PAIRS else _chunk_size(size)
    if chunk is None:
        return by_dot()

    def one_pass(group: Sequence[tuple[int, int]]) -> jax.Array:
        blocks = {
            r: jnp.reshape(flat[r], (-1, chunk)).astype(jnp.float32) for ij in group for r in ij
        }
        products = tuple(blocks[i] * blocks[j] for i, j in group)
        zeros = tuple(jnp.zeros((), jnp.float32) for _ in group)
        sums = jax.lax.reduce(
            products, zeros, lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True)), (1,)
        )
        return _tree_sum(jnp.stack(sums))

    def by_reduction() -> jax.Array:
        if len(pairs) <= _PASS_PAIRS:
            return one_pass(pairs)
        # Too many accumulators for one pass: the products of the first half of the rows, then
        # the rest (reads the second half twice; measured 8-18% faster for K = 8 on 2 cores).
        half = max(i for pair in pairs for i in pair) // 2 + 1
        first = [n for n, (i, _) in enumerate(pairs) if i < half]
        rest = [n for n, (i, _) in enumerate(pairs) if i >= half]
        sums = jnp.concatenate(
            [one_pass([pairs[n] for n in first]), one_pass([pairs[n] for n in rest])]
        )
        return sums[np.argsort(np.asarray(first + rest))]

    return jax.lax.platform_dependent(cpu=lambda: arrange(by_reduction()), default=by_dot)


def _leaf_gram(leaf: jax.Array) -> jax.Array:
    k = leaf.shape[0]
    kw = {"precision": _HIGHEST, "preferred_element_type": jnp.float32}
    if leaf.ndim <= 2 or jax.device_count() == 1:
        # One device: the [K, -1] view is free.
        flat = jnp.reshape(leaf, (k, -1))
        pairs = [(i, j) for i in range(k) for j in range(i, k)]
        index = np.zeros((k, k), np.int32)
        for n, (i, j) in enumerate(pairs):
            index[i, j] = index[j, i] = n

        def by_dot() -> jax.Array:
            return jnp.einsum("kp,lp->kl", flat, flat, **kw).astype(jnp.float32)

        return _pair_sums([flat[i] for i in range(k)], pairs, by_dot, lambda sums: sums[index])
    # Several devices: contract the non-objective axes in place. Reshaping a leaf sharded on a
    # later axis (FSDP, tensor parallel) would make XLA all-gather it; this way only K x K
    # partial sums cross devices.
    axes = tuple(range(1, leaf.ndim))
    return jnp.tensordot(leaf, leaf, axes=(axes, axes), **kw).astype(jnp.float32)


def gram_matrix(stacked: Any) -> jax.Array:
    r"""Gram matrix of K stacked gradients, accumulated leaf by leaf in float32.

    .. math::
      H_{ij} = \langle g_i, g_j \rangle = \sum_{\text{leaves}} \operatorname{vec}(g_i)^\top
      \operatorname{vec}(g_j)

    Products are accumulated in float32 at ``Precision.HIGHEST`` even for bfloat16 leaves, and the
    tree is never ravelled: under a mesh each leaf's partial Gram is reduced by XLA, so the only
    extra communication is K x K scalars per leaf.

    On CPU, leaves of at least 2^17 entries per objective (2^19 for K > 4; K <= 8) are reduced
    in chunks of about 256 entries, every product of a chunk in one pass (two for K = 8, whose
    36 accumulators do not fit one), and the chunk sums added in a tree: faster than XLA's dot
    there (from level at those sizes to 3-6x on a 4e6-entry leaf; on a 1e7-entry leaf it takes
    0.4-0.7x the time of NumPy's BLAS on 2 cores, benchmarks/aggregators.py) and more accurate
    (a relative error of about 1e-7 of :math:`\|g_i\|\|g_j\|` against 1e-6). GPUs and TPUs
    use the dot.

    Squared norms below float32's normal range (gradients of norm below about 1e-19) underflow
    to 0 and such objectives read as zero gradients.

    Args:
      stacked: a pytree whose leaves have shape ``[K, *param_shape]`` (any float dtype).

    Returns:
      A float32 array of shape ``[K, K]``, symmetric positive semi-definite.

    Example:
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> stacked = {"w": jnp.array([[1.0, -4.0], [-1.0, 1.0]])}
      >>> raco_jax.gram_matrix(stacked)
      Array([[17., -5.],
             [-5.,  2.]], dtype=float32)
    """
    num_objectives(stacked)
    grams = [_leaf_gram(leaf) for leaf in jax.tree_util.tree_leaves(stacked)]
    total = grams[0]
    for gram in grams[1:]:
        total = total + gram
    # Exact symmetry: the solvers rely on it and summation order can break it by an ulp.
    return 0.5 * (total + total.T)


def combine(stacked: Any, coefficients: jax.Array) -> Any:
    r"""Combines K stacked gradients with coefficients a: :math:`d = \sum_k a_k g_k`.

    The sum is formed in float32 (or the leaf's dtype if wider) and cast back to each leaf's
    dtype; it is written as an unrolled sum over the static K so that XLA fuses it into one pass
    over the stack.

    Args:
      stacked: a pytree whose leaves have shape ``[K, *param_shape]``.
      coefficients: an array of shape ``[K]``.

    Returns:
      A pytree with the same structure whose leaves have shape ``param_shape`` and the leaves'
      dtypes.

    Example:
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> stacked = {"w": jnp.array([[1.0, -4.0], [-1.0, 1.0]])}
      >>> raco_jax.combine(stacked, jnp.array([0.2, 0.8]))["w"]
      Array([-0.6,  0. ], dtype=float32)
    """
    k = num_objectives(stacked)
    coefficients = jnp.asarray(coefficients)
    if coefficients.shape != (k,):
        raise ValueError(
            f"coefficients must have shape ({k},) to match the {k} stacked objectives, got "
            f"{coefficients.shape}."
        )

    def combine_leaf(leaf: jax.Array) -> jax.Array:
        acc_dtype = jnp.promote_types(leaf.dtype, jnp.float32)
        coeffs = coefficients.astype(acc_dtype)
        total = coeffs[0] * leaf[0].astype(acc_dtype)
        for i in range(1, k):
            total = total + coeffs[i] * leaf[i].astype(acc_dtype)
        return total.astype(leaf.dtype)

    return jax.tree_util.tree_map(combine_leaf, stacked)


class AnchorProducts(NamedTuple):
    """Inner products with the weighted anchor :math:`g_0 = \\sum_k w_k g_k`, from the vectors.

    Attributes:
      inner: ``[K]`` float32, :math:`\\langle g_k, g_0\\rangle`.
      norm2: float32 scalar, :math:`\\|g_0\\|^2`.

    In exact arithmetic ``inner = H @ w`` and ``norm2 = w @ H @ w``; computed from a float32 Gram
    matrix those lose all their digits when :math:`g_0` nearly cancels (a weighted stationary
    point: :math:`\\|g_0\\| \\ll \\sum_k w_k \\|g_k\\|`), computed from the vector
    :math:`g_0` (see :func:`weighted_anchor`) they keep float32 precision relative to
    :math:`\\|g_k\\| \\|g_0\\|`.
    """

    inner: jax.Array
    norm2: jax.Array


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x = hi + lo exactly, hi with 12 significant bits (a bit mask: immune to FMA contraction)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(0xFFFFF000)
    hi = jax.lax.bitcast_convert_type(bits, jnp.float32)
    return hi, x - hi


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """s + e == a + b exactly, s = fl(a + b) (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _compensated_weighted_sum(leaf: jax.Array, weights: jax.Array) -> jax.Array:
    """sum_k w_k leaf[k] as accurate as if computed in twice float32 precision, then rounded.

    Ogita-Rump-Oishi's Dot2: every product w_k x is split exactly into its float32 rounding and
    its error (Dekker, with 12-bit halves taken by bit masks), the running sum by TwoSum, and the
    errors summed apart. About 20 float32 operations per element and objective, one fused pass.
    """
    k = leaf.shape[0]
    weights = weights.astype(jnp.float32)
    total = jnp.zeros(leaf.shape[1:], jnp.float32)
    errors = jnp.zeros(leaf.shape[1:], jnp.float32)
    for i in range(k):
        x = leaf[i].astype(jnp.float32)
        w_hi, w_lo = _split(weights[i])
        x_hi, x_lo = _split(x)
        product = weights[i] * x
        product_error = ((w_hi * x_hi - product) + w_hi * x_lo + w_lo * x_hi) + w_lo * x_lo
        total, sum_error = _two_sum(total, product)
        errors = errors + (sum_error + product_error)
    # Huge entries (|w x| near float32's maximum) can make the error terms overflow: fall back
    # to the plain sum there rather than return NaN.
    compensated = total + errors
    return jnp.where(jnp.isfinite(compensated), compensated, total)


def weighted_anchor(stacked: Any, weights: jax.Array) -> Any:
    r"""The weighted anchor :math:`g_0 = \sum_k w_k g_k`, leaf by leaf, in compensated precision.

    Near a stationary point of the weighted loss the sum cancels (:math:`\|g_0\|` is a small
    fraction of :math:`\sum_k w_k \|g_k\|`) and a plain float32 sum keeps only the digits that
    survive the cancellation (relative error about 6e-8 divided by that fraction). This sum is
    accurate to float32 rounding of the result itself at any cancellation (it costs about 10x
    the flops of :func:`combine`; still one fused pass over the stack).

    Args:
      stacked: a pytree whose leaves have shape ``[K, *param_shape]``.
      weights: ``[K]`` weights.

    Returns:
      A pytree of float32 leaves (or the leaf dtype if wider) of shape ``param_shape``.

    Example:
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> from raco_jax.aggregation.gram import weighted_anchor
      >>> stacked = {"w": jnp.array([[1.0, 1e-8 - 1.0], [-1.0, 1.0]])}
      >>> weighted_anchor(stacked, jnp.array([0.5, 0.5]))["w"]
      Array([0., 0.], dtype=float32)
    """
    k = num_objectives(stacked)
    weights = jnp.asarray(weights)
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape ({k},), got {weights.shape}.")

    def leaf_anchor(leaf: jax.Array) -> jax.Array:
        if jnp.promote_types(leaf.dtype, jnp.float32) != jnp.float32:  # float64 leaves
            return jnp.tensordot(weights.astype(leaf.dtype), leaf, axes=1)
        return _compensated_weighted_sum(leaf, weights)

    return jax.tree_util.tree_map(leaf_anchor, stacked)


def anchor_products(stacked: Any, anchor: Any) -> AnchorProducts:
    r"""The inner products :math:`\langle g_k, g_0\rangle` and :math:`\|g_0\|^2`, leaf by leaf.

    Accumulated in float32 at ``Precision.HIGHEST``, without ravelling the tree (like
    :func:`gram_matrix`).

    Args:
      stacked: a pytree whose leaves have shape ``[K, *param_shape]``.
      anchor: the matching pytree of :math:`g_0` leaves (see :func:`weighted_anchor`).

    Returns:
      An :class:`AnchorProducts`.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.gram import anchor_products, weighted_anchor
      >>> stacked = {"w": jnp.array([[1.0, -4.0], [-1.0, 1.0]])}
      >>> anchor_products(stacked, weighted_anchor(stacked, jnp.array([0.2, 0.8])))
      AnchorProducts(inner=Array([-0.6,  0.6], dtype=float32), norm2=Array(0.36, dtype=float32))
    """
    inners, norms = [], []
    kw = {"precision": _HIGHEST, "preferred_element_type": jnp.float32}
    for leaf, g0 in zip(
        jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(anchor), strict=True
    ):
        k = leaf.shape[0]
        if leaf.ndim <= 2 or jax.device_count() == 1:
            flat, flat0 = jnp.reshape(leaf, (k, -1)), jnp.reshape(g0, (-1,))

            def by_dot(flat: jax.Array = flat, flat0: jax.Array = flat0) -> jax.Array:
                inner = jnp.tensordot(flat, flat0.astype(flat.dtype), axes=((1,), (0,)), **kw)
                return jnp.append(inner, jnp.tensordot(flat0, flat0, axes=1, **kw))

            pairs = [(i, k) for i in range(k)] + [(k, k)]
            sums = _pair_sums([*(flat[i] for i in range(k)), flat0], pairs, by_dot)
            inners.append(sums[:k])
            norms.append(sums[k])
        else:  # contract in place to keep the leaf's sharding (see _leaf_gram)
            axes = (tuple(range(1, leaf.ndim)), tuple(range(g0.ndim)))
            self_axes = (tuple(range(g0.ndim)), tuple(range(g0.ndim)))
            inners.append(jnp.tensordot(leaf, g0.astype(leaf.dtype), axes=axes, **kw))
            norms.append(jnp.tensordot(g0, g0, axes=self_axes, **kw))
    inner, norm2 = inners[0], norms[0]
    for a, b in zip(inners[1:], norms[1:], strict=True):
        inner, norm2 = inner + a, norm2 + b
    return AnchorProducts(inner.astype(jnp.float32), norm2.astype(jnp.float32))


def combine_with_anchor(
    stacked: Any, anchor: Any, anchor_scale: jax.Array, coefficients: jax.Array
) -> Any:
    r"""Forms :math:`d = t\, g_0 + \sum_k \beta_k g_k` from the anchor and the stack.

    The same update as :func:`combine` with coefficients :math:`t w + \beta`, but when
    :math:`g_0` nearly cancels and :math:`\beta` is small (RACO near a weighted stationary
    point) it keeps float32 precision relative to :math:`\|d\|`, which a plain weighted sum of
    the stack cannot.

    Args:
      stacked: a pytree whose leaves have shape ``[K, *param_shape]``.
      anchor: the matching pytree of :math:`g_0` leaves (see :func:`weighted_anchor`).
      anchor_scale: scalar t.
      coefficients: ``[K]`` residual coefficients :math:`\beta`.

    Returns:
      A pytree shaped like ``anchor`` with the stacked leaves' dtypes.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.gram import combine_with_anchor
      >>> stacked = {"w": jnp.array([[1.0, -4.0], [-1.0, 1.0]])}
      >>> combine_with_anchor(stacked, {"w": jnp.array([-0.6, 0.0])}, 2.0, jnp.array([0.0, 1.0]))
      {'w': Array([-2.2,  1. ], dtype=float32)}
    """
    k = num_objectives(stacked)

    def combine_leaf(leaf: jax.Array, g0: jax.Array) -> jax.Array:
        acc_dtype = jnp.promote_types(leaf.dtype, jnp.float32)
        coeffs = coefficients.astype(acc_dtype)
        total = jnp.asarray(anchor_scale, acc_dtype) * g0.astype(acc_dtype)
        for i in range(k):
            total = total + coeffs[i] * leaf[i].astype(acc_dtype)
        return total.astype(leaf.dtype)

    return jax.tree_util.tree_map(combine_leaf, stacked, anchor)
