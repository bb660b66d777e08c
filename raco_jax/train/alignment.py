"""The alignment run: ``align(config)`` loads, trains, checkpoints, evaluates and exports.

:func:`align` (also ``raco_jax.align`` and ``raco_jax.train.align``) is what ``raco-jax align``
runs. In order:

1. **Checks before anything is loaded** (:func:`check_run`): the config
   (:func:`~raco_jax.train.config.validate_config`, with the objectives the dataset's schema can
   label and the number of devices), the defaults that depend on the schema (the schema's
   objectives when none are given, uniform weights), the model and data arguments, the mesh
   against the batch size, and the output directory (a fresh run refuses a directory that
   already holds checkpoints; ``resume=True`` continues it, or says that it starts it when it
   holds none).
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
   tokenizer, its chat template, the data and the max lengths: a stale cache is never reused),
   ``online`` (a frozen copy of the starting trainable state), or ``lora_base`` (online, where
   the copy is the adapters' zero update, so the reference is the base model at the cost of the
   adapters only). AMoPO is reference-free. MODPO's margin rewards come from ``margin_models``
   (one per non-target objective) and are precomputed and cached the same way.
5. **Optimizer**: :func:`~raco_jax.train.make_optimizer` (aggregator, clip at
   ``max_grad_norm``, AdamW with ``weight_decay``) on the schedule of :func:`make_schedule`;
   steps = ``max_steps`` or ``epochs`` x batches per epoch.
6. **Loop**: one :class:`~raco_jax.train.TrainStep` per batch (``micro_batches`` accumulated in
   the step; with ``aggregate_at="micro_batch"`` each micro-batch is aggregated on its own and
   the aggregated directions are averaged); metrics (losses, rewards, accuracies, gradient
   norms and the aggregation diagnostics) every ``log_every`` steps through
   :class:`~raco_jax.train.logs.RunLogger`; evaluation on the held-out pairs every
   ``eval_every`` steps and at the end (``eval_`` prefix, pooled exactly over all held-out
   pairs by :meth:`~raco_jax.train.TrainStep.evaluate`); :func:`~raco_jax.train.logs.check_finite`
   on every logged or saved step: a NaN stops the run with a clear message, keeping the last good
   checkpoint; a checkpoint every ``save_every`` steps and at the end (trainable parameters,
   optimizer state, step, iterator position, PRNG key), from which ``resume=True`` continues
   exactly.
7. **Export**: ``<output_dir>/final/`` in Hugging Face layout
   (:func:`~raco_jax.models.save_pretrained`, LoRA merged; or, with ``export_lora="adapter"``,
   the adapters alone in PEFT layout, whose ``base_model_name_or_path`` is the base model's hub
   id where it is known), with the tokenizer. The run directory's layout is
   :mod:`raco_jax.train.runs`.

Out-of-memory errors are re-raised as ``MemoryError`` with the knobs that reduce memory
(:func:`~raco_jax.train.failures.describe_failure`).

Example (a tiny Qwen 3 checkpoint and five PKU-SafeRLHF-style rows; a few seconds on a CPU):
    >>> import json, pathlib, tempfile
    >>> import jax
    >>> from flax import nnx
    >>> from raco_jax.data import byte_tokenizer
    >>> from raco_jax.models import Decoder, ModelConfig, save_pretrained
    >>> from raco_jax.train import AlignConfig, align
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
    ...                      schema="pku-saferlhf", batch_size=2, max_steps=2, max_length=32,
    ...                      max_prompt_length=24, learning_rate=1e-3, dtype="float32",
    ...                      log_every=1, output_dir=str(work / "run"))
    >>> result = align(config, mesh=run_mesh((1, 1, 1), jax.devices()[:1]), progress=False)
    >>> result.status, result.step, result.config.objectives, result.config.weights
    ('completed', 2, ('helpful', 'harmless'), (0.5, 0.5))
    >>> sorted(p.name for p in result.final_dir.iterdir())[:2]
    ['chat_template.jinja', 'config.json']
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from raco_jax.data import (
    PreferenceBatchIterator,
    derived_objectives,
    get_schema,
    list_schemas,
    load_preferences,
    parse_dataset_source,
    tokenize_pairs,
)
from raco_jax.models import (
    LoRAConfig,
    LoRAParam,
    apply_lora,
    from_pretrained,
    load_tokenizer,
    merge_lora,
    save_lora_adapters,
    save_pretrained,
    shard_model,
)
from raco_jax.models.bundled import hub_model_id
from raco_jax.models.gguf_io import is_gguf
from raco_jax.preference import PreferenceBatch, split_pairs
from raco_jax.train.checkpoint import CheckpointManager
from raco_jax.train.config import AlignConfig, resolve_mesh_shape, validate_config
from raco_jax.train.distributed import initialize_distributed
from raco_jax.train.failures import NonFiniteLossError, describe_failure, is_out_of_memory
from raco_jax.train.logs import RunLogger, check_finite
from raco_jax.train.mesh import (
    data_parallel_size,
    replicated,
    run_mesh,
    shard_batch,
    shard_train_state,
    shard_train_step,
)
from raco_jax.train.methods import STACKED_METHODS, make_optimizer, resolve_reference
from raco_jax.train.pair_logps import (
    PairLayerInputs,
    cached_layer_inputs,
    cached_pair_logps,
    pair_layer_inputs,
    pair_logps,
    tokens_fingerprint,
    weights_fingerprint,
)
from raco_jax.train.runs import (
    CACHE_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FINAL_DIR,
    has_checkpoints,
)
from raco_jax.train.step import TrainStep

__all__ = [
    "RESUMABLE_CHANGES",
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


@dataclasses.dataclass
class AlignResult:
    """What :func:`align` returns.

    Attributes:
      config: the run's config (with the defaults :func:`check_run` filled in).
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
        >>> from raco_jax.train import resolve_schema
        >>> resolve_schema("pku_saferlhf").name
        'pku-saferlhf'
        >>> resolve_schema("nope")
        Traceback (most recent call last):
        ...
        ValueError: unknown schema 'nope'; registered: pku-saferlhf, ...
    """
    for candidate in dict.fromkeys((name, name.replace("_", "-"))):
        if candidate in list_schemas():
            return get_schema(candidate)
    return get_schema(name)


def _schema_objectives(schema: Any) -> tuple[str, ...] | None:
    """The objectives a schema labels, when they do not depend on the dataset's columns."""
    return None if callable(schema.objectives) else tuple(schema.objectives)


