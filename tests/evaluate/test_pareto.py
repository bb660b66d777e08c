"""Pareto fronts, exact hypervolume and win rates against brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raco_jax.evaluate.pareto import dominates, hypervolume, pareto_front, win_rate

GRID = 6  # integer coordinates in [0, GRID]
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def grid_hypervolume(points: np.ndarray, reference: np.ndarray) -> int:
    """Exact box union on the integer grid: counts the unit cells some point covers.

    The cell with lower corner c (c >= reference) is covered iff some point p has p >= c + 1.
    """
    dims = reference.shape[0]
    axes = [np.arange(reference[k], GRID) for k in range(dims)]
    corners = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, dims)
    if points.shape[0] == 0 or corners.shape[0] == 0:
        return 0
    covered = np.any(np.all(points[None, :, :] >= corners[:, None, :] + 1, axis=-1), axis=1)
    return int(covered.sum())


def inclusion_exclusion(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact union volume of the boxes [reference, p] by inclusion-exclusion (small n)."""
    total = 0.0
    for size in range(1, points.shape[0] + 1):
        for subset in itertools.combinations(range(points.shape[0]), size):
            corner = points[list(subset)].min(axis=0)
            total += (-1) ** (size + 1) * float(np.prod(np.clip(corner - reference, 0.0, None)))
    return total


def int_points(dims: int, max_size: int = 12) -> st.SearchStrategy:
    return st.lists(st.tuples(*[st.integers(0, GRID)] * dims), min_size=0, max_size=max_size).map(
        lambda rows: np.array(rows, dtype=np.float64).reshape(len(rows), dims)
    )


# ---------------------------------------------------------------- hypervolume: known cases


def test_hypervolume_known_cases_2d() -> None:
    assert float(hypervolume([[1.0, 1.0]], [0.0, 0.0])) == 1.0
    # staircase: 1*3 + 1*2 + 1*1
    assert float(hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0])) == 6.0
    # reference shifts the boxes
    assert float(hypervolume([[3, 3]], [1, 2])) == 2.0
    # empty set and a set with nothing above the reference
    assert float(hypervolume(np.zeros((0, 2)), [0, 0])) == 0.0
    assert float(hypervolume([], [0, 0])) == 0.0
    assert float(hypervolume([[-1, 5], [5, 0]], [0, 0])) == 0.0


def test_hypervolume_known_cases_3d() -> None:
    assert float(hypervolume([[2, 3, 4]], [0, 0, 0])) == 24.0
    # two unit-overlapping boxes: 8 + 8 - 1
    assert float(hypervolume([[2, 2, 2], [3, 3, 1]], [1, 1, 0])) == pytest.approx(
        1 * 1 * 2 + 4 * 1 - 1
    )
    # the three unit axes boxes: 2x1x1 each, pairwise overlap 1x1x1, triple overlap 1
    points = [[2, 1, 1], [1, 2, 1], [1, 1, 2]]
    assert float(hypervolume(points, [0, 0, 0])) == 2 * 3 - 3 + 1


def test_hypervolume_result_states_conventions() -> None:
    result = hypervolume(
        [[4.0, 20.0], [-1.0, 30.0]], reference=[0.0, 10.0], normalize=([0, 0], [10, 40])
    )
    assert result.value == pytest.approx(0.4 * 0.25)
    assert result.reference == (0.0, 10.0)
    assert result.normalize == ((0.0, 0.0), (10.0, 40.0))
    assert result.maximize == (True, True)
    assert (result.num_points, result.num_contributing) == (2, 1)
    assert result.to_dict()["normalize"] == {"low": [0.0, 0.0], "high": [10.0, 40.0]}


def test_hypervolume_minimization_is_negation() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(9, 3))
    reference = np.full(3, 2.0)
    low = hypervolume(points, reference, maximize=False)
    assert low.value == pytest.approx(hypervolume(-points, -reference).value, rel=1e-12)
    assert low.maximize == (False, False, False)
    mixed = hypervolume(points, [2.0, -2.0, 2.0], maximize=[False, True, False])
    flipped = points * np.array([-1.0, 1.0, -1.0])
    assert mixed.value == pytest.approx(hypervolume(flipped, [-2.0, -2.0, -2.0]).value)


def test_hypervolume_normalization_rescales() -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 10, size=(8, 3))
    raw = hypervolume(points, [0, 0, 0]).value
    low, high = np.array([-1.0, 0.0, 2.0]), np.array([9.0, 4.0, 3.0])
    scaled = hypervolume(points, [0, 0, 0], normalize=(low, high)).value
    assert scaled == pytest.approx(raw / np.prod(high - low), rel=1e-12)
    assert hypervolume(points, [0, 0, 0], normalize=(0.0, 2.0)).value == pytest.approx(raw / 8)


