"""Analytic toy problems: known optima, end-to-end convergence of the aggregators, the CLI.

The runs here use the quick protocol's exact settings (Adam lr 5e-3, 40k steps, the three starts
of the CAGrad paper), so with the persistent compilation cache of conftest.py the CLI test below
reuses their compilations. Tolerances on final points: Adam with a constant step of 5e-3 settles
within about 1e-3 of the optimum (measured: <= 1e-3 for every start and method), so 0.02 leaves a
20x margin while staying far below the scale of the problem (the Pareto set spans 14 units in x1,
and the minimisers for weights (0.8, 0.2) and (0.75, 0.25) are 0.7 apart).
"""

from __future__ import annotations

import csv
import doctest
import json
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import raco_jax
from raco_jax import cli, toy

QUICK_STEPS = 40_000
QUICK_LR = 5e-3
POINT_TOL = 0.02


def _toy_losses_f64(x: np.ndarray) -> np.ndarray:
    """Float64 NumPy transcription of the CAGrad toy (anchors.md section 3), for references."""
    x1, x2 = x
    a1 = math.log(max(abs(0.5 * (-x1 - 7) - math.tanh(-x2)), 5e-6)) + 6
    a2 = math.log(max(abs(0.5 * (-x1 + 3) + math.tanh(-x2) + 2), 5e-6)) + 6
    b1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    b2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    s1 = max(math.tanh(0.5 * x2), 0.0)
    s2 = max(math.tanh(-0.5 * x2), 0.0)
    return np.array([a1 * s1 + b1 * s2, a2 * s1 + b2 * s2])


def test_mean_loss_optimum_values() -> None:
    losses = np.asarray(toy.cagrad_toy_losses(jnp.array([0.0, -8.35511])))
    np.testing.assert_allclose(losses, [-15.09164, -15.09164], atol=1e-4)
    np.testing.assert_allclose(_toy_losses_f64(np.array([0.0, -8.35511])), -15.09164, atol=1e-5)
    np.testing.assert_allclose(
        toy.cagrad_toy_weighted_minimizer((0.5, 0.5)), [0.0, -8.35511], atol=1e-5
    )


def test_jax_losses_match_float64_transcription() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-10, 10, size=(64, 2))
    got = np.asarray(toy.cagrad_toy_losses(jnp.asarray(points.T)))  # broadcasts over columns
    want = np.stack([_toy_losses_f64(p) for p in points], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.8, 0.2), (0.2, 0.8), (1.0, 0.0), (0.3, 0.7)])
def test_weighted_minimizer_matches_local_optimisation(weights: tuple[float, float]) -> None:
    scipy_optimize = pytest.importorskip("scipy.optimize")
    w = np.asarray(weights)
    expected = toy.cagrad_toy_weighted_minimizer(w)

    def objective(x: np.ndarray) -> float:
        return float(w @ _toy_losses_f64(x))

    found = scipy_optimize.minimize(
        objective,
        expected + np.array([0.3, -0.2]),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20_000},
    ).x
    np.testing.assert_allclose(found, expected, atol=1e-5)
    for delta in ([1e-3, 0], [-1e-3, 0], [0, 1e-3], [0, -1e-3]):  # a strict local minimum
        assert objective(expected + np.array(delta)) > objective(expected)


def test_weighted_minimizer_stated_values() -> None:
    np.testing.assert_allclose(
        toy.cagrad_toy_weighted_minimizer((0.8, 0.2)), [4.2, -8.385], atol=1e-3
    )
    np.testing.assert_allclose(
        toy.cagrad_toy_weighted_minimizer((0.2, 0.8)), [-4.2, -8.385], atol=1e-3
    )
    pareto = toy.cagrad_toy_pareto_set()
    assert pareto[0, 0] == pytest.approx(-7.0) and pareto[-1, 0] == pytest.approx(7.0)
    assert np.all((pareto[:, 1] < -8.35) & (pareto[:, 1] > -8.44))
    assert toy.cagrad_toy_pareto_distance(toy.cagrad_toy_weighted_minimizer((0.65, 0.35))) < 1e-6
    with pytest.raises(ValueError, match="sum to 1"):
        toy.cagrad_toy_weighted_minimizer((0.5, 0.6))