def _labelable(schema: Any) -> tuple[str, ...] | None:
    """What a run on this schema may ask for: its objectives and the derived ones (concise)."""
    own = _schema_objectives(schema)
    return None if own is None else (*own, *derived_objectives())


def _comparable(values: Mapping[str, Any]) -> dict[str, Any]:
    """A stored or current config as a dict whose defaults are resolved (old runs stored the
    reference as 'precomputed' where the field now defaults to None, the method's default)."""
    values = {**AlignConfig().to_dict(), **values}  # fields added since the run was stored
    method = values.get("method", "raco")
    try:
        values["reference"] = resolve_reference(method, values.get("reference"))
    except ValueError:
        pass  # reported by validate_config
    return values


def _config_differences(stored: Mapping[str, Any], config: AlignConfig) -> list[str]:
    stored, current = _comparable(stored), _comparable(config.to_dict())
    return sorted(
        name
        for name in set(stored) | set(current)
        if name not in RESUMABLE_CHANGES and stored.get(name) != current.get(name)
    )


def _with_defaults(config: AlignConfig, schema: Any) -> AlignConfig:
    """The schema's objectives when none are given, and uniform weights when none are given."""
    changes: dict[str, Any] = {}
    objectives = config.objectives
    if not objectives:
        objectives = _schema_objectives(schema) or ()
        if not objectives:
            raise ValueError(
                f"--objectives is required with schema {schema.name!r}, whose objectives come "
                "from the dataset's columns (e.g. --objectives helpful,harmless)."
            )
        changes["objectives"] = objectives
    if not config.weights:
        changes["weights"] = tuple(1.0 / len(objectives) for _ in objectives)
    return config.replace(**changes) if changes else config


