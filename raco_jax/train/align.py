"""The alignment run: ``align(config)`` loads, trains, checkpoints, evaluates and exports.

:func:`align` is what ``raco-jax align`` runs. In order:

1. **Checks before anything is loaded** (:func:`check_run`): the config
   (:func:`~raco_jax.train.config.validate_config`, with the objectives the dataset's schema can
   label and the number of devices), the mesh against the batch size, and the output directory
   (a fresh run refuses a directory that already holds checkpoints; ``resume=True`` continues
   it, or starts it when it holds none).
2. **Data**: :func:`~raco_jax.data.load_preferences` with the schema, a held-out split (the
   ``eval_split`` of the dataset, or ``eval_fraction`` of the pairs drawn with the seed,
   :func:`split_train_eval`), the tokenizer (``tokenizer`` or the model's directory) and
   :func:`~raco_jax.data.tokenize_pairs`; batches come from a seeded
   :class:`~raco_jax.data.PreferenceBatchIterator` whose position is checkpointed. Every process
   builds the same global batch and places only its own devices' shards
   (:func:`raco_jax.train.mesh.shard_batch`).
3. **Model**: :func:`~raco_jax.models.from_pretrained` (``dtype``/``param_dtype``, placed on
   the mesh by the rules table), LoRA adapters when ``lora_rank > 0`` (only they are trained).
4. **Reference**: ``precomputed`` log-probs of the starting policy for every pair (computed once
   and cached under ``cache_dir`` (default ``<output_dir>/cache/``; runs of a sweep share one),
   keyed by a fingerprint of the weights, the dtype and the token ids, which in turn capture the
   tokenizer, its chat template, the data and the max lengths: a stale cache is never reused), ``online`` (a frozen copy of the starting
   trainable state), or ``lora_base`` (online, where the copy is the adapters' zero update, so
   the reference is the base model at the cost of the adapters only). AMoPO is reference-free.
   MODPO's margin rewards come from ``margin_models`` (one per non-target objective) and are
   precomputed and cached the same way.
5. **Optimizer**: :func:`~raco_jax.train.make_optimizer` (aggregator, clip at
   ``max_grad_norm``, AdamW with ``weight_decay``) on the schedule of :func:`make_schedule`;
   steps = ``max_steps`` or ``epochs`` x batches per epoch.
6. **Loop**: one :class:`~raco_jax.train.TrainStep` per batch (``micro_batches`` accumulated in
   the step; with ``aggregate_at="micro_batch"`` each micro-batch is aggregated on its own and
   the aggregated directions are averaged); metrics (losses, rewards, accuracies, gradient
   norms and the aggregation diagnostics) every ``log_every`` steps through
   :class:`~raco_jax.train.logs.RunLogger`; evaluation on the held-out pairs every
   ``eval_every`` steps and at the end (``eval_`` prefix); :func:`~raco_jax.train.logs.check_finite`
   on every logged or saved step: a NaN stops the run with a clear message, keeping the last good
   checkpoint; a checkpoint every ``save_every`` steps and at the end (trainable parameters,
   optimizer state, step, iterator position, PRNG key), from which ``resume=True`` continues
   exactly.
7. **Export**: ``<output_dir>/final/`` in Hugging Face layout
   (:func:`~raco_jax.models.save_pretrained`, LoRA merged; or, with ``export_lora="adapter"``,
   the adapters alone in PEFT layout), with the tokenizer. ``<output_dir>/config.json`` (the
   run's config) is written at the start, ``summary.json`` and ``metrics.jsonl`` by the logger.

Out-of-memory errors are re-raised as ``MemoryError`` with the knobs that reduce memory
(:func:`~raco_jax.train.logs.describe_failure`).

Example (a tiny Qwen 3 checkpoint and five PKU-SafeRLHF-style rows; a few seconds on a CPU):
    >>> import json, pathlib, tempfile
    >>> import jax
    >>> from flax import nnx
    >>> from raco_jax.data import byte_tokenizer
    >>> from raco_jax.models import Decoder, ModelConfig, save_pretrained
    >>> from raco_jax.train.align import align
    >>> from raco_jax.train.config import AlignConfig
    >>> from raco_jax.train.mesh import run_mesh
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> tokenizer = byte_tokenizer("chatml")
    >>> c = ModelConfig(model_type="qwen3", vocab_size=len(tokenizer), hidden_size=16,
    ...                 intermediate_size=32, num_layers=1, num_heads=2)
    >>> save_pretrained(Decoder(c, rngs=nnx.Rngs(0)), c, work / "model")
    >>> tokenizer.save_pretrained(work / "model")  # doctest: +ELLIPSIS
    (...)
    >>> rows = [{"prompt": f"Question {i}?", "response_0": "Sure.", "response_1": "No.",
    ...          "better_response_id": i % 2, "safer_response_id": 1} for i in range(5)]
    >>> _ = (work / "pku.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> config = AlignConfig(model=str(work / "model"), dataset=str(work / "pku.jsonl"),
    ...                      schema="pku-saferlhf", objectives=("helpful", "harmless"),
    ...                      weights=(0.5, 0.5), batch_size=2, max_steps=2, max_length=32,
    ...                      max_prompt_length=24, learning_rate=1e-3, dtype="float32",
    ...                      log_every=1, output_dir=str(work / "run"))
    >>> result = align(config, mesh=run_mesh((1, 1, 1), jax.devices()[:1]), progress=False)
    >>> result.status, result.step, sorted(p.name for p in result.final_dir.iterdir())[:2]
    ('completed', 2, ['chat_template.jinja', 'config.json'])
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from raco_jax.train.config import AlignConfig, resolve_mesh_shape, validate_config
from raco_jax.train.pair_logps import (
    cached_pair_logps,
    pair_logps,
    tokens_fingerprint,
    weights_fingerprint,
)

__all__ = [
    "AlignResult",
    "align",
    "check_run",
    "make_schedule",
    "resolve_schema",
    "split_train_eval",
]

#: Config fields that may differ between a run and its resumption.
RESUMABLE_CHANGES = (
    "resume",
    "save_every",
    "log_every",
    "eval_every",
    "max_steps",
    "epochs",
    "distributed",
    "output_dir",
    "cache_dir",
    "mesh",
)
CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
CONFIG_FILE = "config.json"
CACHE_DIR = "cache"


@dataclasses.dataclass
class AlignResult:
    """What :func:`align` returns.

    Attributes:
      config: the run's config.
      status: ``"completed"`` (the run reached its last step).
      step: the last step trained.
      start_step: the step the run started from (the resumed checkpoint's, else 0).
      total_steps: the run's planned number of steps.
      output_dir: the run's directory.
      final_dir: ``<output_dir>/final`` (Hugging Face layout), or None if nothing was exported.
      checkpoint_dir: ``<output_dir>/checkpoints``.
      summary: the summary written to ``summary.json``.
      metrics: the last logged training metrics.
      eval_metrics: the last evaluation metrics (``eval_`` prefix), or empty.
      model: the trained policy (an NNX ``Decoder``, with its LoRA adapters if any).
      tokenizer: the tokenizer.
      state: the final :class:`~raco_jax.train.TrainState`.
    """

    config: AlignConfig
    status: str
    step: int
    start_step: int
    total_steps: int
    output_dir: pathlib.Path
    final_dir: pathlib.Path | None
    checkpoint_dir: pathlib.Path
    summary: dict[str, Any]
    metrics: dict[str, Any]
    eval_metrics: dict[str, Any]
    model: Any = None
    tokenizer: Any = None
    state: Any = None


# -- checks before loading ------------------------------------------------------------------


def resolve_schema(name: str) -> Any:
    """The registered :class:`~raco_jax.data.Schema` called ``name`` (``_`` read as ``-``).

    Example:
        >>> from raco_jax.train.align import resolve_schema
        >>> resolve_schema("pku_saferlhf").name
        'pku-saferlhf'
        >>> resolve_schema("nope")
        Traceback (most recent call last):
        ...
        ValueError: unknown schema 'nope'; registered: pku-saferlhf, ...
    """
    from raco_jax.data import get_schema, list_schemas

    for candidate in dict.fromkeys((name, name.replace("_", "-"))):
        if candidate in list_schemas():
            return get_schema(candidate)
    return get_schema(name)


def _schema_objectives(schema: Any) -> tuple[str, ...] | None:
    """The objectives a schema labels, when they do not depend on the dataset's columns."""
    return None if callable(schema.objectives) else tuple(schema.objectives)


def _config_differences(stored: Mapping[str, Any], config: AlignConfig) -> list[str]:
    current = config.to_dict()
    return sorted(
        name
        for name in set(stored) | set(current)
        if name not in RESUMABLE_CHANGES and stored.get(name) != current.get(name)
    )


def check_run(
    config: AlignConfig,
    *,
    num_devices: int | None = None,
    mesh_shape: Sequence[int] | None = None,
    model_given: bool = False,
) -> AlignConfig:
    """Everything :func:`align` checks before it loads or compiles anything.

    The config itself (:func:`~raco_jax.train.config.validate_config`: method, weights, mesh,
    objectives of the schema, ...), a dataset, a model unless one is given, a batch the mesh's
    ``data x fsdp`` devices split evenly (and the processes, on several hosts), and the output
    directory: a run that is not resumed must not overwrite another run's checkpoints, and a
    resumed run must have the same config (except for :data:`RESUMABLE_CHANGES`).

    Args:
      config: the run's config.
      num_devices: the devices the mesh must use (default: ``jax.device_count()`` when
        ``mesh_shape`` is None).
      mesh_shape: the shape of an explicit mesh (then ``config.mesh`` is ignored).
      model_given: a model object is passed to :func:`align` (``config.model`` may be empty).

    Returns:
      The config.

    Raises:
      ValueError: naming the field and what was expected.

    Example:
        >>> from raco_jax.train.align import check_run
        >>> from raco_jax.train.config import AlignConfig
        >>> check_run(AlignConfig(model="m", dataset="d", schema="pku-saferlhf",
        ...                       objectives=("helpful", "concise"), weights=(0.5, 0.5)),
        ...           num_devices=1, mesh_shape=(1, 1, 1))
        Traceback (most recent call last):
        ...
        ValueError: objective(s) ['concise'] are not provided by schema 'pku-saferlhf', which labels ['helpful', 'harmless'].
    """
    schema = resolve_schema(config.schema)
    if mesh_shape is None:
        num_devices = jax.device_count() if num_devices is None else num_devices
        validate_config(
            config,
            num_devices=num_devices,
            schema_objectives=_schema_objectives(schema),
            require_data=False,
        )
        mesh_shape = resolve_mesh_shape(config.mesh, num_devices)
    else:
        validate_config(config, schema_objectives=_schema_objectives(schema), require_data=False)
    if not config.dataset:
        raise ValueError("dataset is required (a hub id or local files): --dataset ID_OR_FILES.")
    if not config.model and not model_given:
        raise ValueError(
            "model is required (a Hugging Face directory or hub id): --model DIR_OR_ID."
        )
    ways = int(mesh_shape[0]) * int(mesh_shape[1])
    if config.batch_size % ways:
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by the mesh's data x fsdp = "
            f"{ways} devices (mesh {tuple(mesh_shape)}), which split each batch's pairs."
        )
    if config.method == "amopo" and config.reference == "lora_base":
        raise ValueError("method='amopo' is reference-free; reference='lora_base' does not apply.")
    out = pathlib.Path(config.output_dir)
    checkpoints = out / CHECKPOINT_DIR
    has_checkpoints = checkpoints.is_dir() and any(
        p.is_dir() and p.name.isdigit() for p in checkpoints.iterdir()
    )
    if has_checkpoints and not config.resume:
        raise ValueError(
            f"output_dir {str(out)!r} already holds checkpoints of a run: pass --resume to "
            "continue it, or choose another --output-dir."
        )
    stored_file = out / CONFIG_FILE
    if has_checkpoints and config.resume and stored_file.is_file():
        differences = _config_differences(json.loads(stored_file.read_text()), config)
        if differences:
            raise ValueError(
                f"cannot resume {str(out)!r}: its config differs in {differences} (only "
                f"{list(RESUMABLE_CHANGES)} may change when resuming)."
            )
    return config


