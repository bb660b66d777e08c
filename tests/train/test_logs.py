"""Run logs: JSONL and TensorBoard metrics, progress bar, summary, failure messages."""

from __future__ import annotations

import io
import json
import math
import pathlib
import re
import struct
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from raco_jax.train.config import AlignConfig
from raco_jax.train.failures import NonFiniteLossError, describe_failure, is_out_of_memory
from raco_jax.train.logs import RunLogger, check_finite

METRICS = {
    "loss": jnp.float32(0.5),
    "loss/helpful": jnp.float32(0.6),
    "rewards/helpful/accuracies": jnp.float32(0.75),
    "aggregation/cos_01": jnp.float32(-0.25),
    "aggregation/coefficients": jnp.asarray([0.7, 0.3], jnp.float32),
    "aggregation/num_conflicts": jnp.int32(1),
}


def _records(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _tensorboard_scalars(logdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """Reads scalar summaries from tensorboardX event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {logdir}"
    for file in files:
        data = file.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_jsonl_lines_hold_every_metric(tmp_path: pathlib.Path) -> None:
    with RunLogger(tmp_path, total_steps=25, log_every=10, progress=False) as logger:
        written = [logger.log(step, METRICS, tokens=100) for step in range(1, 26)]
        logger.log_eval(20, {"loss": jnp.float32(0.4), "rewards/helpful/accuracies": 0.8})
    assert [i + 1 for i, w in enumerate(written) if w] == [10, 20, 25]
    records = _records(tmp_path)
    assert [r["step"] for r in records] == [10, 20, 25, 20]
    train = records[0]
    for name in METRICS:
        assert name in train
    assert train["loss"] == pytest.approx(0.5)
    assert train["aggregation/coefficients"] == pytest.approx([0.7, 0.3])
    assert train["aggregation/num_conflicts"] == 1
    assert train["perf/tokens_per_second"] > 0 and train["perf/steps_per_second"] > 0
    assert train["wall_time"] > 1e9 and train["elapsed"] >= 0
    assert records[3]["eval_loss"] == pytest.approx(0.4)
    assert records[3]["eval_rewards/helpful/accuracies"] == pytest.approx(0.8)
    assert "loss" not in records[3]


def test_tensorboard_event_file(tmp_path: pathlib.Path) -> None:
    with RunLogger(tmp_path, log_every=2, progress=False) as logger:
        for step in range(1, 5):
            logger.log(step, {"loss": 1.0 / step, "rewards/helpful/accuracies": 0.5})
        logger.log_eval(4, {"loss": 0.3})
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert [s for s, _ in scalars["loss"]] == [2, 4]
    assert scalars["loss"][1][1] == pytest.approx(0.25)
    assert scalars["rewards/helpful/accuracies"][0] == (2, 0.5)
    assert scalars["eval_loss"] == [(4, pytest.approx(0.3))]


def test_tensorboard_missing_is_turned_off(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import raises ImportError
    with pytest.warns(UserWarning, match="tensorboardX is not installed"):
        logger = RunLogger(tmp_path, log_every=1, progress=False)
    assert logger.log(1, {"loss": 0.5})
    logger.close()
    assert not (tmp_path / "tensorboard").exists()
    assert _records(tmp_path)[0]["loss"] == 0.5


def test_progress_bar_shows_rates_and_postfix(tmp_path: pathlib.Path) -> None:
    bar = io.StringIO()
    logger = RunLogger(tmp_path, total_steps=10, log_every=5, tensorboard=False, progress_file=bar)
    for step in range(1, 6):
        logger.log(step, {"loss": 0.69, "grad_norm": 2.5, "other": 1.0}, tokens=4096)
    logger.log_eval(5, {"loss": 0.5})
    logger.close()
    text = bar.getvalue()
    assert "5/10" in text and ("step/s" in text or "s/step" in text)
    assert "<" in text  # tqdm's elapsed<ETA
    assert "loss=0.69" in text and "grad_norm=2.5" in text and "tok/s=" in text
    assert "other" not in text
    assert "eval @ step 5: eval_loss=0.5" in text


def test_summary_file_and_text(tmp_path: pathlib.Path) -> None:
    logger = RunLogger(tmp_path, total_steps=4, log_every=2, start_step=2, progress=False)
    for step in (3, 4):
        logger.log(step, METRICS, tokens=50)
    out = io.StringIO()
    summary = logger.summary(extra={"checkpoint": "ckpt/4"}, stream=out)
    logger.close()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["steps"] == 2 and summary["final_step"] == 4 and summary["tokens"] == 100
    assert summary["final_metrics"]["loss"] == pytest.approx(0.5)
    assert "perf/steps_per_second" not in summary["final_metrics"]
    assert summary["checkpoint"] == "ckpt/4" and summary["tokens_per_second"] > 0
    text = out.getvalue()
    assert text.startswith("run completed: 2 steps (2 -> 4)") and "tokens/s" in text
    assert "loss=0.5" in text and "summary.json" in text


def test_failure_inside_the_logger_is_summarised(tmp_path: pathlib.Path, capsys) -> None:
    with pytest.raises(NonFiniteLossError), RunLogger(tmp_path, progress=False) as logger:
        logger.log(1, {"loss": 1.0}, force=True)
        check_finite({"loss": jnp.float32(jnp.nan)}, step=2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "non-finite metric at step 2: loss=nan" in summary["error"]
    assert "last good checkpoint" in capsys.readouterr().out


def test_resume_drops_records_after_the_checkpoint(tmp_path: pathlib.Path) -> None:
    with RunLogger(tmp_path, log_every=1, progress=False, tensorboard=False) as logger:
        for step in range(1, 6):
            logger.log(step, {"loss": float(step)})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "loss"')  # a line cut short by a crash
    with RunLogger(
        tmp_path, log_every=1, start_step=3, progress=False, tensorboard=False
    ) as logger:
        logger.log(4, {"loss": 40.0})
    records = _records(tmp_path)
    assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_describe_failure_out_of_memory_names_the_knobs() -> None:
    error = jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes."
    )
    assert is_out_of_memory(error)
    message = describe_failure(error)
    for knob in (
        "batch_size",
        "micro_batches",
        "max_length",
        "remat",
        "lora_rank",
        "dtype",
        "fsdp",
    ):
        assert knob in message, knob
    assert "17179869184 bytes" in message
    config = AlignConfig(micro_batches=2, max_length=1024, max_prompt_length=512, dtype="float32")
    message = describe_failure(error, config)
    assert "--micro-batches 4" in message and "--max-length 512" in message
    assert "--dtype bfloat16" in message and "--remat" in message and "--lora-rank 16" in message
    # an OOM wrapped in another exception is still recognised
    try:
        try:
            raise error
        except RuntimeError as inner:
            raise ValueError("step failed") from inner
    except ValueError as outer:
        assert is_out_of_memory(outer)
        assert describe_failure(outer).startswith("out of memory")
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(ValueError("weights must sum to 1"))


def test_describe_failure_other_errors() -> None:
    assert "--resume" in describe_failure(KeyboardInterrupt())
    assert describe_failure(FileNotFoundError(2, "No such file", "data.jsonl")).endswith(
        "data.jsonl"
    )
    assert describe_failure(ValueError("weights must sum to 1\nmore")) == (
        "ValueError: weights must sum to 1"
    )
    nonfinite = describe_failure(NonFiniteLossError({"loss": math.inf}, step=9))
    assert "loss=inf" in nonfinite and "step 9" in nonfinite and "learning_rate" in nonfinite


def test_check_finite() -> None:
    host = check_finite({"loss": jnp.float32(0.5), "coefficients": jnp.ones(2), "n": 3})
    assert host == {"loss": 0.5, "coefficients": [1.0, 1.0], "n": 3}
    with pytest.raises(NonFiniteLossError, match=r"at step 4: loss=nan") as info:
        check_finite({"loss": jnp.float32(np.nan), "accuracy": 1.0}, step=4)
    assert info.value.names == ("loss",) and info.value.step == 4
    assert isinstance(info.value, FloatingPointError)
    with pytest.raises(NonFiniteLossError, match=r"grads=\[1 of 3 non-finite\]"):
        check_finite({"grads": jnp.asarray([1.0, jnp.inf, 2.0])})
    # only the named metrics are checked
    assert check_finite({"loss": 1.0, "aux": float("nan")}, names=["loss"])["loss"] == 1.0
    with pytest.raises(NonFiniteLossError, match="metrics at step 1: loss=nan, loss/b=-inf"):
        check_finite({"loss": float("nan"), "loss/b": float("-inf"), "ok": 0.0}, step=1)


def test_one_bar_after_the_run_and_metrics_from_the_first_step(tmp_path) -> None:
    """Issue 10: the final bar used to be printed three times around the last eval line, and
    the first step's bar had no metrics when step 1 was not a log step."""
    bar = io.StringIO()
    with RunLogger(
        tmp_path, total_steps=4, log_every=2, tensorboard=False, progress_file=bar
    ) as logger:
        for step in range(1, 5):
            time.sleep(0.15)  # past tqdm's mininterval (0.1 s): every step is drawn
            logger.log(step, {"loss": 0.7 - 0.01 * step, "grad_norm": 1.0}, tokens=100)
        logger.log_eval(4, {"loss": 0.5})
        logger.summary(stream=io.StringIO())
    text = bar.getvalue()
    renders = [r for r in re.split(r"[\r\n]", text) if r.strip()]
    first = next(r for r in renders if "1/4" in r)
    assert "loss=0.69" in first and "grad_norm=1" in first
    # what a terminal shows: each line as its last carriage-return overwrite left it
    screen = [line.split("\r")[-1] for line in text.split("\n") if line.split("\r")[-1].strip()]
    assert len(screen) == 2, screen
    assert "4/4" in screen[0] and screen[1].startswith("eval @ step 4: eval_loss=0.5")