def check_run(
    config: AlignConfig,
    *,
    num_devices: int | None = None,
    mesh_shape: Sequence[int] | None = None,
    model_given: bool = False,
) -> AlignConfig:
    """Everything :func:`align` checks before it loads or compiles anything; returns the config
    with the schema-dependent defaults filled in.

    The required settings first (a dataset, a model unless one is given, all named at once),
    then the defaults (objectives: every objective the schema labels, when the schema fixes
    them; weights: uniform), the config itself
    (:func:`~raco_jax.train.config.validate_config`: method, weights, mesh, objectives of the
    schema, ...), a ``.gguf`` model that exists, a batch the mesh's ``data x fsdp`` devices split
    evenly (and the processes, on several hosts), and the output directory: a run that is not
    resumed must not overwrite another run's checkpoints, and a resumed run must have the same
    config (except for :data:`RESUMABLE_CHANGES`).

    Args:
      config: the run's config.
      num_devices: the devices the mesh must use (default: ``jax.device_count()`` when
        ``mesh_shape`` is None).
      mesh_shape: the shape of an explicit mesh (then ``config.mesh`` is ignored).
      model_given: a model object is passed to :func:`align` (``config.model`` may be empty).

    Returns:
      The config, with ``objectives`` and ``weights`` filled in where they were empty.

    Raises:
      ValueError: naming the field (or flag) and what was expected.

    Example:
        >>> from raco_jax.train import AlignConfig, check_run
        >>> check_run(AlignConfig(), num_devices=1)
        Traceback (most recent call last):
        ...
        ValueError: missing required settings: --model (a Hugging Face checkpoint directory, a hub id or a .gguf file), --dataset (a hub id, a file, a directory or a comma-separated list of files). See raco-jax align --help.
        >>> check_run(AlignConfig(model="m", dataset="d", schema="hh-rlhf"),
        ...           num_devices=1).objectives
        ('helpful', 'harmless')
        >>> check_run(AlignConfig(model="m", dataset="d", schema="pku-saferlhf",
        ...                       objectives=("helpful", "honest"), weights=(0.5, 0.5)),
        ...           num_devices=1, mesh_shape=(1, 1, 1))
        Traceback (most recent call last):
        ...
        ValueError: objective(s) ['honest'] are not provided by schema 'pku-saferlhf', which labels ['helpful', 'harmless', 'concise'].
    """
    missing = []
    if not config.model and not model_given:
        missing.append("--model (a Hugging Face checkpoint directory, a hub id or a .gguf file)")
    if not config.dataset:
        missing.append(
            "--dataset (a hub id, a file, a directory or a comma-separated list of files)"
        )
    if missing:
        raise ValueError(
            f"missing required settings: {', '.join(missing)}. See raco-jax align --help."
        )
    schema = resolve_schema(config.schema)
    config = _with_defaults(config, schema)
    if mesh_shape is None:
        num_devices = jax.device_count() if num_devices is None else num_devices
        validate_config(
            config,
            num_devices=num_devices,
            schema_objectives=_labelable(schema),
            require_data=False,
        )
        mesh_shape = resolve_mesh_shape(config.mesh, num_devices)
    else:
        validate_config(config, schema_objectives=_labelable(schema), require_data=False)
    for name in ("model", "tokenizer"):
        value = getattr(config, name)
        if value and is_gguf(value) and not pathlib.Path(value).is_file():
            raise ValueError(f"{name}: GGUF file not found: {value}")
    ways = int(mesh_shape[0]) * int(mesh_shape[1])
    if config.batch_size % ways:
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by the mesh's data x fsdp = "
            f"{ways} devices (mesh {tuple(mesh_shape)}), which split each batch's pairs."
        )
    if jax.process_count() > 1 and config.batch_size % jax.process_count():
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by the {jax.process_count()} "
            "processes."
        )
    for name in ("model", "tokenizer"):
        value = getattr(config, name)
        if value and _looks_local(value) and not pathlib.Path(value).expanduser().exists():
            raise ValueError(
                f"{name}: no such file or directory: {value} (a hub model is named "
                "ORGANISATION/NAME, e.g. Qwen/Qwen3-0.6B)"
            )
    out = pathlib.Path(config.output_dir)
    if has_checkpoints(out) and not config.resume:
        raise ValueError(
            f"output_dir {str(out)!r} already holds checkpoints of a run: pass --resume to "
            "continue it, or choose another --output-dir."
        )
    stored_file = out / CONFIG_FILE
    if has_checkpoints(out) and config.resume and stored_file.is_file():
        differences = _config_differences(json.loads(stored_file.read_text()), config)
        if differences:
            raise ValueError(
                f"cannot resume {str(out)!r}: its config differs in {differences} (only "
                f"{list(RESUMABLE_CHANGES)} may change when resuming)."
            )
    return config