# -- data ------------------------------------------------------------------------------------


def split_train_eval(
    pairs: Sequence[Any], fraction: float, seed: int
) -> tuple[list[Any], list[Any]]:
    """Splits pairs into (train, held out): ``round(fraction * n)`` pairs drawn with the seed.

    At least one pair is held out when ``fraction > 0``; both parts keep the reading order.

    Example:
        >>> from raco_jax.train.align import split_train_eval
        >>> train, held_out = split_train_eval(list(range(10)), 0.2, seed=0)
        >>> len(train), len(held_out), sorted(train + held_out) == list(range(10))
        (8, 2, True)
    """
    if fraction <= 0:
        return list(pairs), []
    n = len(pairs)
    count = min(max(1, round(fraction * n)), n - 1)
    if count < 1:
        raise ValueError(f"cannot hold out pairs from a dataset of {n} pair(s).")
    held = set(np.random.default_rng(seed).permutation(n)[:count].tolist())
    train = [pair for i, pair in enumerate(pairs) if i not in held]
    return train, [pair for i, pair in enumerate(pairs) if i in held]


def _dataset_source(dataset: str) -> Any:
    """A hub id, a path, or a comma-separated list of paths."""
    if "," in dataset:
        return [part.strip() for part in dataset.split(",") if part.strip()]
    return dataset


