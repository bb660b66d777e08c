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
also has the paper's closed form (:func:`cagrad_dual_two`).

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
    "FaceSystems",
    "cagrad_dual",
    "cagrad_dual_enumerate",
    "cagrad_dual_two",
    "dual_cone_projection",
    "face_systems",
    "min_norm_point",
    "normalize_gram",
    "support_masks",
]

# Relative eigenvalue threshold (of the unit-diagonal Gram) below which a face is singular.
_SINGULAR_TOL = 1e-6
# Tolerated negative coordinate before a candidate counts as infeasible (then clamped to 0).
_FEASIBILITY_TOL = 1e-5


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


def cagrad_dual_enumerate(
    gram: jax.Array, weights: jax.Array, s: jax.Array, faces: FaceSystems | None = None
) -> tuple[jax.Array, jax.Array]:
    r"""Solves the CAGrad dual exactly for any K by support enumeration.

    On a support S with a regular Gram block, stationarity of
    :math:`b^\top p + s\sqrt{p^\top H p}` on the affine hull gives, with
    :math:`u = p / \sqrt{p^\top H p}`, the system :math:`s H_S u = \lambda 1 - b_S`,
    :math:`u^\top H_S u = 1`: a quadratic in :math:`\lambda` whose larger root yields p. Singular
    supports contribute the point with :math:`Hp = 0`, vertices are always candidates.

    Args:
      gram: trace-normalised ``[K, K]`` Gram matrix.
      weights: ``[K]`` anchor weights w.
      s: the correction radius ``c * sqrt(w^T H w)`` in the same units.
      faces: precomputed :func:`face_systems` of ``gram`` (computed if None).

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
    k = gram.shape[-1]
    faces = face_systems(gram) if faces is None else faces
    scale = faces.scale
    b_scaled = (gram @ weights) * scale
    ones_scaled = scale  # D^{-1/2} 1 in unit-diagonal coordinates
    m = faces.masks.shape[0]
    rhs = jnp.stack(
        [jnp.broadcast_to(ones_scaled, (m, k)), jnp.broadcast_to(b_scaled, (m, k))], axis=-1
    )
    solved = _pinv_apply(faces, rhs)  # [M, K, 2]: H^+ e, H^+ b
    inv_e, inv_b = solved[..., 0], solved[..., 1]
    e_masked = ones_scaled[None] * faces.masks
    b_masked = b_scaled[None] * faces.masks
    alpha = jnp.sum(e_masked * inv_e, axis=-1)
    beta = jnp.sum(e_masked * inv_b, axis=-1)
    gamma = jnp.sum(b_masked * inv_b, axis=-1)
    disc = beta**2 - alpha * (gamma - s**2)
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    lam = (beta + root) / jnp.where(alpha > 0, alpha, 1.0)
    q = (lam[:, None] * inv_e - inv_b) / jnp.where(root > 0, root, 1.0)[:, None]
    p_socp = q * scale[None, :]
    socp_ok = _is_regular(faces) & (alpha > 0) & (disc > 1e-12 * jnp.maximum(beta**2, 1e-30))
    socp_ok = socp_ok & (s > 0)

    p_null, null_ok = _null_candidates(faces)
    vertices = jnp.eye(k, dtype=gram.dtype)
    candidates = jnp.concatenate([vertices, p_socp, p_null], axis=0)
    valid = jnp.concatenate([jnp.ones((k,), bool), socp_ok, null_ok], axis=0)
    candidates, valid = _feasible(candidates, valid)
    values = cagrad_value(gram, weights, s, candidates)
    return _pick_best(candidates, values, valid)


def cagrad_dual_two(
    gram: jax.Array, weights: jax.Array, s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""The paper's closed form of the CAGrad dual for K = 2.

    With :math:`p = (\lambda, 1 - \lambda)`, :math:`Q(\lambda) = q_2\lambda^2 + q_1\lambda + q_0`
    (:math:`q_2 = H_{11} + H_{22} - 2H_{12}`, :math:`q_1 = 2(H_{12} - H_{22})`, :math:`q_0 = H_{22}`)
    and :math:`D = b_1 - b_2`, the stationary points are the roots in [0, 1] of
    :math:`(D^2 q_2 - s^2 q_2^2)\lambda^2 + (D^2 q_1 - s^2 q_1 q_2)\lambda + D^2 q_0 - s^2 q_1^2/4`.
    Squaring creates spurious roots, so the objective is evaluated at {0, 1, roots} and the
    smallest wins.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_dual_two
      >>> gram = jnp.array([[17.0, -5.0], [-5.0, 2.0]]) / 19.0
      >>> w = jnp.array([0.2, 0.8])
      >>> p, _ = cagrad_dual_two(gram, w, 0.5 * jnp.sqrt(w @ gram @ w))
      >>> round(float(p[0]), 4)
      0.3561
    """
    h11, h12, h22 = gram[0, 0], gram[0, 1], gram[1, 1]
    b = gram @ weights
    q2 = h11 + h22 - 2.0 * h12
    q1 = 2.0 * (h12 - h22)
    q0 = h22
    d = b[0] - b[1]
    a2 = d**2 * q2 - s**2 * q2**2
    a1 = d**2 * q1 - s**2 * q1 * q2
    a0 = d**2 * q0 - s**2 * q1**2 / 4.0
    disc = a1**2 - 4.0 * a2 * a0
    sqrt_disc = jnp.sqrt(jnp.maximum(disc, 0.0))
    # Numerically stable roots of a2 x^2 + a1 x + a0.
    qq = -0.5 * (a1 + jnp.where(a1 >= 0, sqrt_disc, -sqrt_disc))
    root1 = qq / jnp.where(a2 != 0, a2, 1.0)
    root2 = a0 / jnp.where(qq != 0, qq, 1.0)
    linear_root = -a0 / jnp.where(a1 != 0, a1, 1.0)
    lams = jnp.stack([0.0, 1.0, root1, root2, linear_root]).astype(gram.dtype)
    ok = jnp.stack(
        [
            True,
            True,
            (disc >= 0) & (a2 != 0),
            (disc >= 0) & (qq != 0),
            (a2 == 0) & (a1 != 0),
        ]
    )
    ok = ok & jnp.isfinite(lams) & (lams >= 0.0) & (lams <= 1.0)
    lams = jnp.where(ok, lams, 0.0)
    candidates = jnp.stack([lams, 1.0 - lams], axis=-1)
    values = cagrad_value(gram, weights, s, candidates)
    return _pick_best(candidates, values, ok)


