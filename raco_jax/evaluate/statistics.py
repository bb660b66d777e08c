"""Error bars for sweeps over seeds and evaluation pairs: paired differences, seed summaries and
bootstrap intervals of the hypervolume.

A sweep that repeats every (method, weights) run with S seeds and scores each run on the same N
evaluation pairs gives per-pair outcomes ``[S, N]`` per run (:func:`~raco_jax.evaluate.preferences.pair_outcomes`:
1 if the implicit reward ranks the pair as labeled, 0 if not, 1/2 on a tie). Two sources of
noise: which pairs were drawn (pair sampling) and which seed trained the run (run to run).

* :func:`paired_difference` compares two methods at the same weights pair by pair and seed by
  seed;
* :func:`seed_summary` summarises one number per seed (e.g. a hypervolume) by its mean and
  standard error;
* :func:`bootstrap_hypervolume` resamples the evaluation pairs (the same draw for every run) and
  gives a percentile interval of a method's seed-averaged hypervolume.

Example:
    >>> import numpy as np
    >>> from raco_jax.evaluate.statistics import paired_difference
    >>> a = np.array([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0]])
    >>> b = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]])
    >>> result = paired_difference(a, b)
    >>> result["mean"], result["pairs"], result["seeds"]
    (0.25, 4, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from raco_jax.evaluate.pareto import hypervolume

__all__ = ["bootstrap_hypervolume", "paired_difference", "seed_summary"]


def _standard_error(values: np.ndarray) -> float:
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float("nan")
    return float(np.std(values, ddof=1) / math.sqrt(values.size))


def paired_difference(a: Any, b: Any) -> dict[str, float]:
    """The mean of ``a - b`` over seeds and pairs, with standard errors from both noise sources.

    Args:
      a, b: ``[S, N]`` scores of two methods (e.g. per-pair outcomes) on the same N pairs, run
        with the same S seeds (row s of ``a`` and of ``b`` share a seed). Pairs that are NaN in
        any row of either are left out.

    Returns:
      ``{"mean", "se_pairs", "se_seeds", "se", "z", "seeds", "pairs"}``: ``se_pairs`` is the
      standard error over pairs of the seed-averaged differences (pair sampling), ``se_seeds``
      the standard error over seeds of the pair-averaged differences (run to run; NaN for one
      seed), ``se = sqrt(se_pairs^2 + se_seeds^2)`` (NaN terms left out) and ``z = mean / se``.

    Example:
      >>> import numpy as np
      >>> from raco_jax.evaluate.statistics import paired_difference
      >>> d = paired_difference(np.ones((3, 5)), np.zeros((3, 5)))
      >>> d["mean"], d["se"]
      (1.0, 0.0)
    """
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same [seeds, pairs] shape, got {a.shape} and {b.shape}."
        )
    keep = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
    diff = (a - b)[:, keep]
    seeds, pairs = diff.shape
    if pairs == 0:
        nan = float("nan")
        return {
            "mean": nan,
            "se_pairs": nan,
            "se_seeds": nan,
            "se": nan,
            "z": nan,
            "seeds": seeds,
            "pairs": 0,
        }
    se_pairs = _standard_error(diff.mean(axis=0))
    se_seeds = _standard_error(diff.mean(axis=1))
    terms = [x for x in (se_pairs, se_seeds) if math.isfinite(x)]
    se = math.sqrt(sum(x * x for x in terms)) if terms else float("nan")
    mean = float(diff.mean())
    z = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    return {
        "mean": mean,
        "se_pairs": se_pairs,
        "se_seeds": se_seeds,
        "se": se,
        "z": float(z),
        "seeds": seeds,
        "pairs": pairs,
    }


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard error (NaN for one value), min and max of one number per seed.

    Example:
      >>> from raco_jax.evaluate.statistics import seed_summary
      >>> s = seed_summary([0.1, 0.3, 0.2])
      >>> round(s["mean"], 6), round(s["se"], 6), s["seeds"]
      (0.2, 0.057735, 3)
    """
    array = np.asarray(values, np.float64)
    if array.size == 0:
        raise ValueError("seed_summary needs at least one value.")
    return {
        "mean": float(array.mean()),
        "se": _standard_error(array),
        "min": float(array.min()),
        "max": float(array.max()),
        "seeds": int(array.size),
    }


def _seed_mean_hypervolume(
    outcomes: Sequence[np.ndarray], reference: np.ndarray, pairs: np.ndarray | None
) -> float:
    values = []
    for runs in outcomes:  # one [R, K, N] array per seed
        chosen = runs if pairs is None else runs[..., pairs]
        with np.errstate(invalid="ignore"):
            points = np.nanmean(chosen, axis=-1)  # [R, K] accuracies
        points = points[np.all(np.isfinite(points), axis=1)]
        values.append(float(hypervolume(points, reference)))
    return float(np.mean(values))


def bootstrap_hypervolume(
    outcomes: Sequence[Any],
    reference: Sequence[float],
    *,
    num_samples: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, float]:
    """A method's seed-averaged accuracy hypervolume with a percentile bootstrap interval over
    the evaluation pairs.

    For each seed, the method's runs (one per weight vector) give one accuracy point each (the
    mean of its per-pair outcomes per objective); the hypervolume of those points against
    ``reference`` is averaged over the seeds. Each bootstrap sample draws N pair indices with
    replacement, the same for every run and seed (so runs stay paired), and recomputes that
    average. Pass the same ``seed`` for every method to compare them on the same draws.

    Args:
      outcomes: one ``[R, K, N]`` array per seed: per-pair outcomes (NaN where a pair does not
        count for an objective) of the method's R runs on K objectives and N pairs.
      reference: ``[K]`` the reference point (the base model's accuracies, 0.5 each).
      num_samples: bootstrap samples.
      level: the interval's coverage (0.9: the 5th to the 95th percentile).
      seed: the resampling seed.

    Returns:
      ``{"value", "low", "high", "level", "samples"}``.

    Example:
      >>> import numpy as np
      >>> from raco_jax.evaluate.statistics import bootstrap_hypervolume
      >>> rng = np.random.default_rng(0)
      >>> runs = (rng.random((2, 2, 200)) < [[[0.7], [0.6]], [[0.6], [0.7]]]).astype(float)
      >>> hv = bootstrap_hypervolume([runs], reference=[0.5, 0.5], num_samples=200)
      >>> hv["low"] < hv["value"] < hv["high"]
      True
    """
    arrays = [np.asarray(x, np.float64) for x in outcomes]
    if not arrays or any(x.ndim != 3 for x in arrays):
        raise ValueError("outcomes must hold one [runs, objectives, pairs] array per seed.")
    num_pairs = arrays[0].shape[-1]
    if any(x.shape[-1] != num_pairs for x in arrays):
        raise ValueError("every seed's outcomes must cover the same pairs.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    ref = np.asarray(reference, np.float64)
    value = _seed_mean_hypervolume(arrays, ref, None)
    rng = np.random.default_rng(seed)
    samples = [
        _seed_mean_hypervolume(arrays, ref, rng.integers(0, num_pairs, num_pairs))
        for _ in range(num_samples)
    ]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return {
        "value": value,
        "low": float(low),
        "high": float(high),
        "level": float(level),
        "samples": int(num_samples),
    }
