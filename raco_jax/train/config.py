"""The alignment run's configuration: one dataclass, YAML/TOML files, command-line overrides.

Every field of :class:`AlignConfig` can come from a config file (YAML or TOML, flat or with the
same names) and be overridden by a flag spelled like the field with dashes
(``learning_rate`` -> ``--learning-rate``). :func:`validate_config` checks everything that can be
checked before any model is loaded or compiled: unknown method, weights of the wrong length or
not on the simplex, a mesh that does not divide the devices, and (given the schema's objectives)
objectives the dataset cannot label.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import tomllib
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from raco_jax.data import list_schemas
from raco_jax.models.lora import DEFAULT_TARGET_MODULES
from raco_jax.preference import LOSS_TYPES
from raco_jax.train.methods import (
    AGGREGATE_AT,
    METHODS,
    REFERENCES,
    check_method,
    resolve_reference,
)

__all__ = [
    "PRESETS",
    "AlignConfig",
    "add_config_flags",
    "config_from_args",
    "config_from_mapping",
    "load_config_file",
    "resolve_mesh_shape",
    "validate_config",
]

SCHEDULES = ("cosine", "linear", "constant")
DTYPES = ("float32", "bfloat16")
EXPORT_LORA = ("merged", "adapter")

_DATASET_HELP = (
    "the preference data: a Hugging Face hub id, a local file (.jsonl, .json, .parquet, .csv, "
    "optionally compressed .gz/.bz2/.xz/.zst), a directory of such files (split files such as "
    "train.jsonl or <subset>/train.jsonl.gz are recognised by name; for hh-rlhf the subset "
    "files helpful-base*/harmless-base* give the objectives), or a comma-separated list of "
    "files; read with --schema"
)


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with its documentation (shown by ``raco-jax align --help``)."""
    if isinstance(default, tuple) or default is None or isinstance(default, (str, int, float)):
        return dataclasses.field(default=default, metadata={"help": help, **kwargs})
    raise TypeError(f"unsupported default {default!r}")  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """Everything an alignment run needs; every field is also a flag of ``raco-jax align``.

    The fields, with their documentation, are listed below (and by ``raco-jax align --help``).

    Example:
        >>> from raco_jax.train.config import AlignConfig
        >>> cfg = AlignConfig(model="Qwen/Qwen3-0.6B", dataset="PKU-Alignment/PKU-SafeRLHF",
        ...                   schema="pku-saferlhf", objectives=("helpful", "harmless"),
        ...                   weights=(0.7, 0.3))
        >>> cfg.method, cfg.c, cfg.beta
        ('raco', 0.4, 0.1)
    """

    # what to align, on what
    model: str = _field(
        "", "the model to align: a Hugging Face checkpoint directory, a hub id or a .gguf file"
    )
    tokenizer: str | None = _field(
        None, "the tokenizer (a directory or hub id; default: the model's, also for .gguf)"
    )
    dataset: str = _field("", _DATASET_HELP)
    schema: str = _field(
        "generic", "how the dataset's rows become preference pairs (a registered schema)"
    )
    train_split: str = _field("train", "the split (or split-named file) to train on")
    eval_split: str | None = _field(
        None, "a split of the dataset held out for evaluation (default: none, see eval_fraction)"
    )
    eval_fraction: float = _field(
        0.0, "the share of the training pairs held out for evaluation, drawn with the seed"
    )
    objectives: tuple[str, ...] = _field(
        (),
        "the objectives, comma-separated (default: every objective the schema labels, when "
        "the schema fixes them)",
    )
    weights: tuple[float, ...] = _field(
        (), "the user weights of the objectives, comma-separated, on the simplex (default: uniform)"
    )
    # the method
    method: str = _field("raco", "the method", choices=METHODS)
    c: float = _field(0.4, "CAGrad radius (raco: 0 <= c < 1; c = 0 is the weighted sum)")
    beta: float = _field(0.1, "DPO temperature (the paper's presets use 0.2)")
    loss_type: str = _field("sigmoid", "the DPO loss", choices=LOSS_TYPES)
    label_smoothing: float = _field(0.0, "label smoothing of the sigmoid and robust losses")
    aggregate_at: str = _field(
        "batch",
        "aggregate the accumulated gradients once per step (batch, Algorithm 1) or each "
        "micro-batch's and average the directions (micro_batch, the RACO authors' code)",
        choices=AGGREGATE_AT,
    )
    reference: str | None = _field(
        None,
        "where the reference log-probs come from: precomputed once per pair, online (a frozen "
        "copy in every step), lora_base (online, the base model under LoRA) or none (AMoPO); "
        "default: none for amopo, else precomputed",
        choices=REFERENCES,
    )
    modpo_target: str | None = _field(None, "MODPO only: the target objective (default: the first)")
    margin_models: tuple[str, ...] = _field(
        (),
        "MODPO only: one margin reward model per other objective, in objective order (HF "
        "directories; margin reward beta * log(pi_j/pi_ref))",
    )
    # optimisation
    learning_rate: float = _field(1e-6, "peak learning rate of AdamW")
    weight_decay: float = _field(0.0, "AdamW's decoupled weight decay")
    schedule: str = _field(
        "cosine", "learning-rate schedule after the linear warmup", choices=SCHEDULES
    )
    warmup_ratio: float = _field(0.1, "share of the steps spent warming up linearly")
    max_grad_norm: float = _field(1.0, "global-norm clip of the aggregated update")
    batch_size: int = _field(64, "preference pairs per optimizer step")
    micro_batches: int = _field(1, "micro-batches per step (gradient accumulation)")
    epochs: float = _field(1.0, "passes over the training pairs (unless max_steps)")
    max_steps: int | None = _field(None, "optimizer steps (default: from epochs)")
    max_length: int = _field(2048, "tokens per prompt + response (longer are truncated)")
    max_prompt_length: int = _field(1536, "prompt tokens kept (from the end)")
    max_completion_length: int | None = _field(
        None,
        "completion tokens kept (from the start; default: what max_length leaves); the step then "
        "projects only the positions that score completions onto the vocabulary",
    )
    # model handling
    lora_rank: int = _field(0, "LoRA rank (0: full fine-tuning)")
    lora_alpha: float = _field(16.0, "LoRA alpha (the update is scaled by alpha / rank)")
    lora_targets: tuple[str, ...] = _field(
        DEFAULT_TARGET_MODULES, "the projections that get LoRA adapters, comma-separated"
    )
    lora_layers: tuple[int, ...] = _field(
        (),
        "the decoder layers whose projections get LoRA adapters, comma-separated; negative "
        "indices count from the top (--lora-layers=-2,-1: the last two layers, so the backward "
        "pass stops there); empty: every layer",
    )
    cache_layer_inputs: bool = _field(
        False,
        "with lora_layers: compute the frozen layers below the lowest adapted layer once per pair "
        "(cached under cache_dir) and start every step's forward pass there; the same "
        "computation, without the lower layers' forward cost (memory: 4 bytes x hidden size per "
        "token of every pair)",
    )
    export_lora: str = _field(
        "merged",
        "with LoRA, export the merged model (merged) or the adapters alone in PEFT layout "
        "(adapter)",
        choices=EXPORT_LORA,
    )
    dtype: str = _field("bfloat16", "compute dtype", choices=DTYPES)
    param_dtype: str = _field("float32", "parameter dtype", choices=DTYPES)
    remat: bool = _field(False, "recompute activations in the backward pass (less memory)")
    time_chunk_size: int | None = _field(
        None,
        "project hidden states to logits this many positions at a time, so [2B, T, vocab] "
        "float32 logits are never built (e.g. 256 for a 150k vocabulary; default: full logits)",
    )
    # run management
    seed: int = _field(0, "seed of the data order, the held-out split, LoRA and PCGrad")
    eval_every: int = _field(0, "evaluate on the held-out pairs every N steps (0: at the end)")
    log_every: int = _field(10, "log metrics every N steps")
    save_every: int = _field(0, "checkpoint every N steps (0: only at the end)")
    output_dir: str = _field("runs/raco", "the run's directory")
    cache_dir: str | None = _field(
        None,
        "where the cached reference log-probs go (default: <output_dir>/cache); runs of a sweep "
        "on the same model and data share one and compute them once",
    )
    resume: bool = _field(
        False, "continue the run in output_dir from its latest checkpoint (or start it)"
    )
    mesh: tuple[int, int, int] = _field(
        (-1, 1, 1), "the (data, fsdp, tensor) device mesh; -1: the rest of the devices"
    )
    distributed: bool = _field(
        False, "call jax.distributed.initialize() first (multi-host TPU/GPU runs)"
    )

    def replace(self, **changes: Any) -> AlignConfig:
        """A copy with some fields changed (validated by :func:`config_from_mapping`).

        Example:
            >>> from raco_jax.train.config import AlignConfig
            >>> AlignConfig().replace(c=0.2).c
            0.2
        """
        return config_from_mapping({**dataclasses.asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field.

        Example:
            >>> from raco_jax.train.config import AlignConfig
            >>> AlignConfig().to_dict()["method"]
            'raco'
        """
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _field_docs() -> str:
    lines = ["", "    Fields:"]
    for field in dataclasses.fields(AlignConfig):
        choices = field.metadata.get("choices")
        extra = f" One of: {', '.join(choices)}." if choices else ""
        lines.append(
            f"      {field.name} (default {field.default!r}): {field.metadata['help']}.{extra}"
        )
    return "\n".join(lines) + "\n"


AlignConfig.__doc__ = (AlignConfig.__doc__ or "") + _field_docs()


# The paper's recipe (raco-algorithm.md section 7): AdamW, cosine with 10% warmup, clipping at
# 1.0 after aggregation, bf16, 1 epoch, 64 pairs per step, lengths 2048/1536, c = 0.4,
# beta = 0.2, full fine-tuning.
_PAPER = {
    "method": "raco",
    "c": 0.4,
    "beta": 0.2,
    "schedule": "cosine",
    "warmup_ratio": 0.1,
    "max_grad_norm": 1.0,
    "dtype": "bfloat16",
    "epochs": 1.0,
    "batch_size": 64,
    "max_length": 2048,
    "max_prompt_length": 1536,
    "lora_rank": 0,
}
PRESETS: dict[str, dict[str, Any]] = {
    "paper-safety": {
        **_PAPER,
        "dataset": "PKU-Alignment/PKU-SafeRLHF",
        "schema": "pku-saferlhf",
        "objectives": ("helpful", "harmless"),
        "weights": (0.5, 0.5),
    },
    "paper-reddit": {
        **_PAPER,
        "dataset": "RACOo/RedditSummary-Alignment",
        "schema": "reddit-summary",
        "objectives": ("quality", "conciseness"),
        "weights": (0.5, 0.5),
    },
    "paper-reddit-3": {
        **_PAPER,
        "dataset": "RACOo/RedditSummary-Alignment",
        "schema": "reddit-summary",
        "objectives": ("quality", "conciseness", "faithfulness"),
        "weights": (1 / 3, 1 / 3, 1 / 3),
    },
}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(AlignConfig)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Converts a file or flag value to the field's type, with errors naming the field."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        if type(None) in args:
            return None
        raise ValueError(f"config field {name!r} may not be null.")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    try:
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip() != ""]
            elem = args[0] if args else str
            return tuple(_coerce(name, v.strip() if isinstance(v, str) else v, elem) for v in value)
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return str(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config field {name!r}: cannot read {value!r} as {annotation}.") from err
    return value


def config_from_mapping(values: Mapping[str, Any]) -> AlignConfig:
    """Builds an :class:`AlignConfig` from a mapping (a parsed file), rejecting unknown keys.

    A ``preset`` key starts from one of :data:`PRESETS`; other keys override it. Dashes in keys
    are read as underscores.

    Example:
        >>> from raco_jax.train.config import config_from_mapping
        >>> config_from_mapping({"preset": "paper-safety", "weights": "0.8,0.2"}).weights
        (0.8, 0.2)
    """
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    merged: dict[str, Any] = {}
    preset = values.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known presets: {sorted(PRESETS)}.")
        merged.update(PRESETS[preset])
    merged.update(values)
    types = _field_types()
    unknown = sorted(set(merged) - set(types))
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; known fields: {sorted(types)}.")
    coerced = {name: _coerce(name, value, types[name]) for name, value in merged.items()}
    return AlignConfig(**coerced)


def load_config_file(path: str | pathlib.Path) -> dict[str, Any]:
    """Reads a YAML (.yaml/.yml) or TOML (.toml) config file into a dict.

    Example:
        >>> import tempfile, pathlib
        >>> from raco_jax.train.config import load_config_file
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.toml"
        >>> _ = p.write_text('method = "dpo-lw"\\nweights = [0.6, 0.4]\\n')
        >>> load_config_file(p)
        {'method': 'dpo-lw', 'weights': [0.6, 0.4]}
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        with path.open("rb") as f:
            data = tomllib.load(f)
    elif suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
    else:
        raise ValueError(f"config file {path} must end in .yaml, .yml or .toml.")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of field names to values.")
    return data


def add_config_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds ``--config FILE``, ``--preset NAME`` and one flag per :class:`AlignConfig` field.

    Flags default to "not given" (None) so that only what the user typed overrides the file.

    Example:
        >>> import argparse
        >>> from raco_jax.train.config import add_config_flags
        >>> ns = add_config_flags(argparse.ArgumentParser()).parse_args(["--c", "0.2"])
        >>> ns.c
        '0.2'
    """
    parser.add_argument("--config", default=None, help="YAML or TOML file with config fields")
    parser.add_argument(
        "--preset", default=None, choices=sorted(PRESETS), help="start from a preset"
    )
    types = _field_types()
    for field in dataclasses.fields(AlignConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        if field.name == "schema":
            help_text += f" (registered: {', '.join(list_schemas())})"
        if types[field.name] is bool:
            parser.add_argument(
                flag,
                dest=field.name,
                default=None,
                action="store_const",
                const="true",
                help=f"{help_text} (default: off)",
            )
            continue
        choices = field.metadata.get("choices")
        parser.add_argument(
            flag,
            dest=field.name,
            default=None,
            choices=choices,
            metavar=field.name.upper() if choices is None else None,
            help=help_text
            if "(default:" in help_text
            else f"{help_text} (default: {_shown_default(field)})",
        )
    return parser


def _shown_default(field: dataclasses.Field) -> str:
    default = field.default
    if default is None:
        return "unset"
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default) if default else "unset"
    return str(default) if default != "" else "required"


def config_from_args(args: argparse.Namespace | Sequence[str]) -> AlignConfig:
    """Builds the config from a preset, then a file, then flags (later wins).

    Example:
        >>> from raco_jax.train.config import config_from_args
        >>> cfg = config_from_args(["--preset", "paper-safety", "--weights", "0.9,0.1",
        ...                         "--mesh", "1,-1,1"])
        >>> cfg.weights, cfg.mesh, cfg.beta
        ((0.9, 0.1), (1, -1, 1), 0.2)
    """
    if not isinstance(args, argparse.Namespace):
        args = add_config_flags(argparse.ArgumentParser()).parse_args(list(args))
    values: dict[str, Any] = {}
    if getattr(args, "preset", None):
        values["preset"] = args.preset
    if getattr(args, "config", None):
        file_values = load_config_file(args.config)
        if "preset" in file_values and "preset" in values:
            file_values.pop("preset")
        values.update(file_values)
    for field in dataclasses.fields(AlignConfig):
        flag_value = getattr(args, field.name, None)
        if flag_value is not None:
            values[field.name] = flag_value
    return config_from_mapping(values)


def resolve_mesh_shape(mesh: Sequence[int], num_devices: int) -> tuple[int, int, int]:
    """Resolves a (data, fsdp, tensor) mesh with at most one -1 ("the rest") against the devices.

    Example:
        >>> from raco_jax.train.config import resolve_mesh_shape
        >>> resolve_mesh_shape((-1, 2, 1), 8)
        (4, 2, 1)
    """
    shape = tuple(int(x) for x in mesh)
    if len(shape) != 3:
        raise ValueError(f"mesh must have 3 sizes (data, fsdp, tensor), got {shape}.")
    if any(s == 0 or s < -1 for s in shape) or shape.count(-1) > 1:
        raise ValueError(f"mesh sizes must be positive, with at most one -1; got {shape}.")
    known = math.prod(s for s in shape if s != -1)
    if num_devices % known != 0:
        raise ValueError(
            f"mesh {shape} does not divide the {num_devices} available devices "
            f"(the fixed sizes multiply to {known})."
        )
    rest = num_devices // known
    resolved = tuple(rest if s == -1 else s for s in shape)
    if math.prod(resolved) != num_devices:
        raise ValueError(
            f"mesh {shape} uses {math.prod(resolved)} devices but {num_devices} are available; "
            "use -1 for the axis that takes the rest."
        )
    return resolved  # type: ignore[return-value]


def validate_config(
    config: AlignConfig,
    *,
    num_devices: int | None = None,
    schema_objectives: Sequence[str] | None = None,
    require_data: bool = True,
) -> AlignConfig:
    """Checks a config before anything is loaded or compiled; raises ValueError naming the field.

    Args:
      config: the config.
      num_devices: if given, the mesh must use exactly this many devices.
      schema_objectives: if given, the objectives the dataset's schema can label.
      require_data: whether ``model`` and ``dataset`` must be set.

    Returns:
      The config, unchanged.

    Example:
        >>> from raco_jax.train.config import AlignConfig, validate_config
        >>> validate_config(AlignConfig(objectives=("a", "b"), weights=(0.5, 0.6)),
        ...                 require_data=False)
        Traceback (most recent call last):
        ...
        ValueError: weights must sum to 1 (within 1e-6), got 1.1 for (0.5, 0.6).
    """
    check_method(config.method)
    if config.loss_type not in LOSS_TYPES:
        raise ValueError(
            f"unknown loss_type {config.loss_type!r}; choose one of {list(LOSS_TYPES)}."
        )
    for name, allowed in (
        ("schedule", SCHEDULES),
        ("dtype", DTYPES),
        ("param_dtype", DTYPES),
        ("aggregate_at", AGGREGATE_AT),
        ("export_lora", EXPORT_LORA),
    ):
        if getattr(config, name) not in allowed:
            raise ValueError(
                f"{name} must be one of {list(allowed)}, got {getattr(config, name)!r}."
            )
    if require_data and not config.model:
        raise ValueError(
            "model is required (a Hugging Face directory or hub id): --model DIR_OR_ID."
        )
    if require_data and not config.dataset:
        raise ValueError("dataset is required (a hub id or local files): --dataset ID_OR_FILES.")
    k = len(config.objectives)
    if k < 1:
        raise ValueError("objectives must name at least one objective: --objectives a,b.")
    if len(set(config.objectives)) != k:
        raise ValueError(f"objectives must be distinct, got {config.objectives}.")
    if len(config.weights) != k:
        raise ValueError(
            f"weights has {len(config.weights)} entries but objectives has {k} "
            f"({', '.join(config.objectives)})."
        )
    if any(not math.isfinite(w) or w < 0 for w in config.weights):
        raise ValueError(f"weights must be finite and non-negative, got {config.weights}.")
    total = math.fsum(config.weights)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"weights must sum to 1 (within 1e-6), got {round(total, 9)} for {config.weights}."
        )
    if config.method in ("raco",) and not 0 <= config.c < 1:
        raise ValueError(f"c must be in [0, 1) for raco, got {config.c}.")
    if config.c < 0:
        raise ValueError(f"c must be >= 0, got {config.c}.")
    if config.beta <= 0:
        raise ValueError(f"beta must be > 0, got {config.beta}.")
    if not 0 <= config.label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {config.label_smoothing}.")
    if config.batch_size < 1 or config.micro_batches < 1:
        raise ValueError("batch_size and micro_batches must be >= 1.")
    if config.batch_size % config.micro_batches:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by micro_batches "
            f"{config.micro_batches}."
        )
    if config.max_prompt_length >= config.max_length:
        raise ValueError(
            f"max_prompt_length ({config.max_prompt_length}) must be < max_length "
            f"({config.max_length})."
        )
    if config.max_completion_length is not None and config.max_completion_length < 1:
        raise ValueError(
            f"max_completion_length must be >= 1 or None, got {config.max_completion_length}."
        )
    if config.learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {config.learning_rate}.")
    if not 0 <= config.warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {config.warmup_ratio}.")
    if config.max_steps is not None and config.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {config.max_steps}.")
    if config.time_chunk_size is not None and config.time_chunk_size < 1:
        raise ValueError(f"time_chunk_size must be >= 1 or None, got {config.time_chunk_size}.")
    if config.lora_rank < 0:
        raise ValueError(f"lora_rank must be >= 0 (0 = full fine-tuning), got {config.lora_rank}.")
    if config.cache_layer_inputs and not (config.lora_rank > 0 and config.lora_layers):
        raise ValueError(
            "cache_layer_inputs needs LoRA on some layers only (lora_rank > 0 and lora_layers, "
            "e.g. --lora-layers=-2,-1): the layers below them must be frozen."
        )
    if config.lora_layers and config.lora_rank == 0:
        raise ValueError(
            f"lora_layers={list(config.lora_layers)} needs LoRA: set lora_rank > 0 (full "
            "fine-tuning trains every layer)."
        )
    resolve_reference(config.method, config.reference)
    if config.reference == "lora_base" and config.lora_rank == 0:
        raise ValueError("reference='lora_base' needs LoRA (lora_rank > 0).")
    if not 0 <= config.eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {config.eval_fraction}.")
    if config.eval_every < 0 or config.log_every < 0 or config.save_every < 0:
        raise ValueError("eval_every, log_every and save_every must be >= 0 (0: off).")
    if config.eval_every > 0 and config.eval_split is None and config.eval_fraction == 0:
        raise ValueError(
            f"eval_every={config.eval_every} needs held-out pairs: set eval_split (a split name "
            "of the dataset) or eval_fraction (a share of the training pairs, e.g. 0.05)."
        )
    if config.epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {config.epochs}.")
    if config.method == "modpo":
        if k < 2:
            raise ValueError("method='modpo' needs at least 2 objectives (a target and others).")
        target = config.modpo_target if config.modpo_target is not None else config.objectives[0]
        if target not in config.objectives:
            raise ValueError(
                f"modpo_target {target!r} is not one of the objectives {list(config.objectives)}."
            )
        if config.weights[config.objectives.index(target)] <= 0:
            raise ValueError(f"modpo_target {target!r} must have a positive weight for MODPO.")
        if len(config.margin_models) != k - 1:
            others = [o for o in config.objectives if o != target]
            raise ValueError(
                f"method='modpo' needs one margin reward model per objective other than the "
                f"target {target!r} ({', '.join(others)}): --margin-models DIR[,DIR] (Hugging "
                f"Face directories, e.g. DPO models trained on each of them; the margin reward "
                f"is beta * (log pi_j - log pi_ref)); got {len(config.margin_models)}."
            )
    if num_devices is not None:
        resolve_mesh_shape(config.mesh, num_devices)
    if schema_objectives is not None:
        missing = [o for o in config.objectives if o not in schema_objectives]
        if missing:
            raise ValueError(
                f"objective(s) {missing} are not provided by schema {config.schema!r}, which "
                f"labels {list(schema_objectives)}."
            )
    return config
