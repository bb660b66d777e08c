r"""Weightings: from the K x K Gram matrix of the objective gradients to K coefficients.

Every aggregator in raco_jax returns a direction :math:`d = \sum_k a_k g_k`; a *weighting* computes
the coefficients :math:`a` from the Gram matrix :math:`H_{ij} = \langle g_i, g_j\rangle` alone (and
the user's weights). These functions are usable from any JAX code, under ``jit`` and ``vmap``;
the optax transformations in :mod:`raco_jax.aggregation.transforms` are built on them.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from raco_jax.aggregation import simplex
from raco_jax.aggregation.gram import AnchorProducts

__all__ = [
    "AggregationDiagnostics",
    "cagrad_coefficients",
    "mgda_coefficients",
    "pcgrad_coefficients",
    "rescale_mode",
    "validate_c",
    "validate_weights",
    "weighted_sum_coefficients",
]

Rescale = Literal[None, "1+c", "1+c^2"] | int

# Below this ratio ||sum_k p_k g_k||^2 / (sum_k p_k ||g_k||)^2 the combination is treated as the
# zero vector: in float32 the Gram-based norm of a 1000-fold cancelling sum is not reliable.
_CANCELLATION_TOL = 1e-6
# With anchor products computed from the vector g_0, ||g_0||^2 below this fraction of
# (sum_k w_k ||g_k||)^2 (||g_0|| below 1e-12 of the gradients: numerically zero) counts as 0.
_ANCHOR_FLOOR = 1e-24


class AggregationDiagnostics(NamedTuple):
    """What one aggregation step computed, by name.

    Attributes:
      coefficients: ``[K]`` effective coefficients a of the update :math:`d = \\sum_k a_k g_k`
        (what to log as the per-objective "weights").
      dual: ``[K]`` the dual solution p* (zeros for methods without a dual).
      clipped_dual: ``[K]`` the clipped dual min(p*, w) (equals ``dual`` when not clipping).
      gram: ``[K, K]`` the Gram matrix of the objective gradients.
      duality_gap: scalar certificate of the dual solve, in Gram units: dual value minus the
        worst-objective improvement :math:`\\min_k \\langle g_k, d\\rangle` of the unclipped
        direction (0 up to rounding at the optimum; 0 for methods without a dual).
      num_conflicts: int32, the number of objective pairs with :math:`\\langle g_i, g_j\\rangle < 0`.
      cos_update_anchor: cosine between the update d and the weighted anchor
        :math:`g_0 = \\sum_k w_k g_k`.
      finite: bool, whether every entry of the Gram matrix was finite. When it is False (a NaN
        or infinite gradient entry anywhere), the coefficients, the dual values, the gap and the
        cosine are NaN, so the whole update is NaN (every leaf, not only the leaf that held the
        NaN) and ``optax.apply_if_finite`` placed after the aggregator skips the step.
    """

    coefficients: jax.Array
    dual: jax.Array
    clipped_dual: jax.Array
    gram: jax.Array
    duality_gap: jax.Array
    num_conflicts: jax.Array
    cos_update_anchor: jax.Array
    finite: jax.Array


def _concrete(value: Any) -> np.ndarray | None:
    """Returns value as a NumPy array, or None if it is traced (inject_hyperparams, jit)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def validate_weights(weights: Any, num_objectives: int | None = None) -> jax.Array:
    """Checks user weights (when concrete) and returns them as a float32 array.

    Weights must be a 1-D vector of K >= 2 finite, non-negative numbers summing to 1 (within 1e-6).
    Traced weights (under ``optax.inject_hyperparams`` or ``jit``) are not checked.

    Args:
      weights: the weights.
      num_objectives: the expected K, if known.

    Returns:
      The weights as a float32 ``[K]`` array.

    Raises:
      ValueError: naming ``weights`` and what was expected.

    Example:
      >>> from raco_jax.aggregation.weightings import validate_weights
      >>> validate_weights((0.8, 0.2))
      Array([0.8, 0.2], dtype=float32)
    """
    concrete = _concrete(weights)
    if concrete is not None:
        if concrete.ndim != 1 or concrete.shape[0] < 2:
            raise ValueError(
                f"weights must be a 1-D sequence of K >= 2 numbers, got shape {concrete.shape}."
            )
        if num_objectives is not None and concrete.shape[0] != num_objectives:
            raise ValueError(
                f"weights has {concrete.shape[0]} entries but there are {num_objectives} "
                "objectives (the leading size of the stacked gradients)."
            )
        if not np.all(np.isfinite(concrete)) or np.any(concrete < 0):
            raise ValueError(f"weights must be finite and non-negative, got {concrete.tolist()}.")
        total = float(np.sum(concrete, dtype=np.float64))
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"weights must sum to 1 (within 1e-6), got sum {total!r} for {concrete.tolist()}."
            )
    return jnp.asarray(weights, jnp.float32)


