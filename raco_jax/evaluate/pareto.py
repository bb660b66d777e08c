r"""Pareto fronts, exact hypervolume and pairwise win rates, in NumPy.

A sweep over preference weights gives one point per run: the per-objective judge scores of that
run's responses on held-out prompts. The runs of one method trace its *front*; two methods are
compared by the hypervolume their fronts dominate with respect to a stated reference point (and
a stated normalisation), and two runs by their pairwise win rate.

Conventions: objectives are columns, points are rows (``points`` is ``[N, K]``); by default
higher is better on every objective (``maximize=True``), as for the judges in
:mod:`raco_jax.evaluate.judges`. ``maximize`` may also be one flag per objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "HypervolumeResult",
    "dominates",
    "hypervolume",
    "orientation",
    "pareto_front",
    "win_rate",
]

Maximize = bool | Sequence[bool]


def _as_points(points: Any, name: str = "points") -> np.ndarray:
    """Returns points as a finite float64 ``[N, K]`` array (a 1-D input is one point per row)."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, 0)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array [num_points, num_objectives]; got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; got non-finite values (NaN or inf)")
    return array


def orientation(maximize: Maximize, num_objectives: int) -> np.ndarray:
    """+1 (maximised) or -1 (minimised) per objective, from one bool or one bool per objective.

    Example:
        >>> from raco_jax.evaluate.pareto import orientation
        >>> orientation([True, False], 2).tolist()
        [1.0, -1.0]
    """
    if isinstance(maximize, bool | np.bool_):
        return np.full(num_objectives, 1.0 if maximize else -1.0)
    flags = list(maximize)
    if len(flags) != num_objectives or not all(isinstance(f, bool | np.bool_) for f in flags):
        raise ValueError(
            f"maximize must be a bool or {num_objectives} bools (one per objective); got {maximize!r}"
        )
    return np.where(np.asarray(flags, dtype=bool), 1.0, -1.0)


def dominates(a: Any, b: Any, maximize: Maximize = True) -> bool:
    """Whether point ``a`` Pareto-dominates point ``b``.

    ``a`` dominates ``b`` when it is at least as good on every objective and strictly better on
    at least one: :math:`a_k \\ge b_k \\;\\forall k` and :math:`\\exists k: a_k > b_k` (reversed
    for minimised objectives). Equal points do not dominate each other.

    Args:
      a: ``[K]`` scores of the first point.
      b: ``[K]`` scores of the second point.
      maximize: ``True`` (higher is better), ``False``, or one flag per objective.

    Returns:
      ``True`` if ``a`` dominates ``b``.

    Example:
      >>> dominates([1.0, 2.0], [1.0, 1.0])
      True
      >>> dominates([1.0, 2.0], [2.0, 1.0]), dominates([1.0, 1.0], [1.0, 1.0])
      (False, False)
      >>> dominates([1.0, 2.0], [2.0, 2.0], maximize=[False, True])
      True
    """
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or a_arr.shape != b_arr.shape:
        raise ValueError(
            f"a and b must be 1-D with the same length; got shapes {a_arr.shape} and {b_arr.shape}"
        )
    signs = orientation(maximize, a_arr.shape[0])
    a_arr, b_arr = a_arr * signs, b_arr * signs
    return bool(np.all(a_arr >= b_arr) and np.any(a_arr > b_arr))


