r"""The ``raco-jax demo`` pipeline: pretrain, sample pairs, align over a weight grid, report.

:func:`run_demo` runs the built-in task of :mod:`raco_jax.demo.task` end to end, offline, on a
CPU:

1. **Pretrain** a tiny decoder (2 layers, hidden 64) on the synthetic corpus by next-token
   prediction (:func:`prepare`).
2. **Sample preference pairs** from it (two responses per training prompt, temperature 1) and
   label them with the exact judges; report the correlation of the objectives' scores over the
   sampled responses (informativeness vs brevity is clearly negative: the objectives conflict).
   Reference log-probs (the pretrained model, frozen) are computed once.
3. **Align** the pretrained model for every method (``raco``: clipped CAGrad, ``dpo-lw``: the
   weighted sum, ``cagrad``: unclipped CAGrad with a weighted anchor) and every weight vector of
   a grid, with the same steps, batches, learning rate and seed (:class:`Aligner`).
4. **Evaluate** each aligned model by sampling on held-out prompts and scoring exactly
   (:func:`evaluate_model`, the same sampling key for every model).
5. **Report** (:func:`raco_jax.evaluate.write_front_report`): ``front.png`` (Pareto plot),
   ``front.csv`` / ``front.md`` (scores per method and weights, hypervolumes), ``front.json``,
   plus ``run_config.json`` (the configuration, timings, correlations, compile counts) and
   ``samples.md`` (example responses). Two hypervolumes per method: against the pretrained
   model's scores (the front report's reference point: only runs improving EVERY objective
   over the start model count, so a sweep that trades the objectives off often scores 0 or
   close), and, normalised to [0, 1] by the exact score ranges
   (:data:`~raco_jax.demo.task.SCORE_BOUNDS`), against the worst possible scores, which
   measures whole fronts (shown in the plot's legend and appended to ``front.md``).

Compilation is shared across runs: each method's :class:`~raco_jax.train.TrainStep` is built
ONCE and re-initialised per weight vector. The weights reach the aggregator through
``optax.inject_hyperparams`` (:func:`demo_optimizer`, the chain of
:func:`raco_jax.train.make_optimizer` with injectable weights), so they are traced values in
the optimizer state rather than constants baked into the compiled step: one compile per method,
not per (method, weights). (The step's own ``weights`` are then a uniform placeholder that only
its ``loss``, ``grad_norm/anchor`` and ``aggregation/num_clipped`` metrics read; the demo
recomputes the weighted loss from the per-objective losses.) Generation compiles once per
shape, and everything is deterministic for a given seed.

``quick=True`` (the test suite's setting) shrinks every stage to about a minute on 2 CPU cores.

The stages live in :mod:`raco_jax.demo.stages`.

Example:
  >>> from raco_jax.demo.run import format_summary
  >>> format_summary({"objectives": ["a", "b"], "correlations": {}, "reference": [0.0, 0.0],
  ...                 "hypervolumes": {}, "timings_s": {"total": 1.0},
  ...                 "output_dir": "out"}).splitlines()[0][:19]
  'Report written to o'
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import platform
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from raco_jax.demo import task
from raco_jax.demo.stages import (
    Aligner,
    DemoConfig,
    DemoSetup,
    alignment_batches,
    demo_config,
    evaluate_model,
    prepare,
)
from raco_jax.evaluate import method_hypervolumes, plot_fronts, write_front_report
from raco_jax.models import generation

__all__ = ["DEFAULT_OUTPUT_DIR", "format_summary", "run_demo"]

DEFAULT_OUTPUT_DIR = "raco_demo"


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------


def _progress_bar(config: DemoConfig, enabled: bool) -> Any:
    from tqdm import tqdm  # an optional dependency (raco-jax[models])

    num_runs = len(config.methods) * len(config.weights)
    total = config.pretrain.steps + 2 + num_runs * (config.align_steps + 1)
    return tqdm(total=total, disable=not enabled, desc="raco-jax demo", unit="step", leave=True)


def _samples_markdown(
    setup: DemoSetup, runs: Sequence[dict[str, Any]], evaluations: Sequence[dict[str, Any]]
) -> str:
    prompt = setup.heldout_prompts[0]
    n = setup.config.eval_samples_per_prompt
    lines = [
        "# Example responses",
        "",
        f"Held-out prompt `{task.decode(prompt)}`; the first 3 sampled responses of each model.",
        "",
    ]

    def block(title: str, evaluation: dict[str, Any]) -> None:
        lines.append(f"## {title}")
        lines.append("")
        for response in evaluation["responses"][: min(3, n)]:
            lines.append(f"- `{task.decode(response)}`")
        lines.append("")

    block("pretrained (reference)", setup.pretrained)
    for run, evaluation in zip(runs, evaluations, strict=True):
        weights = "/".join(f"{w:.2g}" for w in run["weights"])
        block(f"{run['method']}, weights {weights}", evaluation)
    return "\n".join(lines)


def run_demo(
    output_dir: str | pathlib.Path,
    *,
    quick: bool = False,
    seed: int = 0,
    num_objectives: int = 2,
    progress: bool = True,
    config: DemoConfig | None = None,
) -> dict[str, Any]:
    """Runs the whole demo and writes the report into ``output_dir``.

    Pretrain -> sample and label pairs -> align every method for every weight vector ->
    evaluate on held-out prompts -> :func:`raco_jax.evaluate.write_front_report` with the
    pretrained model's scores as the hypervolume reference point.

    Files: ``front.png``, ``front.csv``, ``front.md``, ``front.json`` (the front report),
    ``run_config.json`` (configuration, correlations, timings, compile counts, versions) and
    ``samples.md`` (example responses).

    Args:
      output_dir: the report directory (created if needed).
      quick: the reduced preset (about a minute on 2 CPU cores; the default preset takes a
        few minutes).
      seed: the seed of every random choice (same seed, same numbers).
      num_objectives: 2 (informativeness, brevity) or 3 (+ safety).
      progress: show a tqdm progress bar (on stderr).
      config: a full :class:`DemoConfig` instead of the preset (``quick``, ``seed`` and
        ``num_objectives`` are then ignored).

    Returns:
      A JSON-ready dict: ``config``, ``objectives``, ``correlations``, ``pretrained`` (scores
      and standard errors), ``reference`` (the pretrained scores), ``pretrain_losses``,
      ``pair_stats``, ``results`` (one per run: method, weights rounded to 3 decimals, scores,
      stderr, final losses), ``hypervolumes`` (vs ``reference``), ``hypervolumes_vs_worst``
      (normalised, vs ``worst_scores``; ``best_scores`` give the other end of each range),
      ``timings_s``, ``compiles`` (traces of each method's train step and of generation),
      ``environment``, ``files``, ``output_dir`` and ``summary`` (the text
      :func:`format_summary` gives).

    Example (tiny settings, about 10 s; ``run_demo(dir, quick=True)`` takes about a minute and
    is run by tests/demo/test_demo.py):
      >>> import tempfile
      >>> from raco_jax.demo import run_demo
      >>> from raco_jax.demo import DemoConfig
      >>> from raco_jax.demo.task import PretrainConfig
      >>> tiny = DemoConfig(corpus_size=64, pretrain=PretrainConfig(steps=10, steps_per_call=10),
      ...                   num_pairs=32, batch_size=16, align_steps=2, methods=("raco",),
      ...                   weights=((0.7, 0.3), (0.3, 0.7)), eval_samples_per_prompt=2)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     result = run_demo(tmp, config=tiny, progress=False)
      >>> list(result["hypervolumes"]), len(result["results"]), result["compiles"]["train_step/raco"]
      (['raco'], 2, 1)
    """

    if config is None:
        config = demo_config(quick=quick, num_objectives=num_objectives, seed=seed)
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    traces_before = generation._TRACE_COUNT
    bar = _progress_bar(config, progress)

    def on_progress(stage: str, units: int) -> None:
        bar.set_description(f"raco-jax demo: {stage}")
        bar.update(units)

    try:
        t0 = time.perf_counter()
        setup = prepare(config, on_progress)
        timings["prepare"] = time.perf_counter() - t0
        batches = alignment_batches(setup)
        runs: list[dict[str, Any]] = []
        evaluations: list[dict[str, Any]] = []
        compiles: dict[str, int] = {}
        for method in config.methods:
            t0 = time.perf_counter()
            aligner = Aligner(
                setup.model,
                method,
                config.objectives,
                steps=config.align_steps,
                learning_rate=config.learning_rate,
                beta=config.beta,
                c=config.c,
            )
            for weights in config.weights:
                on_progress(f"{method} w={'/'.join(f'{w:.2g}' for w in weights)}", 0)
                model, history = aligner.train(
                    setup.model, weights, batches, on_step=lambda: bar.update(1)
                )
                evaluation = evaluate_model(
                    model,
                    setup.heldout_prompts,
                    setup.eval_key,
                    config.objectives,
                    config.eval_samples_per_prompt,
                    config.temperature,
                )
                bar.update(1)
                evaluations.append(evaluation)
                runs.append(
                    {
                        "method": method,
                        "weights": tuple(round(float(w), 3) for w in weights),
                        "scores": evaluation["scores"],
                        "stderr": evaluation["stderr"],
                        "final_losses": {
                            name: float(np.mean(values[-10:])) for name, values in history.items()
                        },
                    }
                )
            compiles[f"train_step/{method}"] = aligner.step.num_traces
            timings[f"align/{method}"] = time.perf_counter() - t0
        on_progress("writing the report", 0)
    finally:
        bar.close()
    compiles["generate"] = generation._TRACE_COUNT - traces_before

    reference = tuple(setup.pretrained["scores"][name] for name in config.objectives)
    title = f"raco-jax demo: {config.align_steps} steps, seed {config.seed}"
    report = write_front_report(
        runs, out, reference=reference, objectives=config.objectives, title=title
    )
    worst = tuple(task.SCORE_BOUNDS[name][0] for name in config.objectives)
    best = tuple(task.SCORE_BOUNDS[name][1] for name in config.objectives)
    vs_worst = {
        method: float(value)
        for method, value in method_hypervolumes(
            runs, worst, objectives=config.objectives, normalize=(worst, best)
        ).items()
    }
    with report.paths["markdown"].open("a") as handle:
        handle.write(_worst_case_markdown(config.objectives, worst, best, vs_worst))
    # The legend shows the whole-front measure (the pretrained-reference volumes are often 0
    # for a sweep that trades the objectives off); the cross stays the pretrained model.
    plot_fronts(
        runs,
        report.paths["plot"],
        objectives=config.objectives,
        reference=reference,
        hypervolumes=vs_worst,
        title=f"{title}\nHV in the legend: from the worst scores, in [0, 1]",
        reference_label="pretrained model (start)",
    )
    (out / "samples.md").write_text(_samples_markdown(setup, runs, evaluations))
    timings["total"] = time.perf_counter() - t_start
    result: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "objectives": list(config.objectives),
        "correlations": setup.correlations,
        "pretrained": {"scores": setup.pretrained["scores"], "stderr": setup.pretrained["stderr"]},
        "reference": list(reference),
        "pretrain_losses": setup.pretrain_losses,
        "pair_stats": {
            "num_pairs": config.num_pairs,
            "tie_fraction": {
                name: float(np.mean(setup.pairs.signs[k] == 0))
                for k, name in enumerate(config.objectives)
            },
        },
        "results": [{**r, "weights": list(r["weights"])} for r in runs],
        "hypervolumes": report.hypervolumes,
        "hypervolumes_vs_worst": vs_worst,
        "worst_scores": list(worst),
        "best_scores": list(best),
        "timings_s": {name: round(value, 3) for name, value in timings.items()},
        "compiles": compiles,
        "environment": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "python": platform.python_version(),
        },
        "files": {
            **{kind: str(path) for kind, path in report.paths.items()},
            "run_config": str(out / "run_config.json"),
            "samples": str(out / "samples.md"),
        },
        "output_dir": str(out.resolve()),
    }
    result["summary"] = format_summary(result)
    (out / "run_config.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _worst_case_markdown(
    objectives: Sequence[str],
    worst: Sequence[float],
    best: Sequence[float],
    values: dict[str, float],
) -> str:
    bounds = {n: [lo, hi] for n, lo, hi in zip(objectives, worst, best, strict=True)}
    lines = [
        "",
        "## Normalised hypervolume against the worst possible scores",
        "",
        "The reference point above (the pretrained model) only credits runs that improve EVERY "
        "objective at once; a weight sweep trades the objectives off, so its extreme weights "
        "add nothing there. This table measures whole fronts instead: each objective is mapped "
        f"to [0, 1] by its exact worst and best possible scores {bounds}, and the reference "
        "point is the worst corner (1.0 would be a front reaching the best score on every "
        "objective at once).",
        "",
        "| method | normalised hypervolume |",
        "| --- | --- |",
    ]
    lines += [f"| {method} | {value:.6g} |" for method, value in values.items()]
    return "\n".join(lines) + "\n"


def format_summary(result: dict[str, Any]) -> str:
    """A short text summary of a :func:`run_demo` result (what ``raco-jax demo`` prints).

    Example:
      >>> from raco_jax.demo.run import format_summary
      >>> print(format_summary({"objectives": ["a", "b"], "correlations": {"a/b": -0.7},
      ...     "reference": [1.0, -5.0], "hypervolumes": {"raco": 2.0, "dpo-lw": 1.5},
      ...     "hypervolumes_vs_worst": {"raco": 0.41, "dpo-lw": 0.4},
      ...     "timings_s": {"total": 60.0}, "output_dir": "out"}))
      Report written to out (front.png, front.md, front.csv, front.json, run_config.json, samples.md)
      Score correlation over responses sampled from the pretrained model: a/b -0.700
      Hypervolume per method: vs the pretrained model's scores [1, -5] | normalised, vs the worst possible scores:
        raco       2 | 0.4100
        dpo-lw     1.5 | 0.4000
      Wall time: 60.0 s
    """
    lines = [
        f"Report written to {result['output_dir']} (front.png, front.md, front.csv, "
        "front.json, run_config.json, samples.md)",
        "Score correlation over responses sampled from the pretrained model: "
        + ", ".join(f"{pair} {r:+.3f}" for pair, r in result["correlations"].items()),
        "Hypervolume per method: vs the pretrained model's scores "
        f"[{', '.join(f'{v:.4g}' for v in result['reference'])}] | normalised, vs the worst "
        "possible scores:",
    ]
    vs_worst = result.get("hypervolumes_vs_worst", {})
    for method, hv in result["hypervolumes"].items():
        other = f" | {vs_worst[method]:.4f}" if method in vs_worst else ""
        lines.append(f"  {method:10s} {hv:.4g}{other}")
    lines.append(f"Wall time: {result['timings_s']['total']:.1f} s")
    return "\n".join(lines)
