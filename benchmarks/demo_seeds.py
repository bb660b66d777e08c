"""The built-in demo over several seeds: how far apart are RACO, DPO-LW and CAGrad, really?

One ``raco-jax demo`` (:func:`raco_jax.demo.run_demo`) per seed, each seed changing every random
choice of the pipeline (the pretrained model, the sampled and labelled pairs, the batches, the
evaluation samples), then the spread of each method's normalised hypervolume (against the worst
possible scores, in [0, 1]) over the seeds and the paired differences RACO - DPO-LW and
RACO - CAGrad (same seed: same pretrained model, pairs and evaluation key).

Runs are resumable: a seed whose ``run_config.json`` exists is read back, not rerun.

Usage:
    python3 benchmarks/demo_seeds.py                     # 2 objectives, seeds 0-4
    python3 benchmarks/demo_seeds.py --objectives 3 --seeds 3
    python3 benchmarks/demo_seeds.py --quick --seeds 2   # the test setting (about 1 min a seed)

Writes ``<out>/report.md`` and ``<out>/report.json`` (default out:
``benchmarks/out/demo-seeds/k<objectives>[-quick]``, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from raco_jax.evaluate import seed_summary

OUT = pathlib.Path(__file__).resolve().parent / "out" / "demo-seeds"
METHODS = ("raco", "dpo-lw", "cagrad")


def summarize(results: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Spread over seeds of each method's normalised hypervolume, and paired differences.

    Args:
      results: seed -> the dict :func:`raco_jax.demo.run_demo` returns (``run_config.json``).

    Returns:
      ``seeds``; ``hypervolume`` (method -> :func:`raco_jax.evaluate.seed_summary` and the
      value per seed); ``differences`` ("raco - dpo-lw", "raco - cagrad" -> the seed summary
      of the differences, the differences per seed, ``z`` = mean / se and ``wins`` = how many
      seeds RACO is ahead); ``ranks`` (method -> how many seeds it is first).

    Example:
        >>> from demo_seeds import summarize
        >>> run = lambda r, d, c: {"hypervolumes_vs_worst": {"raco": r, "dpo-lw": d, "cagrad": c}}
        >>> s = summarize({0: run(0.40, 0.38, 0.41), 1: run(0.42, 0.41, 0.40)})
        >>> round(s["differences"]["raco - dpo-lw"]["mean"], 3), s["differences"]["raco - dpo-lw"]["wins"]
        (0.015, 2)
        >>> s["ranks"]
        {'raco': 1, 'dpo-lw': 0, 'cagrad': 1}
    """
    seeds = sorted(results)
    if not seeds:
        raise ValueError("no demo results to summarize")
    hv = {m: [float(results[s]["hypervolumes_vs_worst"][m]) for s in seeds] for m in METHODS}
    differences = {}
    for other in METHODS[1:]:
        diff = [a - b for a, b in zip(hv["raco"], hv[other], strict=True)]
        stats = seed_summary(diff)
        z = stats["mean"] / stats["se"] if stats["se"] > 0 else math.nan
        differences[f"raco - {other}"] = {
            **stats,
            "per_seed": diff,
            "z": z,
            "wins": sum(d > 0 for d in diff),
        }
    firsts = [max(METHODS, key=lambda m, i=i: hv[m][i]) for i in range(len(seeds))]
    return {
        "seeds": seeds,
        "hypervolume": {m: {**seed_summary(hv[m]), "per_seed": hv[m]} for m in METHODS},
        "differences": differences,
        "ranks": {m: firsts.count(m) for m in METHODS},
    }


def report_lines(summary: Mapping[str, Any], results: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """The markdown report: per-seed table, spread per method, paired differences.

    Example:
        >>> from demo_seeds import report_lines, summarize
        >>> run = {"hypervolumes_vs_worst": {"raco": 0.4, "dpo-lw": 0.4, "cagrad": 0.4},
        ...        "timings_s": {"total": 90.0}}
        >>> report_lines(summarize({0: run}), {0: run})[2]
        '| seed | raco | dpo-lw | cagrad | wall s |'
    """
    seeds = summary["seeds"]
    hv = summary["hypervolume"]
    lines = [
        "# The built-in demo over seeds",
        "",
        "| seed | " + " | ".join(METHODS) + " | wall s |",
    ]
    lines.append("|---|" + "---|" * (len(METHODS) + 1))
    for i, seed in enumerate(seeds):
        cells = [f"{hv[m]['per_seed'][i]:.4f}" for m in METHODS]
        wall = results[seed].get("timings_s", {}).get("total", math.nan)
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {wall:.0f} |")
    lines += ["", "Normalised hypervolume, mean ± s.e. over seeds (first on how many seeds):", ""]
    lines += [
        f"- {m}: {hv[m]['mean']:.4f} ± {hv[m]['se']:.4f} (first on {summary['ranks'][m]} of {len(seeds)})"
        for m in METHODS
    ]
    lines += ["", "Paired differences (same seed), mean ± s.e., z, seeds where RACO is ahead:", ""]
    for name, d in summary["differences"].items():
        lines.append(
            f"- {name}: {d['mean']:+.4f} ± {d['se']:.4f}, z = {d['z']:+.2f}, "
            f"{d['wins']} of {d['seeds']}"
        )
    return [*lines, ""]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 (default 5)")
    p.add_argument("--objectives", type=int, choices=(2, 3), default=2)
    p.add_argument("--quick", action="store_true", help="the demo's quick preset")
    p.add_argument("--output-dir", type=pathlib.Path, default=None)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.output_dir is None:
        args.output_dir = OUT / (f"k{args.objectives}" + ("-quick" if args.quick else ""))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from raco_jax.demo import run_demo

    results: dict[int, dict[str, Any]] = {}
    for seed in range(args.seeds):
        seed_dir = args.output_dir / f"seed-{seed}"
        done = seed_dir / "run_config.json"
        if done.exists():
            print(f"seed {seed}: done, read from {done}", file=sys.stderr)
            results[seed] = json.loads(done.read_text())
            continue
        t0 = time.perf_counter()
        results[seed] = run_demo(
            seed_dir, quick=args.quick, seed=seed, num_objectives=args.objectives, progress=True
        )
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    summary = summarize(results)
    summary["objectives"] = args.objectives
    summary["quick"] = args.quick
    lines = report_lines(summary, results)
    (args.output_dir / "report.md").write_text("\n".join(lines))
    (args.output_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
