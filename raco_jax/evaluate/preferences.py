"""Saved runs scored on preference pairs: implicit-reward accuracy, mean margin and DPO loss.

:func:`evaluate_preference_runs` is what ``raco-jax evaluate --runs DIR ... --data-dir PAIRS``
runs. For every run directory (``config.json`` + ``final/``, as :func:`raco_jax.align`
writes it; ``final/`` holds either a full checkpoint or LoRA adapters in PEFT layout) it loads the
policy, computes the summed completion log-probs of both responses of every pair, and compares
them with the base model's (the run's ``model``, i.e. the DPO reference). Per objective ``k``,
over the pairs labeled for ``k``, with the implicit reward
:math:`r(x, y) = \\beta(\\log\\pi(y|x) - \\log\\pi_{ref}(y|x))` and
:math:`m_i = s_{k,i}(r(x, y_a) - r(x, y_b))`:

* ``accuracy/<k>``: the fraction of pairs with :math:`m_i > 0`, ties counted as one half (so the
  base model, whose rewards are all zero, scores exactly 0.5 on every objective: the reference
  point of the hypervolume);
* ``margin/<k>``: the mean of :math:`m_i`;
* ``loss/<k>``: the DPO loss of the run's ``loss_type`` (:func:`raco_jax.preference.dpo_losses`);
* ``accuracy_stderr/<k>`` and ``pairs/<k>``; with several objectives also the accuracy on
  the pairs where objective k disagrees with another (``accuracy_conflicting/<k>``).

The per-pair implicit-reward margins of every run come back too
(:attr:`PreferenceEvaluation.rewards`, with :func:`pair_outcomes`), for paired comparisons
between runs. When every run holds LoRA adapters on some top layers only (PEFT's
``layers_to_transform``, as ``lora_layers`` saves them), the layers below the lowest adapted
one are the base model's in every run: their output is computed once
(:func:`raco_jax.train.pair_logps.pair_layer_inputs`) and every run's forward pass starts
there (the same computation, without the lower layers' cost).

The reference and policy log-probs are cached under ``<output_dir>/cache`` keyed by content
fingerprints (:mod:`raco_jax.train.pair_logps`), so re-evaluating is free and the base model
runs once for all runs sharing it. The report: ``<output_dir>/preferences.{json,csv,md}``, the
per-pair margins ``pair_rewards.npz`` (``signs``, ``labeled``, ``run_dirs``, ``rewards`` ``[runs,
N]``) and the accuracy front ``front.{png,md,csv,json}`` with hypervolume per method against the
base model's accuracies (:func:`raco_jax.evaluate.write_front_report`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from raco_jax.data import conflicting_pairs, load_preferences, sample_pairs, tokenize_pairs
from raco_jax.evaluate.report import write_front_report
from raco_jax.models import from_pretrained, load_tokenizer
from raco_jax.models.lora import ADAPTER_CONFIG_FILE
from raco_jax.preference import dpo_losses
from raco_jax.train import load_run_model, read_run_config
from raco_jax.train.pair_logps import (
    cached_layer_inputs,
    cached_pair_logps,
    pair_layer_inputs,
    pair_logps,
    tokens_fingerprint,
    weights_fingerprint,
)
from raco_jax.train.runs import FINAL_DIR

__all__ = [
    "PreferenceEvaluation",
    "evaluate_preference_runs",
    "pair_metrics",
    "pair_outcomes",
    "pair_rewards",
]


def pair_rewards(
    policy: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray], beta: float
) -> np.ndarray:
    """The implicit-reward margin of every pair, ``r(a) - r(b)`` with ``r = beta * log(pi /
    pi_ref)`` of the summed completion log-probs: float64 ``[N]``.

    Example:
        >>> import numpy as np
        >>> from raco_jax.evaluate.preferences import pair_rewards
        >>> pair_rewards((np.array([-1.0]), np.array([-3.0])), (np.zeros(1), np.zeros(1)), 0.5)
        array([1.])
    """
    policy_a, policy_b = (np.asarray(x, np.float64) for x in policy)
    ref_a, ref_b = (np.asarray(x, np.float64) for x in reference)
    return beta * ((policy_a - ref_a) - (policy_b - ref_b))


def pair_outcomes(rewards: np.ndarray, signs: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """Per objective and pair: 1 if the implicit reward ranks the pair as labeled, 0 if the other
    way, 1/2 on a reward tie, NaN where the pair is unlabeled or tied for the objective.

    The mean over the non-NaN entries of row ``k`` is objective ``k``'s accuracy (as
    :func:`pair_metrics` reports it); keeping the pairs apart lets runs be compared pair by pair.

    Example:
        >>> import numpy as np
        >>> from raco_jax.evaluate.preferences import pair_outcomes
        >>> pair_outcomes(np.array([1.0, 0.0, -2.0]), np.array([[1, 1, 1], [1, 0, -1]]),
        ...               np.ones((2, 3))).tolist()
        [[1.0, 0.5, 0.0], [1.0, nan, 1.0]]
    """
    signs = np.asarray(signs, np.float64)
    margins = signs * np.asarray(rewards, np.float64)[None, :]
    outcomes = np.where(margins > 0, 1.0, np.where(margins < 0, 0.0, 0.5))
    decisive = (np.asarray(labeled) > 0) & (signs != 0)
    return np.where(decisive, outcomes, np.nan)


def _accuracy(margins: np.ndarray) -> tuple[float, float]:
    """Accuracy (ties 1/2) and its binomial standard error from signed margins."""
    accuracy = float(np.mean(margins > 0) + 0.5 * np.mean(margins == 0))
    return accuracy, float(np.sqrt(accuracy * (1 - accuracy) / margins.size))


def pair_metrics(
    policy: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    signs: np.ndarray,
    labeled: np.ndarray,
    objectives: Sequence[str],
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> dict[str, float]:
    """Per-objective accuracy (ties = 1/2), mean margin, DPO loss and counts over all pairs.

    Args:
      policy: ``(logps_a, logps_b)``, ``[N]`` each, summed completion log-probs of the policy.
      reference: the same for the reference model.
      signs: ``[K, N]`` in {+1, -1, 0}; labeled: ``[K, N]`` in {0, 1}.
      objectives: the K names.
      beta: the DPO temperature of the implicit reward.
      loss_type, label_smoothing: of the DPO loss (:func:`raco_jax.preference.dpo_losses`).

    Returns:
      ``{"accuracy/<k>", "accuracy_stderr/<k>", "margin/<k>", "loss/<k>", "pairs/<k>"}``;
      an objective without labeled, untied pairs gets NaN metrics and ``pairs`` 0. With K >= 2
      also ``accuracy_conflicting/<k>``, ``accuracy_conflicting_stderr/<k>`` and
      ``pairs_conflicting/<k>``: the same accuracy on the pairs where objective k disagrees
      with another objective (:func:`~raco_jax.data.conflicting_pairs`), NaN without any.

    Example:
      >>> import numpy as np
      >>> from raco_jax.evaluate.preferences import pair_metrics
      >>> ref = (np.zeros(3), np.zeros(3))
      >>> policy = (np.array([1.0, 0.0, -1.0]), np.zeros(3))
      >>> m = pair_metrics(policy, ref, np.array([[1, 1, -1]]), np.ones((1, 3)), ["helpful"], 0.5)
      >>> round(m["accuracy/helpful"], 4), round(m["margin/helpful"], 4), m["pairs/helpful"]
      (0.8333, 0.3333, 3.0)
      >>> pair_metrics(ref, ref, np.array([[1, -1, 1]]), np.ones((1, 3)), ["helpful"],
      ...              0.5)["accuracy/helpful"]   # the reference itself: every pair is a tie
      0.5
    """
    policy_a, policy_b = (np.asarray(x, np.float64) for x in policy)
    ref_a, ref_b = (np.asarray(x, np.float64) for x in reference)
    signs = np.asarray(signs, np.float64)
    labeled = np.asarray(labeled, np.float64)
    rewards = pair_rewards(policy, reference, beta)  # r(a) - r(b), [N]
    conflicts = conflicting_pairs(signs, labeled) if len(objectives) > 1 else None
    ratios = np.concatenate([policy_a - ref_a, policy_b - ref_b]).astype(np.float32)
    losses = np.asarray(
        dpo_losses(
            jnp.asarray(ratios),
            jnp.asarray(signs, jnp.float32),
            jnp.asarray(labeled * (signs != 0), jnp.float32),
            beta=beta,
            loss_type=loss_type,
            label_smoothing=label_smoothing,
        )
    )
    metrics: dict[str, float] = {}
    for k, name in enumerate(objectives):
        mask = (labeled[k] > 0) & (signs[k] != 0)
        n = int(mask.sum())
        metrics[f"pairs/{name}"] = float(n)
        if conflicts is not None:
            subset = conflicts[k]
            metrics[f"pairs_conflicting/{name}"] = float(subset.sum())
            accuracy, stderr = (
                _accuracy(signs[k][subset] * rewards[subset]) if subset.any() else (np.nan, np.nan)
            )
            metrics[f"accuracy_conflicting/{name}"] = float(accuracy)
            metrics[f"accuracy_conflicting_stderr/{name}"] = float(stderr)
        if n == 0:
            for key in ("accuracy", "accuracy_stderr", "margin", "loss"):
                metrics[f"{key}/{name}"] = float("nan")
            continue
        margins = signs[k][mask] * rewards[mask]
        accuracy, stderr = _accuracy(margins)
        metrics[f"accuracy/{name}"] = accuracy
        metrics[f"accuracy_stderr/{name}"] = stderr
        metrics[f"margin/{name}"] = float(np.mean(margins))
        metrics[f"loss/{name}"] = float(losses[k])
    return metrics


@dataclasses.dataclass(frozen=True)
class PreferenceEvaluation:
    """What :func:`evaluate_preference_runs` measured and wrote.

    Attributes:
      objectives: the objectives, in order.
      base: the base model's metrics (accuracy 0.5, margin 0, loss log 2 for the sigmoid loss).
      runs: one dict per run: ``run_dir``, ``method``, ``weights`` and the metrics.
      hypervolumes: accuracy hypervolume per method, reference point = the base accuracies.
      paths: the written files by kind.
      signs: ``[K, N]`` the evaluated pairs' signs; labeled: ``[K, N]`` their labels.
      rewards: per run directory (as in ``runs``), the ``[N]`` implicit-reward margins
        ``r(a) - r(b)`` (:func:`pair_rewards`); :func:`pair_outcomes` turns them into per-pair
        outcomes.
      first_layer: the layer every forward pass started at (0: the embedding; see the module
        docstring).
    """

    objectives: tuple[str, ...]
    base: dict[str, float]
    runs: list[dict[str, Any]]
    hypervolumes: dict[str, float]
    paths: dict[str, pathlib.Path]
    signs: np.ndarray | None = None
    labeled: np.ndarray | None = None
    rewards: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    first_layer: int = 0


def _adapted_layers(run_dir: pathlib.Path) -> list[int] | None:
    """The layers a run's saved adapters cover (None: a full model or every layer)."""
    path = run_dir / FINAL_DIR / ADAPTER_CONFIG_FILE
    if not path.is_file():
        return None
    layers = json.loads(path.read_text()).get("layers_to_transform")
    if layers is None:
        return None
    return [layers] if isinstance(layers, int) else [int(i) for i in layers]


