"""The toy benchmark behind ``raco-jax toy`` and ``benchmarks/toy.py`` (:func:`run_benchmark`)."""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from raco_jax.aggregation import cagrad, clipped_cagrad, mgda, pcgrad, weighted_sum
from raco_jax.toy.plots import plot_bowls, plot_cagrad_toy, plot_dtlz2
from raco_jax.toy.problems import (
    CAGRAD_TOY_STARTS,
    Problem,
    cagrad_toy,
    cagrad_toy_pareto_distance,
    cagrad_toy_pareto_set,
    cagrad_toy_weighted_minimizer,
    dtlz2,
    dtlz2_g,
    pareto_stationarity,
    quadratic_bowls,
)
from raco_jax.toy.trajectory import Trajectory, run

__all__ = ["run_benchmark"]


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
        lambda params, _: dtlz2_g(params, problem.num_objectives),
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
            plot_bowls(bowl_curves, out / "quadratic_bowls.png")
            files["quadratic_bowls_png"] = str(out / "quadratic_bowls.png")
            final = {k: np.asarray(v["final_losses"]) for k, v in dtlz2_results.items()}
            plot_dtlz2(dtlz2_curves, final, out / "dtlz2.png")
            files["dtlz2_png"] = str(out / "dtlz2.png")
        results["wall_time_s"] = time.perf_counter() - t_start
        md_path, csv_path = _write_tables(results, out)
        files["table_md"] = str(md_path)
        files["table_csv"] = str(csv_path)
        files["json"] = str(out / "toy_results.json")
        results["files"] = files
        (out / "toy_results.json").write_text(json.dumps(results, indent=1))
    return results