def _load_pairs(config: AlignConfig, schema: Any, log: Any) -> tuple[list[Any], list[Any]]:
    from raco_jax.data import load_preferences

    source = _dataset_source(config.dataset)
    pairs, report = load_preferences(
        source, schema, objectives=config.objectives, split=config.train_split
    )
    if not report.ok or report.filtered:
        log(report.summary())
    if config.eval_split is not None:
        held_out, eval_report = load_preferences(
            source, schema, objectives=config.objectives, split=config.eval_split
        )
        if not eval_report.ok:
            log(eval_report.summary())
        return pairs, held_out
    return split_train_eval(pairs, config.eval_fraction, config.seed)


# -- schedule and optimizer ------------------------------------------------------------------


def make_schedule(config: AlignConfig, total_steps: int) -> optax.Schedule:
    """The learning-rate schedule: linear warmup over ``warmup_ratio`` of the steps, then cosine
    (to 0), linear (to 0) or constant, peaking at ``learning_rate``.

    Example:
        >>> from raco_jax.train.align import make_schedule
        >>> from raco_jax.train.config import AlignConfig
        >>> schedule = make_schedule(AlignConfig(learning_rate=1.0, warmup_ratio=0.1), 20)
        >>> [round(float(schedule(s)), 3) for s in (0, 1, 2, 11, 20)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    total = max(int(total_steps), 1)
    warmup = int(config.warmup_ratio * total)
    peak = config.learning_rate
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=0.0)
    if config.schedule == "linear":
        decay = optax.linear_schedule(peak, 0.0, max(total - warmup, 1))
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _optimizer(
    config: AlignConfig, schedule: optax.Schedule, per_micro_batch: bool
) -> optax.GradientTransformation:
    from raco_jax.train.step import make_aggregator, make_optimizer

    if not per_micro_batch:
        return make_optimizer(
            config.method,
            config.weights,
            learning_rate=schedule,
            c=config.c,
            max_grad_norm=config.max_grad_norm,
            weight_decay=config.weight_decay,
            seed=config.seed,
        )
    tail = []
    if config.max_grad_norm is not None:
        tail.append(optax.clip_by_global_norm(config.max_grad_norm))
    tail.append(
        optax.inject_hyperparams(optax.adamw)(
            learning_rate=schedule, weight_decay=config.weight_decay
        )
    )
    return optax.chain(
        make_aggregator(config.method, config.weights, config.c, config.seed),
        optax.MultiSteps(optax.chain(*tail), every_k_schedule=config.micro_batches),
    )


# -- batches ---------------------------------------------------------------------------------


class _PairValues:
    """Per-pair values (reference log-probs, margin rewards) gathered into batch layout."""

    def __init__(
        self,
        ref: tuple[np.ndarray, np.ndarray] | None,
        margins: np.ndarray | None,
    ) -> None:
        self.ref = ref
        self.margins = margins  # [M, N]

    def fields(self, indices: Sequence[int], batch_size: int) -> dict[str, Any]:
        real = len(indices)
        out: dict[str, Any] = {}
        if self.ref is not None:
            ref_logps = np.zeros(2 * batch_size, np.float32)
            ref_logps[:real] = self.ref[0][indices]
            ref_logps[batch_size : batch_size + real] = self.ref[1][indices]
            out["ref_logps"] = ref_logps
        if self.margins is not None:
            margins = np.zeros((self.margins.shape[0], batch_size), np.float32)
            margins[:, :real] = self.margins[:, indices]
            out["reward_margins"] = margins
        return out


class _Batches:
    """A :class:`~raco_jax.data.PreferenceBatchIterator` that also says which pairs it yields."""

    def __init__(self, iterator: Any, values: _PairValues) -> None:
        self.iterator = iterator
        self.values = values

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        from raco_jax.preference import PreferenceBatch

        it = self.iterator
        if it.num_epochs is not None and it.epoch >= it.num_epochs:
            raise StopIteration
        start = it.batch_index * it.batch_size
        indices = it.order(it.epoch)[start : start + it.batch_size].tolist()
        fields = next(it)
        batch_size = fields["signs"].shape[1]
        return PreferenceBatch(**fields, **self.values.fields(indices, batch_size))


# -- evaluation ------------------------------------------------------------------------------


def _make_eval_fn(step: Any) -> Any:
    """Jitted losses and TRL metrics of the policy on a batch, without an update."""
    from raco_jax.preference import objective_counts

    def evaluate(state: Any, batch: Any) -> tuple[dict[str, jax.Array], jax.Array]:
        normalizer = objective_counts(batch.signs, batch.labeled, step.exclude_ties)
        value, aux = step._losses(state.params, state.rest, state.ref_state, batch, normalizer)
        metrics = step.loss_metrics(batch, value, aux)
        metrics = {name: jnp.asarray(v, jnp.float32) for name, v in metrics.items()}
        return metrics, objective_counts(batch.signs, batch.labeled)

    return jax.jit(evaluate)


def _evaluate(
    eval_fn: Any, state: Any, batches: Sequence[tuple[Any, Any]], objectives: Sequence[str]
) -> dict[str, float]:
    """Metrics over all held-out (host batch, placed batch) pairs: each objective's metrics weighted by its pair count."""
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for host_batch, batch in batches:
        metrics, counts = eval_fn(state, batch)
        metrics, counts = jax.device_get((metrics, counts))
        pairs = float(np.max(np.asarray(host_batch.labeled), axis=0).sum())
        for name, value in metrics.items():
            weight = pairs
            for k, objective in enumerate(objectives):
                parts = name.split("/")
                if objective in parts[1:]:
                    weight = float(counts[k])
                    break
            if weight > 0:
                totals[name] = totals.get(name, 0.0) + weight * float(value)
                weights[name] = weights.get(name, 0.0) + weight
    return {name: totals[name] / weights[name] for name in totals}