def test_hypervolume_errors() -> None:
    with pytest.raises(ValueError, match="reference has 3"):
        hypervolume([[1.0, 2.0]], [0, 0, 0])
    with pytest.raises(ValueError, match="finite"):
        hypervolume([[np.nan, 1.0]], [0, 0])
    with pytest.raises(ValueError, match="high > low"):
        hypervolume([[1.0, 1.0]], [0, 0], normalize=([0, 1], [1, 1]))
    with pytest.raises(ValueError, match="normalize must be a pair"):
        hypervolume([[1.0, 1.0]], [0, 0], normalize=3.0)
    with pytest.raises(ValueError, match="maximize"):
        hypervolume([[1.0, 1.0]], [0, 0], maximize=[True])


# ---------------------------------------------------------------- hypervolume: properties


@pytest.mark.parametrize("dims", [2, 3])
@SETTINGS
@given(data=st.data())
def test_hypervolume_matches_grid_box_union(dims: int, data: st.DataObject) -> None:
    points = data.draw(int_points(dims))
    reference = np.array(data.draw(st.tuples(*[st.integers(0, 2)] * dims)), dtype=np.float64)
    assert hypervolume(points, reference).value == grid_hypervolume(points, reference)


@pytest.mark.parametrize("dims", [2, 3, 4])
@SETTINGS
@given(data=st.data())
def test_hypervolume_matches_inclusion_exclusion(dims: int, data: st.DataObject) -> None:
    rows = data.draw(
        st.lists(st.tuples(*[st.floats(-1.0, 3.0, allow_nan=False)] * dims), min_size=0, max_size=7)
    )
    points = np.array(rows, dtype=np.float64).reshape(len(rows), dims)
    reference = np.zeros(dims)
    expected = inclusion_exclusion(points, reference)
    assert hypervolume(points, reference).value == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
@SETTINGS
@given(data=st.data())
def test_hypervolume_permutation_and_dominated_points(dims: int, data: st.DataObject) -> None:
    points = data.draw(int_points(dims, max_size=10))
    reference = np.zeros(dims)
    value = hypervolume(points, reference).value
    perm = np.array(data.draw(st.permutations(range(points.shape[0]))), dtype=np.int64)
    assert hypervolume(points[perm], reference).value == value
    # the front alone carries the whole volume; dominated points and duplicates add nothing
    assert hypervolume(points[pareto_front(points)], reference).value == value
    if points.shape[0]:
        extra = np.maximum(points[0] - 1, 0)
        grown = np.vstack([points, extra[None], points[:1]])
        assert hypervolume(grown, reference).value == value
    # points that do not dominate the reference add nothing
    below = np.vstack([points, -np.ones((1, dims)), np.full((1, dims), 5.0) * np.eye(dims)[0]])
    assert hypervolume(below, reference).value == value


# ---------------------------------------------------------------- fronts and dominance


def test_dominates_cases() -> None:
    assert dominates([2, 2], [1, 2])
    assert not dominates([1, 2], [1, 2])
    assert not dominates([3, 0], [0, 3])
    assert dominates([0, 3], [1, 3], maximize=[False, True])
    assert dominates([0, 0], [1, 1], maximize=False)
    with pytest.raises(ValueError, match="same length"):
        dominates([1, 2], [1, 2, 3])


@pytest.mark.parametrize("dims", [2, 3])
@SETTINGS
@given(data=st.data())
def test_pareto_front_matches_pairwise_definition(dims: int, data: st.DataObject) -> None:
    points = data.draw(int_points(dims))
    front = pareto_front(points)
    expected = [
        i
        for i in range(points.shape[0])
        if not any(dominates(points[j], points[i]) for j in range(points.shape[0]))
    ]
    assert front.tolist() == expected
    assert front.dtype == np.int64
    low = pareto_front(points, maximize=False)
    assert low.tolist() == pareto_front(-points).tolist()


def test_pareto_front_keeps_duplicates_and_handles_empty() -> None:
    assert pareto_front([[1, 1], [1, 1], [0, 0]]).tolist() == [0, 1]
    assert pareto_front(np.zeros((0, 3))).tolist() == []
    with pytest.raises(ValueError, match="2-D"):
        pareto_front([1.0, 2.0])


# ---------------------------------------------------------------- win rate


def test_win_rate_by_hand() -> None:
    assert win_rate([1, 2, 3, 4], [0, 2, 5, 1]) == (2 + 0.5) / 4
    assert win_rate([1.0], [1.0]) == 0.5
    assert win_rate([1.0, 1.0], [1.2, 0.0], tie_tolerance=0.25) == 0.75


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=1, max_size=30),
)
def test_win_rate_is_antisymmetric(pairs: list[tuple[int, int]]) -> None:
    a, b = np.array(pairs, dtype=np.float64).T
    assert win_rate(a, b) + win_rate(b, a) == pytest.approx(1.0)
    assert 0.0 <= win_rate(a, b) <= 1.0


def test_win_rate_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        win_rate([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        win_rate([], [])
    with pytest.raises(ValueError, match="finite"):
        win_rate([np.nan], [1.0])
    with pytest.raises(ValueError, match="tie_tolerance"):
        win_rate([1.0], [1.0], tie_tolerance=-1.0)
