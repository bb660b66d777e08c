r"""Analytic multi-objective toy problems, a fast trajectory runner, and the toy benchmark.

Three problems whose answers are known exactly, so an aggregator can be checked end to end:

* :func:`cagrad_toy`: the 2-D two-objective problem of the CAGrad paper (Figure 1 of Liu et
  al., NeurIPS 2021). Below ``x2 = 0`` both losses are ``b_k(x) tanh(-x2/2)`` with quadratics
  ``b_k``, so the minimiser of every weighted loss ``w1 L1 + w2 L2`` is known in closed form in
  ``x1`` (``x1 = 7 (w1 - w2)``) and by a float64 1-D search in ``x2``
  (:func:`cagrad_toy_weighted_minimizer`); the Pareto set is the curve of these minimisers
  (``x1`` in [-7, 7], ``x2`` about -8.36 to -8.44). Above ``x2 = 0`` the losses have narrow
  logarithmic valleys that trap plain gradient descent.
* :func:`quadratic_bowls`: ``L_k(x) = 0.5 ||x - a_k||^2``. The Pareto set is the convex hull of
  the anchors ``a_k`` and the Pareto-stationarity residual
  :math:`\min_{p\in\Delta}\|\sum_k p_k \nabla L_k(x)\|` (:func:`pareto_stationarity`) equals the
  distance from ``x`` to that hull.
* :func:`dtlz2`: DTLZ2 (Deb et al., 2002) with K objectives, the decision variables in [0, 1]
  reached through a sigmoid so that plain unconstrained optimisers apply. Its Pareto front is
  the positive part of the unit sphere, ``sum_k L_k^2 = 1``; :func:`dtlz2_front_distance`
  measures how far a loss vector is from it.

:func:`run` optimises many starting points at once: one ``jax.jit`` of a ``jax.lax.scan`` over
steps, ``jax.vmap``-ed over the starts; at each step it takes the stacked per-objective gradients
(:func:`raco_jax.objective_grads`) and applies any optax chain headed by a raco_jax aggregator.
100k Adam steps from three starts take a few seconds on a CPU.

:func:`run_benchmark` is the toy benchmark behind ``raco-jax toy`` and ``benchmarks/toy.py``.
This module imports only jax, optax and numpy; matplotlib is imported inside the plotting
functions.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from raco_jax.aggregation import combine, gram_matrix, mgda_coefficients
from raco_jax.aggregation.transforms import cagrad, clipped_cagrad, mgda, pcgrad, weighted_sum
from raco_jax.objectives import objective_grads

__all__ = [
    "CAGRAD_TOY_STARTS",
    "LOWER",
    "MEAN_LOSS_OPTIMUM",
    "MEAN_LOSS_VALUE",
    "Problem",
    "Trajectory",
    "cagrad_toy",
    "cagrad_toy_losses",
    "cagrad_toy_pareto_distance",
    "cagrad_toy_pareto_set",
    "cagrad_toy_weighted_minimizer",
    "dtlz2",
    "dtlz2_front_distance",
    "pareto_stationarity",
    "plot_cagrad_toy",
    "quadratic_bowls",
    "run",
    "run_benchmark",
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


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


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


def _dtlz2_g64(params: Any, num_objectives: int) -> np.ndarray:
    """DTLZ2's g (= ``||L|| - 1``, the distance to the front) from the logits, in float64."""
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


# --------------------------------------------------------------------------------------------
# The trajectory runner
# --------------------------------------------------------------------------------------------