# -- export ----------------------------------------------------------------------------------


def _export(
    model: Any, model_config: Any, tokenizer: Any, directory: pathlib.Path, config: AlignConfig
) -> None:
    from raco_jax.models import save_pretrained

    if jax.process_count() > 1:  # every host holds a full copy before process 0 writes it
        from flax import nnx

        from raco_jax.train.mesh import replicated

        graphdef, state = nnx.split(model)
        mesh = next(
            leaf.sharding.mesh
            for leaf in jax.tree.leaves(state)
            if isinstance(getattr(leaf, "sharding", None), jax.sharding.NamedSharding)
        )
        state = jax.jit(lambda s: s, out_shardings=replicated(mesh))(state)
        model = nnx.merge(graphdef, state)
    if jax.process_index() != 0:
        return
    if config.lora_rank > 0 and config.export_lora == "adapter":
        from raco_jax.models.lora import LoRAConfig, save_lora_adapters

        lora = LoRAConfig(
            rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_targets
        )
        save_lora_adapters(model, directory, lora, base_model=config.model)
    else:
        if config.lora_rank > 0:
            from raco_jax.models.lora import merge_lora

            model = merge_lora(model)
        save_pretrained(model, model_config, directory)
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(directory)


# -- the run ---------------------------------------------------------------------------------


