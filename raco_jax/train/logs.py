"""The run's logs: JSONL and TensorBoard metrics, a progress bar, a summary, clear failures.

:class:`RunLogger` is what the training loop talks to. Every step it advances a progress bar
(steps/s, tokens/s, ETA, and the loss and a few key metrics as postfix); every ``log_every``
steps it writes the metrics, under the names they are given (``"loss"``,
``"rewards/helpful/accuracies"``, ``"aggregation/cos/helpful/harmless"``), as one JSON object per
line of ``metrics.jsonl`` and as TensorBoard scalars (if ``tensorboardX`` is installed).
Evaluation metrics get the ``eval_`` prefix (the TRL convention: ``eval_loss``). At the end,
:meth:`RunLogger.summary` writes ``summary.json`` and prints a few lines.

:func:`check_finite` raises :class:`~raco_jax.train.failures.NonFiniteLossError` naming the
metric that turned NaN or infinite (so the loop can stop and keep its last good checkpoint);
:mod:`raco_jax.train.failures` turns the usual failures into messages a user can act on.

Example:
    >>> import json, tempfile, pathlib
    >>> from raco_jax.train.logs import RunLogger
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> with RunLogger(out, total_steps=4, log_every=2, progress=False) as logger:
    ...     for step in range(1, 5):
    ...         _ = logger.log(step, {"loss": 1.0 / step, "rewards/helpful/accuracies": 0.5},
    ...                        tokens=256)
    ...     _ = logger.log_eval(4, {"loss": 0.3})
    ...     summary = logger.summary(print_text=False)
    >>> [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    [2, 4, 4]
    >>> summary["steps"], summary["tokens"], summary["final_eval_metrics"]
    (4, 1024, {'eval_loss': 0.3})
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Any

import jax
import numpy as np

from raco_jax.train.failures import NonFiniteLossError, describe_failure

__all__ = ["RunLogger", "check_finite"]

EVAL_PREFIX = "eval_"


# -- metrics to host values ---------------------------------------------------------------


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, key + "/"))
        else:
            flat[key] = value
    return flat


def _to_host(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics as Python numbers (scalars) or lists (arrays), fetched from devices at once."""
    flat = _flatten(metrics)
    arrays = [v for v in flat.values() if hasattr(v, "__array__") and not isinstance(v, np.ndarray)]
    if arrays:
        fetched = iter(jax.device_get(arrays))
        flat = {
            k: next(fetched) if hasattr(v, "__array__") and not isinstance(v, np.ndarray) else v
            for k, v in flat.items()
        }
    host: dict[str, Any] = {}
    for name, value in flat.items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            host[name] = value
            continue
        array = np.asarray(value)
        host[name] = array.item() if array.size == 1 else array.tolist()
    return host


def _nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_nonfinite(v) for v in value)
    return False


# -- failures -----------------------------------------------------------------------------