def validate_c(c: Any, *, strict_below_one: bool) -> jax.Array:
    """Checks the CAGrad radius c (when concrete): c >= 0, and c < 1 where theory needs it.

    Example:
      >>> from raco_jax.aggregation.weightings import validate_c
      >>> validate_c(0.4, strict_below_one=True)
      Array(0.4, dtype=float32)
    """
    concrete = _concrete(c)
    if concrete is not None:
        if concrete.ndim != 0 or not np.isfinite(concrete):
            raise ValueError(f"c must be a finite scalar, got {concrete!r}.")
        if concrete < 0:
            raise ValueError(f"c must be >= 0, got {float(concrete)}.")
        if strict_below_one and concrete >= 1:
            raise ValueError(
                f"c must be < 1 for clipped CAGrad (Theorem 3.1 needs 0 <= c < 1), got "
                f"{float(concrete)}."
            )
    return jnp.asarray(c, jnp.float32)


def _check_gram(gram: jax.Array) -> jax.Array:
    gram = jnp.asarray(gram, jnp.float32)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a square [K, K] matrix, got shape {gram.shape}.")
    return gram


def _num_conflicts(gram: jax.Array) -> jax.Array:
    k = gram.shape[0]
    upper = jnp.triu(jnp.ones((k, k), bool), k=1)
    return jnp.sum((gram < 0) & upper).astype(jnp.int32)


def _cosine(gram: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    num = a @ gram @ b
    den2 = (a @ gram @ a) * (b @ gram @ b)
    cos = jnp.where(den2 > 0, num * jax.lax.rsqrt(jnp.where(den2 > 0, den2, 1.0)), 0.0)
    # Gram-based norms of nearly cancelling sums carry float32 rounding: keep the cosine a cosine.
    return jnp.clip(cos, -1.0, 1.0)


def _combination_is_zero(gram_n: jax.Array, p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (||sum p_k g_k||^2, whether it counts as zero) in normalised Gram units."""
    norm2 = jnp.maximum(p @ gram_n @ p, 0.0)
    upper = jnp.sum(p * jnp.sqrt(jnp.maximum(jnp.diagonal(gram_n), 0.0))) ** 2
    return norm2, ~(norm2 > _CANCELLATION_TOL * upper)


def _finite_or_nan(
    coefficients: jax.Array, diagnostics: AggregationDiagnostics
) -> tuple[jax.Array, AggregationDiagnostics]:
    """NaN coefficients and diagnostics unless every Gram entry is finite (see ``finite``)."""
    finite = jnp.all(jnp.isfinite(diagnostics.gram))

    def nan_unless_finite(x: jax.Array) -> jax.Array:
        return jnp.where(finite, x, jnp.nan)

    coefficients = nan_unless_finite(coefficients)
    return coefficients, diagnostics._replace(
        coefficients=coefficients,
        dual=nan_unless_finite(diagnostics.dual),
        clipped_dual=nan_unless_finite(diagnostics.clipped_dual),
        duality_gap=nan_unless_finite(diagnostics.duality_gap),
        cos_update_anchor=nan_unless_finite(diagnostics.cos_update_anchor),
        finite=finite,
    )


def _better_form(
    gram_n: jax.Array,
    norm2: jax.Array,
    scale: jax.Array,
    residual: jax.Array,
    plain: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Chooses how to write d: around the anchor, t g_0 + sum_k beta_k g_k, or sum_k a_k g_k.

    The anchored form rounds relative to |t| ||g_0|| + sum_k |beta_k| ||g_k||, the plain one
    relative to sum_k |a_k| ||g_k||: keep the smaller (anchored near a weighted stationary
    point, plain when one large gradient dominates g_0). Returns ``(t, beta)`` (t = 0: plain).
    """
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram_n), 0.0))
    anchored_scale = jnp.abs(scale) * jnp.sqrt(norm2) + jnp.abs(residual) @ norms
    use_anchor = anchored_scale < jnp.abs(plain) @ norms
    return jnp.where(use_anchor, scale, 0.0), jnp.where(use_anchor, residual, plain)


