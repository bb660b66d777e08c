"""Saved runs scored by judges on their responses to held-out prompts, and their front.

:func:`evaluate_runs` is the judged half of ``raco-jax sweep`` and ``raco-jax evaluate --data``:

1. one greedy response per prompt with each run's final model and with the base model
   (:func:`~raco_jax.evaluate.generate_responses`);
2. scores from the judges named by specs (:func:`~raco_jax.evaluate.make_judges`):
   ``length[:objective]``, ``lexicon:FILE[:objective[:positive]]``,
   ``reward-model:DIR[:objective]`` and ``implicit[:objective]`` (the DPO implicit reward
   ``beta * (log pi - log pi_base)`` of the run's model against the base model);
3. the Pareto front (:func:`~raco_jax.evaluate.write_front_report`) into the output directory: a
   plot, tables, the hypervolume of each method's front with its reference point stated (the
   base model's mean scores, so a run counts only where it improves every objective over the
   model it started from), a JSON summary, and ``responses.json`` with every response and
   score.

Each run's scores are cached in ``<run_dir>/evaluation.json`` under a key of the judges, the
prompts, the generation settings and the base model, so a rerun evaluates only what changed.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from raco_jax.data import PreferencePair, tokenize_pairs
from raco_jax.evaluate.judge_specs import judge_objectives, make_judges
from raco_jax.evaluate.judges import summarize_scores
from raco_jax.evaluate.report import FrontReport, write_front_report
from raco_jax.evaluate.responses import generate_responses, prompt_text
from raco_jax.models import from_pretrained, load_tokenizer
from raco_jax.preference import make_batch
from raco_jax.train import (
    compute_reference_logps,
    load_run_model,
    read_run_config,
    run_is_finished,
)

__all__ = ["RUN_EVALUATION_FILE", "evaluate_runs"]

#: Where each run's judged scores are cached.
RUN_EVALUATION_FILE = "evaluation.json"


def _logps_fn(
    model: Any,
    tokenizer: Any,
    max_length: int,
    max_prompt_length: int,
    batch_size: int,
    originals: dict[str, Any] | None = None,
) -> Callable[[list[Any], list[str]], np.ndarray]:
    """(prompts, responses) -> summed log-probs of the responses under ``model``; prompt texts
    found in ``originals`` are replaced by the prompts they were made from (conversations)."""
    originals = originals or {}

    def logps(prompts: list[Any], responses: list[str]) -> np.ndarray:
        prompts = [originals.get(p, p) if isinstance(p, str) else p for p in prompts]
        pairs = [
            PreferencePair(p, r or " ", r or " ", {"_": 0})
            for p, r in zip(prompts, responses, strict=True)
        ]
        data = tokenize_pairs(pairs, tokenizer, ["_"], max_length, max_prompt_length)
        out = np.zeros(len(pairs), np.float32)
        for start in range(0, len(pairs), batch_size):
            indices = list(range(start, min(start + batch_size, len(pairs))))
            batch = make_batch(**data.collate(indices, batch_size=batch_size), validate=False)
            out[indices] = np.asarray(compute_reference_logps(model, batch))[: len(indices)]
        return out

    return logps


def _cache_key(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_runs(
    run_dirs: Sequence[str | pathlib.Path],
    prompts: Sequence[Any],
    judges: Sequence[str],
    output_dir: str | pathlib.Path,
    *,
    base_model: str | None = None,
    max_new_tokens: int = 64,
    max_prompt_length: int | None = None,
    batch_size: int = 8,
    title: str | None = None,
    log: Callable[[str], None] | None = print,
) -> FrontReport:
    """Scores saved runs on prompts and writes their Pareto front (see the module docstring).

    Args:
      run_dirs: run directories (each with ``config.json`` and ``final/``).
      prompts: the held-out prompts (strings or conversations).
      judges: judge specs (:func:`~raco_jax.evaluate.make_judges`); together they must score at least 2
        objectives.
      output_dir: where the front report goes.
      base_model: the model the runs started from (default: the first run's ``model``): its
        scores are the hypervolume's reference point, and it is the implicit judge's reference.
      max_new_tokens: response length limit.
      max_prompt_length: prompt length limit in tokens (default: the first run's).
      batch_size: prompts per generation batch.
      title: the report's title.
      log: where progress lines go (None: silent).

    Returns:
      The :class:`~raco_jax.evaluate.FrontReport`; ``<output_dir>/responses.json`` holds the
      responses and per-prompt scores, ``<output_dir>/front.*`` the front.
    """
    say = log or (lambda message: None)
    run_dirs = [pathlib.Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("no runs to evaluate: give at least one run directory.")
    objectives = judge_objectives(judges)
    if len(objectives) < 2:
        raise ValueError(
            f"a Pareto front needs at least 2 objectives; the judges score {list(objectives)}: "
            "add a --judge."
        )
    configs = [read_run_config(d) for d in run_dirs]
    for run_dir in run_dirs:
        if not run_is_finished(run_dir):
            raise ValueError(f"run {run_dir} is not finished (no final/ or no completed summary).")
    base_path = base_model or configs[0]["model"]
    if max_prompt_length is None:
        max_prompt_length = int(configs[0]["max_prompt_length"])
    max_length = max_prompt_length + max_new_tokens + 8
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompt_texts = [prompt_text(p) for p in prompts]
    originals = dict(zip(prompt_texts, prompts, strict=True))
    settings = {
        "judges": list(judges),
        "prompts": list(prompts),
        "max_new_tokens": max_new_tokens,
        "max_prompt_length": max_prompt_length,
        "base_model": str(base_path),
    }

    loaded: dict[str, Any] = {}

    def base() -> tuple[Any, Any]:
        if "base" not in loaded:
            model, _ = from_pretrained(base_path, dtype=jnp.float32)
            tokenizer = load_tokenizer(configs[0].get("tokenizer") or base_path)
            loaded["base"] = (model, tokenizer)
        return loaded["base"]

    def score(model: Any, tokenizer: Any, beta: float) -> dict[str, Any]:
        responses = generate_responses(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            max_prompt_length=max_prompt_length,
            batch_size=batch_size,
        )
        base_model_, base_tokenizer = base()
        judge = make_judges(
            judges,
            policy_logps=_logps_fn(
                model, tokenizer, max_length, max_prompt_length, batch_size, originals
            ),
            reference_logps=_logps_fn(
                base_model_, base_tokenizer, max_length, max_prompt_length, batch_size, originals
            ),
            beta=beta,
        )
        scores = judge(prompt_texts, responses)
        return {
            "responses": responses,
            "scores": {name: np.asarray(v).tolist() for name, v in scores.items()},
        }

    base_model_obj, base_tokenizer = base()
    say(f"evaluating the base model {base_path} on {len(prompts)} prompts")
    base_eval = score(base_model_obj, base_tokenizer, float(configs[0].get("beta", 0.1)))
    reference = [float(np.mean(base_eval["scores"][name])) for name in objectives]

    results = []
    details = []
    for run_dir, config in zip(run_dirs, configs, strict=True):
        key = _cache_key({**settings, "run": str(run_dir.resolve())})
        cache_file = run_dir / RUN_EVALUATION_FILE
        cached = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
        if cached.get("key") == key:
            evaluation = cached["evaluation"]
            say(f"{run_dir}: cached evaluation")
        else:
            say(f"{run_dir}: generating and scoring")
            model, tokenizer = load_run_model(run_dir, config)
            evaluation = score(model, tokenizer, float(config.get("beta", 0.1)))
            cache_file.write_text(json.dumps({"key": key, "evaluation": evaluation}) + "\n")
        summary = summarize_scores(evaluation["scores"])
        results.append(
            {
                "method": config["method"],
                "weights": tuple(config["weights"]),
                "scores": {name: summary["scores"][name] for name in objectives},
                "stderr": {name: summary["stderr"][name] for name in objectives},
            }
        )
        details.append({"run_dir": str(run_dir), **results[-1], **evaluation})
    report = write_front_report(
        results,
        out,
        reference=reference,
        objectives=objectives,
        title=title or "Pareto fronts (reference point: the base model's mean scores)",
    )
    (out / "responses.json").write_text(
        json.dumps(
            {
                "prompts": prompt_texts,
                "base_model": str(base_path),
                "reference": dict(zip(objectives, reference, strict=True)),
                "base": base_eval,
                "runs": details,
            },
            indent=2,
            default=list,
        )
        + "\n"
    )
    say(f"front: {report.paths['markdown']} (hypervolume per method: {report.hypervolumes})")
    return report
