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

Example:
  >>> from raco_jax.demo.run import demo_config
  >>> config = demo_config(quick=True)
  >>> config.methods, config.weights
  (('raco', 'dpo-lw', 'cagrad'), ((0.8, 0.2), (0.5, 0.5), (0.2, 0.8)))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from raco_jax.demo import task
from raco_jax.demo.task import PretrainConfig

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "DEMO_METHODS",
    "Aligner",
    "DemoConfig",
    "DemoSetup",
    "add_demo_parser",
    "alignment_batches",
    "demo_config",
    "demo_optimizer",
    "evaluate_model",
    "format_summary",
    "prepare",
    "run_demo",
    "weight_grid",
]

DEFAULT_OUTPUT_DIR = "raco_demo"
DEMO_METHODS: tuple[str, ...] = ("raco", "dpo-lw", "cagrad")
"""The methods of the demo: RACO (clipped CAGrad), DPO-LW (weighted sum), unclipped CAGrad."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def weight_grid(num_objectives: int = 2, quick: bool = False) -> tuple[tuple[float, ...], ...]:
    """The weight vectors of the demo's sweep (interior points of the simplex).

    K = 2: (0.9, 0.1) ... (0.1, 0.9) in steps of 0.2 (quick: 0.8, 0.5, 0.2). K = 3: the centre,
    the three points with one weight 0.6 and the three with two weights 0.4 (quick: the centre
    and the 0.6 points).

    Example:
      >>> from raco_jax.demo.run import weight_grid
      >>> weight_grid(2)
      ((0.9, 0.1), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.1, 0.9))
      >>> len(weight_grid(3)), weight_grid(3, quick=True)[0]
      (7, (0.6, 0.2, 0.2))
    """
    if num_objectives == 2:
        firsts = (0.8, 0.5, 0.2) if quick else (0.9, 0.7, 0.5, 0.3, 0.1)
        return tuple((w, round(1.0 - w, 10)) for w in firsts)
    if num_objectives == 3:
        corners = ((0.6, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.2, 0.6))
        centre = ((1 / 3, 1 / 3, 1 / 3),)
        if quick:
            return (*corners, *centre)
        return (*corners, *centre, (0.4, 0.4, 0.2), (0.4, 0.2, 0.4), (0.2, 0.4, 0.4))
    raise ValueError(f"the demo has 2 or 3 objectives, got num_objectives={num_objectives}")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Every setting of the demo (see :func:`demo_config` for the two presets).

    Attributes:
      num_objectives: 2 (informativeness, brevity) or 3 (+ safety).
      seed: the one seed (model init, corpus, prompt split, pairs, batch order, evaluation).
      corpus_size: pretraining sequences.
      pretrain: the :class:`~raco_jax.demo.task.PretrainConfig`.
      hidden_size, num_layers: the decoder's size.
      num_pairs: preference pairs sampled from the pretrained model.
      batch_size: pairs per alignment step.
      align_steps: alignment steps per run (every method and weight vector).
      learning_rate: peak AdamW learning rate (10% linear warmup, cosine decay to 0, as in the
        paper's recipe), global-norm clip 1.0.
      beta: DPO temperature (0.5: on this tiny task, smaller values let DPO drift into
        tokens never seen in responses at the extreme weights).
      c: CAGrad radius of ``raco`` and ``cagrad``.
      methods: methods to compare (any of :data:`DEMO_METHODS`).
      weights: the weight vectors (one run per method and vector; default
        :func:`weight_grid`).
      eval_samples_per_prompt: responses sampled per held-out prompt to score a model.
      temperature: sampling temperature for pairs and evaluation.

    Example:
      >>> from raco_jax.demo.run import DemoConfig
      >>> DemoConfig().objectives
      ('informativeness', 'brevity')
    """

    num_objectives: int = 2
    seed: int = 0
    corpus_size: int = 4000
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    hidden_size: int = 64
    num_layers: int = 2
    num_pairs: int = 2048
    batch_size: int = 32
    align_steps: int = 300
    learning_rate: float = 1e-3
    beta: float = 0.5
    c: float = 0.4
    methods: tuple[str, ...] = DEMO_METHODS
    weights: tuple[tuple[float, ...], ...] | None = None
    eval_samples_per_prompt: int = 64
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.num_objectives not in (2, 3):
            raise ValueError(f"num_objectives must be 2 or 3, got {self.num_objectives}")
        if self.weights is None:
            object.__setattr__(self, "weights", weight_grid(self.num_objectives))
        object.__setattr__(self, "weights", tuple(tuple(float(x) for x in w) for w in self.weights))
        object.__setattr__(self, "methods", tuple(self.methods))
        unknown = [m for m in self.methods if m not in DEMO_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {DEMO_METHODS}: {unknown}")
        for w in self.weights:
            if len(w) != self.num_objectives or abs(sum(w) - 1.0) > 1e-6 or min(w) < 0:
                raise ValueError(
                    f"weights {w} must be {self.num_objectives} numbers on the simplex"
                )
        if self.num_pairs < self.batch_size:
            raise ValueError("num_pairs must be at least batch_size")

    @property
    def objectives(self) -> tuple[str, ...]:
        """The objective names, in order.

        Example:
          >>> from raco_jax.demo.run import DemoConfig
          >>> DemoConfig(num_objectives=3).objectives
          ('informativeness', 'brevity', 'safety')
        """
        return task.OBJECTIVES[: self.num_objectives]


def demo_config(quick: bool = False, num_objectives: int = 2, seed: int = 0) -> DemoConfig:
    """The demo's preset: the default (a few minutes at most) or ``quick`` (about a minute).

    Example:
      >>> from raco_jax.demo.run import demo_config
      >>> demo_config().align_steps, demo_config(quick=True).align_steps
      (300, 60)
    """
    weights = weight_grid(num_objectives, quick)
    if not quick:
        return DemoConfig(num_objectives=num_objectives, seed=seed, weights=weights)
    return DemoConfig(
        num_objectives=num_objectives,
        seed=seed,
        corpus_size=2000,
        pretrain=PretrainConfig(steps=300),
        num_pairs=512,
        align_steps=60,
        learning_rate=3e-3,
        weights=weights,
        eval_samples_per_prompt=32,
    )


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


class DemoSetup(NamedTuple):
    """What :func:`prepare` builds: the pretrained model, the pairs and the evaluation prompts.

    Attributes:
      config: the :class:`DemoConfig`.
      model: the pretrained :class:`~raco_jax.models.Decoder` (the policy's start and the
        frozen reference).
      pretrain_losses: mean pretraining loss per jitted chunk.
      pairs: the labelled :class:`~raco_jax.demo.task.PreferencePairs`.
      batch: all pairs as one :class:`~raco_jax.preference.PreferenceBatch` with the
        reference log-probs filled in.
      train_prompts, heldout_prompts: ``[P, 5]`` prompt splits.
      correlations: Pearson correlations of the objectives over the sampled responses.
      pretrained: :func:`evaluate_model` of the pretrained model (the reference point).
      eval_key: the PRNG key of every evaluation (the same for all models).

    Example: see :func:`prepare`.
    """

    config: DemoConfig
    model: Any
    pretrain_losses: list[float]
    pairs: task.PreferencePairs
    batch: Any
    train_prompts: np.ndarray
    heldout_prompts: np.ndarray
    correlations: dict[str, float]
    pretrained: dict[str, Any]
    eval_key: Any


def _keys(seed: int) -> dict[str, Any]:
    import jax

    root = jax.random.key(seed)
    return {"pairs": jax.random.fold_in(root, 1), "eval": jax.random.fold_in(root, 2)}


def evaluate_model(
    model: Any,
    prompts: np.ndarray,
    key: Any,
    objectives: Sequence[str],
    samples_per_prompt: int = 64,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Samples responses to every prompt and scores them with the exact judges.

    The same key is used for every model evaluated (common random numbers).

    Args:
      model: a demo decoder.
      prompts: ``[P, 5]`` held-out prompts.
      key: a JAX PRNG key.
      objectives: the objectives to score.
      samples_per_prompt: responses per prompt.
      temperature: sampling temperature.

    Returns:
      ``{"scores": {objective: mean}, "stderr": {objective: standard error},
      "responses": int32 [P * samples_per_prompt, 16], "prompts": [P * samples_per_prompt, 5]}``.

    Example:
      >>> import jax
      >>> from raco_jax.demo import task
      >>> from raco_jax.demo.run import evaluate_model
      >>> out = evaluate_model(task.make_model(0), task.make_prompts()[:2], jax.random.key(0),
      ...                      ("informativeness", "brevity"), samples_per_prompt=2)
      >>> sorted(out["scores"]), out["responses"].shape
      (['brevity', 'informativeness'], (4, 16))
    """
    from raco_jax.evaluate import summarize_scores

    repeated = np.repeat(np.asarray(prompts, np.int32), samples_per_prompt, axis=0)
    responses = task.sample_responses(model, repeated, key, temperature)
    scores = task.score_responses(repeated, responses, objectives)
    return {**summarize_scores(scores), "responses": responses, "prompts": repeated}


def prepare(config: DemoConfig, on_progress: Callable[[str, int], None] | None = None) -> DemoSetup:
    """Pretrains the demo model, samples and labels the pairs, and scores the pretrained model.

    Args:
      config: the :class:`DemoConfig`.
      on_progress: called as ``on_progress(stage, units)`` while work is done (pretraining
        reports its steps; the other stages report 1 unit each).

    Returns:
      A :class:`DemoSetup`.

    Example (a few seconds with tiny settings):
      >>> from raco_jax.demo.run import DemoConfig, prepare
      >>> from raco_jax.demo.task import PretrainConfig
      >>> setup = prepare(DemoConfig(corpus_size=64, pretrain=PretrainConfig(steps=10,
      ...     steps_per_call=10), num_pairs=32, eval_samples_per_prompt=1))
      >>> setup.batch.input_ids.shape, setup.batch.ref_logps.shape
      ((64, 21), (64,))
    """
    from raco_jax.train import compute_reference_logps

    report = on_progress or (lambda stage, units: None)
    keys = _keys(config.seed)
    train_prompts, heldout_prompts = task.split_prompts(config.seed)
    corpus = task.sample_corpus(train_prompts, config.corpus_size, seed=config.seed)
    model = task.make_model(
        config.seed, hidden_size=config.hidden_size, num_layers=config.num_layers
    )
    model, losses = task.pretrain(
        model,
        corpus,
        config.pretrain,
        seed=config.seed,
        on_steps=lambda n: report("pretraining", n),
    )
    pairs = task.make_preference_pairs(
        model,
        train_prompts,
        config.num_pairs,
        keys["pairs"],
        config.objectives,
        config.temperature,
    )
    report("sampling pairs", 1)
    sampled = {
        name: np.concatenate([pairs.scores_a[name], pairs.scores_b[name]])
        for name in config.objectives
    }
    batch = pairs.batch()
    batch = batch._replace(ref_logps=np.asarray(compute_reference_logps(model, batch)))
    pretrained = evaluate_model(
        model,
        heldout_prompts,
        keys["eval"],
        config.objectives,
        config.eval_samples_per_prompt,
        config.temperature,
    )
    report("evaluating", 1)
    return DemoSetup(
        config=config,
        model=model,
        pretrain_losses=losses,
        pairs=pairs,
        batch=batch,
        train_prompts=train_prompts,
        heldout_prompts=heldout_prompts,
        correlations=task.score_correlations(sampled),
        pretrained=pretrained,
        eval_key=keys["eval"],
    )


def demo_optimizer(
    method: str,
    weights: Sequence[float],
    learning_rate: Any,
    c: float = 0.4,
    max_grad_norm: float = 1.0,
) -> Any:
    """The chain of :func:`raco_jax.train.make_optimizer` with the weights injectable.

    ``optax.inject_hyperparams(aggregator)(weights=..., c=...)``, global-norm clip,
    ``inject_hyperparams(adamw)``: the weights live in the optimizer state
    (``opt_state[0].hyperparams["weights"]``), so one compiled train step serves every weight
    vector (:class:`Aligner` writes them there per run).

    Args:
      method: ``raco`` (clipped CAGrad), ``cagrad`` (unclipped, weighted anchor) or ``dpo-lw``.
      weights: the initial ``[K]`` weights.
      learning_rate: a float or an optax schedule.
      c: CAGrad radius (``raco``, ``cagrad``).
      max_grad_norm: global-norm clip after aggregation.

    Returns:
      An ``optax.GradientTransformation`` over stacked ``[K, ...]`` gradients.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.demo.run import demo_optimizer
      >>> tx = demo_optimizer("raco", (0.2, 0.8), 1.0, c=0.5)
      >>> state = tx.init({"x": jnp.zeros(2)})
      >>> state[0].hyperparams["weights"].tolist()
      [0.20000000298023224, 0.800000011920929]
    """
    from raco_jax.train import make_optimizer

    if method not in DEMO_METHODS:
        raise ValueError(f"method must be one of {DEMO_METHODS}, got {method!r}")
    return make_optimizer(method, weights, learning_rate, c, max_grad_norm, injectable_weights=True)


class Aligner:
    """One method's alignment runs: a :class:`~raco_jax.train.TrainStep` compiled once.

    :meth:`train` re-initialises the step from the start model for each weight vector and
    writes the weights into the optimizer state (:func:`demo_optimizer`), so every weight
    vector reuses the same compiled step (``aligner.step.num_traces`` stays 1).

    Args:
      model: the start model (its structure fixes the step; the weights come from ``train``).
      method: one of :data:`DEMO_METHODS`.
      objectives: the K objective names.
      steps: optimizer steps per run (sets the learning-rate schedule).
      learning_rate: peak learning rate (10% warmup, cosine decay to 0).
      beta: DPO temperature.
      c: CAGrad radius.

    Example (about 10 s: one compile of the step):
      >>> import numpy as np
      >>> from raco_jax.demo import task
      >>> from raco_jax.demo.run import Aligner
      >>> from raco_jax.train import with_reference_logps
      >>> import jax
      >>> model = task.make_model(0)
      >>> pairs = task.make_preference_pairs(model, task.make_prompts(), 8, jax.random.key(0))
      >>> [batch] = with_reference_logps(model, [pairs.batch()])
      >>> aligner = Aligner(model, "raco", ("informativeness", "brevity"), steps=2)
      >>> for w in [(0.8, 0.2), (0.2, 0.8)]:
      ...     aligned, history = aligner.train(model, w, [batch, batch])
      >>> aligner.step.num_traces, len(history["loss"])
      (1, 2)
    """

    def __init__(
        self,
        model: Any,
        method: str,
        objectives: Sequence[str],
        *,
        steps: int,
        learning_rate: float = 1e-3,
        beta: float = 0.5,
        c: float = 0.4,
    ) -> None:
        import optax

        from raco_jax.train import TrainStep

        self.method = method
        self.objectives = tuple(objectives)
        k = len(self.objectives)
        warmup = max(1, steps // 10)
        self.schedule = optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup, max(steps, warmup + 1), end_value=0.0
        )
        uniform = (1.0 / k,) * k
        self.tx = demo_optimizer(method, uniform, self.schedule, c)
        self.step = TrainStep(
            model,
            self.tx,
            method=method,
            objectives=self.objectives,
            weights=uniform,  # placeholder: the real weights are in the optimizer state
            beta=beta,
            donate=False,  # the start model's arrays are reused by every run
        )

    def train(
        self,
        model: Any,
        weights: Sequence[float],
        batches: Sequence[Any],
        on_step: Callable[[], None] | None = None,
    ) -> tuple[Any, dict[str, list[float]]]:
        """Aligns a copy of ``model`` with ``weights``: one step per batch.

        Args:
          model: the start model (not modified).
          weights: ``[K]`` weights on the simplex.
          batches: :class:`~raco_jax.preference.PreferenceBatch` es with ``ref_logps``.
          on_step: called after each step is dispatched (progress bars).

        Returns:
          ``(aligned model, history)`` with ``history["loss"]`` (the weighted loss) and
          ``history["loss/<objective>"]`` per step.
        """
        import jax.numpy as jnp

        from raco_jax.aggregation.weightings import validate_weights

        w = validate_weights(weights, num_objectives=len(self.objectives))
        state = self.step.init(model)
        head, *rest = state.opt_state
        head = head._replace(hyperparams={**head.hyperparams, "weights": w.astype(jnp.float32)})
        state = state._replace(opt_state=(head, *rest))
        names = [f"loss/{name}" for name in self.objectives]
        history: dict[str, list[float]] = {name: [] for name in ["loss", *names]}
        collected = []
        for batch in batches:
            state, metrics = self.step(state, batch)
            collected.append(jnp.stack([metrics[name] for name in names]))
            if on_step is not None:
                on_step()
        if collected:
            losses = np.asarray(jnp.stack(collected), np.float64)
            history["loss"] = (losses @ np.asarray(w, np.float64)).tolist()
            for k, name in enumerate(names):
                history[name] = losses[:, k].tolist()
        return self.step.merge(state), history


def alignment_batches(setup: DemoSetup) -> list[Any]:
    """The alignment batches: ``align_steps`` batches from epochs of shuffled pairs.

    The order depends only on the seed, so every run (method, weights) sees the same batches.
    Each is a :class:`~raco_jax.preference.PreferenceBatch` of ``batch_size`` pairs (device
    arrays) with the reference log-probs.

    Example:
      >>> from raco_jax.demo.run import DemoConfig, alignment_batches, prepare
      >>> from raco_jax.demo.task import PretrainConfig
      >>> setup = prepare(DemoConfig(corpus_size=64, pretrain=PretrainConfig(steps=10,
      ...     steps_per_call=10), num_pairs=32, batch_size=16, align_steps=3,
      ...     eval_samples_per_prompt=1))
      >>> [b.num_pairs for b in alignment_batches(setup)]
      [16, 16, 16]
    """
    import jax
    import jax.numpy as jnp

    config = setup.config
    rng = np.random.default_rng(config.seed)
    per_epoch = config.num_pairs // config.batch_size
    full = jax.tree.map(jnp.asarray, setup.batch)
    out = []
    order = rng.permutation(config.num_pairs)
    for step in range(config.align_steps):
        j = step % per_epoch
        if j == 0 and step:
            order = rng.permutation(config.num_pairs)
        pairs = order[j * config.batch_size : (j + 1) * config.batch_size]
        rows = jnp.asarray(np.concatenate([pairs, pairs + config.num_pairs]))
        out.append(
            full._replace(
                input_ids=full.input_ids[rows],
                attention_mask=full.attention_mask[rows],
                loss_mask=full.loss_mask[rows],
                signs=full.signs[:, pairs],
                labeled=full.labeled[:, pairs],
                ref_logps=full.ref_logps[rows],
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------


def _progress_bar(config: DemoConfig, enabled: bool) -> Any:
    from tqdm import tqdm

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
      >>> from raco_jax.demo.run import DemoConfig
      >>> from raco_jax.demo.task import PretrainConfig
      >>> tiny = DemoConfig(corpus_size=64, pretrain=PretrainConfig(steps=10, steps_per_call=10),
      ...                   num_pairs=32, batch_size=16, align_steps=2, methods=("raco",),
      ...                   weights=((0.7, 0.3), (0.3, 0.7)), eval_samples_per_prompt=2)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     result = run_demo(tmp, config=tiny, progress=False)
      >>> list(result["hypervolumes"]), len(result["results"]), result["compiles"]["train_step/raco"]
      (['raco'], 2, 1)
    """
    import jax

    from raco_jax.evaluate import method_hypervolumes, plot_fronts, write_front_report
    from raco_jax.models import generation

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
        title=f"{title}\nHV: normalised, vs the worst scores\nx: the pretrained model",
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
        "output_dir": str(out),
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    result = run_demo(
        args.output_dir,
        quick=args.quick,
        seed=args.seed,
        num_objectives=args.objectives,
        progress=not args.no_progress,
    )
    print(result["summary"])
    return 0


def add_demo_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``raco-jax demo`` on an argparse sub-parsers object.

    ``raco-jax demo [--quick] [--output-dir DIR] [--seed N] [--objectives 2|3]
    [--no-progress]``; the parsed namespace's ``handler(args)`` runs :func:`run_demo`, prints
    the summary and returns 0.

    Args:
      subparsers: the result of ``parser.add_subparsers()``.

    Returns:
      The ``demo`` sub-parser.

    Example:
      >>> import argparse
      >>> from raco_jax.demo.run import add_demo_parser
      >>> parser = argparse.ArgumentParser(prog="raco-jax")
      >>> add_demo_parser(parser.add_subparsers(dest="command"))  # doctest: +ELLIPSIS
      ArgumentParser(prog='raco-jax demo', ...)
      >>> args = parser.parse_args(["demo", "--quick", "--objectives", "3"])
      >>> args.quick, args.objectives, args.seed, args.output_dir
      (True, 3, 0, 'raco_demo')
    """
    parser = subparsers.add_parser(
        "demo",
        help="the built-in offline demo: align a tiny model on a synthetic task and plot fronts",
        description=(
            "Pretrains a tiny decoder on a synthetic prompt -> response language, samples "
            "preference pairs labelled by exact judges (informativeness vs brevity, plus safety "
            "with --objectives 3), aligns it with RACO (clipped CAGrad), DPO-LW (weighted sum) "
            "and unclipped CAGrad over a grid of weights, and writes a Pareto plot (PNG), tables "
            "(Markdown, CSV), hypervolumes and the run configuration (JSON). Fully offline; a "
            "few minutes on a CPU (--quick: about one)."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="reduced settings (about a minute on a CPU)"
    )
    parser.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        help=f"where to write the report (default: ./{DEFAULT_OUTPUT_DIR})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--objectives",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: informativeness vs brevity (default); 3: also safety",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=_cmd_demo)
    return parser
