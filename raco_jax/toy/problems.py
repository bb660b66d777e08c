"""The toy problems: the CAGrad 2-D toy, quadratic bowls and DTLZ2, with their exact answers."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from raco_jax.aggregation import combine, gram_matrix, mgda_coefficients
from raco_jax.objectives import objective_grads

__all__ = [
    "CAGRAD_TOY_STARTS",
    "LOWER",
    "MEAN_LOSS_OPTIMUM",
    "MEAN_LOSS_VALUE",
    "Problem",
    "cagrad_toy",
    "cagrad_toy_losses",
    "cagrad_toy_pareto_distance",
    "cagrad_toy_pareto_set",
    "cagrad_toy_weighted_minimizer",
    "dtlz2",
    "dtlz2_front_distance",
    "dtlz2_g",
    "pareto_stationarity",
    "quadratic_bowls",
]

LOWER = 5e-6
"""Floor inside the logarithms of the CAGrad toy (the CAGrad code's ``LOWER``)."""

CAGRAD_TOY_STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
"""The three initial points of the CAGrad paper's toy experiment."""

MEAN_LOSS_OPTIMUM: tuple[float, float] = (0.0, -8.3551095)
"""Minimiser of the mean loss ``(L1 + L2) / 2`` of the CAGrad toy (float64, see
:func:`cagrad_toy_weighted_minimizer`)."""

MEAN_LOSS_VALUE = -15.09164
"""``L1 = L2`` at :data:`MEAN_LOSS_OPTIMUM` (to 5 decimals)."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """A differentiable multi-objective problem on a flat parameter vector.

    Attributes:
      name: a short name (used in tables and plots).
      losses: ``params [dim] -> losses [num_objectives]``, jax-traceable.
      num_objectives: K.
      dim: the size of the parameter vector.
      decode: ``params -> decision variables`` (the identity except for :func:`dtlz2`, whose
        parameters are logits of the variables in [0, 1]).
      info: problem-specific constants (e.g. the bowls' ``anchors``).

    Calling the problem evaluates its losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax import toy
      >>> p = toy.quadratic_bowls(anchors=[[0.0, 0.0], [2.0, 0.0]])
      >>> p.name, p.num_objectives, p.dim
      ('quadratic_bowls', 2, 2)
      >>> p(jnp.array([1.0, 1.0]))
      Array([1., 1.], dtype=float32)
    """

    name: str
    losses: Callable[[jax.Array], jax.Array]
    num_objectives: int
    dim: int
    decode: Callable[[jax.Array], jax.Array] = lambda x: x
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, params: jax.Array) -> jax.Array:
        return self.losses(params)


def cagrad_toy_losses(x: jax.Array) -> jax.Array:
    r"""The two losses of the CAGrad paper's 2-D toy problem, as a ``[2]`` vector.

    With ``x = (x1, x2)`` and ``LOWER = 5e-6``:

    .. math::
        a_1 &= \log\max(|0.5(-x_1-7) - \tanh(-x_2)|, \mathrm{LOWER}) + 6,\\
        a_2 &= \log\max(|0.5(-x_1+3) + \tanh(-x_2) + 2|, \mathrm{LOWER}) + 6,\\
        b_1 &= ((-x_1+7)^2 + 0.1(-x_2-8)^2)/10 - 20,\quad
        b_2 = ((-x_1-7)^2 + 0.1(-x_2-8)^2)/10 - 20,\\
        s_1 &= \max(\tanh(0.5 x_2), 0),\quad s_2 = \max(\tanh(-0.5 x_2), 0),\\
        L_1 &= a_1 s_1 + b_1 s_2,\quad L_2 = a_2 s_1 + b_2 s_2.

    Args:
      x: ``[2]`` point (float32 is enough).

    Returns:
      ``[2]`` array ``(L1, L2)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax import toy
      >>> [round(float(v), 4) for v in toy.cagrad_toy_losses(jnp.array(toy.MEAN_LOSS_OPTIMUM))]
      [-15.0916, -15.0916]

    References:
      Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task Learning",
      NeurIPS 2021, https://arxiv.org/abs/2110.14048 (Figure 1).
    """
    x = jnp.asarray(x)
    x1, x2 = x[0], x[1]
    a1 = jnp.log(jnp.maximum(jnp.abs(0.5 * (-x1 - 7.0) - jnp.tanh(-x2)), LOWER)) + 6.0
    a2 = jnp.log(jnp.maximum(jnp.abs(0.5 * (-x1 + 3.0) + jnp.tanh(-x2) + 2.0), LOWER)) + 6.0
    b1 = ((-x1 + 7.0) ** 2 + 0.1 * (-x2 - 8.0) ** 2) / 10.0 - 20.0
    b2 = ((-x1 - 7.0) ** 2 + 0.1 * (-x2 - 8.0) ** 2) / 10.0 - 20.0
    s1 = jnp.maximum(jnp.tanh(0.5 * x2), 0.0)
    s2 = jnp.maximum(jnp.tanh(-0.5 * x2), 0.0)
    return jnp.stack([a1 * s1 + b1 * s2, a2 * s1 + b2 * s2])


def cagrad_toy() -> Problem:
    """The CAGrad paper's 2-D toy (:func:`cagrad_toy_losses`) as a :class:`Problem`.

    Example:
      >>> from raco_jax import toy
      >>> p = toy.cagrad_toy()
      >>> p.name, p.num_objectives, p.dim
      ('cagrad_toy', 2, 2)
    """
    return Problem(name="cagrad_toy", losses=cagrad_toy_losses, num_objectives=2, dim=2)


def _toy_weights(weights: Any) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape[-1:] != (2,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be non-negative [..., 2] arrays, got {weights!r}.")
    total = w.sum(axis=-1, keepdims=True)
    if np.any(np.abs(total - 1.0) > 1e-6):
        raise ValueError(f"weights must sum to 1, got {weights!r}.")
    return w / total


def _toy_x2_star(w1w2: np.ndarray) -> np.ndarray:
    """argmin over x2 < 0 of (19.6 w1 w2 - 20 + 0.01 (x2 + 8)^2) tanh(-x2 / 2), vectorised."""
    c0 = 19.6 * np.asarray(w1w2, np.float64)[..., None] - 20.0

    def h(x2: np.ndarray) -> np.ndarray:
        return (c0 + 0.01 * (x2 + 8.0) ** 2) * np.tanh(-0.5 * x2)

    grid = np.linspace(-12.0, -4.0, 1601)
    values = h(np.broadcast_to(grid, (*c0.shape[:-1], grid.size)))
    i = np.clip(np.argmin(values, axis=-1), 1, grid.size - 2)
    lo, hi = grid[i - 1][..., None], grid[i + 1][..., None]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):  # golden section: the bracket shrinks by 0.618 per iteration
        m1 = hi - ratio * (hi - lo)
        m2 = lo + ratio * (hi - lo)
        left = h(m1) < h(m2)
        hi = np.where(left, m2, hi)
        lo = np.where(left, lo, m1)
    return ((lo + hi) / 2.0)[..., 0]


def cagrad_toy_weighted_minimizer(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    r"""The exact minimiser of the weighted loss ``w1 L1 + w2 L2`` of the CAGrad toy (float64).

    For ``x2 < 0`` (where every weighted loss attains its minimum, about -15 to -20; above
    ``x2 = 0`` the losses stay above -6.3), :math:`L_k = b_k(x)\tanh(-x_2/2)`, so

    .. math::
        w_1 L_1 + w_2 L_2 = \Big(\frac{w_1(7-x_1)^2 + w_2(x_1+7)^2 + 0.1(x_2+8)^2}{10}
        - 20\Big)\tanh(-x_2/2).

    The bracket is negative near the optimum, so the minimiser in ``x1`` minimises the bracket:
    :math:`x_1^* = 7(w_1 - w_2)`, where the bracket is :math:`19.6\,w_1w_2 - 20 + 0.01(x_2+8)^2`;
    :math:`x_2^*` minimises that times :math:`\tanh(-x_2/2)`, found by a grid search and a
    golden-section search to float64 precision. The Pareto set is the curve of these points.

    Args:
      weights: ``[2]`` (or ``[..., 2]``) non-negative weights summing to 1.

    Returns:
      ``[2]`` (or ``[..., 2]``) float64 minimiser(s) ``(x1*, x2*)``.

    Example:
      >>> from raco_jax import toy
      >>> [round(float(v), 5) for v in toy.cagrad_toy_weighted_minimizer((0.5, 0.5))]
      [0.0, -8.35511]
      >>> [round(float(v), 4) for v in toy.cagrad_toy_weighted_minimizer((0.8, 0.2))]
      [4.2, -8.3849]
    """
    w = _toy_weights(weights)
    x1 = 7.0 * (w[..., 0] - w[..., 1])
    x2 = _toy_x2_star(w[..., 0] * w[..., 1])
    return np.stack([x1, x2], axis=-1)


def cagrad_toy_pareto_set(num: int = 1401) -> np.ndarray:
    """Points of the CAGrad toy's Pareto set, ordered by ``x1`` from -7 to 7 (float64).

    Args:
      num: the number of points (evenly spaced weights ``w1`` in [0, 1]).

    Returns:
      ``[num, 2]`` array: :func:`cagrad_toy_weighted_minimizer` of ``(w1, 1 - w1)``.

    Example:
      >>> from raco_jax import toy
      >>> ps = toy.cagrad_toy_pareto_set(5)
      >>> [round(float(v), 3) for v in ps[:, 0]], round(float(ps[:, 1].min()), 3)
      ([-7.0, -3.5, 0.0, 3.5, 7.0], -8.434)
    """
    w1 = np.linspace(0.0, 1.0, num)
    return cagrad_toy_weighted_minimizer(np.stack([w1, 1.0 - w1], axis=-1))


def cagrad_toy_pareto_distance(points: Any, pareto_set: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distance from points of the plane to the CAGrad toy's Pareto set (a curve).

    The distance to the polyline through :func:`cagrad_toy_pareto_set` (1401 points: its error
    is below 1e-6 near the curve).

    Args:
      points: ``[2]`` or ``[..., 2]`` points.
      pareto_set: an optional precomputed polyline ``[M, 2]``.

    Returns:
      The distances, shaped like ``points`` without the last axis (float64).

    Example:
      >>> from raco_jax import toy
      >>> round(float(toy.cagrad_toy_pareto_distance([0.0, -7.355114])), 4)
      1.0
    """
    ps = cagrad_toy_pareto_set() if pareto_set is None else np.asarray(pareto_set, np.float64)
    p = np.asarray(points, np.float64)[..., None, :]
    a, b = ps[:-1], ps[1:]
    ab = b - a
    t = np.clip(np.sum((p - a) * ab, axis=-1) / np.sum(ab * ab, axis=-1), 0.0, 1.0)
    nearest = a + t[..., None] * ab
    return np.min(np.linalg.norm(p - nearest, axis=-1), axis=-1)


def quadratic_bowls(
    num_objectives: int = 3,
    dim: int = 10,
    seed: int = 0,
    anchors: Any = None,
) -> Problem:
    r"""Quadratic bowls :math:`L_k(x) = \tfrac12\|x - a_k\|^2`, k = 1..K.

    The gradients are :math:`x - a_k`; the Pareto set is the convex hull of the anchors, and
    :func:`pareto_stationarity` (:math:`\min_{p\in\Delta}\|x - \sum_k p_k a_k\|`) is the distance
    from x to it. Each loss is 1-smooth, so plain gradient descent with step <= 1 satisfies the
    assumptions of RACO's Theorem 3.1.

    Args:
      num_objectives: K (ignored when ``anchors`` is given).
      dim: n (ignored when ``anchors`` is given).
      seed: seed of the standard-normal anchors.
      anchors: optional explicit ``[K, n]`` anchors.

    Returns:
      A :class:`Problem` with ``info["anchors"]`` (``[K, n]`` float32 NumPy array).

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax import toy
      >>> p = toy.quadratic_bowls(anchors=[[0.0, 0.0], [2.0, 0.0]])
      >>> round(float(toy.pareto_stationarity(p, jnp.array([1.0, 3.0]))), 4)  # distance to hull
      3.0
    """
    if anchors is None:
        rng = np.random.default_rng(seed)
        anchors = rng.standard_normal((num_objectives, dim))
    a_np = np.asarray(anchors, np.float32)
    if a_np.ndim != 2 or a_np.shape[0] < 2:
        raise ValueError(f"anchors must be [K >= 2, n], got shape {a_np.shape}.")
    a = jnp.asarray(a_np)

    def losses(x: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum((x[None, :] - a) ** 2, axis=-1)

    return Problem(
        name="quadratic_bowls",
        losses=losses,
        num_objectives=a_np.shape[0],
        dim=a_np.shape[1],
        info={"anchors": a_np},
    )


def dtlz2(num_objectives: int = 3, dim: int = 6) -> Problem:
    r"""DTLZ2 with K objectives on ``dim`` variables in [0, 1], parameterised by logits.

    The parameters ``z`` are unconstrained; the decision variables are ``u = sigmoid(z)`` (so
    every optimiser stays inside the box, and the box's faces are reached only in the limit).
    With :math:`g = \sum_{i \ge K} (u_i - 1/2)^2` (the last ``dim - K + 1`` variables) and
    angles :math:`\theta_i = \pi u_i / 2` for the first K - 1:

    .. math::
        L_1 = (1+g)\prod_{i<K}\cos\theta_i,\quad
        L_k = (1+g)\Big(\prod_{i<K-k+1}\cos\theta_i\Big)\sin\theta_{K-k+1},\quad
        L_K = (1+g)\sin\theta_1.

    The losses are non-negative, :math:`\sum_k L_k^2 = (1+g)^2`, and the Pareto front is
    :math:`g = 0` (``u_i = 1/2``, i.e. ``z_i = 0``, for the distance variables): the positive part
    of the unit sphere. The front is concave, so a weighted sum drives the angle variables to
    the box's faces (the front's corners), while the distance to the front still goes to 0.

    MGDA can stall off the front: where an angle variable saturates (e.g. ``u_1 -> 1``, so
    ``L_1 = L_2 ~ 0``) the gradients of those objectives vanish, the minimum-norm combination is
    ~0 and the point is (weakly) Pareto-critical although ``g > 0`` (seen from one of the four
    starts of :func:`run_benchmark`, which ends at ``g ~ 0.2``).

    Args:
      num_objectives: K >= 2.
      dim: number of variables, >= K.

    Returns:
      A :class:`Problem` whose ``decode`` is the sigmoid.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax import toy
      >>> p = toy.dtlz2()
      >>> losses = p(jnp.zeros(6))  # u = 0.5 everywhere: g = 0, on the front
      >>> round(float(jnp.sum(losses**2)), 6)
      1.0

    References:
      Deb, Thiele, Laumanns, Zitzler, "Scalable Test Problems for Evolutionary Multi-Objective
      Optimization", 2002 (DTLZ2).
    """
    if num_objectives < 2 or dim < num_objectives:
        raise ValueError(
            f"need num_objectives >= 2 and dim >= num_objectives, got {num_objectives}, {dim}."
        )
    k = num_objectives

    def losses(z: jax.Array) -> jax.Array:
        u = jax.nn.sigmoid(z)
        g = jnp.sum((u[k - 1 :] - 0.5) ** 2)
        theta = 0.5 * jnp.pi * u[: k - 1]
        cos, sin = jnp.cos(theta), jnp.sin(theta)
        out = []
        for m in range(k):  # L_{m+1}: product of the first k-1-m cosines, times one sine
            term = jnp.prod(cos[: k - 1 - m])
            if m > 0:
                term = term * sin[k - 1 - m]
            out.append((1.0 + g) * term)
        return jnp.stack(out)

    return Problem(name="dtlz2", losses=losses, num_objectives=k, dim=dim, decode=jax.nn.sigmoid)


def dtlz2_front_distance(losses: Any) -> np.ndarray:
    """Distance from DTLZ2 loss vectors to its front, ``||L|| - 1`` (the front is the unit sphere).

    For non-negative losses with :math:`\\|L\\| \\ge 1` (every DTLZ2 point) this is the Euclidean
    distance in objective space to the positive part of the unit sphere; it equals ``g``.

    Args:
      losses: ``[K]`` or ``[..., K]`` loss vectors.

    Returns:
      float64 distances shaped like ``losses`` without the last axis.

    Example:
      >>> from raco_jax import toy
      >>> float(toy.dtlz2_front_distance([0.0, 0.6, 0.8]))
      0.0
    """
    return np.linalg.norm(np.asarray(losses, np.float64), axis=-1) - 1.0


def dtlz2_g(params: Any, num_objectives: int) -> np.ndarray:
    """DTLZ2's g (``||L|| - 1``, the distance to the front) from the logits, in float64.

    Example:
        >>> import numpy as np
        >>> from raco_jax.toy import dtlz2_g
        >>> dtlz2_g(np.zeros(6), 3).item()  # all variables at 0.5: on the front
        0.0
    """
    u = 1.0 / (1.0 + np.exp(-np.asarray(params, np.float64)))
    return np.sum((u[..., num_objectives - 1 :] - 0.5) ** 2, axis=-1)


def pareto_stationarity(problem: Problem, params: jax.Array) -> jax.Array:
    r"""The Pareto-stationarity residual :math:`M(x) = \min_{p\in\Delta}\|\sum_k p_k \nabla L_k(x)\|`.

    Zero exactly at Pareto-critical points (RACO's Theorem 3.1 bounds it). The simplex problem
    is MGDA's (solved exactly on the Gram matrix by
    :func:`raco_jax.aggregation.weightings.mgda_coefficients`); the norm is then taken of the
    combined gradient itself, not of :math:`p^\top H p`, so it stays accurate near 0 in float32.

    Args:
      problem: the problem.
      params: ``[dim]`` or ``[..., dim]`` parameters.

    Returns:
      The residual(s), shaped like ``params`` without the last axis.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax import toy
      >>> p = toy.quadratic_bowls(anchors=[[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
      >>> r = toy.pareto_stationarity(p, jnp.array([[0.5, 0.5], [2.0, 2.0]]))
      >>> [round(float(v), 4) for v in r]  # inside the hull, then sqrt(2) away from it
      [0.0, 1.4142]
    """
    grads_fn = objective_grads(problem.losses)

    def single(x: jax.Array) -> jax.Array:
        grads = grads_fn(x)
        p, _ = mgda_coefficients(gram_matrix(grads))
        return jnp.linalg.norm(combine(grads, p))

    params = jnp.asarray(params, jnp.float32)
    flat = params.reshape(-1, params.shape[-1])
    return jax.jit(jax.vmap(single))(flat).reshape(params.shape[:-1])