def _run_toy(aggregator: optax.GradientTransformation) -> toy.Trajectory:
    tx = optax.chain(aggregator, optax.adam(QUICK_LR))
    return toy.run(toy.cagrad_toy(), tx, toy.CAGRAD_TOY_STARTS, QUICK_STEPS, 100)


def test_cagrad_reaches_mean_loss_optimum_from_all_starts() -> None:
    traj = _run_toy(raco_jax.cagrad(c=0.5, num_objectives=2))
    final = np.asarray(traj.final_params)
    assert final.shape == (3, 2)
    np.testing.assert_array_less(np.linalg.norm(final - [0.0, -8.35511], axis=-1), POINT_TOL)
    np.testing.assert_allclose(np.asarray(traj.final_losses), -15.0916, atol=0.01)
    assert traj.params.shape == (3, QUICK_STEPS // 100 + 1, 2)
    np.testing.assert_allclose(np.asarray(traj.params[:, 0]), toy.CAGRAD_TOY_STARTS)


def test_clipped_cagrad_reaches_weighted_minimizer_from_all_starts() -> None:
    weights = (0.8, 0.2)
    traj = _run_toy(raco_jax.clipped_cagrad(weights=weights, c=0.4))
    target = toy.cagrad_toy_weighted_minimizer(weights)
    dist = np.linalg.norm(np.asarray(traj.final_params) - target, axis=-1)
    np.testing.assert_array_less(dist, POINT_TOL)
    # Diagnostics are recorded: the effective coefficients never fall below the weights
    # (a_k = w_k + s p~_k / ||G~|| >= w_k), and the update stays within 90 degrees of the anchor.
    coef = np.asarray(traj.coefficients)
    assert np.all(np.isnan(coef[:, 0]))
    assert np.all(coef[:, 1:] >= np.asarray(weights) - 1e-6)
    # <d, g0> >= (1 - c) ||g0||^2 > 0. Checked away from the optimum only: the diagnostic is
    # computed from the Gram matrix, and once ||g0|| < ~sqrt(eps32) max_k ||g_k|| (here within
    # ~1e-3 of the target, where g1 and g2 nearly cancel) w^T H w is lost to cancellation.
    far = np.linalg.norm(np.asarray(traj.params) - target, axis=-1)[:, 1:] > 0.1
    cos = np.asarray(traj.cos_update_anchor)[:, 1:]
    assert far.sum() > 100
    assert np.all(np.isfinite(cos)) and np.all((cos[far] > 0) & (cos[far] <= 1 + 1e-5))
    conflicts = np.asarray(traj.num_conflicts)[:, 1:]
    assert set(np.unique(conflicts)) <= {0.0, 1.0}
    assert optax.tree.get(traj.final_state, "coefficients").shape == (3, 2)


def test_run_validates_arguments() -> None:
    tx = optax.chain(raco_jax.weighted_sum((0.5, 0.5)), optax.sgd(0.1))
    with pytest.raises(ValueError, match="multiple of record_every"):
        toy.run(toy.cagrad_toy(), tx, toy.CAGRAD_TOY_STARTS, 150, 100)
    with pytest.raises(ValueError, match=r"x0s must be \[S, 2\]"):
        toy.run(toy.cagrad_toy(), tx, [[1.0, 2.0, 3.0]], 100, 100)


def test_pareto_stationarity_equals_distance_to_hull() -> None:
    scipy_optimize = pytest.importorskip("scipy.optimize")
    problem = toy.quadratic_bowls(num_objectives=3, dim=10, seed=0)
    anchors = problem.info["anchors"].astype(np.float64)
    points = 2.0 * np.random.default_rng(3).standard_normal((5, 10))
    got = np.asarray(toy.pareto_stationarity(problem, jnp.asarray(points)))
    for x, value in zip(points, got, strict=True):
        res = scipy_optimize.minimize(
            lambda p, x=x: float(np.sum((x - p @ anchors) ** 2)),
            np.full(3, 1 / 3),
            method="SLSQP",
            bounds=[(0, 1)] * 3,
            constraints=[{"type": "eq", "fun": lambda p: np.sum(p) - 1}],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert value == pytest.approx(math.sqrt(res.fun), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("name", ["clipped_cagrad", "mgda"], ids=["clipped_cagrad(w, 0.4)", "mgda"])
def test_bowls_residual_goes_to_zero(name: str) -> None:
    problem = toy.quadratic_bowls(num_objectives=3, dim=10, seed=0)
    starts = 4.0 * np.random.default_rng(1).standard_normal((4, 10))
    aggregator = (
        raco_jax.clipped_cagrad((0.6, 0.3, 0.1), c=0.4)
        if name == "clipped_cagrad"
        else raco_jax.mgda(num_objectives=3)
    )
    traj = toy.run(problem, optax.chain(aggregator, optax.sgd(0.1)), starts, 1000, 100)
    residual = np.asarray(toy.pareto_stationarity(problem, traj.params))  # [S, T + 1]
    assert np.all(residual[:, 0] > 1.0)
    np.testing.assert_array_less(residual[:, -1], 1e-3)


def test_dtlz2_front() -> None:
    problem = toy.dtlz2(num_objectives=3, dim=6)
    np.testing.assert_allclose(float(jnp.sum(problem(jnp.zeros(6)) ** 2)), 1.0, atol=1e-6)
    starts = 1.5 * np.random.default_rng(2).standard_normal((4, 6))
    for aggregator in (
        raco_jax.clipped_cagrad((0.6, 0.3, 0.1), c=0.4),
        raco_jax.weighted_sum((0.6, 0.3, 0.1)),
    ):
        traj = toy.run(problem, optax.chain(aggregator, optax.adam(1e-2)), starts, 2000, 100)
        distance = toy.dtlz2_front_distance(np.asarray(traj.final_losses))
        assert np.all(toy.dtlz2_front_distance(np.asarray(traj.losses[:, 0])) > 1e-2)
        np.testing.assert_array_less(np.abs(distance), 1e-4)
        assert np.all(np.asarray(traj.final_losses) >= -1e-6)


@pytest.mark.slow
def test_cli_quick_writes_parseable_outputs(tmp_path, capsys) -> None:
    out = tmp_path / "toy_out"
    assert cli.main(["toy", "--quick", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("cagrad_toy_trajectories.png", "quadratic_bowls.png", "dtlz2.png"):
        path = out / name
        assert str(path) in printed
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image

        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200

    with (out / "toy_results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 3 + 3 * 4 + 3 * 4  # quick: 6 toy methods, 3 on bowls and DTLZ2
    toy_rows = {(r["method"], int(r["start"])): r for r in rows if r["problem"] == "cagrad_toy"}
    for method in ("cagrad c=0.5 (uniform)", "clipped_cagrad w=(0.8, 0.2) c=0.4"):
        for start in range(3):
            assert float(toy_rows[method, start]["distance_to_target"]) < POINT_TOL
    bowls = [r for r in rows if r["problem"] == "quadratic_bowls"]
    assert all(
        r["metric"] == "pareto_stationarity" and float(r["metric_value"]) < 1e-3 for r in bowls
    )

    md = (out / "toy_results.md").read_text()
    assert md.startswith("# raco_jax toy benchmark")
    tables = [line for line in md.splitlines() if line.startswith("|")]
    header_cells = tables[0].count("|")
    assert all(line.count("|") == header_cells for line in tables[: 2 + 6 * 3])
    results = json.loads((out / "toy_results.json").read_text())
    assert results["config"]["quick"] is True
    assert results["config"]["toy_steps"] == QUICK_STEPS and results["config"]["toy_lr"] == QUICK_LR


def test_cli_help_lists_toy(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "toy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "modules",
    [[toy.problems, toy.trajectory, toy.plots, toy.benchmark], [cli]],
    ids=["toy", "cli"],
)
def test_docstring_examples(modules) -> None:
    import matplotlib

    matplotlib.use("Agg")
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for module in modules for t in finder.find(module) if t.examples]
    assert tests
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0