def check_finite(
    metrics: Mapping[str, Any],
    *,
    step: int | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Raises :class:`NonFiniteLossError` if any (selected) metric is NaN or infinite.

    Fetches the metrics from the devices (one transfer), so call it on the steps where the
    metrics are read anyway (every ``log_every`` steps, and before each checkpoint).

    Args:
      metrics: name -> scalar or array (jax, numpy or Python); nested dicts are joined with "/".
      step: the step, for the message.
      names: only check these metrics (default: all); missing names are ignored.

    Returns:
      The metrics as Python values (scalars as floats/ints, arrays as lists).

    Example:
        >>> import jax.numpy as jnp
        >>> from raco_jax.train.logs import check_finite
        >>> check_finite({"loss": jnp.float32(0.5)})
        {'loss': 0.5}
        >>> check_finite({"loss": jnp.float32(0.5), "loss/helpful": jnp.nan}, step=3)
        Traceback (most recent call last):
        ...
        raco_jax.train.failures.NonFiniteLossError: non-finite metric at step 3: loss/helpful=nan
    """
    host = _to_host(metrics)
    selected = host if names is None else {n: host[n] for n in names if n in host}
    bad = {name: value for name, value in selected.items() if _nonfinite(value)}
    if bad:
        raise NonFiniteLossError(bad, step=step)
    return host


# -- the logger ---------------------------------------------------------------------------


def _write_json_atomically(path: pathlib.Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return f"[{len(value)}]"
    return str(value)


def _format_rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.3g}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.3g}k"
    return f"{rate:.3g}"


class RunLogger:
    """Metrics to JSONL and TensorBoard, a tqdm progress bar, and the run summary.

    Files in ``output_dir``: ``metrics.jsonl`` (one object per logged step: ``step``,
    ``wall_time`` (Unix time), ``elapsed`` (seconds since the logger started), throughput as
    ``perf/steps_per_second`` and ``perf/tokens_per_second``, then every metric under its own
    name), ``tensorboard/`` (event files; scalar metrics only, arrays go to the JSONL file) and
    ``summary.json``. Records of an earlier run in the
    same directory at steps after ``start_step`` are dropped, so a resumed run's logs continue
    its checkpoint's trajectory without duplicates.

    Non-finite values are written as JSON ``NaN``/``Infinity`` (what Python's :mod:`json`
    reads back).

    Args:
      output_dir: the run's directory (created if missing).
      total_steps: the run's last step, for the progress bar's ETA (None: unknown).
      log_every: write metrics every this many steps (and at ``total_steps``); 0: only when
        :meth:`log` is called with ``force=True``.
      start_step: the step the run starts from (the restored checkpoint's; 0 for a new run).
      tensorboard: also write TensorBoard events; if ``tensorboardX`` is not installed this is
        turned off with a warning.
      progress: show a tqdm progress bar (turned off if tqdm is not installed).
      postfix: the metrics shown after the bar, when present (plus tokens/s).
      progress_file: where the bar and eval lines go (default: stderr).
      write: write the files; False keeps the metrics in memory only (the processes other than
        process 0 of a multi-process run, which share its directory).

    Example:
        >>> import tempfile
        >>> from raco_jax.train.logs import RunLogger
        >>> logger = RunLogger(tempfile.mkdtemp(), log_every=10, progress=False,
        ...                    tensorboard=False)
        >>> logger.log(5, {"loss": 0.7}), logger.log(10, {"loss": 0.6})
        (False, True)
        >>> logger.last_metrics["loss"]
        0.6
        >>> logger.close()
    """

    def __init__(
        self,
        output_dir: str | pathlib.Path,
        *,
        total_steps: int | None = None,
        log_every: int = 10,
        start_step: int = 0,
        tensorboard: bool = True,
        progress: bool = True,
        postfix: Sequence[str] = ("loss", "grad_norm", "learning_rate"),
        progress_file: IO[str] | None = None,
        write: bool = True,
    ) -> None:
        if log_every < 0:
            raise ValueError(f"log_every must be >= 0 (0: only forced logs), got {log_every}.")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}.")
        if total_steps is not None and total_steps < start_step:
            raise ValueError(
                f"total_steps ({total_steps}) must be >= start_step ({start_step}) or None."
            )
        self.output_dir = pathlib.Path(output_dir)
        if write:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.output_dir / "metrics.jsonl"
        self.summary_path = self.output_dir / "summary.json"
        self.tensorboard_dir = self.output_dir / "tensorboard"
        self.total_steps = total_steps
        self.log_every = int(log_every)
        self.start_step = int(start_step)
        self.postfix = tuple(postfix)
        self.last_metrics: dict[str, Any] = {}
        self.last_eval_metrics: dict[str, Any] = {}
        self.step = self.start_step
        self.tokens = 0
        self.summary_written = False
        self._closed = False
        self._start = time.perf_counter()
        self._window_start = self._start
        self._window_step = self.start_step
        self._window_tokens = 0

        self.write = bool(write)
        self._jsonl: IO[str] | None = None
        if self.write:
            self._trim_previous_records()
            self._jsonl = self.jsonl_path.open("a", encoding="utf-8")

        self._writer: Any = None
        if tensorboard and self.write:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                warnings.warn(
                    "tensorboardX is not installed, so TensorBoard logging is off "
                    "(pip install tensorboardX); metrics still go to metrics.jsonl.",
                    stacklevel=2,
                )
            else:
                self._writer = SummaryWriter(
                    logdir=str(self.tensorboard_dir),
                    purge_step=self.start_step + 1,
                    flush_secs=30,
                )

        self._bar: Any = None
        self._bar_to = self.start_step
        self._postfix_shown = False
        self._progress_file = progress_file
        if progress:
            try:
                from tqdm import tqdm
            except ImportError:
                warnings.warn("tqdm is not installed; no progress bar.", stacklevel=2)
            else:
                self._bar = tqdm(
                    total=total_steps,
                    initial=self.start_step,
                    unit="step",
                    dynamic_ncols=True,
                    file=progress_file,
                    smoothing=0.1,
                )

    # -- internals -------------------------------------------------------------------------

    def _trim_previous_records(self) -> None:
        if not self.jsonl_path.exists():
            return
        kept = []
        for line in self.jsonl_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(record, dict) and record.get("step", math.inf) <= self.start_step:
                kept.append(line + "\n")
        tmp = self.jsonl_path.with_name(self.jsonl_path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.jsonl_path)

    def _write(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {
            "step": int(step),
            "wall_time": time.time(),
            "elapsed": round(time.perf_counter() - self._start, 6),
            **metrics,
        }
        if self._jsonl is None:
            return
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (bool, int, float)):
                    self._writer.add_scalar(name, float(value), int(step))

    def _count(self, step: int, tokens: int) -> None:
        self._bar_to = max(self._bar_to, step)
        self.step = max(self.step, step)
        self.tokens += tokens
        self._window_tokens += tokens

    def _render(self) -> None:
        """Moves the bar to the last counted step (after its postfix is set)."""
        if self._bar is not None and self._bar_to > self._bar.n:
            self._bar.update(self._bar_to - self._bar.n)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._render()
            self._bar.close()
            self._bar = None

    def _set_postfix(self, host: Mapping[str, Any]) -> None:
        if self._bar is None:
            return
        postfix = {name: _format_value(host[name]) for name in self.postfix if name in host}
        if "perf/tokens_per_second" in host:
            postfix["tok/s"] = _format_rate(host["perf/tokens_per_second"])
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
            self._postfix_shown = True

    # -- the loop's interface --------------------------------------------------------------

    def should_log(self, step: int) -> bool:
        """Whether :meth:`log` writes metrics at ``step``.

        Example:
            >>> import tempfile
            >>> from raco_jax.train.logs import RunLogger
            >>> logger = RunLogger(tempfile.mkdtemp(), total_steps=25, log_every=10,
            ...                    progress=False, tensorboard=False)
            >>> [s for s in range(1, 26) if logger.should_log(s)]
            [10, 20, 25]
        """
        if self.total_steps is not None and step == self.total_steps:
            return True
        return self.log_every > 0 and step % self.log_every == 0

    def log(
        self,
        step: int,
        metrics: Mapping[str, Any] | None = None,
        *,
        tokens: int = 0,
        force: bool = False,
    ) -> bool:
        """Records one finished step; writes the metrics if it is a log step (or ``force``).

        Call it every step: it advances the progress bar and counts ``tokens``; the metrics
        (device arrays are fine) are only fetched from the devices on log steps, so the other
        steps do not wait for the accelerator.

        Args:
          step: the step just finished (1-based, counting from the run's very start).
          metrics: name -> scalar or array; nested dicts are joined with "/".
          tokens: the tokens this step processed (non-padding), for tokens/s.
          force: write even if it is not a log step.

        Returns:
          True if the metrics were written.

        Example:
            >>> import io, tempfile
            >>> from raco_jax.train.logs import RunLogger
            >>> bar = io.StringIO()
            >>> logger = RunLogger(tempfile.mkdtemp(), total_steps=2, log_every=1,
            ...                    tensorboard=False, progress_file=bar)
            >>> logger.log(1, {"loss": 0.69, "grad_norm": 1.5}, tokens=1000)
            True
            >>> logger.close()
            >>> "loss=0.69" in bar.getvalue() and "tok/s" in bar.getvalue()
            True
        """
        step = int(step)
        self._count(step, int(tokens))
        if metrics is None or not (force or self.should_log(step)):
            if metrics is not None and self._bar is not None and not self._postfix_shown:
                # the first step's bar shows its metrics too (one fetch, once per run)
                self._set_postfix(_to_host({n: metrics[n] for n in self.postfix if n in metrics}))
            self._render()
            return False
        now = time.perf_counter()
        window = max(now - self._window_start, 1e-9)
        host = _to_host(metrics)
        perf: dict[str, Any] = {"perf/steps_per_second": (step - self._window_step) / window}
        if self._window_tokens:
            perf["perf/tokens_per_second"] = self._window_tokens / window
        host = {**{k: v for k, v in perf.items() if k not in host}, **host}
        self._write(step, host)
        self.last_metrics = host
        self._set_postfix(host)
        self._render()
        self._window_start, self._window_step, self._window_tokens = now, step, 0
        return True

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Writes evaluation metrics, prefixed ``eval_`` (``loss`` -> ``eval_loss``).

        Args:
          step: the training step the evaluation was made at.
          metrics: name -> scalar or array; names already starting with ``eval_`` are kept.

        Returns:
          The prefixed metrics as Python values.

        Example:
            >>> import tempfile
            >>> from raco_jax.train.logs import RunLogger
            >>> logger = RunLogger(tempfile.mkdtemp(), progress=False, tensorboard=False)
            >>> logger.log_eval(100, {"loss": 0.5, "rewards/helpful/accuracies": 0.75})
            {'eval_loss': 0.5, 'eval_rewards/helpful/accuracies': 0.75}
            >>> logger.close()
        """
        host = _to_host(metrics)
        prefixed = {
            (name if name.startswith(EVAL_PREFIX) else EVAL_PREFIX + name): value
            for name, value in host.items()
        }
        self._write(int(step), prefixed)
        self.last_eval_metrics = prefixed
        if self._bar is not None:
            shown = " ".join(f"{k}={_format_value(v)}" for k, v in list(prefixed.items())[:6])
            line = f"eval @ step {step}: {shown}"
            if self.total_steps is not None and step >= self.total_steps:
                self._close_bar()  # the run is over: the bar stays once, the line below it
                print(line, file=self._progress_file or sys.stderr, flush=True)
            else:
                self._bar.write(line, file=self._progress_file)
        return prefixed

    def summary(
        self,
        *,
        status: str = "completed",
        extra: Mapping[str, Any] | None = None,
        print_text: bool = True,
        stream: IO[str] | None = None,
    ) -> dict[str, Any]:
        """Writes ``summary.json`` and prints a short text: steps, wall time, throughput, metrics.

        Args:
          status: ``"completed"``, ``"failed"``, ``"interrupted"``, ...
          extra: more JSON-ready entries (e.g. the checkpoint path, the failure message).
          print_text: print the text to ``stream``.
          stream: where to print (default: stdout).

        Returns:
          The summary dict.

        Example:
            >>> import io, tempfile
            >>> from raco_jax.train.logs import RunLogger
            >>> logger = RunLogger(tempfile.mkdtemp(), log_every=1, progress=False,
            ...                    tensorboard=False)
            >>> _ = logger.log(1, {"loss": 0.5}, tokens=10)
            >>> out = io.StringIO()
            >>> summary = logger.summary(stream=out)
            >>> summary["status"], summary["final_metrics"]["loss"]
            ('completed', 0.5)
            >>> out.getvalue().splitlines()[0].startswith("run completed: 1 steps (0 -> 1)")
            True
        """
        wall = time.perf_counter() - self._start
        steps = self.step - self.start_step
        summary: dict[str, Any] = {
            "status": status,
            "steps": steps,
            "start_step": self.start_step,
            "final_step": self.step,
            "total_steps": self.total_steps,
            "wall_time_seconds": wall,
            "steps_per_second": steps / wall if wall > 0 else 0.0,
            "tokens": self.tokens,
            "tokens_per_second": self.tokens / wall if wall > 0 else 0.0,
            "final_metrics": {
                k: v for k, v in self.last_metrics.items() if not k.startswith("perf/")
            },
            "final_eval_metrics": dict(self.last_eval_metrics),
            **dict(extra or {}),
        }
        if self.write:
            _write_json_atomically(self.summary_path, summary)
        self.summary_written = True
        if print_text:
            self._close_bar()  # once, before the summary text (not again after it)
            lines = [
                f"run {status}: {steps} steps ({self.start_step} -> {self.step}) in {wall:.1f} s, "
                f"{summary['steps_per_second']:.3g} steps/s, "
                f"{_format_rate(summary['tokens_per_second'])} tokens/s"
            ]
            for label, values in (
                ("final", summary["final_metrics"]),
                ("eval", summary["final_eval_metrics"]),
            ):
                scalars = {k: v for k, v in values.items() if not isinstance(v, list)}
                if scalars:
                    shown = [f"{k}={_format_value(v)}" for k, v in list(scalars.items())[:8]]
                    more = len(scalars) - len(shown)
                    lines.append(
                        f"{label}: " + " ".join(shown) + (f" (+{more} more)" if more > 0 else "")
                    )
            if "error" in summary:
                lines.append(f"error: {summary['error']}")
            lines.append(f"summary: {self.summary_path}")
            print("\n".join(lines), file=stream if stream is not None else sys.stdout)
        return summary

    def close(self) -> None:
        """Flushes and closes the JSONL file, the TensorBoard writer and the progress bar.

        Example:
            >>> import tempfile
            >>> from raco_jax.train.logs import RunLogger
            >>> logger = RunLogger(tempfile.mkdtemp(), progress=False, tensorboard=False)
            >>> logger.close(); logger.close()  # closing twice is fine
        """
        if self._closed:
            return
        self._closed = True
        self._close_bar()
        if self._jsonl is not None:
            self._jsonl.flush()
            self._jsonl.close()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """On an exception, writes a summary with the failure (unless one was written)."""
        try:
            if exc is not None and not self.summary_written:
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                self.summary(status=status, extra={"error": describe_failure(exc)})
        finally:
            self.close()