def _init_distributed() -> None:
    if not jax.distributed.is_initialized():
        jax.distributed.initialize()


@contextlib.contextmanager
def _closing(ckpt: Any) -> Iterator[Any]:
    """Closes the checkpoint manager (waiting for saves in flight) however the block ends."""
    try:
        yield ckpt
    finally:
        ckpt.close()


def _split_host_batch(batch: Any, micro_batches: int) -> list[Any]:
    from raco_jax.preference import split_pairs

    stacked = split_pairs(batch, micro_batches)
    return [jax.tree.map(lambda x, m=m: np.asarray(x[m]), stacked) for m in range(micro_batches)]


def align(
    config: AlignConfig,
    *,
    mesh: jax.sharding.Mesh | None = None,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
) -> AlignResult:
    """Runs (or resumes) an alignment run and exports the aligned model (see the module doc).

    Args:
      config: the run's :class:`~raco_jax.train.config.AlignConfig`.
      mesh: a ``("data", "fsdp", "tensor")`` mesh to run on (default: ``config.mesh`` over all
        devices, :func:`raco_jax.train.mesh.run_mesh`).
      model: a :class:`raco_jax.models.Decoder` to align instead of loading ``config.model``
        (it is trained in place: its arrays are donated to the step).
      tokenizer: a tokenizer instead of loading ``config.tokenizer`` or ``config.model``.
      progress: show a progress bar and print the summary.

    Returns:
      An :class:`AlignResult`.

    Raises:
      ValueError: a bad config, mesh or output directory (before anything is loaded).
      raco_jax.train.logs.NonFiniteLossError: a metric turned NaN or infinite; the run stopped
        and its last good checkpoint is kept (the message says which step).
      MemoryError: the accelerator ran out of memory; the message names the knobs to turn.

    Example: see the module docstring.
    """
    from raco_jax.train.logs import NonFiniteLossError, describe_failure, is_out_of_memory

    if config.distributed:
        _init_distributed()
    mesh_shape = None if mesh is None else tuple(int(mesh.shape[a]) for a in ("data", "fsdp"))
    if mesh is not None:
        missing = [a for a in ("data", "fsdp", "tensor") if a not in mesh.shape]
        if missing:
            raise ValueError(f"mesh must have axes ('data', 'fsdp', 'tensor'); lacks {missing}.")
    check_run(
        config,
        mesh_shape=None if mesh_shape is None else (*mesh_shape, 1),
        model_given=model is not None,
    )
    if jax.process_count() > 1 and config.batch_size % jax.process_count():
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by the {jax.process_count()} "
            "processes."
        )
    try:
        return _run(config, mesh=mesh, model=model, tokenizer=tokenizer, progress=progress)
    except NonFiniteLossError:
        raise
    except Exception as err:
        if is_out_of_memory(err):
            raise MemoryError(describe_failure(err, config)) from err
        raise


