"""Failures a run meets, turned into messages a user can act on.

* :class:`NonFiniteLossError`: a metric turned NaN or infinite (raised by
  :func:`raco_jax.train.logs.check_finite`, so the loop can stop and keep its last good
  checkpoint);
* :func:`is_out_of_memory`: whether an exception says the accelerator ran out of memory;
* :func:`describe_failure`: a clear message for the usual exceptions, naming the config knobs
  that reduce memory when the accelerator runs out of it.

Example:
    >>> from raco_jax.train.failures import NonFiniteLossError, describe_failure
    >>> describe_failure(NonFiniteLossError({"loss": float("nan")}, step=3)).split(".")[0]
    'training stopped: non-finite metric at step 3: loss=nan'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["NonFiniteLossError", "describe_failure", "is_lost_process", "is_out_of_memory"]


class NonFiniteLossError(FloatingPointError):
    """A metric (usually the loss) became NaN or infinite.

    Attributes:
      names: the non-finite metrics' names.
      step: the step, if known.
      values: name -> the non-finite value.

    Example:
        >>> from raco_jax.train.failures import NonFiniteLossError
        >>> err = NonFiniteLossError({"loss": float("nan")}, step=7)
        >>> err.names, str(err)
        (('loss',), 'non-finite metric at step 7: loss=nan')
    """

    def __init__(self, values: Mapping[str, Any], step: int | None = None) -> None:
        self.values = dict(values)
        self.names = tuple(self.values)
        self.step = step
        where = "" if step is None else f" at step {step}"
        listed = ", ".join(f"{name}={_short(value)}" for name, value in self.values.items())
        plural = "s" if len(self.names) > 1 else ""
        super().__init__(f"non-finite metric{plural}{where}: {listed}")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        flat = np.asarray(value, dtype=np.float64).ravel()
        bad = int(np.sum(~np.isfinite(flat)))
        return f"[{bad} of {flat.size} non-finite]"
    return str(value)


_OOM_MARKERS = ("resource_exhausted", "out of memory", "oom when allocating", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) says the accelerator ran out of memory.

    Recognises XLA's ``RESOURCE_EXHAUSTED`` status (``jaxlib`` ``XlaRuntimeError``), messages
    mentioning "Out of memory", and Python's ``MemoryError``.

    Example:
        >>> from raco_jax.train.failures import is_out_of_memory
        >>> is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8GiB"))
        True
        >>> is_out_of_memory(ValueError("weights must sum to 1"))
        False
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return True
        text = str(current).lower()
        if any(marker in text for marker in _OOM_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


_LOST_PROCESS_MARKERS = (
    "heartbeat",
    "coordination service",
    "connection reset by peer",
    "gloo",
    "task has been restarted",
    "barrier timed out",
)


def is_lost_process(exc: BaseException) -> bool:
    """Whether an exception says a peer process of a multi-process run died or is unreachable.

    Recognises the messages of JAX's coordination service (missed heartbeats, failed barriers)
    and of the gloo collectives (a connection reset by a killed peer).

    Example:
        >>> from raco_jax.train.failures import is_lost_process
        >>> is_lost_process(RuntimeError("UNAVAILABLE: Task /job:jax_worker/task:1 heartbeat "
        ...                              "timeout"))
        True
        >>> is_lost_process(ValueError("weights must sum to 1"))
        False
    """
    text = str(exc).lower()
    return any(marker in text for marker in _LOST_PROCESS_MARKERS)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _oom_message(exc: BaseException, config: Any) -> str:
    def value(name: str, default: Any) -> Any:
        return getattr(config, name, default) if config is not None else default

    batch_size = value("batch_size", None)
    micro_batches = value("micro_batches", None)
    max_length = value("max_length", None)
    remat = value("remat", None)
    lora_rank = value("lora_rank", None)
    dtype = value("dtype", None)
    mesh = value("mesh", None)

    def now(current: Any) -> str:
        return "" if current is None else f" (now {current})"

    knobs = [
        "micro_batches: split each batch into more micro-batches (gradient accumulation, "
        "same effective batch)"
        + (f"; try --micro-batches {micro_batches * 2}" if micro_batches else "")
        + now(micro_batches),
        "remat: recompute activations in the backward pass instead of storing them"
        + ("; try --remat" if remat is False else "")
        + now(remat),
        "max_length: shorter sequences (and max_prompt_length)"
        + (f"; try --max-length {max(max_length // 2, 1)}" if max_length else "")
        + now(max_length),
        "batch_size: fewer pairs per step" + now(batch_size),
        "dtype: bfloat16 activations"
        + ("; try --dtype bfloat16" if dtype == "float32" else "")
        + now(dtype),
        "lora_rank: train LoRA adapters instead of every weight (no AdamW moments for the base)"
        + ("; try --lora-rank 16" if lora_rank == 0 else "")
        + now(lora_rank),
        "mesh fsdp: shard parameters and optimizer state over devices, e.g. --mesh 1,-1,1"
        + now(None if mesh is None else ",".join(str(m) for m in mesh)),
    ]
    return (
        "out of memory on the accelerator (XLA RESOURCE_EXHAUSTED): the parameters, optimizer "
        "state and activations of one step do not fit. Knobs that reduce memory:\n"
        + "\n".join(f"  - {knob}" for knob in knobs)
        + f"\nOriginal error: {_first_line(exc)}"
    )


def describe_failure(exc: BaseException, config: Any = None) -> str:
    """A clear, actionable message for the failures a run usually meets.

    - Out of memory (:func:`is_out_of_memory`): names the knobs that reduce memory
      (``batch_size``, ``micro_batches``, ``max_length``, ``remat``, ``lora_rank``, ``dtype``,
      the mesh's ``fsdp`` axis), with concrete flag values when ``config`` is given.
    - :class:`NonFiniteLossError`: which metric, at which step, and what to change.
    - ``KeyboardInterrupt``: how to resume.
    - A lost process of a multi-process run (:func:`is_lost_process`): restart them all with
      ``--resume``.
    - ``FileNotFoundError``: which file.
    - Anything else: the exception's type and first line.

    Args:
      exc: the exception.
      config: the run's :class:`~raco_jax.train.config.AlignConfig` (optional).

    Returns:
      The message (possibly several lines).

    Example:
        >>> from raco_jax.train.failures import describe_failure
        >>> err = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
        ...                    "17179869184 bytes.")
        >>> message = describe_failure(err)
        >>> message.splitlines()[0].startswith("out of memory on the accelerator")
        True
        >>> all(k in message for k in ("micro_batches", "remat", "max_length", "lora_rank"))
        True
        >>> describe_failure(KeyError("rows"))
        "KeyError: 'rows'"
    """
    if isinstance(exc, NonFiniteLossError):
        return (
            f"training stopped: {exc}. The last good checkpoint (finite metrics) is kept; "
            "resume from it with a lower learning_rate, a tighter max_grad_norm or a larger "
            "beta, and check the data around this step (empty or identical completions)."
        )
    if is_out_of_memory(exc):
        return _oom_message(exc, config)
    if is_lost_process(exc):
        return (
            "another process of this multi-process run stopped or cannot be reached (JAX's "
            "coordination service or the collectives lost it), so the run cannot go on: restart "
            "every process with --resume to continue from the last checkpoint. Original error: "
            + _first_line(exc)
        )
    if isinstance(exc, KeyboardInterrupt):
        return (
            "interrupted by the user; the latest finished checkpoint is kept: rerun the same "
            "command with --resume to continue from it."
        )
    if isinstance(exc, FileNotFoundError):
        missing = exc.filename if exc.filename else _first_line(exc)
        return f"file not found: {missing}"
    line = _first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