class Trajectory(NamedTuple):
    """What :func:`run` returns (S starts, T + 1 records: the start, then every ``record_every``
    steps).

    Attributes:
      steps: ``[T + 1]`` step counts of the records (0, record_every, ..., steps).
      params: ``[S, T + 1, dim]`` parameters.
      losses: ``[S, T + 1, K]`` losses.
      coefficients: ``[S, T + 1, K]`` the aggregator's effective coefficients ``a`` of its last
        update (``d = sum_k a_k g_k``); NaN at record 0 and when the state has no
        ``coefficients`` field of size K.
      cos_update_anchor: ``[S, T + 1]`` cosine between the aggregated update and the weighted
        anchor ``g_0`` at the last step (NaN when unavailable).
      num_conflicts: ``[S, T + 1]`` number of conflicting gradient pairs at the last step (float,
        NaN when unavailable).
      final_state: the optimizer state after the last step (leaves with a leading S axis).

    Example:
      >>> import optax, raco_jax
      >>> from raco_jax import toy
      >>> tx = optax.chain(raco_jax.weighted_sum((0.5, 0.5)), optax.sgd(0.1))
      >>> problem = toy.quadratic_bowls(num_objectives=2, dim=4)
      >>> traj = toy.run(problem, tx, [[3.0, 0.0, 0.0, 0.0]], steps=100)
      >>> traj.final_params.shape, traj.final_losses.shape, traj.steps.tolist()
      ((1, 4), (1, 2), [0, 100])
    """

    steps: np.ndarray
    params: jax.Array
    losses: jax.Array
    coefficients: jax.Array
    cos_update_anchor: jax.Array
    num_conflicts: jax.Array
    final_state: Any

    @property
    def final_params(self) -> jax.Array:
        """``[S, dim]`` parameters after the last step."""
        return self.params[:, -1]

    @property
    def final_losses(self) -> jax.Array:
        """``[S, K]`` losses after the last step."""
        return self.losses[:, -1]


def _state_field(state: Any, name: str) -> Any:
    try:
        return optax.tree.get(state, name)
    except KeyError:  # several fields of that name (two aggregators in one chain)
        return None