def _run(
    config: AlignConfig,
    *,
    mesh: jax.sharding.Mesh | None,
    model: Any,
    tokenizer: Any,
    progress: bool,
) -> AlignResult:
    from flax import nnx

    from raco_jax.data import PreferenceBatchIterator, tokenize_pairs
    from raco_jax.models import from_pretrained, shard_model
    from raco_jax.train.checkpoint import CheckpointManager
    from raco_jax.train.logs import (
        NonFiniteLossError,
        RunLogger,
        check_finite,
        describe_failure,
    )
    from raco_jax.train.mesh import (
        data_parallel_size,
        run_mesh,
        shard_batch,
        shard_train_state,
        shard_train_step,
    )
    from raco_jax.train.step import TrainStep

    is_main = jax.process_index() == 0

    def log(message: str) -> None:
        if progress and is_main:
            print(message, flush=True)

    out = pathlib.Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_main:
        (out / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if mesh is None:
        mesh = run_mesh(config.mesh)
    schema = resolve_schema(config.schema)
    objectives = tuple(config.objectives)

    # data
    train_pairs, eval_pairs = _load_pairs(config, schema, log)
    if not train_pairs:
        raise ValueError(f"dataset {config.dataset!r} gave no training pairs.")
    if tokenizer is None:
        from raco_jax.models import load_tokenizer

        tokenizer = load_tokenizer(config.tokenizer or config.model)

    def tokenize(pairs: Sequence[Any]) -> Any:
        return tokenize_pairs(
            pairs, tokenizer, objectives, config.max_length, config.max_prompt_length
        )

    train_tokens = tokenize(train_pairs)
    eval_tokens = tokenize(eval_pairs) if eval_pairs else None
    log(
        f"data: {len(train_tokens)} training pairs"
        + (f", {len(eval_tokens)} held out" if eval_tokens is not None else "")
        + f" ({train_tokens.num_truncated_prompts} prompts and "
        f"{train_tokens.num_truncated_completions} responses truncated)"
    )

    # model
    model_path = None
    if model is None:
        model_path = config.model
        model, model_config = from_pretrained(
            config.model,
            dtype=jnp.dtype(config.dtype),
            param_dtype=jnp.dtype(config.param_dtype),
            mesh=mesh,
            remat=config.remat,
        )
    else:
        model_config = model.config
        shard_model(model, mesh)

    # reference log-probs and MODPO margins (per pair, cached)
    cache_dir = pathlib.Path(config.cache_dir) if config.cache_dir else out / CACHE_DIR
    reference = "none" if config.method == "amopo" else config.reference
    needs_ref = reference == "precomputed" or config.method == "modpo"
    weights_key = ""
    if needs_ref:
        weights_key = weights_fingerprint(model_path, model)

    # forward-only passes over the data, one micro-batch at a time (if the mesh splits it)
    micro = config.batch_size // config.micro_batches
    forward_batch = micro if micro % data_parallel_size(mesh) == 0 else config.batch_size

    def pair_values(tokenized: Any) -> _PairValues:
        if tokenized is None:
            return _PairValues(None, None)
        tokens_key = tokens_fingerprint(tokenized)
        ref = None
        if needs_ref:
            ref = cached_pair_logps(
                cache_dir,
                "reference",
                (weights_key, config.dtype, config.param_dtype, tokens_key),
                lambda: pair_logps(
                    model,
                    tokenized,
                    forward_batch,
                    mesh,
                    config.time_chunk_size,
                    progress="reference log-probs" if progress and is_main else None,
                ),
                log,
            )
        margins = None
        if config.method == "modpo":
            rows = []
            for path in config.margin_models:
                margin_key = weights_fingerprint(path, None)

                def compute(path: str = path) -> tuple[np.ndarray, np.ndarray]:
                    margin_model, _ = from_pretrained(
                        path,
                        dtype=jnp.dtype(config.dtype),
                        param_dtype=jnp.dtype(config.dtype),
                        mesh=mesh,
                    )
                    return pair_logps(
                        margin_model, tokenized, forward_batch, mesh, config.time_chunk_size
                    )

                logps_a, logps_b = cached_pair_logps(
                    cache_dir,
                    "margin",
                    (margin_key, config.dtype, tokens_key),
                    compute,
                    log,
                )
                assert ref is not None
                rows.append(config.beta * ((logps_a - ref[0]) - (logps_b - ref[1])))
            margins = np.stack(rows).astype(np.float32)
        return _PairValues(ref if reference == "precomputed" else None, margins)

    train_values = pair_values(train_tokens)
    eval_values = pair_values(eval_tokens)

    # LoRA
    wrt: Any = nnx.Param
    if config.lora_rank > 0:
        from raco_jax.models.lora import LoRAConfig, LoRAParam, apply_lora

        apply_lora(
            model,
            LoRAConfig(
                rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_targets
            ),
            rngs=nnx.Rngs(config.seed),
        )
        shard_model(model, mesh)
        wrt = LoRAParam

    # steps, optimizer, train step
    iterator = PreferenceBatchIterator(
        train_tokens, config.batch_size, seed=config.seed, num_epochs=None
    )
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * iterator.batches_per_epoch))
    schedule = make_schedule(config, total_steps)
    stacked = config.method not in ("amopo", "modpo")
    per_micro_batch = config.aggregate_at == "micro_batch" and config.micro_batches > 1 and stacked
    tx = _optimizer(config, schedule, per_micro_batch)
    step_reference = {"precomputed": "precomputed", "none": "none"}.get(reference, "online")
    train_step = TrainStep(
        model,
        tx,
        method=config.method,
        objectives=objectives,
        weights=config.weights,
        beta=config.beta,
        loss_type=config.loss_type,
        label_smoothing=config.label_smoothing,
        wrt=wrt,
        reference=step_reference,
        micro_batches=1 if per_micro_batch else config.micro_batches,
        modpo_target=objectives.index(config.modpo_target or objectives[0]),
        schedule=None if per_micro_batch else schedule,
        time_chunk_size=config.time_chunk_size,
    )
    state, state_shardings = shard_train_state(train_step.init(model), mesh)
    shard_train_step(train_step, state_shardings, mesh)
    rng = jax.random.key(config.seed)

    # resume
    checkpoint_dir = out / CHECKPOINT_DIR
    ckpt = CheckpointManager(checkpoint_dir, save_every=config.save_every, max_to_keep=3)
    start_step = 0
    latest = ckpt.latest_step() if config.resume else None
    if latest is not None:
        target = {
            "params": state.params,
            "opt_state": state.opt_state,
            "step": state.step,
            "rng": rng,
        }
        restored = ckpt.restore(latest, target=target)
        state = state._replace(
            params=restored.state["params"],
            opt_state=restored.state["opt_state"],
            step=restored.state["step"],
        )
        rng = restored.state["rng"]
        iterator.load_state_dict(restored.data_state["train"])
        start_step = latest
        log(f"resumed from step {latest} ({checkpoint_dir})")

    batches = _Batches(iterator, train_values)
    eval_batches: list[Any] = []
    if eval_tokens is not None:
        eval_iterator = PreferenceBatchIterator(
            eval_tokens, config.batch_size, shuffle=False, num_epochs=1
        )
        eval_batches = [(b, shard_batch(b, mesh)) for b in _Batches(eval_iterator, eval_values)]
    eval_fn = _make_eval_fn(train_step) if eval_batches else None

    def checkpoint_state() -> dict[str, Any]:
        return {
            "params": state.params,
            "opt_state": state.opt_state,
            "step": state.step,
            "rng": rng,
        }

    logger = RunLogger(
        out,
        total_steps=total_steps,
        log_every=config.log_every,
        start_step=start_step,
        tensorboard=is_main,
        progress=progress and is_main,
    )
    step_no = start_step
    host_metrics: dict[str, Any] = {}
    extra = {
        "output_dir": str(out),
        "checkpoint_dir": str(checkpoint_dir),
        "final_dir": str(out / FINAL_DIR),
        "method": config.method,
        "objectives": list(objectives),
        "weights": list(config.weights),
    }
    with logger, _closing(ckpt):
        try:
            while step_no < total_steps:
                host_batch = next(batches)
                if per_micro_batch:
                    micro_metrics = []
                    for micro in _split_host_batch(host_batch, config.micro_batches):
                        state, metrics = train_step(state, shard_batch(micro, mesh))
                        micro_metrics.append(metrics)
                    # means over the micro-batches; the update happens on the last one
                    metrics = {
                        name: micro_metrics[-1][name]
                        if name in ("learning_rate", "update_norm")
                        else sum(m[name] for m in micro_metrics) / len(micro_metrics)
                        for name in micro_metrics[-1]
                    }
                else:
                    state, metrics = train_step(state, shard_batch(host_batch, mesh))
                step_no += 1
                is_last = step_no == total_steps
                do_eval = eval_fn is not None and (
                    is_last or (config.eval_every > 0 and step_no % config.eval_every == 0)
                )
                do_save = is_last or ckpt.should_save(step_no)
                if logger.should_log(step_no) or do_save or do_eval:
                    host_metrics = check_finite(metrics, step=step_no)
                logger.log(step_no, metrics, tokens=int(np.sum(host_batch.attention_mask)))
                if do_eval:
                    logger.log_eval(step_no, _evaluate(eval_fn, state, eval_batches, objectives))
                if do_save:
                    ckpt.save(
                        step_no,
                        checkpoint_state(),
                        data_state={"train": iterator.state_dict()},
                        metrics=host_metrics,
                        metadata={"config": config.to_dict()},
                        force=True,
                    )
            ckpt.wait_until_finished()
            final_model = train_step.merge(state)
            _export(final_model, model_config, tokenizer, out / FINAL_DIR, config)
        except NonFiniteLossError as err:
            good = ckpt.last_good_step()
            where = (
                f"last good checkpoint: step {good} in {checkpoint_dir}"
                if good is not None
                else "no good checkpoint was saved before it"
            )
            message = f"{describe_failure(err, config)} ({where})"
            err.add_note(message)
            logger.summary(
                status="failed", extra={**extra, "error": message}, print_text=progress and is_main
            )
            raise
        except Exception as err:
            logger.summary(
                status="failed",
                extra={**extra, "error": describe_failure(err, config)},
                print_text=False,
            )
            raise
        summary = logger.summary(extra=extra, print_text=progress and is_main)
    return AlignResult(
        config=config,
        status=summary["status"],
        step=step_no,
        start_step=start_step,
        total_steps=total_steps,
        output_dir=out,
        final_dir=out / FINAL_DIR,
        checkpoint_dir=checkpoint_dir,
        summary=summary,
        metrics=dict(logger.last_metrics),
        eval_metrics=dict(logger.last_eval_metrics),
        model=final_model,
        tokenizer=tokenizer,
        state=state,
    )
