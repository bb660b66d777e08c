"""The stages of ``raco-jax demo``: its configuration, pretraining and pairs, alignment runs.

:func:`prepare` pretrains the tiny decoder of :mod:`raco_jax.demo.task`, samples and labels the
preference pairs and precomputes their reference log-probs; :class:`Aligner` runs one method
for every weight vector with one compiled :class:`~raco_jax.train.TrainStep` (the weights are
injected into the optimizer state, :func:`demo_optimizer`); :func:`evaluate_model` samples and
scores a model exactly. :func:`raco_jax.demo.run_demo` chains them.

Example:
  >>> from raco_jax.demo.stages import demo_config
  >>> config = demo_config(quick=True)
  >>> config.methods, config.weights
  (('raco', 'dpo-lw', 'cagrad'), ((0.8, 0.2), (0.5, 0.5), (0.2, 0.8)))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from raco_jax.aggregation.weightings import validate_weights
from raco_jax.demo import task
from raco_jax.demo.task import PretrainConfig
from raco_jax.evaluate import summarize_scores
from raco_jax.train import TrainStep, compute_reference_logps, make_optimizer

__all__ = [
    "DEMO_METHODS",
    "Aligner",
    "DemoConfig",
    "DemoSetup",
    "alignment_batches",
    "demo_config",
    "demo_optimizer",
    "evaluate_model",
    "prepare",
    "weight_grid",
]

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
      >>> from raco_jax.demo.stages import weight_grid
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
      >>> from raco_jax.demo.stages import DemoConfig
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
          >>> from raco_jax.demo.stages import DemoConfig
          >>> DemoConfig(num_objectives=3).objectives
          ('informativeness', 'brevity', 'safety')
        """
        return task.OBJECTIVES[: self.num_objectives]


def demo_config(quick: bool = False, num_objectives: int = 2, seed: int = 0) -> DemoConfig:
    """The demo's preset: the default (a few minutes at most) or ``quick`` (about a minute).

    Example:
      >>> from raco_jax.demo.stages import demo_config
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
      >>> from raco_jax.demo.stages import evaluate_model
      >>> out = evaluate_model(task.make_model(0), task.make_prompts()[:2], jax.random.key(0),
      ...                      ("informativeness", "brevity"), samples_per_prompt=2)
      >>> sorted(out["scores"]), out["responses"].shape
      (['brevity', 'informativeness'], (4, 16))
    """
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
      >>> from raco_jax.demo.stages import DemoConfig, prepare
      >>> from raco_jax.demo.task import PretrainConfig
      >>> setup = prepare(DemoConfig(corpus_size=64, pretrain=PretrainConfig(steps=10,
      ...     steps_per_call=10), num_pairs=32, eval_samples_per_prompt=1))
      >>> setup.batch.input_ids.shape, setup.batch.ref_logps.shape
      ((64, 21), (64,))
    """

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
      >>> from raco_jax.demo.stages import demo_optimizer
      >>> tx = demo_optimizer("raco", (0.2, 0.8), 1.0, c=0.5)
      >>> state = tx.init({"x": jnp.zeros(2)})
      >>> state[0].hyperparams["weights"].tolist()
      [0.20000000298023224, 0.800000011920929]
    """
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
      >>> from raco_jax.demo.stages import Aligner
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
        w = validate_weights(weights, num_objectives=len(self.objectives))
        state = self.step.init(model)
        state = state._replace(opt_state=optax.tree.set(state.opt_state, weights=w))
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
      >>> from raco_jax.demo.stages import DemoConfig, alignment_batches, prepare
      >>> from raco_jax.demo.task import PretrainConfig
      >>> setup = prepare(DemoConfig(corpus_size=64, pretrain=PretrainConfig(steps=10,
      ...     steps_per_call=10), num_pairs=32, batch_size=16, align_steps=3,
      ...     eval_samples_per_prompt=1))
      >>> [b.num_pairs for b in alignment_batches(setup)]
      [16, 16, 16]
    """
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