class _CagradSolution(NamedTuple):
    coefficients: jax.Array
    diagnostics: AggregationDiagnostics
    anchor_scale: jax.Array  # t in d = t g_0 + sum_k beta_k g_k
    residual: jax.Array  # beta


def cagrad_coefficients(
    gram: jax.Array,
    weights: Any,
    c: Any,
    clip: bool = True,
    rescale: Rescale = None,
    anchor: AnchorProducts | None = None,
) -> tuple[jax.Array, AggregationDiagnostics]:
    r"""CAGrad (``clip=False``) and RACO's clipped CAGrad (``clip=True``) coefficients from a Gram matrix.

    With :math:`b = H w` (:math:`b_k = \langle g_k, g_0\rangle`),
    :math:`\|g_0\|^2 = w^\top H w` and :math:`s = c\|g_0\|`:

    1. :math:`p^* = \arg\min_{p\in\Delta} b^\top p + s\sqrt{p^\top H p}` (exact solver);
    2. clipped: :math:`\tilde p_k = \min(p^*_k, w_k)` (no renormalisation); unclipped:
       :math:`\tilde p = p^*`;
    3. :math:`a = w + s\,\tilde p / \|\tilde G\|` with :math:`\|\tilde G\|^2 = \tilde p^\top H\tilde p`,
       so :math:`d = \sum_k a_k g_k = g_0 + c\|g_0\|\,\tilde G/\|\tilde G\|`.

    Precision near a weighted stationary point. When :math:`g_0` nearly cancels
    (:math:`\|g_0\| \ll \sum_k w_k \|g_k\|`), :math:`b` and :math:`\|g_0\|^2` computed from a
    float32 Gram matrix lose their digits (relative error about
    :math:`10^{-7} (\sum_k w_k\|g_k\|)^2 / \|g_0\|^2`). Pass ``anchor`` (the products computed
    from the vector :math:`g_0`, see :func:`raco_jax.aggregation.gram.anchor_products`; the
    optax transformations do this themselves) and the solve stays exact at any cancellation:
    the dual is solved around the anchor (offsets :math:`p^* - w` and norms
    :math:`\|g_0 - \sum_k r_k g_k\|` are formed from the anchor products). Note that float32
    coefficients a cannot represent d to better than about
    :math:`10^{-7} \sum_k a_k \|g_k\| / \|d\|`; the transformations therefore form
    :math:`d = t\, g_0 + \sum_k \beta_k g_k` from the anchor vector.

    Degenerate cases never give NaN. :math:`s = 0` and :math:`a = w` if c = 0 or
    :math:`g_0 = 0`; with ``anchor``, "0" means :math:`\|g_0\|^2 \le 10^{-24}` of
    :math:`(\sum_k w_k\|g_k\|)^2` (numerically zero); without it, the Gram matrix cannot resolve
    :math:`\|g_0\| < 10^{-3} \sum_k w_k \|g_k\|`, which is then treated as 0 and reported by a
    non-zero ``duality_gap`` (an upper bound of the true gap of :math:`d = g_0`).
    If :math:`\tilde G = 0`, clipped CAGrad returns :math:`a = w` (the paper's rule), while
    unclipped CAGrad returns the projection of :math:`g_0` onto the dual cone
    :math:`\{d: \langle g_k, d\rangle \ge 0\}` (the optimal direction closest to :math:`g_0`).
    A non-finite Gram entry (a NaN or infinite gradient) is not a degenerate case but an error
    in the input: the coefficients are NaN and ``diagnostics.finite`` is False.

    The certificate ``duality_gap`` is :math:`\Phi(p^*) - \min_k \langle g_k, d^*\rangle` with
    :math:`d^* = g_0 + c\|g_0\| G_{p^*}/\|G_{p^*}\|` (the unclipped direction), evaluated
    with the true radius :math:`c\|g_0\|`: it is non-negative, and zero (to rounding) only when
    p* is the exact optimum.

    Args:
      gram: ``[K, K]`` Gram matrix (any positive scale; it is normalised internally).
      weights: ``[K]`` weights on the simplex.
      c: correction radius, ``c >= 0`` (clipped: ``c < 1``).
      clip: apply RACO's coordinate-wise clip.
      rescale: unclipped only; divide d by ``1 + c`` (``"1+c"`` or ``2``, the CAGrad toy code) or
        by ``1 + c**2`` (``"1+c^2"`` or ``1``, its supervised code); None or 0: no rescale.
      anchor: optional :class:`raco_jax.aggregation.gram.AnchorProducts` of the same gradients
        (:math:`\langle g_k, g_0\rangle` and :math:`\|g_0\|^2` from the vectors); None: taken
        from the Gram matrix.

    Returns:
      ``(coefficients, diagnostics)``.

    Example:
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> jac = jnp.array([[1.0, -4.0], [-1.0, 1.0]])
      >>> a, diag = raco_jax.cagrad_coefficients(jac @ jac.T, jnp.array([0.2, 0.8]), 0.5)
      >>> [round(float(x), 6) for x in a @ jac]
      [-0.882999, -0.099557]

    References:
      Chen, Li, Chen, Lin, "Reward-free Alignment for Conflicting Objectives", ICML 2026
      (arXiv:2602.02495). Liu et al., "Conflict-Averse Gradient Descent for Multi-task
      Learning", NeurIPS 2021.
    """
    solution = cagrad_solution(gram, weights, c, clip, rescale, anchor)
    return solution.coefficients, solution.diagnostics


