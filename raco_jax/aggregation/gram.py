"""Gram matrices of stacked per-objective gradients, and their weighted combination.

A *stacked* gradient is any pytree whose leaves carry a leading axis of size K: slice k of every
leaf is the gradient of objective k. Both functions here work leaf by leaf (they never ravel the
tree), so they keep each leaf's sharding and need no more communication than K x K scalars.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

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


def _leaf_gram(leaf: jax.Array) -> jax.Array:
    k = leaf.shape[0]
    if leaf.ndim <= 2 or jax.device_count() == 1:
        # One device: the [K, -1] view is free and XLA:CPU's 2-D dot is 3-5x faster than a dot
        # with several contracting axes.
        flat = jnp.reshape(leaf, (k, -1))
        gram = jnp.einsum(
            "kp,lp->kl", flat, flat, precision=_HIGHEST, preferred_element_type=jnp.float32
        )
    else:
        # Several devices: contract the non-objective axes in place. Reshaping a leaf sharded on
        # a later axis (FSDP, tensor parallel) would make XLA all-gather it; this way only K x K
        # partial sums cross devices.
        axes = tuple(range(1, leaf.ndim))
        gram = jnp.tensordot(
            leaf, leaf, axes=(axes, axes), precision=_HIGHEST, preferred_element_type=jnp.float32
        )
    return gram.astype(jnp.float32)


def gram_matrix(stacked: Any) -> jax.Array:
    r"""Gram matrix of K stacked gradients, accumulated leaf by leaf in float32.

    .. math::
      H_{ij} = \langle g_i, g_j \rangle = \sum_{\text{leaves}} \operatorname{vec}(g_i)^\top
      \operatorname{vec}(g_j)

    Products are accumulated in float32 at ``Precision.HIGHEST`` even for bfloat16 leaves, and the
    tree is never ravelled: under a mesh each leaf's partial Gram is reduced by XLA, so the only
    extra communication is K x K scalars per leaf.

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
    for leaf, g0 in zip(
        jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(anchor), strict=True
    ):
        k = leaf.shape[0]
        if leaf.ndim <= 2 or jax.device_count() == 1:
            flat, flat0 = jnp.reshape(leaf, (k, -1)), jnp.reshape(g0, (-1,))
            axes: tuple[tuple[int, ...], tuple[int, ...]] = ((1,), (0,))
            self_axes: tuple[tuple[int, ...], tuple[int, ...]] = ((0,), (0,))
        else:  # contract in place to keep the leaf's sharding (see _leaf_gram)
            flat, flat0 = leaf, g0
            axes = (tuple(range(1, leaf.ndim)), tuple(range(g0.ndim)))
            self_axes = (tuple(range(g0.ndim)), tuple(range(g0.ndim)))
        kw = {"precision": _HIGHEST, "preferred_element_type": jnp.float32}
        inners.append(jnp.tensordot(flat, flat0.astype(flat.dtype), axes=axes, **kw))
        norms.append(jnp.tensordot(flat0, flat0, axes=self_axes, **kw))
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