def _looks_local(value: str) -> bool:
    """Whether a model name can only be a local path (a hub id is ``org/name``)."""
    return value.startswith((os.sep, ".", "~")) or value.count("/") > 1


# -- data ------------------------------------------------------------------------------------


def split_train_eval(
    pairs: Sequence[Any], fraction: float, seed: int
) -> tuple[list[Any], list[Any]]:
    """Splits pairs into (train, held out): ``round(fraction * n)`` pairs drawn with the seed.

    At least one pair is held out when ``fraction > 0``; both parts keep the reading order.

    Example:
        >>> from raco_jax.train import split_train_eval
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


def _load_pairs(
    config: AlignConfig, schema: Any, log: Callable[[str], None]
) -> tuple[list[Any], list[Any]]:
    source = parse_dataset_source(config.dataset)
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


# -- schedule --------------------------------------------------------------------------------


def make_schedule(config: AlignConfig, total_steps: int) -> optax.Schedule:
    """The learning-rate schedule: linear warmup over ``warmup_ratio`` of the steps, then cosine
    (to 0), linear (to 0) or constant, peaking at ``learning_rate``.

    Example:
        >>> from raco_jax.train import AlignConfig, make_schedule
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


# -- batches ---------------------------------------------------------------------------------


class _PairValues:
    """Per-pair values (reference log-probs, margin rewards, layer inputs) gathered into batch
    layout."""

    def __init__(
        self,
        ref: tuple[np.ndarray, np.ndarray] | None,
        margins: np.ndarray | None,
        layer_inputs: PairLayerInputs | None = None,
    ) -> None:
        self.ref = ref
        self.margins = margins  # [M, N]
        self.layer_inputs = layer_inputs

    def fields(self, indices: Sequence[int], batch_size: int, width: int) -> dict[str, Any]:
        real = len(indices)
        out: dict[str, Any] = {}
        if self.layer_inputs is not None:
            out["layer_inputs"] = self.layer_inputs.collate(indices, batch_size, width)
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
    """A :class:`~raco_jax.data.PreferenceBatchIterator`'s batches with the per-pair values
    (reference log-probs, MODPO margins) of the pairs they hold."""

    def __init__(self, iterator: Any, values: _PairValues) -> None:
        self.iterator = iterator
        self.values = values

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        indices, fields = self.iterator.next_with_indices()
        batch_size, width = fields["signs"].shape[1], fields["input_ids"].shape[1]
        return PreferenceBatch(**fields, **self.values.fields(indices, batch_size, width))


def _split_host_batch(batch: PreferenceBatch, micro_batches: int) -> list[PreferenceBatch]:
    stacked = split_pairs(batch, micro_batches)
    return [jax.tree.map(lambda x, m=m: np.asarray(x[m]), stacked) for m in range(micro_batches)]