def cagrad_dual(
    gram: jax.Array, weights: jax.Array, s: jax.Array, faces: FaceSystems | None = None
) -> tuple[jax.Array, jax.Array]:
    """Solves the CAGrad dual: the closed form for K = 2, support enumeration otherwise.

    Args:
      gram: trace-normalised ``[K, K]`` Gram matrix.
      weights: ``[K]`` anchor weights.
      s: correction radius ``c * sqrt(w^T H w)``.
      faces: optional precomputed :func:`face_systems` (used for K > 2).

    Returns:
      ``(p_star, value)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.simplex import cagrad_dual
      >>> p, value = cagrad_dual(jnp.eye(3) / 3, jnp.ones(3) / 3, 0.1)
      >>> [round(float(x), 4) for x in p]
      [0.3333, 0.3333, 0.3333]
    """
    if gram.shape[-1] == 2:
        return cagrad_dual_two(gram, weights, s)
    return cagrad_dual_enumerate(gram, weights, s, faces)


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
    gram: jax.Array, weights: jax.Array, faces: FaceSystems | None = None
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
    b_scaled = (gram @ weights) * faces.scale
    nu = -_pinv_apply(faces, jnp.broadcast_to(b_scaled, (m, k))[..., None])[..., 0]
    mu = nu * faces.scale[None, :]
    finite = jnp.all(jnp.isfinite(mu), axis=-1)
    valid = finite & jnp.all(
        mu >= -_FEASIBILITY_TOL * jnp.max(jnp.abs(mu), axis=-1, keepdims=True), axis=-1
    )
    mu = jnp.where(valid[:, None], jnp.maximum(mu, 0.0), 0.0)
    candidates = jnp.concatenate([jnp.zeros((1, k), gram.dtype), mu], axis=0)
    valid = jnp.concatenate([jnp.ones((1,), bool), valid], axis=0)
    values = 0.5 * jnp.einsum("ni,ij,nj->n", candidates, gram, candidates) + candidates @ (
        gram @ weights
    )
    return _pick_best(candidates, values, valid)[0]
