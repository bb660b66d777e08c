"""Multi-process runs, executed for real: 2 JAX processes on localhost (4 simulated CPU devices
each, gloo collectives), one (data, fsdp, tensor) mesh over the 8 devices, launched by
``raco-jax launch``; compared with one process over 8 devices, then killed and resumed."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
import pytest
from train.test_align import make_config, read_safetensors, records
from train.test_align import workspace as workspace  # the module-scoped fixture

from raco_jax.train import align
from raco_jax.train.distributed import launch, process_environment
from raco_jax.train.mesh import run_mesh

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
MESH = (2, 4, 1)

# The CLI with every logged step from the third on slowed down in process 1 (a long job).
SLOW_CLI = """
import os, sys, time
from raco_jax.train import logs
log = logs.RunLogger.log
def slow_log(self, step, *args, **kwargs):
    if step >= 3 and os.environ.get("RACO_JAX_PROCESS_ID") == "1":
        time.sleep(60)
    return log(self, step, *args, **kwargs)
logs.RunLogger.log = slow_log
from raco_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _environment() -> None:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)


@pytest.fixture(scope="module")
def runs(workspace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same 4-step run in one process (8 devices) and as 2 processes (4 devices each)."""
    root = tmp_path_factory.mktemp("multiprocess")
    config = make_config(
        workspace, root / "one", max_steps=4, save_every=2, batch_size=8, mesh=MESH,
        eval_fraction=0.25, log_every=1,
    )  # fmt: skip
    one = align(config, mesh=run_mesh(MESH), progress=False)
    config_file = root / "run.yaml"
    config_file.write_text(
        json.dumps({k: v for k, v in config.to_dict().items() if k != "output_dir"})
    )
    _environment()
    argv = ["align", "--config", str(config_file), "--distributed", "--quiet"]
    status = launch(
        [*argv, "--output-dir", str(root / "two")],
        2,
        devices_per_process=4,
        log_dir=root / "logs",
    )
    assert status == 0, (root / "logs" / "process-1.log").read_text()[-3000:]
    return {"root": root, "one": one, "argv": argv, "model_dir": workspace["model"]}


def test_two_processes_give_the_one_process_run(runs) -> None:
    root = runs["root"]
    one, two = records(root / "one"), records(root / "two")
    assert [r["step"] for r in two] == [r["step"] for r in one]  # written once (process 0)
    for a, b in zip(one, two, strict=True):
        for name in ("loss", "loss/helpful", "loss/harmless", "eval_loss"):
            if name in a:
                assert b[name] == pytest.approx(a[name], abs=1e-5), (a["step"], name)
    want, got = read_safetensors(root / "one" / "final"), read_safetensors(root / "two" / "final")
    start = read_safetensors(runs["model_dir"])
    assert set(want) == set(got) and set(want) <= set(start)
    # Across processes the gradients are summed in another order, so they agree to float32
    # rounding, not bit for bit. AdamW's first steps are lr_t * g / (|g| + eps), about
    # +-lr_t for EVERY entry with g != 0: an entry whose gradient is rounding noise (a sum that
    # cancels) moves by +-lr_t in either run, so it can differ by up to 2 sum_t lr_t. Such entries
    # are rare (1 of 8,704 embedding entries here, by 1.4e-5): every other entry agrees to 1e-5,
    # and each tensor's update to 1e-3 of its norm (measured: 1.3e-4, that one entry). A wrong
    # data slice or a missing all-reduce changes most entries' updates by O(lr): both fail.
    step_bound = 2 * sum(r["learning_rate"] for r in one if "learning_rate" in r)
    for key in want:
        diff = np.abs(got[key] - want[key])
        assert np.mean(diff > 1e-5) <= 1e-3, (key, int(np.sum(diff > 1e-5)), diff.size)
        assert np.max(diff) <= max(step_bound, 1e-5), (key, float(np.max(diff)))
        update = want[key] - start[key]
        assert np.linalg.norm(got[key] - want[key]) <= 1e-3 * np.linalg.norm(update), key
    checkpoints = sorted(p.name for p in (root / "two" / "checkpoints").iterdir())
    assert [c for c in checkpoints if c.isdigit()] == ["2", "4"]  # one checkpoint per save
    summary = json.loads((root / "two" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_step"] == 4


def test_a_killed_process_stops_the_run_and_resume_continues_exactly(runs, capfd) -> None:
    root, argv = runs["root"], runs["argv"]
    killed = root / "killed"
    logs = root / "killed-logs"
    outcome: dict[str, int] = {}

    def run() -> None:
        outcome["status"] = launch(
            [*argv, "--output-dir", str(killed)],
            2,
            devices_per_process=4,
            log_dir=logs,
            program=[sys.executable, "-c", SLOW_CLI],
        )

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.time() + 300
        while not (killed / "checkpoints" / "2").is_dir():
            assert thread.is_alive(), "the run ended before its second checkpoint"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.2)
        time.sleep(1.0)
        pid = int((logs / "process-1.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=60)
    finally:
        if thread.is_alive():  # pragma: no cover - stop the processes before failing
            for i in range(2):
                try:
                    os.kill(int((logs / f"process-{i}.pid").read_text()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            thread.join()
    assert outcome["status"] == 1
    err = capfd.readouterr().err
    assert "process 1 of 2 was killed by SIGKILL" in err and "--resume" in err
    assert not (killed / "final").exists()

    status = launch(
        [*argv, "--output-dir", str(killed), "--resume"], 2, devices_per_process=4, log_dir=logs
    )
    assert status == 0, (logs / "process-1.log").read_text()[-3000:]
    want = read_safetensors(root / "two" / "final")
    got = read_safetensors(killed / "final")
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-6, rtol=0)
    steps = [r["step"] for r in records(killed) if "loss" in r]
    assert steps == [1, 2, 3, 4]  # the killed run's records continue without duplicates


def test_process_environment_and_bad_variables() -> None:
    env = process_environment(0, 2, "127.0.0.1:1234", devices_per_process=4, base={})
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
    assert env["JAX_PLATFORMS"] == "cpu" and env["RACO_JAX_NUM_PROCESSES"] == "2"
    from raco_jax.train.distributed import initialize_distributed

    if not jax.distributed.is_initialized():
        with pytest.raises(ValueError, match="JAX_COORDINATOR_ADDRESS"):
            initialize_distributed({"RACO_JAX_NUM_PROCESSES": "2", "RACO_JAX_PROCESS_ID": "0"})
