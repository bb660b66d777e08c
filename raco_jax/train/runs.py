"""The run directory: its layout, and reading a saved run back.

:func:`raco_jax.train.align` writes one directory per run::

    <output_dir>/
      config.json        the run's AlignConfig (written at the start)
      checkpoints/<step> orbax checkpoints (resume from them)
      cache/             reference log-probs per pair (unless cache_dir points elsewhere)
      metrics.jsonl      one line per logged step; tensorboard/ the same as events
      summary.json       status ("completed", "failed", ...), wall time, final metrics
      final/             the aligned model: Hugging Face layout, or LoRA adapters (PEFT layout)

:func:`read_run_config`, :func:`run_is_finished`, :func:`has_checkpoints` and
:func:`load_run_model` read it back (the sweep, ``raco-jax evaluate`` and the benchmarks use
them).

Example:
    >>> import tempfile
    >>> from raco_jax.train.runs import has_checkpoints, run_is_finished
    >>> d = tempfile.mkdtemp()
    >>> run_is_finished(d), has_checkpoints(d)
    (False, False)
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from raco_jax.models import from_pretrained, load_lora_adapters, load_tokenizer
from raco_jax.models.lora import ADAPTER_CONFIG_FILE

__all__ = [
    "CACHE_DIR",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "FINAL_DIR",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "has_checkpoints",
    "load_run_model",
    "read_run_config",
    "run_is_finished",
]

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
CACHE_DIR = "cache"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
FINAL_DIR = "final"


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run directory's ``config.json`` as a dict.

    Raises:
      FileNotFoundError: the directory has no ``config.json``.

    Example:
        >>> import tempfile
        >>> from raco_jax.train.runs import read_run_config
        >>> read_run_config(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ... is not a run directory: it has no config.json.
    """
    path = pathlib.Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no {CONFIG_FILE}.")
    return json.loads(path.read_text())


def run_is_finished(run_dir: str | os.PathLike) -> bool:
    """Whether a run directory holds a finished run: ``final/`` and a completed summary.

    Example:
        >>> import tempfile
        >>> from raco_jax.train.runs import run_is_finished
        >>> run_is_finished(tempfile.mkdtemp())
        False
    """
    run_dir = pathlib.Path(run_dir)
    summary = run_dir / SUMMARY_FILE
    if not ((run_dir / FINAL_DIR).is_dir() and summary.is_file()):
        return False
    try:
        return json.loads(summary.read_text()).get("status") == "completed"
    except json.JSONDecodeError:
        return False


def has_checkpoints(run_dir: str | os.PathLike) -> bool:
    """Whether a run directory holds at least one finished checkpoint (``checkpoints/<step>``).

    Example:
        >>> import pathlib, tempfile
        >>> from raco_jax.train.runs import has_checkpoints
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> (d / "checkpoints" / "10").mkdir(parents=True)
        >>> has_checkpoints(d)
        True
    """
    checkpoints = pathlib.Path(run_dir) / CHECKPOINT_DIR
    return checkpoints.is_dir() and any(
        p.is_dir() and p.name.isdigit() for p in checkpoints.iterdir()
    )


def load_run_model(
    run_dir: str | os.PathLike, config: Mapping[str, Any] | None = None, dtype: Any = None
) -> tuple[Any, Any]:
    """A finished run's final model and tokenizer: ``final/`` as a full checkpoint, or the base
    model (the run's ``model``) plus the LoRA adapters saved in ``final/`` (PEFT layout).

    Args:
      run_dir: the run directory (``config.json`` + ``final/``).
      config: its config (default: read from ``run_dir``).
      dtype: compute dtype (default: float32); parameters load in float32.

    Returns:
      ``(model, tokenizer)``: the tokenizer saved in ``final/``, else the run's tokenizer.

    Raises:
      ValueError: the run has no ``final/`` (not finished).

    Example:
        >>> import tempfile
        >>> from raco_jax.train.runs import load_run_model
        >>> load_run_model(tempfile.mkdtemp(), config={"model": "m"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: run ... is not finished: it has no final/ directory.
    """
    run_dir = pathlib.Path(run_dir)
    config = read_run_config(run_dir) if config is None else config
    final = run_dir / FINAL_DIR
    if not final.is_dir():
        raise ValueError(f"run {run_dir} is not finished: it has no {FINAL_DIR}/ directory.")
    dtype = jnp.float32 if dtype is None else dtype
    if (final / ADAPTER_CONFIG_FILE).is_file():
        model, _ = from_pretrained(config["model"], dtype=dtype, param_dtype=jnp.float32)
        model = load_lora_adapters(model, final)
    else:
        model, _ = from_pretrained(final, dtype=dtype, param_dtype=jnp.float32)
    if (final / "tokenizer_config.json").is_file():
        return model, load_tokenizer(final)
    return model, load_tokenizer(config.get("tokenizer") or config["model"])