def _frozen_first_layer(run_dirs: Sequence[pathlib.Path]) -> int:
    """The lowest layer any run adapts, when every run adapts top layers only (else 0)."""
    lowest = []
    for run_dir in run_dirs:
        layers = _adapted_layers(run_dir)
        if not layers:
            return 0
        lowest.append(min(layers))
    return min(lowest)


def _policy_fingerprint(run_dir: pathlib.Path, base_key: str) -> str:
    """The weights' content hash of a run's final model (base model key + adapters, or the
    full export)."""
    final = run_dir / FINAL_DIR
    if (final / ADAPTER_CONFIG_FILE).is_file():
        return base_key + "+" + weights_fingerprint(final)
    return weights_fingerprint(final)


def _write_tables(
    out: pathlib.Path, objectives: Sequence[str], base: Mapping[str, float], runs: Sequence[Any]
) -> dict[str, pathlib.Path]:
    columns = [
        f"{key}/{name}" for name in objectives for key in ("accuracy", "margin", "loss", "pairs")
    ]
    rows = [{"run": "base model", "method": "base", "weights": "", **base}] + [
        {
            **r,
            "run": pathlib.Path(r["run_dir"]).name,
            "method": r["method"],
            "weights": "/".join(f"{w:g}" for w in r["weights"]),
        }
        for r in runs
    ]
    paths = {"table_csv": out / "preferences.csv", "table_markdown": out / "preferences.md"}
    with paths["table_csv"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", "method", "weights", *columns])
        for row in rows:
            writer.writerow([row["run"], row["method"], row["weights"], *(row[c] for c in columns)])
    header = ["run", "method", "weights"]
    for name in objectives:
        header += [f"{name} accuracy", f"{name} margin", f"{name} DPO loss"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["run"], row["method"], row["weights"]]
        for name in objectives:
            se = row.get(f"accuracy_stderr/{name}", 0.0)
            cells += [
                f"{row[f'accuracy/{name}']:.4f} ± {se:.4f}",
                f"{row[f'margin/{name}']:+.4f}",
                f"{row[f'loss/{name}']:.4f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    counts = ", ".join(f"{name}: {int(base[f'pairs/{name}'])}" for name in objectives)
    lines.append("")
    lines.append(
        f"Pairs per objective: {counts}. Accuracy counts ties as 1/2 (± one standard error); "
        "margin is the mean implicit-reward margin beta * (log-ratio(chosen) - "
        "log-ratio(rejected)); the base model is the reference, so its rewards are 0."
    )
    paths["table_markdown"].write_text("\n".join(lines) + "\n")
    return paths


def evaluate_preference_runs(
    run_dirs: Sequence[str | pathlib.Path],
    data: Any,
    output_dir: str | pathlib.Path,
    *,
    schema: str | None = None,
    split: str = "train",
    batch_size: int = 8,
    max_pairs: int | None = None,
    title: str | None = None,
    log: Callable[[str], None] | None = print,
) -> PreferenceEvaluation:
    """Recomputes the preference metrics of saved runs on any pairs (see the module docstring).

    Args:
      run_dirs: run directories (``config.json`` + ``final/``); they must share the base model,
        objectives, tokenizer and length limits (those of the first run are used).
      data: pairs in the runs' schema: a directory (e.g. HH-RLHF's ``helpful-base.jsonl.gz`` and
        ``harmless-base.jsonl.gz``, or the hub's ``helpful-base/test.jsonl.gz`` layout with
        ``split``), a file, or a list of files.
      output_dir: where the tables, the front and the cache go.
      schema: the data's schema (default: the runs').
      split: the split to read (hub layout).
      batch_size: pairs per forward pass.
      max_pairs: evaluate at most ``max_pairs`` pairs, drawn across the objectives with a fixed
        seed (:func:`~raco_jax.data.sample_pairs`; None: all).
      title: the front's title.
      log: where progress lines go (None: silent).

    Returns:
      A :class:`PreferenceEvaluation`.

    Raises:
      FileNotFoundError: a run directory without ``config.json``.
      ValueError: an unfinished run, runs with different base models or objectives, or data
        without pairs for the objectives.

    Example (a tiny model and two saved runs; see tests/evaluate/test_preferences.py):
      >>> from raco_jax.evaluate.preferences import evaluate_preference_runs
      >>> evaluate_preference_runs([], "pairs/", "out/")
      Traceback (most recent call last):
      ...
      ValueError: no runs to evaluate: give at least one run directory.
    """
    say = log or (lambda message: None)
    run_dirs = [pathlib.Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("no runs to evaluate: give at least one run directory.")
    configs = [read_run_config(d) for d in run_dirs]
    first = configs[0]
    objectives = tuple(first["objectives"])
    for run_dir, config in zip(run_dirs, configs, strict=True):
        if config["model"] != first["model"] or tuple(config["objectives"]) != objectives:
            raise ValueError(
                f"run {run_dir} starts from {config['model']!r} with objectives "
                f"{config['objectives']}; {run_dirs[0]} from {first['model']!r} with "
                f"{list(objectives)}: evaluate runs of one base model and objectives together."
            )
        if not (run_dir / FINAL_DIR).is_dir():
            raise ValueError(f"run {run_dir} is not finished: it has no {FINAL_DIR}/ directory.")
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"

    pairs, report = load_preferences(
        data, schema or first["schema"], objectives=objectives, split=split
    )
    if not report.ok or report.filtered:
        say(report.summary())
    if max_pairs is not None:
        pairs = sample_pairs(pairs, max_pairs, objectives, seed=0)
    if not pairs:
        raise ValueError(f"{data!r} holds no pairs labeled for {list(objectives)}.")
    tokenizer = load_tokenizer(first.get("tokenizer") or first["model"])
    completion = first.get("max_completion_length")
    completion = None if completion is None else int(completion)
    tokenized = tokenize_pairs(
        pairs,
        tokenizer,
        objectives,
        int(first["max_length"]),
        int(first["max_prompt_length"]),
        max_completion_length=completion,
    )
    signs = np.asarray(tokenized.signs, np.float64)
    labeled = np.asarray(tokenized.labeled, np.float64)
    missing = [name for k, name in enumerate(objectives) if not np.any(signs[k] != 0)]
    if missing:
        raise ValueError(
            f"the {len(tokenized)} pairs of {data} hold no labeled, untied pair for "
            f"{missing}: a front needs every objective (with max_pairs, take more pairs)."
        )
    say(
        f"{len(tokenized)} pairs from {data} ("
        + ", ".join(f"{name}: {int(labeled[k].sum())}" for k, name in enumerate(objectives))
        + ")"
    )
    tokens_key = tokens_fingerprint(tokenized)
    dtype = jnp.dtype(first.get("dtype", "float32"))
    base_key = weights_fingerprint(first["model"])  # hashed once: every run shares the base
    base_model: list[Any] = []

    def base() -> Any:
        if not base_model:
            say(f"base model {first['model']}")
            base_model.append(
                from_pretrained(first["model"], dtype=dtype, param_dtype=jnp.float32)[0]
            )
        return base_model[0]

    first_layer = _frozen_first_layer(run_dirs)
    stream = None
    if first_layer:
        stream = cached_layer_inputs(
            cache,
            (base_key, str(dtype), tokens_key, f"layer={first_layer}"),
            lambda: pair_layer_inputs(
                base(),
                tokenized,
                first_layer,
                batch_size,
                progress=f"inputs of layer {first_layer}" if log is not None else None,
            ),
            say,
        )
        say(f"every run adapts layers >= {first_layer} only: forward passes start there")
    from_layer = (f"from-layer={first_layer}",) if first_layer else ()

    def logps_of(model: Any) -> tuple[np.ndarray, np.ndarray]:
        return pair_logps(
            model,
            tokenized,
            batch_size,
            progress="log-probs" if log is not None else None,
            layer_inputs=stream,
            max_completion_length=completion,
        )

    reference = cached_pair_logps(
        cache,
        "reference",
        (base_key, str(dtype), tokens_key, *from_layer),
        lambda: logps_of(base()),
        say,
    )
    base_model.clear()  # free it before the runs' models load
    beta0 = float(first.get("beta", 0.1))
    base_metrics = pair_metrics(
        reference,
        reference,
        signs,
        labeled,
        objectives,
        beta0,
        first.get("loss_type", "sigmoid"),
        float(first.get("label_smoothing", 0.0)),
    )
    runs = []
    rewards: dict[str, np.ndarray] = {}
    for run_dir, config in zip(run_dirs, configs, strict=True):
        run_dtype = jnp.dtype(config.get("dtype", "float32"))

        def compute(
            run_dir: pathlib.Path = run_dir,
            config: Mapping[str, Any] = config,
            run_dtype: Any = run_dtype,
        ) -> tuple[np.ndarray, np.ndarray]:
            say(f"{run_dir}: scoring {len(tokenized)} pairs")
            return logps_of(load_run_model(run_dir, config, run_dtype)[0])

        policy = cached_pair_logps(
            cache,
            "policy",
            (_policy_fingerprint(run_dir, base_key), str(run_dtype), tokens_key, *from_layer),
            compute,
            say,
        )
        rewards[str(run_dir)] = pair_rewards(policy, reference, float(config.get("beta", 0.1)))
        metrics = pair_metrics(
            policy,
            reference,
            signs,
            labeled,
            objectives,
            float(config.get("beta", 0.1)),
            config.get("loss_type", "sigmoid"),
            float(config.get("label_smoothing", 0.0)),
        )
        runs.append(
            {
                "run_dir": str(run_dir),
                "method": config["method"],
                "weights": [float(w) for w in config["weights"]],
                **metrics,
            }
        )
    paths = _write_tables(out, objectives, base_metrics, runs)
    front = write_front_report(
        [
            {
                "method": r["method"],
                "weights": tuple(r["weights"]),
                "scores": {name: r[f"accuracy/{name}"] for name in objectives},
                "stderr": {name: r[f"accuracy_stderr/{name}"] for name in objectives},
            }
            for r in runs
        ],
        out,
        reference=[base_metrics[f"accuracy/{name}"] for name in objectives],
        objectives=objectives,
        title=title or "Preference accuracy (reference: the base model)",
    )
    paths.update({f"front_{kind}": path for kind, path in front.paths.items()})
    paths["pair_rewards"] = out / "pair_rewards.npz"
    np.savez(
        paths["pair_rewards"],
        signs=signs,
        labeled=labeled,
        run_dirs=np.array([str(d) for d in run_dirs]),
        rewards=np.stack([rewards[str(d)] for d in run_dirs]),
    )
    paths["json"] = out / "preferences.json"
    paths["json"].write_text(
        json.dumps(
            {
                "data": str(data),
                "split": split,
                "objectives": list(objectives),
                "base_model": first["model"],
                "base": base_metrics,
                "runs": runs,
                "hypervolumes": front.hypervolumes,
                "hypervolume_reference": [base_metrics[f"accuracy/{name}"] for name in objectives],
            },
            indent=2,
        )
        + "\n"
    )
    say(f"preferences: {paths['table_markdown']} (hypervolume per method: {front.hypervolumes})")
    return PreferenceEvaluation(
        objectives,
        base_metrics,
        runs,
        dict(front.hypervolumes),
        paths,
        signs=signs,
        labeled=labeled,
        rewards=rewards,
        first_layer=first_layer,
    )