def _diagnostics(state: Any, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    nan = jnp.float32(jnp.nan)
    coefficients = _state_field(state, "coefficients")
    if coefficients is None or jnp.shape(coefficients) != (k,):
        coefficients = jnp.full((k,), nan)
    cos = _state_field(state, "cos_update_anchor")
    cos = nan if cos is None or jnp.shape(cos) != () else cos
    conflicts = _state_field(state, "num_conflicts")
    conflicts = nan if conflicts is None or jnp.shape(conflicts) != () else conflicts
    return (
        jnp.asarray(coefficients, jnp.float32),
        jnp.asarray(cos, jnp.float32),
        jnp.asarray(conflicts, jnp.float32),
    )


def run(
    problem: Problem,
    tx: optax.GradientTransformation,
    x0s: Any,
    steps: int,
    record_every: int = 100,
) -> Trajectory:
    """Optimises a problem from several starting points at once with an optax chain.

    One ``jax.jit`` of a ``jax.lax.scan`` over ``steps`` updates, ``jax.vmap``-ed over the starts.
    Each step computes the stacked per-objective gradients with
    :func:`raco_jax.objective_grads` (leaves ``[K, dim]``), applies ``tx`` (a chain headed by a
    raco_jax aggregator, e.g. ``optax.chain(raco_jax.clipped_cagrad((0.8, 0.2), 0.4),
    optax.adam(1e-3))``) and ``optax.apply_updates``. The parameters, the losses and the
    aggregator's diagnostics are recorded every ``record_every`` steps.

    Args:
      problem: the :class:`Problem`.
      tx: the optax transformation taking stacked gradients.
      x0s: ``[S, dim]`` starting points (or one ``[dim]`` start).
      steps: the number of optimizer steps, a multiple of ``record_every``.
      record_every: the recording interval (a recording costs one loss evaluation).

    Returns:
      A :class:`Trajectory`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import raco_jax
      >>> from raco_jax import toy
      >>> tx = optax.chain(raco_jax.clipped_cagrad(weights=(0.8, 0.2), c=0.4), optax.adam(0.1))
      >>> traj = toy.run(toy.cagrad_toy(), tx, toy.CAGRAD_TOY_STARTS, steps=200, record_every=50)
      >>> traj.params.shape, traj.losses.shape, traj.coefficients.shape, traj.steps.tolist()
      ((3, 5, 2), (3, 5, 2), (3, 5, 2), [0, 50, 100, 150, 200])
    """
    if not isinstance(steps, int) or not isinstance(record_every, int):
        raise TypeError("steps and record_every must be ints.")
    if record_every < 1 or steps < record_every or steps % record_every:
        raise ValueError(
            f"steps ({steps}) must be a positive multiple of record_every ({record_every})."
        )
    x0s = jnp.asarray(x0s, jnp.float32)
    if x0s.ndim == 1:
        x0s = x0s[None]
    if x0s.ndim != 2 or x0s.shape[1] != problem.dim:
        raise ValueError(f"x0s must be [S, {problem.dim}], got shape {x0s.shape}.")
    k = problem.num_objectives
    grads_fn = objective_grads(problem.losses)
    num_records = steps // record_every

    def single(x0: jax.Array) -> tuple[Any, ...]:
        def step(carry: tuple[jax.Array, Any], _: None) -> tuple[tuple[jax.Array, Any], None]:
            x, state = carry
            updates, state = tx.update(grads_fn(x), state, x)
            return (optax.apply_updates(x, updates), state), None

        def block(carry: tuple[jax.Array, Any], _: None) -> tuple[tuple[jax.Array, Any], Any]:
            carry, _ = jax.lax.scan(step, carry, None, length=record_every)
            x, state = carry
            return carry, (x, problem.losses(x), *_diagnostics(state, k))

        init = (x0, tx.init(x0))
        (_, state), (xs, ls, coef, cos, conf) = jax.lax.scan(block, init, None, length=num_records)
        nan = jnp.float32(jnp.nan)
        return (
            jnp.concatenate([x0[None], xs]),
            jnp.concatenate([problem.losses(x0)[None], ls]),
            jnp.concatenate([jnp.full((1, k), nan), coef]),
            jnp.concatenate([nan[None], cos]),
            jnp.concatenate([nan[None], conf]),
            state,
        )

    params, losses, coef, cos, conf, state = jax.jit(jax.vmap(single))(x0s)
    return Trajectory(
        steps=np.arange(num_records + 1) * record_every,
        params=params,
        losses=losses,
        coefficients=coef,
        cos_update_anchor=cos,
        num_conflicts=conf,
        final_state=state,
    )


# --------------------------------------------------------------------------------------------
# Plotting (matplotlib imported lazily)
# --------------------------------------------------------------------------------------------


def plot_cagrad_toy(
    trajectories: Mapping[str, Trajectory],
    targets: Mapping[str, Any] | None = None,
    path: str | pathlib.Path | None = None,
    ncols: int = 4,
) -> Any:
    """Plots CAGrad-toy trajectories, one panel per method, over the mean loss's contours.

    Each panel shows the contours of ``(L1 + L2) / 2``, the Pareto set (black curve), the
    trajectory from every start (a circle marks the start, a cross the end) and, when given,
    the method's target point (a star).

    Args:
      trajectories: ``{method label: Trajectory}`` on :func:`cagrad_toy`.
      targets: optional ``{method label: (x1, x2)}`` (e.g. the weighted-loss minimiser).
      path: optional file to save the figure to (PNG, ...).
      ncols: panels per row.

    Returns:
      The matplotlib ``Figure``.

    Example:
      >>> import matplotlib
      >>> matplotlib.use("Agg")
      >>> import optax, raco_jax
      >>> from raco_jax import toy
      >>> tx = optax.chain(raco_jax.clipped_cagrad(weights=(0.8, 0.2), c=0.4), optax.adam(0.1))
      >>> traj = toy.run(toy.cagrad_toy(), tx, toy.CAGRAD_TOY_STARTS, steps=200, record_every=50)
      >>> target = toy.cagrad_toy_weighted_minimizer((0.8, 0.2))
      >>> fig = toy.plot_cagrad_toy({"clipped_cagrad": traj}, {"clipped_cagrad": target})
      >>> len(fig.axes)
      1
    """
    import matplotlib.pyplot as plt

    targets = dict(targets or {})
    names = list(trajectories)
    ncols = max(1, min(ncols, len(names)))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False, sharex=True, sharey=True
    )
    grid = np.linspace(-10.0, 10.0, 201, dtype=np.float32)
    xx, yy = np.meshgrid(grid, grid)
    points = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], axis=-1))
    mean_loss = np.asarray(jnp.mean(jax.vmap(cagrad_toy_losses)(points), axis=-1)).reshape(xx.shape)
    pareto = cagrad_toy_pareto_set(201)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.contourf(xx, yy, mean_loss, levels=30, cmap="Greys", alpha=0.55)
        ax.plot(pareto[:, 0], pareto[:, 1], color="black", lw=2.5, label="Pareto set")
        params = np.asarray(trajectories[name].params)
        for s in range(params.shape[0]):
            color = colors[s % len(colors)]
            ax.plot(params[s, :, 0], params[s, :, 1], color=color, lw=1.3)
            ax.plot(*params[s, 0], "o", color=color, ms=5)
            ax.plot(*params[s, -1], "X", color=color, ms=7, mec="black", mew=0.6)
        if targets.get(name) is not None:
            ax.plot(*np.asarray(targets[name]), "*", color="gold", ms=14, mec="black", mew=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
    for ax in axes[-1]:
        ax.set_xlabel("x1")
    for ax in axes[:, 0]:
        ax.set_ylabel("x2")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _plot_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ylabel: str,
    title: str,
    ax: Any,
) -> None:
    for name, (steps, values) in curves.items():
        values = np.maximum(np.asarray(values, np.float64), 1e-12)
        line = ax.plot(steps, np.median(values, axis=0), lw=1.6, label=name)[0]
        for row in values:
            ax.plot(steps, row, lw=0.6, alpha=0.35, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def _plot_bowls(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: pathlib.Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    _plot_curves(
        curves,
        "Pareto-stationarity residual (= distance to hull)",
        "Quadratic bowls: median over starts (thin: each start)",
        ax,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_dtlz2(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    final_losses: Mapping[str, np.ndarray],
    path: pathlib.Path,
) -> None:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 4.6))
    ax = fig.add_subplot(1, 2, 1)
    _plot_curves(curves, "distance to the front (||L|| - 1 = g)", "DTLZ2 (K = 3)", ax)
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    u, v = np.meshgrid(np.linspace(0, np.pi / 2, 25), np.linspace(0, np.pi / 2, 25))
    ax3.plot_wireframe(
        np.cos(u) * np.cos(v), np.cos(u) * np.sin(v), np.sin(u), color="grey", lw=0.4, alpha=0.6
    )
    for name, losses in final_losses.items():
        losses = np.asarray(losses)
        ax3.scatter(losses[:, 0], losses[:, 1], losses[:, 2], s=22, label=name)
    ax3.set_xlabel("L1")
    ax3.set_ylabel("L2")
    ax3.set_zlabel("L3")
    ax3.set_title("final losses and the front (colours as on the left)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Protocol:
    toy_steps: int
    toy_lr: float
    bowl_steps: int
    bowl_lr: float
    dtlz2_steps: int
    dtlz2_lr: float
    record_every: int
    all_methods: bool  # False: only the protocol's core methods (fewer compilations)


_FULL = _Protocol(
    toy_steps=100_000,
    toy_lr=1e-3,
    bowl_steps=2_000,
    bowl_lr=0.1,
    dtlz2_steps=5_000,
    dtlz2_lr=1e-2,
    record_every=100,
    all_methods=True,
)
_QUICK = _Protocol(
    toy_steps=40_000,
    toy_lr=5e-3,
    bowl_steps=1_000,
    bowl_lr=0.1,
    dtlz2_steps=2_000,
    dtlz2_lr=1e-2,
    record_every=100,
    all_methods=False,
)
_TARGET_TOL = 0.05


def _fmt(values: Any, digits: int = 4) -> str:
    return "(" + ", ".join(f"{float(v):.{digits}f}" for v in np.ravel(values)) + ")"


def _toy_methods(
    all_methods: bool = True,
) -> list[tuple[str, optax.GradientTransformation, np.ndarray | None]]:
    """(label, aggregator, weights whose weighted-loss minimiser is the target, or None)."""
    methods: list[tuple[str, optax.GradientTransformation, np.ndarray | None]] = []
    for w in ((0.5, 0.5), (0.8, 0.2), (0.2, 0.8)):
        methods.append((f"weighted_sum w={w}", weighted_sum(w), np.array(w)))
    methods.append(
        ("cagrad c=0.5 (uniform)", cagrad(c=0.5, num_objectives=2), np.array((0.5, 0.5)))
    )
    for w in ((0.8, 0.2), (0.2, 0.8)):
        methods.append((f"clipped_cagrad w={w} c=0.4", clipped_cagrad(w, c=0.4), np.array(w)))
    if all_methods:
        methods.append(("mgda", mgda(num_objectives=2), None))
        methods.append(("pcgrad", pcgrad(seed=0, num_objectives=2), None))
    return methods


def _set_methods(
    k: int, w: tuple[float, ...], all_methods: bool = True
) -> list[tuple[str, optax.GradientTransformation]]:
    if not all_methods:
        return [
            (f"weighted_sum w={w}", weighted_sum(w)),
            (f"clipped_cagrad w={w} c=0.4", clipped_cagrad(w, c=0.4)),
            ("mgda", mgda(num_objectives=k)),
        ]
    uniform = tuple(round(1.0 / k, 6) for _ in range(k))
    uniform = (*uniform[:-1], 1.0 - sum(uniform[:-1]))
    return [
        ("weighted_sum (uniform)", weighted_sum(uniform)),
        (f"weighted_sum w={w}", weighted_sum(w)),
        ("cagrad c=0.5 (uniform)", cagrad(c=0.5, num_objectives=k)),
        (f"clipped_cagrad w={w} c=0.4", clipped_cagrad(w, c=0.4)),
        ("mgda", mgda(num_objectives=k)),
        ("pcgrad", pcgrad(seed=0, num_objectives=k)),
    ]


def _steps_to_target(steps: np.ndarray, distances: np.ndarray, tol: float) -> int | None:
    """First recorded step from which the distance stays below tol (None if it never does)."""
    far = np.nonzero(distances >= tol)[0]
    if far.size == 0:
        return int(steps[0])
    if far[-1] == distances.size - 1:
        return None
    return int(steps[far[-1] + 1])


def _bench_cagrad_toy(protocol: _Protocol, log: Callable[[str], None]) -> tuple[dict, dict, dict]:
    problem = cagrad_toy()
    pareto = cagrad_toy_pareto_set()
    results: dict[str, Any] = {}
    trajectories: dict[str, Trajectory] = {}
    targets: dict[str, Any] = {}
    for label, aggregator, target_w in _toy_methods(protocol.all_methods):
        t0 = time.perf_counter()
        tx = optax.chain(aggregator, optax.adam(protocol.toy_lr))
        traj = run(problem, tx, CAGRAD_TOY_STARTS, protocol.toy_steps, protocol.record_every)
        params = np.asarray(traj.params, np.float64)
        seconds = time.perf_counter() - t0
        target = None if target_w is None else cagrad_toy_weighted_minimizer(target_w)
        finals = params[:, -1]
        entry: dict[str, Any] = {
            "weights": None if target_w is None else target_w.tolist(),
            "target": None if target is None else target.tolist(),
            "starts": [list(s) for s in CAGRAD_TOY_STARTS],
            "final_points": finals.tolist(),
            "final_losses": np.asarray(traj.final_losses, np.float64).tolist(),
            "distance_to_pareto_set": cagrad_toy_pareto_distance(finals, pareto).tolist(),
            "seconds": seconds,
        }
        if target is not None:
            dist = np.linalg.norm(params - target, axis=-1)
            entry["distance_to_target"] = dist[:, -1].tolist()
            entry["steps_to_target"] = [_steps_to_target(traj.steps, d, _TARGET_TOL) for d in dist]
        else:
            entry["distance_to_target"] = [None] * len(CAGRAD_TOY_STARTS)
            entry["steps_to_target"] = [None] * len(CAGRAD_TOY_STARTS)
        results[label] = entry
        trajectories[label] = traj
        targets[label] = target
        log(
            f"  {'cagrad_toy':15s} {label:36s} {seconds:5.1f}s  final "
            + " ".join(_fmt(p, 3) for p in finals)
        )
    return results, trajectories, targets


def _bench_set_problem(
    problem: Problem,
    x0s: np.ndarray,
    make_optimizer: Callable[[], optax.GradientTransformation],
    steps: int,
    weights: tuple[float, ...],
    metric: Callable[[np.ndarray, np.ndarray], np.ndarray],
    protocol: _Protocol,
    log: Callable[[str], None],
) -> tuple[dict, dict]:
    """Runs every method; ``metric(params, losses)`` maps [M, S, T + 1, ...] to [M, S, T + 1]."""
    methods = _set_methods(problem.num_objectives, weights, protocol.all_methods)
    trajectories: list[Trajectory] = []
    seconds: list[float] = []
    for _, aggregator in methods:
        t0 = time.perf_counter()
        tx = optax.chain(aggregator, make_optimizer())
        trajectories.append(run(problem, tx, x0s, steps, protocol.record_every))
        jax.block_until_ready(trajectories[-1].params)
        seconds.append(time.perf_counter() - t0)
    # One metric call for all methods (one compilation of the Pareto-stationarity residual).
    values = metric(
        np.stack([np.asarray(t.params) for t in trajectories]),
        np.stack([np.asarray(t.losses) for t in trajectories]),
    )
    results: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m, ((label, _), traj) in enumerate(zip(methods, trajectories, strict=True)):
        results[label] = {
            "metric": values[m, :, -1].tolist(),
            "metric_after_first_record": values[m, :, 1].tolist(),
            "final_points": np.asarray(traj.final_params, np.float64).tolist(),
            "final_losses": np.asarray(traj.final_losses, np.float64).tolist(),
            "seconds": seconds[m],
        }
        curves[label] = (traj.steps, values[m])
        log(
            f"  {problem.name:15s} {label:36s} {seconds[m]:5.1f}s  max final metric "
            f"{float(np.max(values[m, :, -1])):.2e}"
        )
    return results, curves


def _write_tables(results: dict[str, Any], out: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    columns = [
        "problem",
        "method",
        "start",
        "initial_point",
        "final_point",
        "final_losses",
        "target",
        "distance_to_target",
        "metric",
        "metric_value",
        "steps_to_target",
    ]
    rows: list[dict[str, Any]] = []
    for label, e in results["cagrad_toy"].items():
        for s in range(len(e["final_points"])):
            rows.append(
                {
                    "problem": "cagrad_toy",
                    "method": label,
                    "start": s,
                    "initial_point": _fmt(e["starts"][s], 2),
                    "final_point": _fmt(e["final_points"][s]),
                    "final_losses": _fmt(e["final_losses"][s]),
                    "target": "" if e["target"] is None else _fmt(e["target"]),
                    "distance_to_target": ""
                    if e["distance_to_target"][s] is None
                    else f"{e['distance_to_target'][s]:.2e}",
                    "metric": "distance_to_pareto_set",
                    "metric_value": f"{e['distance_to_pareto_set'][s]:.2e}",
                    "steps_to_target": ""
                    if e["steps_to_target"][s] is None
                    else e["steps_to_target"][s],
                }
            )
    for problem, metric in (
        ("quadratic_bowls", "pareto_stationarity"),
        ("dtlz2", "front_distance"),
    ):
        for label, e in results[problem]["methods"].items():
            for s in range(len(e["metric"])):
                rows.append(
                    {
                        "problem": problem,
                        "method": label,
                        "start": s,
                        "initial_point": "",
                        "final_point": _fmt(e["final_points"][s]),
                        "final_losses": _fmt(e["final_losses"][s]),
                        "target": "",
                        "distance_to_target": "",
                        "metric": metric,
                        "metric_value": f"{e['metric'][s]:.2e}",
                        "steps_to_target": "",
                    }
                )
    csv_path = out / "toy_results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    cfg = results["config"]
    lines = [
        "# raco_jax toy benchmark",
        "",
        f"Protocol: {'quick' if cfg['quick'] else 'full'}; wall time {results['wall_time_s']:.1f} s.",
        "",
        f"## CAGrad 2-D toy (Adam lr={cfg['toy_lr']}, {cfg['toy_steps']} steps, starts "
        f"{', '.join(_fmt(s, 1) for s in CAGRAD_TOY_STARTS)})",
        "",
        "Target: the exact minimiser of the method's weighted loss (uniform for cagrad); "
        f"steps to target: first record after which the distance stays below {_TARGET_TOL}.",
        "",
        "| method | start | final point | final (L1, L2) | target | dist. to target "
        "| dist. to Pareto set | steps to target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, e in results["cagrad_toy"].items():
        for s in range(len(e["final_points"])):
            d = e["distance_to_target"][s]
            st = e["steps_to_target"][s]
            lines.append(
                f"| {label} | {_fmt(e['starts'][s], 1)} | {_fmt(e['final_points'][s])} "
                f"| {_fmt(e['final_losses'][s])} "
                f"| {'-' if e['target'] is None else _fmt(e['target'])} "
                f"| {'-' if d is None else f'{d:.1e}'} | {e['distance_to_pareto_set'][s]:.1e} "
                f"| {'-' if e['target'] is None else ('never' if st is None else st)} |"
            )
    for problem, title, metric in (
        (
            "quadratic_bowls",
            "Quadratic bowls (K = {k}, n = {n}, SGD lr={lr}, {steps} steps, {s} random starts)",
            "Pareto-stationarity residual (= distance to the hull of the anchors)",
        ),
        (
            "dtlz2",
            "DTLZ2 (K = {k}, n = {n} logits, Adam lr={lr}, {steps} steps, {s} random starts)",
            "distance to the front, norm(L) - 1 (= g, in float64)",
        ),
    ):
        r = results[problem]
        lines += [
            "",
            "## "
            + title.format(
                k=r["num_objectives"], n=r["dim"], lr=r["lr"], steps=r["steps"], s=r["num_starts"]
            ),
            "",
            f"{metric}, after {r['steps']} steps (max and median over the starts, then each "
            f"start) and after {cfg['record_every']} steps (median):",
            "",
            f"| method | max | median | per start | median after {cfg['record_every']} steps |",
            "|---|---|---|---|---|",
        ]
        for label, e in r["methods"].items():
            vals = np.asarray(e["metric"])
            early = float(np.median(e["metric_after_first_record"]))
            lines.append(
                f"| {label} | {vals.max():.1e} | {np.median(vals):.1e} | "
                + ", ".join(f"{v:.1e}" for v in vals)
                + f" | {early:.1e} |"
            )
    md_path = out / "toy_results.md"
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def run_benchmark(
    output_dir: str | pathlib.Path | None = None,
    quick: bool = False,
    *,
    plots: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Runs the toy benchmark: the CAGrad 2-D toy, quadratic bowls and DTLZ2, for every method.

    Full protocol (``quick=False``):

    * CAGrad toy, from (-8.5, 7.5), (-8.5, -5) and (9, 9), Adam(lr=1e-3), 100k steps:
      ``weighted_sum`` with weights (0.5, 0.5), (0.8, 0.2), (0.2, 0.8); ``cagrad(c=0.5)``
      (uniform anchor); ``clipped_cagrad(w, c=0.4)`` for w = (0.8, 0.2) and (0.2, 0.8); and
      ``mgda`` and ``pcgrad`` for context. Each final point is compared with the exact minimiser
      of the method's weighted loss (:func:`cagrad_toy_weighted_minimizer`; none for MGDA and
      PCGrad) and with the Pareto set.
    * Quadratic bowls, K = 3, n = 10 (seed 0), 4 random starts (normal, scale 4), SGD(lr=0.1),
      2000 steps: the Pareto-stationarity residual after N steps, for ``weighted_sum``
      (uniform, w), ``cagrad(0.5)``, ``clipped_cagrad(w, 0.4)``, ``mgda``, ``pcgrad`` with
      w = (0.6, 0.3, 0.1).
    * DTLZ2, K = 3, 6 logits, 4 random starts (normal, scale 1.5), Adam(lr=1e-2), 5000 steps:
      the final points' distance to the front, same methods.

    ``quick=True``: fewer steps and fewer methods (the run time is dominated by compilation,
    about 0.5 to 2 s per method on a CPU, while 100k steps of a 2-D problem execute in well
    under a second). CAGrad toy: 40k steps with Adam(lr=5e-3), the six protocol methods (no MGDA
    or PCGrad); the CAGrad and clipped-CAGrad runs still reach their targets to about 1e-3 from
    all three starts (the slowest after ~27k steps), while the weighted-sum baseline escapes the
    x2 > 0 valleys more often at this larger step size. Bowls: 1000 steps; DTLZ2: 2000 steps;
    both with ``weighted_sum(w)``, ``clipped_cagrad(w, 0.4)`` and ``mgda`` only.

    Files written to ``output_dir`` (created if needed; nothing is written when None):
    ``cagrad_toy_trajectories.png``, ``quadratic_bowls.png``, ``dtlz2.png`` (if ``plots``),
    ``toy_results.md``, ``toy_results.csv`` and ``toy_results.json``.

    Args:
      output_dir: where to write the plots and tables.
      quick: run the reduced protocol.
      plots: write the PNG plots (needs matplotlib).
      log: a function receiving progress lines (None for silence).

    Returns:
      A JSON-serialisable dict with keys ``config``, ``cagrad_toy`` (per method: targets, final
      points and losses, distances, steps to target), ``quadratic_bowls`` and ``dtlz2`` (per
      method: the final metric per start), ``wall_time_s`` and ``files`` (name -> path).

    Example (about 20 s for the quick protocol on a 2-core CPU, so not run as a doctest; the
    CLI test in tests/core/test_toy.py runs it):
      >>> from raco_jax import toy
      >>> results = toy.run_benchmark("toy_out", quick=True)  # doctest: +SKIP
      >>> results["cagrad_toy"]["clipped_cagrad w=(0.8, 0.2) c=0.4"]["distance_to_target"]
      ... # doctest: +SKIP
      [0.00045..., 0.00025..., 0.00021...]
    """
    log = log or (lambda _: None)
    protocol = _QUICK if quick else _FULL
    t_start = time.perf_counter()
    out = None if output_dir is None else pathlib.Path(output_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    log(f"CAGrad toy: {protocol.toy_steps} Adam steps (lr={protocol.toy_lr}), 3 starts")
    toy_results, trajectories, targets = _bench_cagrad_toy(protocol, log)

    bowls = quadratic_bowls(num_objectives=3, dim=10, seed=0)
    bowl_starts = 4.0 * np.random.default_rng(1).standard_normal((4, bowls.dim))
    w3 = (0.6, 0.3, 0.1)
    log(f"Quadratic bowls: {protocol.bowl_steps} SGD steps (lr={protocol.bowl_lr})")
    bowl_results, bowl_curves = _bench_set_problem(
        bowls,
        bowl_starts,
        lambda: optax.sgd(protocol.bowl_lr),
        protocol.bowl_steps,
        w3,
        lambda params, _: np.asarray(pareto_stationarity(bowls, params), np.float64),
        protocol,
        log,
    )

    problem = dtlz2(num_objectives=3, dim=6)
    dtlz2_starts = 1.5 * np.random.default_rng(2).standard_normal((4, problem.dim))
    log(f"DTLZ2: {protocol.dtlz2_steps} Adam steps (lr={protocol.dtlz2_lr})")
    dtlz2_results, dtlz2_curves = _bench_set_problem(
        problem,
        dtlz2_starts,
        lambda: optax.adam(protocol.dtlz2_lr),
        protocol.dtlz2_steps,
        w3,
        lambda params, _: _dtlz2_g64(params, problem.num_objectives),
        protocol,
        log,
    )

    results: dict[str, Any] = {
        "config": {"quick": quick, **dataclasses.asdict(protocol), "target_tol": _TARGET_TOL},
        "cagrad_toy": toy_results,
        "quadratic_bowls": {
            "num_objectives": bowls.num_objectives,
            "dim": bowls.dim,
            "lr": protocol.bowl_lr,
            "steps": protocol.bowl_steps,
            "num_starts": len(bowl_starts),
            "weights": list(w3),
            "methods": bowl_results,
        },
        "dtlz2": {
            "num_objectives": problem.num_objectives,
            "dim": problem.dim,
            "lr": protocol.dtlz2_lr,
            "steps": protocol.dtlz2_steps,
            "num_starts": len(dtlz2_starts),
            "weights": list(w3),
            "methods": dtlz2_results,
        },
        "files": {},
    }
    results["wall_time_s"] = time.perf_counter() - t_start
    if out is not None:
        files: dict[str, str] = {}
        if plots:
            import matplotlib.pyplot as plt

            fig = plot_cagrad_toy(trajectories, targets, out / "cagrad_toy_trajectories.png")
            plt.close(fig)
            files["cagrad_toy_png"] = str(out / "cagrad_toy_trajectories.png")
            _plot_bowls(bowl_curves, out / "quadratic_bowls.png")
            files["quadratic_bowls_png"] = str(out / "quadratic_bowls.png")
            final = {k: np.asarray(v["final_losses"]) for k, v in dtlz2_results.items()}
            _plot_dtlz2(dtlz2_curves, final, out / "dtlz2.png")
            files["dtlz2_png"] = str(out / "dtlz2.png")
        results["wall_time_s"] = time.perf_counter() - t_start
        md_path, csv_path = _write_tables(results, out)
        files["table_md"] = str(md_path)
        files["table_csv"] = str(csv_path)
        files["json"] = str(out / "toy_results.json")
        results["files"] = files
        (out / "toy_results.json").write_text(json.dumps(results, indent=1))
    return results