def cagrad_solution(
    gram: jax.Array,
    weights: Any,
    c: Any,
    clip: bool = True,
    rescale: Rescale = None,
    anchor: AnchorProducts | None = None,
) -> _CagradSolution:
    """:func:`cagrad_coefficients` plus the anchored form of the update (for the transforms).

    Returns ``(coefficients, diagnostics, anchor_scale, residual)`` with
    ``coefficients == anchor_scale * weights + residual`` (to rounding).

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.weightings import cagrad_solution
      >>> jac = jnp.array([[1.0, -4.0], [-1.0, 1.0]])
      >>> sol = cagrad_solution(jac @ jac.T, jnp.array([0.2, 0.8]), 0.5)
      >>> [round(float(x), 6) for x in sol.anchor_scale * jnp.array([-0.6, 0.0]) + sol.residual @ jac]
      [-0.882999, -0.099557]
    """
    gram = _check_gram(gram)
    k = gram.shape[0]
    weights = validate_weights(weights, k)
    c = validate_c(c, strict_below_one=clip)
    scale_mode = rescale_mode(rescale, clip)

    gram_n, trace = simplex.normalize_gram(gram)
    safe_trace = jnp.where(trace > 0, trace, 1.0)
    upper = jnp.sum(weights * jnp.sqrt(jnp.maximum(jnp.diagonal(gram_n), 0.0))) ** 2
    if anchor is None:
        inner = gram_n @ weights
        norm2, anchor_vanished = _combination_is_zero(gram_n, weights)
        # Below the Gram matrix's resolution the true ||g_0||^2 is only known to be at most about
        # tol * upper: the certificate uses that bound, so a d = g_0 step never reads as optimal.
        norm2_cert = jnp.where(
            anchor_vanished, jnp.maximum(norm2, _CANCELLATION_TOL * upper), norm2
        )
    else:
        inner = jnp.asarray(anchor.inner, jnp.float32).reshape((k,)) / safe_trace
        norm2 = jnp.maximum(jnp.asarray(anchor.norm2, jnp.float32).reshape(()) / safe_trace, 0.0)
        anchor_vanished = ~(norm2 > _ANCHOR_FLOOR * upper)
        norm2_cert = norm2
    s = jnp.where(anchor_vanished, 0.0, c * jnp.sqrt(norm2))
    s_cert = c * jnp.sqrt(norm2_cert)
    sol = simplex.cagrad_dual_solution(gram_n, weights, s, inner, norm2)
    p_star, x_star = sol.p, sol.offset
    active = s > 0

    def corrected(r: jax.Array, radius: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(sigma, degenerate) for d = g_0 + radius (g_0 - G_r)/||g_0 - G_r||."""
        value, rounding = simplex.combination_norm2(gram_n, weights, inner, norm2, -r)
        is_zero = ~(value > _CANCELLATION_TOL * rounding)
        return radius * jax.lax.rsqrt(jnp.where(is_zero, 1.0, value)), is_zero

    zeros = jnp.zeros_like(weights)
    r_star = -x_star  # w - p*
    # The certificate's direction is the unclipped one for the radius actually used (g_0 when
    # s = 0), its dual value uses the true radius s_cert >= s: the gap then bounds how far that
    # direction is from the optimum and cannot vanish when the shortcut s = 0 was taken.
    sigma_star, degenerate = corrected(r_star, s)
    mu = None
    if clip:
        r_clip = jnp.clip(r_star, 0.0, weights)  # w - min(p*, w), with p* >= 0
        p_tilde = weights - r_clip
        sigma, clipped_zero = corrected(r_clip, s)
        use = active & ~clipped_zero
        anchor_scale = jnp.where(use, 1.0 + sigma, 1.0)
        residual = jnp.where(use, -sigma * r_clip, zeros)
        coefficients = jnp.where(use, weights + sigma * p_tilde, weights)
    else:
        p_tilde = p_star
        mu = simplex.dual_cone_projection(gram_n, weights, inner=inner)
        sigma, _ = corrected(r_star, s)
        anchor_scale = jnp.where(active & ~degenerate, 1.0 + sigma, 1.0)
        residual = jnp.where(active, jnp.where(degenerate, mu, -sigma * r_star), zeros)
        coefficients = jnp.where(
            active, jnp.where(degenerate, weights + mu, weights + sigma * p_star), weights
        )
        if scale_mode:
            divisor = 1.0 + c**2 if scale_mode == 1 else 1.0 + c
            anchor_scale, residual = anchor_scale / divisor, residual / divisor
            coefficients = coefficients / divisor
    anchor_scale, residual = _better_form(gram_n, norm2, anchor_scale, residual, coefficients)

    # Certificate: the unclipped direction d* = t* g_0 + beta* and its worst-objective
    # improvement min_k <g_k, d*>, against the dual value at p* with the true radius.
    # With G_{p*} = 0 the unclipped direction is the dual-cone projection (clipped: g_0).
    cert_scale = jnp.where(degenerate, 1.0, 1.0 + sigma_star)
    cert_residual = jnp.where(degenerate, zeros if mu is None else mu, -sigma_star * r_star)
    cert_plain = jnp.where(
        degenerate, weights + (zeros if mu is None else mu), weights + sigma_star * p_star
    )
    cert_scale, cert_residual = _better_form(gram_n, norm2, cert_scale, cert_residual, cert_plain)
    primal = jnp.min(cert_scale * inner + gram_n @ cert_residual)
    dual_value = simplex.anchored_value(gram_n, weights, inner, norm2, s_cert, x_star)
    gap = jnp.maximum(dual_value - primal, 0.0) * trace

    # cos(d, g_0) from the anchored form: <d, g_0> = t n0 + beta.b, ||d||^2 likewise.
    d_dot_g0 = anchor_scale * norm2 + residual @ inner
    d_norm2 = jnp.maximum(
        anchor_scale**2 * norm2
        + 2.0 * anchor_scale * (residual @ inner)
        + residual @ gram_n @ residual,
        0.0,
    )
    den2 = d_norm2 * norm2
    cos = jnp.where(den2 > 0, d_dot_g0 * jax.lax.rsqrt(jnp.where(den2 > 0, den2, 1.0)), 1.0)
    cos = jnp.where(active, jnp.clip(cos, -1.0, 1.0), 1.0)
    diagnostics = AggregationDiagnostics(
        coefficients=coefficients,
        dual=p_star,
        clipped_dual=p_tilde,
        gram=gram,
        duality_gap=gap,
        num_conflicts=_num_conflicts(gram),
        cos_update_anchor=cos,
        finite=jnp.ones((), bool),
    )
    coefficients, diagnostics = _finite_or_nan(coefficients, diagnostics)
    finite = diagnostics.finite
    anchor_scale = jnp.where(finite, anchor_scale, jnp.nan)
    residual = jnp.where(finite, residual, jnp.nan)
    return _CagradSolution(coefficients, diagnostics, anchor_scale, residual)


def rescale_mode(rescale: Rescale, clip: bool) -> int:
    """The CAGrad rescale as an integer: 0 (none), 1 (divide by 1 + c^2) or 2 (by 1 + c).

    Accepts None, ``"1+c"``, ``"1+c^2"`` and the CAGrad code's integers 0, 1, 2; RACO (``clip``)
    never rescales.

    Example:
      >>> from raco_jax.aggregation.weightings import rescale_mode
      >>> rescale_mode("1+c", clip=False), rescale_mode(None, clip=True)
      (2, 0)
    """
    modes = {None: 0, 0: 0, "1+c^2": 1, 1: 1, "1+c": 2, 2: 2}
    if isinstance(rescale, bool) or rescale not in modes:
        raise ValueError(
            f"rescale must be None, '1+c' or '1+c^2' (or the CAGrad code's 0, 1, 2), got {rescale!r}."
        )
    if clip and modes[rescale] != 0:
        raise ValueError("rescale is an option of unclipped cagrad only; RACO never rescales.")
    return modes[rescale]


def weighted_sum_coefficients(
    gram: jax.Array, weights: Any
) -> tuple[jax.Array, AggregationDiagnostics]:
    r"""Linear scalarisation (DPO-LW): :math:`a = w`, :math:`d = \sum_k w_k g_k`.

    The Gram matrix is only used for the diagnostics (and the ``finite`` check: a non-finite
    Gram entry gives NaN coefficients, like every weighting here).

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.aggregation.weightings import weighted_sum_coefficients
      >>> a, diag = weighted_sum_coefficients(jnp.eye(2), jnp.array([0.3, 0.7]))
      >>> a
      Array([0.3, 0.7], dtype=float32)
    """
    gram = _check_gram(gram)
    weights = validate_weights(weights, gram.shape[0])
    zeros = jnp.zeros_like(weights)
    diagnostics = AggregationDiagnostics(
        coefficients=weights,
        dual=zeros,
        clipped_dual=zeros,
        gram=gram,
        duality_gap=jnp.zeros((), jnp.float32),
        num_conflicts=_num_conflicts(gram),
        cos_update_anchor=jnp.ones((), jnp.float32),
        finite=jnp.ones((), bool),
    )
    return _finite_or_nan(weights, diagnostics)


def mgda_coefficients(gram: jax.Array) -> tuple[jax.Array, AggregationDiagnostics]:
    r"""MGDA: the minimum-norm point of the convex hull, :math:`a = \arg\min_{p\in\Delta}\|\sum_k p_k g_k\|`.

    Solved exactly (support enumeration). The duality gap is the Frank-Wolfe gap
    :math:`p^\top H p - \min_k (Hp)_k`, zero at the optimum. ``cos_update_anchor`` is measured
    against the uniform mean of the gradients.

    Example:
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> from raco_jax.aggregation.weightings import mgda_coefficients
      >>> a, _ = mgda_coefficients(jnp.array([[1.0, 0.0], [0.0, 4.0]]))
      >>> [round(float(x), 4) for x in a]
      [0.8, 0.2]

    References:
      Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization",
      2012; Sener and Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.
    """
    gram = _check_gram(gram)
    k = gram.shape[0]
    gram_n, trace = simplex.normalize_gram(gram)
    p = simplex.min_norm_point(gram_n)
    gap = jnp.maximum(p @ gram_n @ p - jnp.min(gram_n @ p), 0.0) * trace
    diagnostics = AggregationDiagnostics(
        coefficients=p,
        dual=p,
        clipped_dual=p,
        gram=gram,
        duality_gap=gap,
        num_conflicts=_num_conflicts(gram),
        cos_update_anchor=_cosine(gram_n, p, jnp.full((k,), 1.0 / k)),
        finite=jnp.ones((), bool),
    )
    return _finite_or_nan(p, diagnostics)


def pcgrad_coefficients(
    gram: jax.Array,
    key: jax.Array,
    weights: Any = None,
    reduction: Literal["sum", "mean"] = "sum",
) -> tuple[jax.Array, AggregationDiagnostics]:
    r"""PCGrad ("gradient surgery") coefficients, computed in Gram space.

    For every objective i, in a random order of the other objectives j: if
    :math:`\langle g_i', g_j\rangle < 0`, project :math:`g_i' \leftarrow g_i' -
    \frac{\langle g_i', g_j\rangle}{\|g_j\|^2} g_j`. Each projected gradient is a combination
    of the originals, so the whole procedure runs on the K x K Gram matrix. The result is
    :math:`\sum_i g_i'` (``reduction="sum"``, the PCGrad paper and its official code), the mean
    (``"mean"``, as in some PyTorch ports: the same direction, 1/K the length), or
    :math:`\sum_i w_i g_i'` when weights are given.

    Args:
      gram: ``[K, K]`` Gram matrix.
      key: a PRNG key for the projection orders.
      weights: optional ``[K]`` weights on the simplex (overrides ``reduction``).
      reduction: ``"sum"`` or ``"mean"``.

    Returns:
      ``(coefficients, diagnostics)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from raco_jax.aggregation.weightings import pcgrad_coefficients
      >>> jac = jnp.array([[1.0, 0.0], [-1.0, 1.0]])
      >>> a, _ = pcgrad_coefficients(jac @ jac.T, jax.random.key(0))
      >>> [round(float(x), 4) for x in a @ jac]
      [0.5, 1.5]

    References:
      Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.
    """
    gram = _check_gram(gram)
    k = gram.shape[0]
    if weights is None:
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        weights = jnp.full((k,), 1.0 if reduction == "sum" else 1.0 / k, jnp.float32)
    else:
        weights = validate_weights(weights, k)
    gram_n, _ = simplex.normalize_gram(gram)
    diag = jnp.diagonal(gram_n)
    orders = jax.vmap(lambda kk: jax.random.permutation(kk, k))(jax.random.split(key, k))
    projected = jnp.eye(k, dtype=jnp.float32)
    rows = jnp.arange(k)
    for t in range(k):
        j = orders[:, t]
        dots = jnp.einsum("il,il->i", projected, gram_n[:, j].T)
        conflict = (dots < 0) & (j != rows) & (diag[j] > 0)
        step = jnp.where(conflict, dots / jnp.where(diag[j] > 0, diag[j], 1.0), 0.0)
        projected = projected - step[:, None] * jax.nn.one_hot(j, k, dtype=jnp.float32)
    coefficients = weights @ projected
    zeros = jnp.zeros((k,), jnp.float32)
    diagnostics = AggregationDiagnostics(
        coefficients=coefficients,
        dual=zeros,
        clipped_dual=zeros,
        gram=gram,
        duality_gap=jnp.zeros((), jnp.float32),
        num_conflicts=_num_conflicts(gram),
        cos_update_anchor=_cosine(gram_n, coefficients, weights),
        finite=jnp.ones((), bool),
    )
    return _finite_or_nan(coefficients, diagnostics)
