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
Modules: :mod:`~raco_jax.toy.problems`, :mod:`~raco_jax.toy.trajectory`,
:mod:`~raco_jax.toy.plots` and :mod:`~raco_jax.toy.benchmark`. They import only jax, optax and
numpy; matplotlib is imported inside the plotting functions.
"""

from __future__ import annotations

from raco_jax.toy.benchmark import run_benchmark
from raco_jax.toy.plots import plot_bowls, plot_cagrad_toy, plot_dtlz2
from raco_jax.toy.problems import (
    CAGRAD_TOY_STARTS,
    LOWER,
    MEAN_LOSS_OPTIMUM,
    MEAN_LOSS_VALUE,
    Problem,
    cagrad_toy,
    cagrad_toy_losses,
    cagrad_toy_pareto_distance,
    cagrad_toy_pareto_set,
    cagrad_toy_weighted_minimizer,
    dtlz2,
    dtlz2_front_distance,
    dtlz2_g,
    pareto_stationarity,
    quadratic_bowls,
)
from raco_jax.toy.trajectory import Trajectory, run

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
    "dtlz2_g",
    "pareto_stationarity",
    "plot_bowls",
    "plot_cagrad_toy",
    "plot_dtlz2",
    "quadratic_bowls",
    "run",
    "run_benchmark",
]
