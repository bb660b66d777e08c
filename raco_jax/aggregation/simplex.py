r"""Exact on-device solvers for the small convex problems behind gradient aggregation.

Every problem here lives in the K-dimensional space of objective coefficients and is posed in
terms of the K x K Gram matrix ``H`` of the stacked gradients only:

* :func:`cagrad_dual`: the CAGrad dual over the probability simplex,
  :math:`\min_{p \in \Delta} b^\top p + s \sqrt{p^\top H p}` with :math:`b = H w`;
* :func:`min_norm_point`: the minimum-norm point of the convex hull (MGDA),
  :math:`\min_{p \in \Delta} p^\top H p`;
* :func:`dual_cone_projection`: the projection of :math:`g_0 = \sum_k w_k g_k` onto the dual cone
  :math:`\{d : \langle g_k, d \rangle \ge 0\ \forall k\}`, i.e.
  :math:`\min_{\mu \ge 0} \tfrac12 \mu^\top H \mu + b^\top \mu`.

All three are solved exactly by *support enumeration*: for every non-empty subset S of the
objectives (2^K - 1 of them, a static set) the KKT system restricted to S is solved in closed form
(with a pseudo-inverse from one batched ``eigh``), infeasible candidates are discarded, and the
objective is evaluated at every feasible candidate; the smallest value wins. The optimum has some
support, so it is always among the candidates. Singular faces (linearly dependent gradients,
zero gradients, 0 inside the hull) contribute their null-space point. For K = 2 the CAGrad dual
also has the paper's closed form (:func:`cagrad_dual_two`). For the CAGrad dual a primal
active-set method (:func:`cagrad_dual_active_set`: a few Cholesky solves of one face, with a KKT
certificate) runs first, and the enumeration only where its answer is not certified.

Everything is pure ``jax.numpy``: it runs under ``jit`` and ``vmap`` with no host callback and no
Python branching on traced values. Cost is O(2^K K^3) flops, independent of the parameter count;
K up to 10 is practical.

Numerics: the Gram matrix is first normalised by its trace and then by its diagonal (a
correlation matrix), so the solvers are invariant to the scale of the gradients (1e-10 or 1e10)
and to per-objective scales.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CagradDualSolution",
    "FaceSystems",
    "anchored_value",
    "cagrad_dual",
    "cagrad_dual_active_set",
    "cagrad_dual_anchored",
    "cagrad_dual_enumerate",
    "cagrad_dual_solution",
    "cagrad_dual_two",
    "cagrad_dual_two_anchored",
    "combination_norm2",
    "dual_cone_projection",
    "face_systems",
    "min_norm_point",
    "normalize_gram",
    "support_masks",
]

# Relative eigenvalue threshold (of the unit-diagonal Gram) below which a face is singular.
_SINGULAR_TOL = 1e-6
# Supports whose weighted partial sum g_S has ||g_S||^2 below this fraction of
# (sum_{k in S} w_k ||g_k||)^2 are solved in the anchored basis.
_ANCHOR_RATIO2 = 1e-2
# Tolerated negative coordinate before a candidate counts as infeasible (then clamped to 0).
_FEASIBILITY_TOL = 1e-5
# Active-set path: relative KKT tolerance of the reduced gradient (entering threshold and
# certificate, scaled per coordinate by its rounding bound), and the smallest squared Cholesky
# pivot of a unit-diagonal face.
_ACTIVE_SET_TOL = 1e-6
_ACTIVE_SET_PIVOT = 1e-6
# Below this K the enumeration (2^K - 1 <= 7 faces) is as fast as the active set.
_ACTIVE_SET_MIN_K = 4


@functools.cache
def support_masks(k: int) -> np.ndarray:
    """All non-empty subsets of ``range(k)`` as a float32 0/1 matrix of shape ``[2**k - 1, k]``.

    Example:
      >>> from raco_jax.aggregation.simplex import support_masks
      >>> support_masks(2).tolist()
      [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    codes = np.arange(1, 2**k, dtype=np.int64)
    bits = (codes[:, None] >> np.arange(k)[None, :]) & 1
    return bits.astype(np.float32)


def normalize_gram(gram: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Divides a Gram matrix by its trace (1 where the trace is 0).

    Returns:
      ``(normalised_gram, trace)``; every solver here is invariant to this scale.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import normalize_gram
      >>> normalize_gram(jnp.array([[3.0, 1.0], [1.0, 1.0]]))[0]
      Array([[0.75, 0.25],
             [0.25, 0.25]], dtype=float32)
    """
    gram = jnp.asarray(gram, jnp.float32)
    trace = jnp.trace(gram)
    safe_trace = jnp.where(trace > 0, trace, 1.0)
    return gram / safe_trace, trace


class FaceSystems(NamedTuple):
    """Per-support eigendecompositions of the unit-diagonal Gram matrix.

    Attributes:
      masks: ``[M, K]`` 0/1 supports (M = 2^K - 1).
      scale: ``[K]`` inverse square roots of the Gram diagonal (1 for zero gradients), so that
        ``p = scale * q`` maps the unit-diagonal coordinates q back to coefficients p.
      corr: ``[K, K]`` the unit-diagonal Gram ``diag(scale) H diag(scale)``.
      eigenvalues: ``[M, K]``, eigenvalues of each masked matrix (1 off the support).
      eigenvectors: ``[M, K, K]``, the matching eigenvectors (columns).
    """

    masks: jax.Array
    scale: jax.Array
    corr: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array


def face_systems(gram: jax.Array) -> FaceSystems:
    """Batched eigendecompositions of the Gram matrix restricted to every support.

    Args:
      gram: a trace-normalised ``[K, K]`` Gram matrix (see :func:`normalize_gram`).

    Returns:
      A :class:`FaceSystems` shared by the enumeration solvers.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import face_systems
      >>> face_systems(jnp.eye(3) / 3).eigenvalues.shape
      (7, 3)
    """
    k = gram.shape[-1]
    diag = jnp.diagonal(gram)
    alive = diag > 1e-12 * jnp.maximum(jnp.max(diag), 1e-30)
    scale = jnp.where(alive, jax.lax.rsqrt(jnp.where(alive, diag, 1.0)), 1.0)
    corr = gram * scale[:, None] * scale[None, :]
    masks = jnp.asarray(support_masks(k))
    outer = masks[:, :, None] * masks[:, None, :]
    masked = corr[None] * outer + jax.vmap(jnp.diag)(1.0 - masks)
    eigenvalues, eigenvectors = jnp.linalg.eigh(masked)
    return FaceSystems(masks, scale, corr, eigenvalues, eigenvectors)


def _pinv_apply(faces: FaceSystems, vectors: jax.Array) -> jax.Array:
    """Applies each face's pseudo-inverse to vectors ``[M, K, R]`` restricted to the face."""
    evals = faces.eigenvalues
    inv = jnp.where(evals > _SINGULAR_TOL, 1.0 / jnp.where(evals > _SINGULAR_TOL, evals, 1.0), 0.0)
    vectors = vectors * faces.masks[:, :, None]
    coords = jnp.einsum("mki,mkr->mir", faces.eigenvectors, vectors)
    solved = jnp.einsum("mki,mi,mir->mkr", faces.eigenvectors, inv, coords)
    return solved * faces.masks[:, :, None]


def _is_regular(faces: FaceSystems) -> jax.Array:
    return jnp.min(faces.eigenvalues, axis=-1) > _SINGULAR_TOL


def _null_candidates(faces: FaceSystems) -> tuple[jax.Array, jax.Array]:
    """Points of each singular face's affine hull whose gradient combination is 0.

    Returns:
      ``(p, valid)`` of shapes ``[M, K]`` and ``[M]``; p sums to 1.
    """
    z = faces.eigenvectors[:, :, 0] * faces.masks  # eigenvector of the smallest eigenvalue
    p_dir = z * faces.scale[None, :]
    total = jnp.sum(p_dir, axis=-1)
    size = jnp.linalg.norm(faces.scale[None, :] * faces.masks, axis=-1)
    ok = (~_is_regular(faces)) & (jnp.abs(total) > 1e-3 * size)
    p = p_dir / jnp.where(ok, total, 1.0)[:, None]
    return p, ok


def _feasible(p: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Discards candidates with clearly negative coordinates, clamps the rest onto the simplex."""
    finite = jnp.all(jnp.isfinite(p), axis=-1)
    valid = valid & finite & jnp.all(p >= -_FEASIBILITY_TOL, axis=-1)
    p = jnp.where(valid[:, None], jnp.maximum(p, 0.0), 0.0)
    total = jnp.sum(p, axis=-1, keepdims=True)
    p = p / jnp.where(total > 0, total, 1.0)
    return p, valid & (total[:, 0] > 0)


def _pick_best(p: jax.Array, values: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    values = jnp.where(valid, values, jnp.inf)
    best = jnp.argmin(values)
    return p[best], values[best]


def cagrad_value(gram: jax.Array, weights: jax.Array, s: jax.Array, p: jax.Array) -> jax.Array:
    r"""The CAGrad dual objective :math:`\Phi(p) = p^\top H w + s \sqrt{p^\top H p}` (p may be batched).

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_value
      >>> float(cagrad_value(jnp.eye(2), jnp.array([0.5, 0.5]), 0.0, jnp.array([1.0, 0.0])))
      0.5
    """
    b = gram @ weights
    quad = jnp.einsum("...i,ij,...j->...", p, gram, p)
    return p @ b + s * jnp.sqrt(jnp.maximum(quad, 0.0))


class CagradDualSolution(NamedTuple):
    r"""The CAGrad dual solution, with the offset from the anchor weights kept exactly.

    Attributes:
      p: ``[K]`` the minimiser p* on the simplex.
      offset: ``[K]`` ``p* - w`` computed directly (not as a difference of two rounded vectors),
        so that it keeps its relative precision when p* is within rounding of w (near a
        stationary point of the weighted loss).
      value: the dual value :math:`\Phi(p^*)`.
    """

    p: jax.Array
    offset: jax.Array
    value: jax.Array


def _anchor_quantities(
    gram: jax.Array,
    weights: jax.Array,
    anchor_inner: jax.Array | None,
    anchor_norm2: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    if (anchor_inner is None) != (anchor_norm2 is None):
        raise ValueError("anchor_inner and anchor_norm2 must be given together.")
    if anchor_inner is None:
        return gram @ weights, jnp.maximum(weights @ gram @ weights, 0.0)
    return jnp.asarray(anchor_inner, gram.dtype), jnp.asarray(anchor_norm2, gram.dtype)


def combination_norm2(
    gram: jax.Array,
    weights: jax.Array,
    anchor_inner: jax.Array,
    anchor_norm2: jax.Array,
    x: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    r""":math:`\|\sum_k (w + x)_k g_k\|^2` and its rounding scale, the better of two forms.

    Around the anchor, :math:`n_0 + 2 b^\top x + x^\top H x` rounds relative to
    :math:`(\|g_0\| + \sum_k |x_k| \|g_k\|)^2` (good when :math:`g_0` nearly cancels and x is
    small); directly, :math:`p^\top H p` rounds relative to :math:`(\sum_k |p_k| \|g_k\|)^2`
    (good when one large gradient dominates :math:`g_0`). The form with the smaller scale is
    returned, with that scale (x may be batched).

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import combination_norm2
      >>> gram, w = jnp.eye(2), jnp.array([0.5, 0.5])
      >>> value, _ = combination_norm2(gram, w, gram @ w, w @ gram @ w, jnp.array([0.5, -0.5]))
      >>> float(value)
      1.0
    """
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
    p = weights + x
    anchored = anchor_norm2 + 2.0 * (x @ anchor_inner) + jnp.einsum("...i,ij,...j->...", x, gram, x)
    direct = jnp.einsum("...i,ij,...j->...", p, gram, p)
    scale_anchored = (jnp.sqrt(jnp.maximum(anchor_norm2, 0.0)) + jnp.abs(x) @ norms) ** 2
    scale_direct = (jnp.abs(p) @ norms) ** 2
    use_anchored = scale_anchored < scale_direct
    value = jnp.where(use_anchored, anchored, direct)
    return jnp.maximum(value, 0.0), jnp.where(use_anchored, scale_anchored, scale_direct)


def anchored_value(
    gram: jax.Array,
    weights: jax.Array,
    anchor_inner: jax.Array,
    anchor_norm2: jax.Array,
    s: jax.Array,
    x: jax.Array,
) -> jax.Array:
    r"""The dual objective at :math:`p = w + x` written around the anchor (x may be batched).

    With :math:`b_k = \langle g_k, g_0\rangle` and :math:`n_0 = \|g_0\|^2`:
    :math:`\Phi(w + x) = n_0 + b^\top x + s\|G_{w + x}\|` (the norm from
    :func:`combination_norm2`). Equal to :func:`cagrad_value` in exact arithmetic, but it keeps
    its relative precision when :math:`g_0` nearly cancels, given exact anchor products.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import anchored_value
      >>> gram, w = jnp.eye(2), jnp.array([0.5, 0.5])
      >>> float(anchored_value(gram, w, gram @ w, w @ gram @ w, 0.0, jnp.array([0.5, -0.5])))
      0.5
    """
    norm2, _ = combination_norm2(gram, weights, anchor_inner, anchor_norm2, x)
    return anchor_norm2 + x @ anchor_inner + s * jnp.sqrt(norm2)


def _feasible_offsets(
    x: jax.Array, weights: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Like :func:`_feasible` for candidates p = w + x, keeping the offsets x precise."""
    finite = jnp.all(jnp.isfinite(x), axis=-1)
    valid = valid & finite & jnp.all(weights + x >= -_FEASIBILITY_TOL, axis=-1)
    clamped = jnp.where(valid[:, None], jnp.maximum(x, -weights), 0.0)
    # Renormalise by what clamping added only: exact candidates (vertices) stay exact.
    excess = jnp.sum(clamped - jnp.where(valid[:, None], x, 0.0), axis=-1, keepdims=True)
    x = (clamped - excess * weights) / (1.0 + excess)
    return x, valid


class _AnchoredFaces(NamedTuple):
    faces: FaceSystems  # scale is per support, [M, K]
    anchored: jax.Array  # [M] bool: the support contains j and uses the anchored basis
    onehot: jax.Array  # [M, K] one-hot of each support's pivot j
    weights_out: jax.Array  # [M, K] w off the support
    rhs_ones: jax.Array  # [M, K] T^{-1} 1_S
    rhs_inner: jax.Array  # [M, K] T^{-1} b_S


def _anchored_faces(
    gram: jax.Array, weights: jax.Array, anchor_inner: jax.Array, anchor_norm2: jax.Array
) -> _AnchoredFaces:
    """Face systems where every support whose weighted partial sum cancels is anchored.

    On such a support S (||g_S|| < 0.1 sum_{k in S} w_k ||g_k||, with j the support's largest
    term w_k ||g_k||) the vector g_j is replaced by the partial anchor
    g_S = sum_{k in S} w_k g_k (an invertible change of basis, T^{-1} = [w_S; e_k, k != j]).
    Its products <g_k, g_S> = b_k - (H w_out)_k and ||g_S||^2 come from the anchor products
    (or directly from H, whichever rounds less, see :func:`combination_norm2`), so the Gram block
    stays well conditioned when g_S nearly cancels (near a weighted stationary point, also on
    supports that drop objectives of tiny weight), where H_S is singular to float32 precision.
    """
    k = gram.shape[-1]
    masks = jnp.asarray(support_masks(k))
    w_out = weights[None] * (1.0 - masks)
    w_in = weights[None] * masks
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
    terms = w_in * norms[None]  # w_k ||g_k|| on the support
    onehot = jax.nn.one_hot(jnp.argmax(terms, axis=-1), k, dtype=gram.dtype)  # [M, K]
    others = 1.0 - onehot
    partial_norm2, _ = combination_norm2(gram, weights, anchor_inner, anchor_norm2, -w_out)
    # Anchor the supports whose partial sum cancels (where H_S loses it); elsewhere H_S is exact
    # enough and the change of basis would only cost conditioning.
    upper = jnp.sum(terms, axis=-1) ** 2
    anchored = (partial_norm2 < _ANCHOR_RATIO2 * upper) & (upper > 0)
    use_anchor = (jnp.sqrt(jnp.maximum(anchor_norm2, 0.0)) + w_out @ norms) < w_in @ norms
    partial_inner = jnp.where(
        use_anchor[:, None], anchor_inner[None] - w_out @ gram, w_in @ gram
    )  # [M, K]: <g_k, g_S>
    b_off = partial_inner * others
    anchored_grams = (
        gram[None] * (others[:, :, None] * others[:, None, :])
        + onehot[:, :, None] * b_off[:, None, :]
        + b_off[:, :, None] * onehot[:, None, :]
        + partial_norm2[:, None, None] * (onehot[:, :, None] * onehot[:, None, :])
    )
    mats = jnp.where(anchored[:, None, None], anchored_grams, gram[None])
    diag = jnp.diagonal(mats, axis1=-2, axis2=-1)
    max_diag = jnp.maximum(jnp.max(jnp.diagonal(gram)), 1e-30)
    # Zero gradients get scale 1 (their face is singular); the anchor slot keeps any norm > 0.
    threshold = jnp.where(anchored[:, None] & (onehot > 0), 0.0, 1e-12 * max_diag)
    alive = diag > threshold
    scale = jnp.where(alive, jax.lax.rsqrt(jnp.where(alive, diag, 1.0)), 1.0)
    corr = mats * scale[:, :, None] * scale[:, None, :]
    outer = masks[:, :, None] * masks[:, None, :]
    masked = corr * outer + jax.vmap(jnp.diag)(1.0 - masks)
    eigenvalues, eigenvectors = jnp.linalg.eigh(masked)
    faces = FaceSystems(masks, scale, corr, eigenvalues, eigenvectors)
    sigma_in = jnp.sum(w_in, axis=-1)
    inner_in = anchor_norm2 - w_out @ anchor_inner  # <g_S, g_0>
    slot = anchored[:, None] & (onehot > 0)
    rhs_ones = jnp.where(slot, sigma_in[:, None], 1.0)
    rhs_inner = jnp.where(slot, inner_in[:, None], anchor_inner[None])
    return _AnchoredFaces(faces, anchored, onehot, w_out, rhs_ones, rhs_inner)


def _cagrad_dual_enumeration(
    gram: jax.Array, weights: jax.Array, s: jax.Array, b: jax.Array, n0: jax.Array
) -> CagradDualSolution:
    """The support enumeration of :func:`cagrad_dual_anchored` (b, n0: the anchor products)."""
    k = gram.shape[-1]
    af = _anchored_faces(gram, weights, b, n0)
    faces, anchored, onehot = af.faces, af.anchored, af.onehot
    scale = faces.scale  # [M, K]
    masks = faces.masks
    rhs_plain = jnp.stack([scale, b[None, :] * scale], axis=-1)
    rhs_anchor = jnp.stack([af.rhs_ones * scale, af.rhs_inner * scale], axis=-1)
    rhs = jnp.where(anchored[:, None, None], rhs_anchor, rhs_plain)
    solved = _pinv_apply(faces, rhs) * scale[:, :, None]  # [M, K, 2]: h and u (own basis)
    z, v = solved[..., 0], solved[..., 1]
    f_ones = jnp.where(anchored[:, None], af.rhs_ones, 1.0) * masks
    f_inner = jnp.where(anchored[:, None], af.rhs_inner, b[None]) * masks
    alpha = jnp.sum(f_ones * z, axis=-1)
    beta = jnp.sum(f_ones * v, axis=-1)
    gamma = jnp.sum(f_inner * v, axis=-1)
    disc = beta**2 - alpha * (gamma - s**2)
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    safe_alpha = jnp.where(alpha > 0, alpha, 1.0)
    safe_root = jnp.where(root > 0, root, 1.0)
    lam = (beta + root) / safe_alpha
    x_plain = (lam[:, None] * z - v) / safe_root[:, None] - weights[None]
    # Anchored basis: p_S = w_S (lam z_j - v_j)/root + (lam z_rest - v_rest)/root, and with
    # lam alpha = beta + root the w_S coefficient minus 1 is free of cancellation.
    w_in = weights[None] * masks
    out_total = jnp.sum(af.weights_out, axis=-1)
    z_j, v_j = jnp.sum(z * onehot, -1), jnp.sum(v * onehot, -1)
    z_rest, v_rest = z * (1.0 - onehot), v * (1.0 - onehot)
    coef = out_total * (lam * z_j - v_j) - lam * jnp.sum(z_rest, -1) + jnp.sum(v_rest, -1)
    x_anchor = (w_in * coef[:, None] + lam[:, None] * z_rest - v_rest) / safe_root[
        :, None
    ] - af.weights_out
    x_socp = jnp.where(anchored[:, None], x_anchor, x_plain)
    socp_ok = _is_regular(faces) & (alpha > 0) & (disc > 1e-12 * jnp.maximum(beta**2, 1e-30))
    socp_ok = socp_ok & (s > 0)

    # Null-space points of singular supports, in the support's own basis.
    y = faces.eigenvectors[:, :, 0] * masks * scale  # coefficients on the basis vectors
    size = jnp.linalg.norm(scale * masks, axis=-1)
    y_j = jnp.sum(y * onehot, -1)
    y_rest = y * (1.0 - onehot)
    total = jnp.where(anchored, (1.0 - out_total) * y_j + jnp.sum(y_rest, -1), jnp.sum(y, -1))
    null_ok = (~_is_regular(faces)) & (jnp.abs(total) > 1e-3 * size)
    safe_total = jnp.where(null_ok, total, 1.0)[:, None]
    x_null_anchor = (
        w_in * (out_total * y_j - jnp.sum(y_rest, -1))[:, None] + y_rest
    ) / safe_total - af.weights_out
    x_null = jnp.where(anchored[:, None], x_null_anchor, y / safe_total - weights[None])

    vertices = jnp.eye(k, dtype=gram.dtype) - weights[None]
    candidates = jnp.concatenate([vertices, x_socp, x_null], axis=0)
    valid = jnp.concatenate([jnp.ones((k,), bool), socp_ok, null_ok], axis=0)
    candidates, valid = _feasible_offsets(candidates, weights, valid)
    values = anchored_value(gram, weights, b, n0, s, candidates)
    x, value = _pick_best(candidates, values, valid)
    return CagradDualSolution(weights + x, x, value)


class _ActiveSetState(NamedTuple):
    iteration: jax.Array  # int32 scalar
    mask: jax.Array  # [K] bool, the current support S
    p: jax.Array  # [K] feasible point, zero off S
    done: jax.Array  # bool: p is the minimiser on S's face and no coordinate should enter
    failed: jax.Array  # bool: a face was singular, a step unbounded or a value non-finite


def _active_set_face(
    corr: jax.Array, scale: jax.Array, b: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(h, u, regular)``: :math:`H_S^{-1} 1` and :math:`H_S^{-1} b` by one Cholesky of the
    unit-diagonal face (identity off S), with ``regular`` iff every pivot exceeds the tolerance."""
    m = mask.astype(corr.dtype)
    mat = corr * (m[:, None] * m[None, :]) + jnp.diag(1.0 - m)
    chol = jnp.linalg.cholesky(mat)
    rhs = jnp.stack([scale * m, scale * b * m], axis=-1)
    y = jax.lax.linalg.triangular_solve(chol, rhs, left_side=True, lower=True)
    z = jax.lax.linalg.triangular_solve(chol, y, left_side=True, lower=True, transpose_a=True)
    z = z * (scale * m)[:, None]
    pivots = jnp.diagonal(chol)
    regular = jnp.all(pivots * pivots > _ACTIVE_SET_PIVOT) & jnp.all(jnp.isfinite(z))
    return z[:, 0], z[:, 1], regular


def cagrad_dual_active_set(
    gram: jax.Array,
    weights: jax.Array,
    s: jax.Array,
    anchor_inner: jax.Array | None = None,
    anchor_norm2: jax.Array | None = None,
    max_iterations: int | None = None,
) -> tuple[CagradDualSolution, jax.Array]:
    r"""Solves the CAGrad dual by a primal active-set method and certifies the answer.

    A primal active-set method for :math:`\min_{p \in \Delta} \Phi(p) = b^\top p +
    s\sqrt{p^\top H p}` (convex) that keeps a feasible point p with support S. It starts at
    the best vertex (:math:`\arg\min_k b_k + s\sqrt{H_{kk}}`); every iteration solves the
    stationarity system of S's face in closed form, as in :func:`cagrad_dual_anchored`
    (:math:`h = H_S^{-1} 1`, :math:`u = H_S^{-1} b`, :math:`\alpha = 1^\top h`,
    :math:`\beta = 1^\top u`, :math:`\gamma = b^\top u`,
    :math:`\delta = \beta^2 - \alpha(\gamma - s^2)`; one Cholesky of the unit-diagonal
    face), then

    * if :math:`\delta > 0` and the face minimiser :math:`q = (\lambda h - u)/\sqrt\delta`,
      :math:`\lambda = (\beta + \sqrt\delta)/\alpha`, is feasible: p = q, and the coordinate
      with the most negative reduced gradient enters S, where the gradient is
      :math:`\nabla\Phi(p) = b + s H p / \sqrt{p^\top H p}` and the reduced gradient
      :math:`\nabla_k\Phi(p) - p^\top\nabla\Phi(p)`; if none is below :math:`-\epsilon`, p is
      optimal;
    * if q is infeasible: p moves toward q up to the first coordinate that reaches 0, which
      leaves S;
    * if :math:`\delta \le 0` (:math:`\Phi` is unbounded below on the face's affine hull):
      p moves along the descent ray :math:`\beta h - \alpha u` (its slope
      :math:`\sqrt{\alpha\gamma - \beta^2}\,(s\sqrt\alpha - \sqrt{\alpha\gamma - \beta^2})`
      is negative exactly when :math:`\delta < 0`) up to the first coordinate that reaches 0.

    :math:`\Phi` decreases at every step, so the method is finite in exact arithmetic; it runs in a
    ``lax.while_loop`` of at most ``max_iterations`` (default 3K) steps of O(K^3) flops.

    The answer is **certified** when the loop converged without a singular face (every Cholesky
    pivot of the unit-diagonal face above 1e-6) or an unbounded step, s > 0, and the KKT
    conditions on the simplex hold afresh from H: the reduced gradient
    :math:`r_k = \nabla_k\Phi(p) - p^\top\nabla\Phi(p)` is 0 on S and non-negative off S to
    within :math:`\epsilon_k = 10^{-6} (\|g_k\| + \sum_j p_j \|g_j\|)(\|g_0\|
    + s \sum_j p_j \|g_j\| / \|G_p\|)`, a bound on its rounding per coordinate (so objectives
    with tiny gradients, and a short :math:`g_0`, are resolved too); by convexity
    :math:`\Phi(p) - \Phi(p^*) \le -\min_k r_k`. Also :math:`G_p = \sum_k p_k g_k` must not
    cancel (:math:`\|G_p\|^2` at least 1e-2 of its rounding scale, see
    :func:`combination_norm2`), and the final support's
    weighted partial sum :math:`g_S = \sum_{k\in S} w_k g_k` does not cancel (the supports
    that :func:`cagrad_dual_anchored`'s enumeration solves in the anchored basis). A certified
    answer is the enumeration's candidate of the same support; an uncertified one must be
    discarded (see :func:`cagrad_dual_anchored`, which then falls back to the enumeration).

    Args:
      gram: trace-normalised ``[K, K]`` Gram matrix.
      weights: ``[K]`` anchor weights w.
      s: the correction radius ``c * ||g_0||`` in the same units.
      anchor_inner, anchor_norm2: exact anchor products (see :func:`cagrad_dual_anchored`).
      max_iterations: the iteration cap (static; default ``3 * K``).

    Returns:
      ``(solution, certified)``: a :class:`CagradDualSolution` and a boolean scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_dual_active_set
      >>> gram = jnp.array([[17.0, -5.0], [-5.0, 2.0]]) / 19.0
      >>> w = jnp.array([0.2, 0.8])
      >>> sol, certified = cagrad_dual_active_set(gram, w, 0.5 * jnp.sqrt(w @ gram @ w))
      >>> [round(float(x), 4) for x in sol.p], bool(certified)
      ([0.3561, 0.6439], True)
    """
    b, n0 = _anchor_quantities(gram, weights, anchor_inner, anchor_norm2)
    return _active_set(gram, weights, jnp.asarray(s, gram.dtype), b, n0, max_iterations)


def _active_set(
    gram: jax.Array,
    weights: jax.Array,
    s: jax.Array,
    b: jax.Array,
    n0: jax.Array,
    max_iterations: int | None,
) -> tuple[CagradDualSolution, jax.Array]:
    k = gram.shape[-1]
    dtype = gram.dtype
    max_iterations = 3 * k if max_iterations is None else int(max_iterations)
    diag = jnp.diagonal(gram)
    unit = jnp.maximum(jnp.max(diag), 1e-30)
    alive = diag > 1e-12 * unit
    scale = jnp.where(alive, jax.lax.rsqrt(jnp.where(alive, diag, 1.0)), 1.0)
    corr = gram * scale[:, None] * scale[None, :]
    norms = jnp.sqrt(jnp.maximum(diag, 0.0))
    eye = jnp.eye(k, dtype=dtype)

    def reduced_gradient(p: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(r, tol, ok)``: r = grad Phi(p) - p.grad Phi(p) and its rounding tolerance."""
        hp = gram @ p
        # ||G_p||^2 in the better-rounded form; a G_p that cancels (as near a weighted
        # stationary point, p ~ w) is not resolved by H: not certified (the enumeration's
        # anchored faces handle it).
        norm2, rounding = combination_norm2(gram, weights, b, n0, p - weights)
        ok = norm2 > _ANCHOR_RATIO2 * rounding
        inv_norm = jax.lax.rsqrt(jnp.where(ok, norm2, 1.0))
        g = b + s * hp * inv_norm
        # grad_k = <g_k, g_0> + s <g_k, G_p>/||G_p||: b is given, H p rounds like
        # ||g_k|| (p.norms), so grad_k rounds within ||g_k|| * radius and p.grad within
        # (p.norms) * radius: the tolerance scales with both, per coordinate.
        p_norms = p @ norms
        radius = jnp.sqrt(jnp.maximum(n0, 0.0)) + s * p_norms * inv_norm
        tol = _ACTIVE_SET_TOL * (norms + p_norms) * radius
        r = g - p @ g
        return r, tol, ok & jnp.all(jnp.isfinite(r))

    def step(state: _ActiveSetState) -> _ActiveSetState:
        mask, p = state.mask, state.p
        h, u, regular = _active_set_face(corr, scale, b, mask)
        alpha, beta, gamma = jnp.sum(h), jnp.sum(u), b @ u
        disc = beta**2 - alpha * (gamma - s**2)
        bounded = (alpha > 0) & (disc > 1e-12 * jnp.maximum(beta**2, 1e-30))
        root = jnp.sqrt(jnp.where(bounded, disc, 1.0))
        lam = (beta + root) / jnp.where(alpha > 0, alpha, 1.0)
        q = jnp.where(mask, (lam * h - u) / root, 0.0)
        q_total = jnp.sum(q)
        q = q / jnp.where(q_total > 0, q_total, 1.0)
        optimal_face = bounded & jnp.all(q >= 0) & (q_total > 0)
        # The face minimiser is feasible: p = q, and the most violated coordinate enters.
        r, tol, g_ok = reduced_gradient(q)
        enter = jnp.argmin(jnp.where(mask, jnp.inf, r / (tol + 1e-30)))
        adds = ~mask[enter] & (r[enter] < -tol[enter])
        # Otherwise: a ratio test toward q (bounded face) or along the descent ray (unbounded).
        direction = jnp.where(bounded, q - p, jnp.where(mask, beta * h - alpha * u, 0.0))
        shrinking = mask & (direction < 0)
        ratios = jnp.where(shrinking, p / jnp.where(shrinking, -direction, 1.0), jnp.inf)
        leave = jnp.argmin(ratios)
        t = jnp.minimum(ratios[leave], jnp.where(bounded, 1.0, jnp.inf))
        moved = jnp.where(eye[leave] > 0, 0.0, jnp.maximum(p + t * direction, 0.0))
        moved = moved / jnp.maximum(jnp.sum(moved), 1e-30)
        step_ok = jnp.isfinite(t) & jnp.all(jnp.isfinite(moved))
        new_mask = jnp.where(
            optimal_face, mask | (adds & (eye[enter] > 0)), mask & (eye[leave] <= 0)
        )
        failed = ~regular | jnp.where(optimal_face, ~g_ok, ~step_ok)
        return _ActiveSetState(
            state.iteration + 1,
            new_mask,
            jnp.where(optimal_face, q, moved),
            optimal_face & ~adds,
            state.failed | failed,
        )

    def running(state: _ActiveSetState) -> jax.Array:
        return (state.iteration < max_iterations) & ~state.done & ~state.failed

    start = jnp.argmin(b + s * jnp.sqrt(jnp.maximum(diag, 0.0)))
    init = _ActiveSetState(
        jnp.zeros((), jnp.int32), eye[start] > 0, eye[start], jnp.zeros((), bool), ~(s > 0)
    )
    final = jax.lax.while_loop(running, step, init)
    p = final.p
    # KKT on the simplex, afresh from H: r = 0 on S and r >= 0 off S, to rounding; then
    # Phi(p) - Phi(p*) <= -min_k r_k (convexity).
    r, tol, g_ok = reduced_gradient(p)
    kkt = jnp.all(jnp.where(final.mask, jnp.abs(r) <= tol, r >= -tol))
    # The enumeration solves supports whose weighted partial sum cancels in the anchored basis.
    w_out = jnp.where(final.mask, 0.0, weights)
    partial_norm2, _ = combination_norm2(gram, weights, b, n0, -w_out)
    upper = (jnp.where(final.mask, weights, 0.0) @ norms) ** 2
    anchored = (partial_norm2 < _ANCHOR_RATIO2 * upper) & (upper > 0)
    x = p - weights
    value = anchored_value(gram, weights, b, n0, s, x)
    certified = (
        final.done
        & ~final.failed
        & g_ok
        & kkt
        & ~anchored
        & jnp.isfinite(value)
        & jnp.all(jnp.isfinite(x))
    )
    return CagradDualSolution(p, x, value), certified


def cagrad_dual_anchored(
    gram: jax.Array,
    weights: jax.Array,
    s: jax.Array,
    anchor_inner: jax.Array | None = None,
    anchor_norm2: jax.Array | None = None,
    *,
    solver: str = "auto",
) -> CagradDualSolution:
    r"""Solves the CAGrad dual exactly, around the anchor :math:`g_0`.

    ``solver="auto"`` (the default) with K >= 4 first runs the active-set method of
    :func:`cagrad_dual_active_set` (a few Cholesky solves of one K x K face) and keeps its
    answer when it certifies it; otherwise (singular or nearly singular faces, unbounded steps,
    a cancelling anchored support, zero gradients in the support, s = 0, no convergence) it
    falls back to the support enumeration below through ``jax.lax.cond``, so a single call pays
    for the enumeration only when it is needed. Under ``vmap`` that ``cond`` becomes a select:
    both paths run for the whole batch (the batched active set adds a few percent to the
    enumeration's cost). The ``"auto"`` path is not reverse-differentiable (a ``while_loop``);
    ``solver="enumerate"``, and K <= 3 (at most 7 faces, as fast as the active set), always
    enumerate.

    Support enumeration: every support S gives a candidate. On a regular S, stationarity of
    :math:`b^\top p + s\sqrt{p^\top H p}` on the affine hull gives, with
    :math:`h = H_S^{-1} 1`, :math:`u = H_S^{-1} b`, :math:`\alpha = 1^\top h`,
    :math:`\beta = 1^\top u`, :math:`\gamma = b^\top u`, the multiplier
    :math:`\lambda = (\beta + \sqrt{\beta^2 - \alpha(\gamma - s^2)})/\alpha` and
    :math:`p = (\lambda h - u)/\sqrt{\beta^2 - \alpha(\gamma - s^2)}`. When the partial
    anchor :math:`g_S = \sum_{k \in S} w_k g_k` cancels (:math:`\|g_S\| < 0.1 \sum_{k\in S}
    w_k \|g_k\|`), h and u are computed in the basis :math:`[g_S, g_k (k \ne j)]` (j the
    support's largest term :math:`w_k\|g_k\|`), whose Gram block holds products taken
    from the anchor and stays well conditioned when :math:`g_S` nearly cancels (a weighted
    stationary point); the offset :math:`p - w` is then formed without cancellation. Singular
    supports give their null-space point, vertices are always candidates; every candidate is
    scored by :func:`anchored_value`.

    Args:
      gram: trace-normalised ``[K, K]`` Gram matrix.
      weights: ``[K]`` anchor weights w.
      s: the correction radius ``c * ||g_0||`` in the same units.
      anchor_inner: ``[K]`` :math:`\langle g_k, g_0\rangle` in the same units, computed from
        the vectors (None: ``gram @ weights``, which loses its digits when g_0 cancels).
      anchor_norm2: :math:`\|g_0\|^2` likewise (None: ``w^T H w``).
      solver: ``"auto"`` (certified active set, enumeration as the fallback) or
        ``"enumerate"`` (static).

    Returns:
      A :class:`CagradDualSolution` ``(p, offset, value)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_dual_anchored
      >>> gram = jnp.array([[17.0, -5.0], [-5.0, 2.0]]) / 19.0
      >>> w = jnp.array([0.2, 0.8])
      >>> sol = cagrad_dual_anchored(gram, w, 0.5 * jnp.sqrt(w @ gram @ w))
      >>> [round(float(x), 4) for x in sol.p], [round(float(x), 4) for x in sol.offset]
      ([0.3561, 0.6439], [0.1561, -0.1561])
      >>> sol = cagrad_dual_anchored(gram, w, 0.5 * jnp.sqrt(w @ gram @ w), solver="enumerate")
      >>> [round(float(x), 4) for x in sol.p]
      [0.3561, 0.6439]
    """
    if solver not in ("auto", "enumerate"):
        raise ValueError(f"solver must be 'auto' or 'enumerate', got {solver!r}.")
    b, n0 = _anchor_quantities(gram, weights, anchor_inner, anchor_norm2)
    if solver == "enumerate" or gram.shape[-1] < _ACTIVE_SET_MIN_K:
        return _cagrad_dual_enumeration(gram, weights, s, b, n0)
    s = jnp.asarray(s, gram.dtype)
    fast, certified = _active_set(gram, weights, s, b, n0, None)
    return jax.lax.cond(
        certified, lambda: fast, lambda: _cagrad_dual_enumeration(gram, weights, s, b, n0)
    )


def cagrad_dual_enumerate(
    gram: jax.Array, weights: jax.Array, s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""Solves the CAGrad dual exactly for any K by support enumeration (Gram only).

    :func:`cagrad_dual_anchored` with ``solver="enumerate"`` and the anchor products taken from
    the Gram matrix.

    Args:
      gram: trace-normalised ``[K, K]`` Gram matrix.
      weights: ``[K]`` anchor weights w.
      s: the correction radius ``c * sqrt(w^T H w)`` in the same units.

    Returns:
      ``(p_star, value)``: the minimiser on the simplex and the dual value.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_dual_enumerate
      >>> gram = jnp.array([[17.0, -5.0], [-5.0, 2.0]]) / 19.0
      >>> w = jnp.array([0.2, 0.8])
      >>> s = 0.5 * jnp.sqrt(w @ gram @ w)
      >>> p, _ = cagrad_dual_enumerate(gram, w, s)
      >>> [round(float(x), 4) for x in p]
      [0.3561, 0.6439]
    """
    sol = cagrad_dual_anchored(gram, weights, s, solver="enumerate")
    return sol.p, sol.value


def cagrad_dual_two_anchored(
    gram: jax.Array,
    weights: jax.Array,
    s: jax.Array,
    anchor_inner: jax.Array | None = None,
    anchor_norm2: jax.Array | None = None,
) -> CagradDualSolution:
    r"""The paper's closed form of the CAGrad dual for K = 2, written around the anchor.

    The paper parametrises :math:`p = (\lambda, 1 - \lambda)`; here
    :math:`p = w + \delta (1, -1)`, which is the same line, so that the offset
    :math:`\delta = \lambda - w_1` keeps its precision near a weighted stationary point.
    With :math:`D = b_1 - b_2 = \langle g_1 - g_2, g_0\rangle`,
    :math:`q = \|g_1 - g_2\|^2 = H_{11} + H_{22} - 2H_{12}` and :math:`n_0 = \|g_0\|^2`,
    :math:`\Phi = n_0 + \delta D + s\sqrt{n_0 + 2\delta D + \delta^2 q}`; squaring the
    stationarity condition gives the roots
    :math:`\delta = (D/q)\,(-1 \pm \sqrt{(q n_0 - D^2)/(s^2 q - D^2)})` (real when
    :math:`s^2 q > D^2`). Squaring creates spurious roots, so :math:`\Phi` is evaluated at
    both vertices and both roots and the smallest wins.

    Args:
      gram: trace-normalised ``[2, 2]`` Gram matrix.
      weights: ``[2]`` anchor weights.
      s: correction radius.
      anchor_inner, anchor_norm2: exact anchor products (see :func:`cagrad_dual_anchored`).

    Returns:
      A :class:`CagradDualSolution`.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_dual_two_anchored
      >>> gram = jnp.array([[17.0, -5.0], [-5.0, 2.0]]) / 19.0
      >>> w = jnp.array([0.2, 0.8])
      >>> sol = cagrad_dual_two_anchored(gram, w, 0.5 * jnp.sqrt(w @ gram @ w))
      >>> round(float(sol.p[0]), 4), round(float(sol.offset[0]), 4)
      (0.3561, 0.1561)
    """
    b, n0 = _anchor_quantities(gram, weights, anchor_inner, anchor_norm2)
    q = jnp.maximum(gram[0, 0] + gram[1, 1] - 2.0 * gram[0, 1], 0.0)
    d = b[0] - b[1]
    denom = s**2 * q - d**2
    numer = jnp.maximum(q * n0 - d**2, 0.0)
    interior = (denom > 0) & (q > 0) & (s > 0)
    ratio = jnp.sqrt(numer / jnp.where(interior, denom, 1.0))
    base = d / jnp.where(q > 0, q, 1.0)
    deltas = jnp.stack(
        [-weights[0], weights[1], base * (-1.0 + ratio), base * (-1.0 - ratio)]
    ).astype(gram.dtype)
    ok = jnp.stack([True, True, interior, interior])
    ok = ok & jnp.isfinite(deltas) & (deltas >= -weights[0]) & (deltas <= weights[1])
    deltas = jnp.where(ok, deltas, 0.0)
    candidates = deltas[:, None] * jnp.array([1.0, -1.0], gram.dtype)[None, :]
    values = anchored_value(gram, weights, b, n0, s, candidates)
    x, value = _pick_best(candidates, values, ok)
    return CagradDualSolution(weights + x, x, value)


def cagrad_dual_two(
    gram: jax.Array, weights: jax.Array, s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""The paper's closed form of the CAGrad dual for K = 2 (Gram only).

    See :func:`cagrad_dual_two_anchored` for the formula.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_dual_two
      >>> gram = jnp.array([[17.0, -5.0], [-5.0, 2.0]]) / 19.0
      >>> w = jnp.array([0.2, 0.8])
      >>> p, _ = cagrad_dual_two(gram, w, 0.5 * jnp.sqrt(w @ gram @ w))
      >>> round(float(p[0]), 4)
      0.3561
    """
    sol = cagrad_dual_two_anchored(gram, weights, s)
    return sol.p, sol.value


def cagrad_dual_solution(
    gram: jax.Array,
    weights: jax.Array,
    s: jax.Array,
    anchor_inner: jax.Array | None = None,
    anchor_norm2: jax.Array | None = None,
) -> CagradDualSolution:
    """The closed form for K = 2, support enumeration otherwise (see the two functions).

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_dual_solution
      >>> sol = cagrad_dual_solution(jnp.eye(3) / 3, jnp.ones(3) / 3, 0.1)
      >>> [round(float(x), 4) for x in sol.p]
      [0.3333, 0.3333, 0.3333]
    """
    if gram.shape[-1] == 2:
        return cagrad_dual_two_anchored(gram, weights, s, anchor_inner, anchor_norm2)
    return cagrad_dual_anchored(gram, weights, s, anchor_inner, anchor_norm2)


def cagrad_dual(gram: jax.Array, weights: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Solves the CAGrad dual: the closed form for K = 2, support enumeration otherwise.

    Args:
      gram: trace-normalised ``[K, K]`` Gram matrix.
      weights: ``[K]`` anchor weights.
      s: correction radius ``c * sqrt(w^T H w)``.

    Returns:
      ``(p_star, value)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_dual
      >>> p, value = cagrad_dual(jnp.eye(3) / 3, jnp.ones(3) / 3, 0.1)
      >>> [round(float(x), 4) for x in p]
      [0.3333, 0.3333, 0.3333]
    """
    sol = cagrad_dual_solution(gram, weights, s)
    return sol.p, sol.value


def min_norm_point(gram: jax.Array, faces: FaceSystems | None = None) -> jax.Array:
    r"""Coefficients of the minimum-norm point of the gradients' convex hull (MGDA).

    Solves :math:`\min_{p \in \Delta} p^\top H p` exactly by support enumeration: a regular
    support S gives :math:`p_S \propto H_S^{-1} 1`; a singular one its null-space point.

    Args:
      gram: trace-normalised ``[K, K]`` Gram matrix.
      faces: optional precomputed :func:`face_systems`.

    Returns:
      ``p_star`` of shape ``[K]`` on the simplex.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import min_norm_point
      >>> [round(float(x), 4) for x in min_norm_point(jnp.array([[1.0, 0.0], [0.0, 4.0]]) / 5)]
      [0.8, 0.2]
    """
    k = gram.shape[-1]
    faces = face_systems(gram) if faces is None else faces
    m = faces.masks.shape[0]
    inv_e = _pinv_apply(faces, jnp.broadcast_to(faces.scale, (m, k))[..., None])[..., 0]
    p_reg = inv_e * faces.scale[None, :]
    total = jnp.sum(p_reg, axis=-1)
    reg_ok = _is_regular(faces) & (total > 0)
    p_reg = p_reg / jnp.where(reg_ok, total, 1.0)[:, None]
    p_null, null_ok = _null_candidates(faces)
    candidates = jnp.concatenate([jnp.eye(k, dtype=gram.dtype), p_reg, p_null], axis=0)
    valid = jnp.concatenate([jnp.ones((k,), bool), reg_ok, null_ok], axis=0)
    candidates, valid = _feasible(candidates, valid)
    values = jnp.einsum("ni,ij,nj->n", candidates, gram, candidates)
    return _pick_best(candidates, values, valid)[0]


def dual_cone_projection(
    gram: jax.Array,
    weights: jax.Array,
    faces: FaceSystems | None = None,
    inner: jax.Array | None = None,
) -> jax.Array:
    r"""Projects :math:`g_0 = \sum_k w_k g_k` onto the dual cone of the gradients.

    The projection :math:`d = \arg\min \{\|d - g_0\| : \langle g_k, d\rangle \ge 0\ \forall k\}`
    is :math:`d = g_0 + \sum_k \mu_k g_k` with :math:`\mu` solving the non-negative QP
    :math:`\min_{\mu \ge 0} \tfrac12 \mu^\top H \mu + \mu^\top H w`, solved exactly by support
    enumeration (on a support, :math:`\mu_S = -H_S^{+} (Hw)_S`).

    Args:
      gram: trace-normalised ``[K, K]`` Gram matrix.
      weights: ``[K]`` anchor weights w.
      faces: optional precomputed :func:`face_systems`.
      inner: optional ``[K]`` :math:`b = \langle g_k, g_0\rangle` computed from the vectors
        (default ``gram @ weights``).

    Returns:
      ``mu`` of shape ``[K]`` (non-negative); the projected direction has coefficients
      ``weights + mu``.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import dual_cone_projection
      >>> jac = jnp.array([[1.0, 1.0], [-1.0, -1.0], [0.0, 1.0]])
      >>> w = jnp.ones(3) / 3
      >>> mu = dual_cone_projection(jac @ jac.T / 5, w)
      >>> [round(float(x), 4) for x in (w + mu) @ jac]  # the projection of g_0 = (0, 1/3)
      [-0.1667, 0.1667]
    """
    k = gram.shape[-1]
    faces = face_systems(gram) if faces is None else faces
    m = faces.masks.shape[0]
    b = gram @ weights if inner is None else inner
    b_scaled = b * faces.scale
    nu = -_pinv_apply(faces, jnp.broadcast_to(b_scaled, (m, k))[..., None])[..., 0]
    mu = nu * faces.scale[None, :]
    finite = jnp.all(jnp.isfinite(mu), axis=-1)
    valid = finite & jnp.all(
        mu >= -_FEASIBILITY_TOL * jnp.max(jnp.abs(mu), axis=-1, keepdims=True), axis=-1
    )
    mu = jnp.where(valid[:, None], jnp.maximum(mu, 0.0), 0.0)
    candidates = jnp.concatenate([jnp.zeros((1, k), gram.dtype), mu], axis=0)
    valid = jnp.concatenate([jnp.ones((1,), bool), valid], axis=0)
    values = 0.5 * jnp.einsum("ni,ij,nj->n", candidates, gram, candidates) + candidates @ b
    return _pick_best(candidates, values, valid)[0]