def _mean_over_micro_batches(metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The step's metrics from its micro-batches': means, but the update happens on the last."""
    last = metrics[-1]
    return {
        name: last[name]
        if name in ("learning_rate", "update_norm")
        else sum(m[name] for m in metrics) / len(metrics)
        for name in last
    }


# -- the run ---------------------------------------------------------------------------------


def _checkpoint_state(state: Any, rng: jax.Array) -> dict[str, Any]:
    """What a checkpoint holds of the train state (the frozen rest comes from the model)."""
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step, "rng": rng}


class _Run:
    """One alignment run, stage by stage; :meth:`execute` runs them in order."""

    def __init__(
        self,
        config: AlignConfig,
        mesh: jax.sharding.Mesh | None,
        model: Any,
        tokenizer: Any,
        progress: bool,
    ) -> None:
        self.config = config
        self.mesh = run_mesh(config.mesh) if mesh is None else mesh
        self.model = model
        self.model_path: str | None = None
        self.model_config: Any = None if model is None else model.config
        self.tokenizer = tokenizer
        self.progress = progress
        self.is_main = jax.process_index() == 0
        self.out = pathlib.Path(config.output_dir)
        self.checkpoint_dir = self.out / CHECKPOINT_DIR
        self.cache_dir = (
            pathlib.Path(config.cache_dir) if config.cache_dir else self.out / CACHE_DIR
        )
        self.reference = resolve_reference(config.method, config.reference)
        self.objectives = tuple(config.objectives)
        self._weights_key: str | None = None

    def log(self, message: str) -> None:
        if self.progress and self.is_main:
            print(message, flush=True)

    # -- stages ------------------------------------------------------------------------------

    def write_config(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            (self.out / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")

    def load_data(self) -> tuple[Any, Any]:
        config = self.config
        train_pairs, eval_pairs = _load_pairs(config, resolve_schema(config.schema), self.log)
        if not train_pairs:
            raise ValueError(f"dataset {config.dataset!r} gave no training pairs.")
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(config.tokenizer or config.model)

        def tokenize(pairs: Sequence[Any]) -> Any:
            return tokenize_pairs(
                pairs,
                self.tokenizer,
                self.objectives,
                config.max_length,
                config.max_prompt_length,
                max_completion_length=config.max_completion_length,
            )

        train_tokens = tokenize(train_pairs)
        eval_tokens = tokenize(eval_pairs) if eval_pairs else None
        self.log(
            f"data: {len(train_tokens)} training pairs"
            + (f", {len(eval_tokens)} held out" if eval_tokens is not None else "")
            + f" ({train_tokens.num_truncated_prompts} prompts and "
            f"{train_tokens.num_truncated_completions} responses truncated)"
        )
        return train_tokens, eval_tokens

    def load_model(self) -> None:
        config = self.config
        if self.model is None:
            self.model_path = config.model
            self.model, self.model_config = from_pretrained(
                config.model,
                dtype=jnp.dtype(config.dtype),
                param_dtype=jnp.dtype(config.param_dtype),
                mesh=self.mesh,
                remat=config.remat,
            )
        else:
            shard_model(self.model, self.mesh)

    def pair_values(self, tokenized: Any) -> _PairValues:
        """The reference log-probs and MODPO margins of every pair (cached per content)."""
        config = self.config
        if tokenized is None:
            return _PairValues(None, None)
        # forward-only passes, one micro-batch at a time (if the mesh splits it)
        micro = config.batch_size // config.micro_batches
        forward_batch = micro if micro % data_parallel_size(self.mesh) == 0 else config.batch_size
        tokens_key = tokens_fingerprint(tokenized)
        if self._weights_key is None:
            self._weights_key = weights_fingerprint(self.model_path, self.model)
        weights_key = (self._weights_key, config.dtype, config.param_dtype, tokens_key)
        show = self.progress and self.is_main
        layer_inputs = None
        if self.first_layer:
            layer_inputs = cached_layer_inputs(
                self.cache_dir,
                (*weights_key, f"layer={self.first_layer}"),
                lambda: pair_layer_inputs(
                    self.model,
                    tokenized,
                    self.first_layer,
                    forward_batch,
                    self.mesh,
                    progress=f"inputs of layer {self.first_layer}" if show else None,
                ),
                self.log,
            )
        needs_ref = self.reference == "precomputed" or config.method == "modpo"
        if not needs_ref:
            return _PairValues(None, None, layer_inputs)
        from_layer = (f"from-layer={self.first_layer}",) if self.first_layer else ()
        ref = cached_pair_logps(
            self.cache_dir,
            "reference",
            (*weights_key, *from_layer),
            lambda: pair_logps(
                self.model,
                tokenized,
                forward_batch,
                self.mesh,
                config.time_chunk_size,
                progress="reference log-probs" if show else None,
                layer_inputs=layer_inputs,
                max_completion_length=config.max_completion_length,
            ),
            self.log,
        )
        margins = None
        if config.method == "modpo":
            rows = []
            for path in config.margin_models:

                def compute(path: str = path) -> tuple[np.ndarray, np.ndarray]:
                    margin_model, _ = from_pretrained(
                        path,
                        dtype=jnp.dtype(config.dtype),
                        param_dtype=jnp.dtype(config.dtype),
                        mesh=self.mesh,
                    )
                    return pair_logps(
                        margin_model,
                        tokenized,
                        forward_batch,
                        self.mesh,
                        config.time_chunk_size,
                        max_completion_length=config.max_completion_length,
                    )

                logps_a, logps_b = cached_pair_logps(
                    self.cache_dir,
                    "margin",
                    (weights_fingerprint(path, None), config.dtype, tokens_key),
                    compute,
                    self.log,
                )
                rows.append(config.beta * ((logps_a - ref[0]) - (logps_b - ref[1])))
            margins = np.stack(rows).astype(np.float32)
        return _PairValues(ref if self.reference == "precomputed" else None, margins, layer_inputs)

    @property
    def first_layer(self) -> int:
        """The lowest adapted layer with ``cache_layer_inputs`` (0: the forward starts at the
        embedding)."""
        config = self.config
        if not config.cache_layer_inputs:
            return 0
        layers = self.lora_config().resolved_layers(self.model_config.num_layers)
        return min(layers) if layers else 0

    def lora_config(self) -> LoRAConfig:
        config = self.config
        return LoRAConfig(
            rank=config.lora_rank,
            alpha=config.lora_alpha,
            target_modules=config.lora_targets,
            layers=config.lora_layers or None,
        )

    def trainable(self) -> Any:
        """Adds the LoRA adapters (if any); returns the NNX filter of what is trained."""
        if self.config.lora_rank == 0:
            return nnx.Param
        apply_lora(self.model, self.lora_config(), rngs=nnx.Rngs(self.config.seed))
        shard_model(self.model, self.mesh)
        return LoRAParam

    def build_step(self, wrt: Any, schedule: optax.Schedule) -> TrainStep:
        config = self.config
        per_micro_batch = self.per_micro_batch
        tx = make_optimizer(
            config.method,
            config.weights,
            learning_rate=schedule,
            c=config.c,
            max_grad_norm=config.max_grad_norm,
            weight_decay=config.weight_decay,
            seed=config.seed,
            aggregate_at="micro_batch" if per_micro_batch else "batch",
            micro_batches=config.micro_batches,
        )
        return TrainStep(
            self.model,
            tx,
            method=config.method,
            objectives=self.objectives,
            weights=config.weights,
            beta=config.beta,
            loss_type=config.loss_type,
            label_smoothing=config.label_smoothing,
            wrt=wrt,
            reference=self.reference,
            micro_batches=1 if per_micro_batch else config.micro_batches,
            modpo_target=self.objectives.index(config.modpo_target or self.objectives[0]),
            schedule=None if per_micro_batch else schedule,
            time_chunk_size=config.time_chunk_size,
            first_layer=self.first_layer,
            max_completion_length=config.max_completion_length,
        )

    @property
    def per_micro_batch(self) -> bool:
        config = self.config
        return (
            config.aggregate_at == "micro_batch"
            and config.micro_batches > 1
            and config.method in STACKED_METHODS
        )

    def restore(
        self, ckpt: CheckpointManager, state: Any, rng: jax.Array, iterator: Any
    ) -> tuple[Any, jax.Array, int]:
        """The state, key and iterator position of the latest checkpoint (``resume``)."""
        if not self.config.resume:
            return state, rng, 0
        latest = ckpt.latest_step()
        if latest is None:
            self.log(
                f"resume: no checkpoint in {self.checkpoint_dir}; starting the run from step 0"
            )
            return state, rng, 0
        restored = ckpt.restore(latest, target=_checkpoint_state(state, rng))
        state = state._replace(
            params=restored.state["params"],
            opt_state=restored.state["opt_state"],
            step=restored.state["step"],
        )
        iterator.load_state_dict(restored.data_state["train"])
        self.log(f"resumed from step {latest} ({self.checkpoint_dir})")
        return state, restored.state["rng"], latest

    def export(self, model: Any) -> None:
        """``final/``: the merged model in Hugging Face layout, or the adapters (PEFT)."""
        config = self.config
        directory = self.out / FINAL_DIR
        if jax.process_count() > 1:  # every host holds a full copy before process 0 writes it
            graphdef, state = nnx.split(model)
            state = jax.jit(lambda s: s, out_shardings=replicated(self.mesh))(state)
            model = nnx.merge(graphdef, state)
        if not self.is_main:
            return
        if config.lora_rank > 0 and config.export_lora == "adapter":
            save_lora_adapters(
                model,
                directory,
                self.lora_config(),
                base_model=hub_model_id(config.model) if config.model else "",
            )
        else:
            if config.lora_rank > 0:
                model = merge_lora(model)
            save_pretrained(model, self.model_config, directory)
        if self.tokenizer is not None and hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(directory)

    # -- the whole run ----------------------------------------------------------------------

    def execute(self) -> AlignResult:
        config = self.config
        self.write_config()
        train_tokens, eval_tokens = self.load_data()
        self.load_model()
        train_values = self.pair_values(train_tokens)
        eval_values = self.pair_values(eval_tokens)
        wrt = self.trainable()
        iterator = PreferenceBatchIterator(
            train_tokens, config.batch_size, seed=config.seed, num_epochs=None
        )
        total_steps = config.max_steps or max(
            1, math.ceil(config.epochs * iterator.batches_per_epoch)
        )
        schedule = make_schedule(config, total_steps)
        train_step = self.build_step(wrt, schedule)
        state, state_shardings = shard_train_state(train_step.init(self.model), self.mesh)
        shard_train_step(train_step, state_shardings, self.mesh)
        ckpt = CheckpointManager(self.checkpoint_dir, save_every=config.save_every, max_to_keep=3)
        try:
            # the run's key lives on every device, like the rest of the state (one checkpoint
            # item for all processes of a multi-process run)
            seed = config.seed
            rng = jax.jit(lambda: jax.random.key(seed), out_shardings=replicated(self.mesh))()
            state, rng, start_step = self.restore(ckpt, state, rng, iterator)
            eval_batches = []
            if eval_tokens is not None:
                eval_iterator = PreferenceBatchIterator(
                    eval_tokens, config.batch_size, shuffle=False, num_epochs=1
                )
                eval_batches = [
                    shard_batch(b, self.mesh) for b in _Batches(eval_iterator, eval_values)
                ]
            logger = RunLogger(
                self.out,
                total_steps=total_steps,
                log_every=config.log_every,
                start_step=start_step,
                tensorboard=self.is_main,
                progress=self.progress and self.is_main,
                write=self.is_main,
            )
            with logger:
                state, step_no, final_model, summary = self.train(
                    train_step,
                    state,
                    rng,
                    start_step,
                    total_steps,
                    _Batches(iterator, train_values),
                    iterator,
                    eval_batches,
                    ckpt,
                    logger,
                )
        finally:
            ckpt.close()
        return AlignResult(
            config=config,
            status=summary["status"],
            step=step_no,
            start_step=start_step,
            total_steps=total_steps,
            output_dir=self.out,
            final_dir=self.out / FINAL_DIR,
            checkpoint_dir=self.checkpoint_dir,
            summary=summary,
            metrics=dict(logger.last_metrics),
            eval_metrics=dict(logger.last_eval_metrics),
            model=final_model,
            tokenizer=self.tokenizer,
            state=state,
        )

    def train(
        self,
        train_step: TrainStep,
        state: Any,
        rng: jax.Array,
        start_step: int,
        total_steps: int,
        batches: _Batches,
        iterator: Any,
        eval_batches: Sequence[PreferenceBatch],
        ckpt: CheckpointManager,
        logger: RunLogger,
    ) -> tuple[Any, int, Any, dict[str, Any]]:
        """The loop: steps, logs, evaluations, checkpoints; then the export and the summary.

        Returns:
          ``(state, last step, final model, summary)``.
        """
        config = self.config
        extra = {
            "output_dir": str(self.out),
            "checkpoint_dir": str(self.checkpoint_dir),
            "final_dir": str(self.out / FINAL_DIR),
            "method": config.method,
            "objectives": list(self.objectives),
            "weights": list(config.weights),
        }
        show = self.progress and self.is_main
        step_no = start_step
        host_metrics: dict[str, Any] = {}
        try:
            while step_no < total_steps:
                host_batch = next(batches)
                if self.per_micro_batch:
                    micro_metrics = []
                    for micro in _split_host_batch(host_batch, config.micro_batches):
                        state, metrics = train_step(state, shard_batch(micro, self.mesh))
                        micro_metrics.append(metrics)
                    metrics = _mean_over_micro_batches(micro_metrics)
                else:
                    state, metrics = train_step(state, shard_batch(host_batch, self.mesh))
                step_no += 1
                is_last = step_no == total_steps
                do_eval = bool(eval_batches) and (
                    is_last or (config.eval_every > 0 and step_no % config.eval_every == 0)
                )
                do_save = is_last or ckpt.should_save(step_no)
                if logger.should_log(step_no) or do_save or do_eval:
                    host_metrics = check_finite(metrics, step=step_no)
                logger.log(step_no, metrics, tokens=int(np.sum(host_batch.attention_mask)))
                if do_eval:
                    logger.log_eval(step_no, train_step.evaluate(state, eval_batches))
                if do_save:
                    ckpt.save(
                        step_no,
                        _checkpoint_state(state, rng),
                        data_state={"train": iterator.state_dict()},
                        metrics=host_metrics,
                        metadata={"config": config.to_dict()},
                        force=True,
                    )
            ckpt.wait_until_finished()
            final_model = train_step.merge(state)
            self.export(final_model)
        except NonFiniteLossError as err:
            good = ckpt.last_good_step()
            where = (
                f"last good checkpoint: step {good} in {self.checkpoint_dir}"
                if good is not None
                else "no good checkpoint was saved before it"
            )
            message = f"{describe_failure(err, config)} ({where})"
            err.add_note(message)
            logger.summary(status="failed", extra={**extra, "error": message}, print_text=show)
            raise
        except Exception as err:
            logger.summary(
                status="failed",
                extra={**extra, "error": describe_failure(err, config)},
                print_text=False,
            )
            raise
        summary = logger.summary(extra=extra, print_text=show)
        return state, step_no, final_model, summary


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
      raco_jax.train.failures.NonFiniteLossError: a metric turned NaN or infinite; the run
        stopped and its last good checkpoint is kept (the message says which step).
      MemoryError: the accelerator ran out of memory; the message names the knobs to turn.

    Example: see the module docstring.
    """
    if config.distributed:
        initialize_distributed()
    mesh_shape = None
    if mesh is not None:
        missing = [a for a in ("data", "fsdp", "tensor") if a not in mesh.shape]
        if missing:
            raise ValueError(f"mesh must have axes ('data', 'fsdp', 'tensor'); lacks {missing}.")
        mesh_shape = (int(mesh.shape["data"]), int(mesh.shape["fsdp"]), 1)
    config = check_run(config, mesh_shape=mesh_shape, model_given=model is not None)
    try:
        return _Run(config, mesh, model, tokenizer, progress).execute()
    except NonFiniteLossError:
        raise
    except Exception as err:
        if is_out_of_memory(err):
            raise MemoryError(describe_failure(err, config)) from err
        raise