def pareto_front(points: Any, maximize: Maximize = True) -> np.ndarray:
    """Indices of the non-dominated points (the Pareto front), in increasing order.

    A point is on the front when no other point dominates it (see :func:`dominates`);
    duplicated points are all kept. O(N^2 K) time, which is fine for sweeps of runs.

    Args:
      points: ``[N, K]`` scores, one row per point.
      maximize: ``True`` (higher is better), ``False``, or one flag per objective.

    Returns:
      ``int64`` array of the indices of the non-dominated rows, sorted.

    Example:
      >>> pareto_front([[1.0, 3.0], [2.0, 2.0], [1.5, 1.5], [3.0, 1.0]])
      array([0, 1, 3])
      >>> pareto_front([[1.0, 3.0], [2.0, 2.0], [1.5, 1.5]], maximize=False)
      array([0, 2])
    """
    array = _as_points(points)
    if array.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    oriented = array * orientation(maximize, array.shape[1])
    # dominated_by[i, j]: row j dominates row i.
    at_least = np.all(oriented[None, :, :] >= oriented[:, None, :], axis=-1)
    better = np.any(oriented[None, :, :] > oriented[:, None, :], axis=-1)
    dominated = np.any(at_least & better, axis=1)
    return np.flatnonzero(~dominated).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class HypervolumeResult:
    """An exact hypervolume together with the conventions it was computed under.

    ``float(result)`` gives the value, so a result can be used wherever a number is expected.

    Attributes:
      value: the hypervolume, in normalised units when ``normalize`` is set.
      reference: the reference point, in the original (un-normalised) units.
      normalize: ``(low, high)`` per objective, or ``None``: each objective ``x`` was mapped to
        ``(x - low) / (high - low)`` (the reference too) before measuring.
      maximize: one flag per objective (``True``: higher is better).
      num_points: how many points were given.
      num_contributing: how many of them strictly dominate the reference (only these add volume).

    Example:
      >>> result = hypervolume([[2.0, 1.0], [1.0, 2.0]], reference=[0.0, 0.0])
      >>> float(result), result.num_contributing
      (3.0, 2)
    """

    value: float
    reference: tuple[float, ...]
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None
    maximize: tuple[bool, ...]
    num_points: int
    num_contributing: int

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready plain data.

        Example:
          >>> hypervolume([[1.0, 1.0]], reference=[0.0, 0.0]).to_dict()["value"]
          1.0
        """
        return {
            "value": float(self.value),
            "reference": list(self.reference),
            "normalize": None
            if self.normalize is None
            else {"low": list(self.normalize[0]), "high": list(self.normalize[1])},
            "maximize": list(self.maximize),
            "num_points": self.num_points,
            "num_contributing": self.num_contributing,
        }


def _area_2d(gains: np.ndarray) -> float:
    """Exact area of the union of boxes [0, g] for positive gains ``[N, 2]`` (sort and sweep)."""
    if gains.shape[0] == 0:
        return 0.0
    order = np.lexsort((-gains[:, 1], -gains[:, 0]))  # x descending, then y descending
    area = 0.0
    best_y = 0.0
    for x, y in gains[order]:
        if y > best_y:
            area += x * (y - best_y)
            best_y = y
    return float(area)


def _volume(gains: np.ndarray) -> float:
    """Exact volume of the union of boxes [0, g] for positive gains ``[N, K]``.

    K = 1 and 2 are direct; K >= 3 slices along the last axis: between consecutive distinct
    values of the last coordinate (taken in decreasing order) the cross-section is the
    (K-1)-dimensional union of the boxes reaching that high, measured recursively.
    """
    num_points, num_objectives = gains.shape
    if num_points == 0:
        return 0.0
    if num_objectives == 1:
        return float(gains.max())
    if num_objectives == 2:
        return _area_2d(gains)
    gains = gains[pareto_front(gains)]
    last = gains[:, -1]
    order = np.argsort(-last, kind="stable")
    gains, last = gains[order], last[order]
    volume = 0.0
    start = 0
    while start < gains.shape[0]:
        stop = start
        while stop < gains.shape[0] and last[stop] == last[start]:
            stop += 1
        height = last[start] - (last[stop] if stop < gains.shape[0] else 0.0)
        volume += height * _volume(gains[:stop, :-1])
        start = stop
    return float(volume)


def _normalize_bounds(normalize: Any, num_objectives: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        low, high = normalize
    except (TypeError, ValueError):
        raise ValueError(
            f"normalize must be a pair (low, high) of scalars or {num_objectives}-vectors; "
            f"got {normalize!r}"
        ) from None
    low_arr = np.broadcast_to(np.asarray(low, dtype=np.float64), (num_objectives,)).copy()
    high_arr = np.broadcast_to(np.asarray(high, dtype=np.float64), (num_objectives,)).copy()
    if not (np.all(np.isfinite(low_arr)) and np.all(np.isfinite(high_arr))):
        raise ValueError(f"normalize bounds must be finite; got low={low!r}, high={high!r}")
    if np.any(high_arr <= low_arr):
        raise ValueError(
            f"normalize needs high > low on every objective; got low={low_arr.tolist()}, "
            f"high={high_arr.tolist()}"
        )
    return low_arr, high_arr


def hypervolume(
    points: Any,
    reference: Any,
    maximize: Maximize = True,
    normalize: Any = None,
) -> HypervolumeResult:
    r"""Exact hypervolume dominated by ``points`` with respect to ``reference``.

    For maximised objectives the hypervolume is the Lebesgue measure of the union of the boxes
    :math:`[r_1, p_1] \times \dots \times [r_K, p_K]` over the points :math:`p` that strictly
    dominate the reference :math:`r` (:math:`p_k > r_k` for all k); points that do not dominate
    the reference contribute nothing. Minimised objectives are negated (with the reference).
    With ``normalize=(low, high)`` every objective (and the reference) is first mapped to
    :math:`(x - \mathrm{low}_k) / (\mathrm{high}_k - \mathrm{low}_k)`, so objectives on
    different scales weigh alike; the result states the reference and the normalisation.

    Exact in any number of objectives: a sort-and-sweep in 2-D, and slicing along the last
    objective (one exact 2-D sweep per slab in 3-D) above. The slicing costs
    O(N^{K-1} log N), which is fine for the tens of runs of a weight sweep.

    Args:
      points: ``[N, K]`` scores, one row per point (N may be 0).
      reference: ``[K]`` reference point, in the units of ``points``.
      maximize: ``True`` (higher is better), ``False``, or one flag per objective.
      normalize: ``None`` or ``(low, high)``, each a scalar or a ``[K]`` vector with high > low.

    Returns:
      A :class:`HypervolumeResult` (``float(result)`` is the value).

    Example:
      >>> float(hypervolume([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]], reference=[0.0, 0.0]))
      6.0
      >>> float(hypervolume([[1.0, 1.0, 1.0], [2.0, 0.5, 0.5]], reference=[0.0, 0.0, 0.0]))
      1.25
      >>> result = hypervolume([[4.0, 20.0]], reference=[0.0, 0.0], normalize=([0, 0], [10, 40]))
      >>> result.value, result.normalize
      (0.2, ((0.0, 0.0), (10.0, 40.0)))
    """
    reference_arr = np.asarray(reference, dtype=np.float64)
    if reference_arr.ndim != 1 or reference_arr.shape[0] == 0:
        raise ValueError(
            f"reference must be a non-empty 1-D vector; got shape {reference_arr.shape}"
        )
    if not np.all(np.isfinite(reference_arr)):
        raise ValueError(f"reference must be finite; got {reference_arr.tolist()}")
    num_objectives = reference_arr.shape[0]
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, num_objectives)
    array = _as_points(array)
    if array.shape[1] != num_objectives:
        raise ValueError(
            f"points have {array.shape[1]} objectives but reference has {num_objectives}"
        )
    signs = orientation(maximize, num_objectives)
    bounds = None
    scaled_points, scaled_reference = array, reference_arr
    if normalize is not None:
        low, high = _normalize_bounds(normalize, num_objectives)
        scaled_points = (array - low) / (high - low)
        scaled_reference = (reference_arr - low) / (high - low)
        bounds = (tuple(low.tolist()), tuple(high.tolist()))
    gains = (scaled_points - scaled_reference) * signs
    contributing = gains[np.all(gains > 0.0, axis=1)]
    return HypervolumeResult(
        value=_volume(contributing),
        reference=tuple(reference_arr.tolist()),
        normalize=bounds,
        maximize=tuple(bool(s > 0) for s in signs),
        num_points=int(array.shape[0]),
        num_contributing=int(contributing.shape[0]),
    )


def win_rate(scores_a: Any, scores_b: Any, tie_tolerance: float = 0.0) -> float:
    r"""Pairwise win rate of ``a`` over ``b``: (wins + 0.5 ties) / n.

    ``scores_a[i]`` and ``scores_b[i]`` are the same judge's scores (higher is better) of two
    responses to prompt i. A pair is a tie when :math:`|a_i - b_i| \le` ``tie_tolerance``.
    The win rate of ``b`` over ``a`` is one minus that of ``a`` over ``b``.

    Args:
      scores_a: ``[n]`` scores of the first system's responses.
      scores_b: ``[n]`` scores of the second system's responses, prompt by prompt.
      tie_tolerance: non-negative; differences up to this count as ties.

    Returns:
      The win rate in [0, 1].

    Example:
      >>> win_rate([3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 4.0, 0.0])
      0.625
      >>> win_rate([1.0, 2.0], [1.05, 1.0], tie_tolerance=0.1)
      0.75
    """
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"scores_a and scores_b must be 1-D; got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(
            f"scores_a and scores_b must have the same length (one score per prompt); "
            f"got {a.shape[0]} and {b.shape[0]}"
        )
    if a.shape[0] == 0:
        raise ValueError("scores_a and scores_b are empty; a win rate needs at least one prompt")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("scores_a and scores_b must be finite; got NaN or inf")
    if not tie_tolerance >= 0.0:
        raise ValueError(f"tie_tolerance must be >= 0; got {tie_tolerance!r}")
    difference = a - b
    ties = np.abs(difference) <= tie_tolerance
    wins = (difference > 0) & ~ties
    return float((wins.sum() + 0.5 * ties.sum()) / a.shape[0])
