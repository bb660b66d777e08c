"""Runs over several JAX processes (hosts): start-up, and a launcher for one machine.

A multi-process run is JAX's multi-controller runtime: every process runs the same program
(``raco-jax align --distributed ...``), :func:`initialize_distributed` connects them through a
coordinator, and one ``(data, fsdp, tensor)`` mesh spans the devices of all processes. Every
process tokenizes the same data and builds the same global batch on the host (the order is
seeded), and copies only the shards its own devices hold (:func:`raco_jax.train.mesh.shard_batch`);
orbax writes each checkpoint from all processes together; the run's files (``config.json``,
``metrics.jsonl``, TensorBoard events, ``summary.json``, ``final/``) are written by process 0.

Where the processes come from:

* TPU VMs, SLURM, Open MPI, ...: JAX detects the cluster; run the same command on every host
  with ``--distributed`` (``benchmarks/tpu/README.md``).
* By hand: set ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``RACO_JAX_NUM_PROCESSES``
  and ``RACO_JAX_PROCESS_ID`` (0 .. N-1) for each process.
* On one machine: :func:`launch` (``raco-jax launch --num-processes N [--devices-per-process D]
  -- align ... --distributed``) starts the N processes with those variables, shows process 0's
  output, writes the others' to ``<log-dir>/process-<i>.log``, and when one process fails or
  is killed, stops the others and says which one and how (then ``--resume`` continues the run).

Example:
    >>> from raco_jax.train.distributed import process_environment
    >>> env = process_environment(1, 2, "127.0.0.1:23456", devices_per_process=4)
    >>> env["RACO_JAX_PROCESS_ID"], env["RACO_JAX_NUM_PROCESSES"], env["JAX_COORDINATOR_ADDRESS"]
    ('1', '2', '127.0.0.1:23456')
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import jax

__all__ = [
    "ENV_COORDINATOR",
    "ENV_HEARTBEAT_TIMEOUT",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "initialize_distributed",
    "launch",
    "process_environment",
]

#: ``host:port`` of the coordinator (process 0); JAX's own variable.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
#: The number of processes of the run.
ENV_NUM_PROCESSES = "RACO_JAX_NUM_PROCESSES"
#: This process's index, 0 .. N-1.
ENV_PROCESS_ID = "RACO_JAX_PROCESS_ID"
#: Seconds without a heartbeat after which the others give up on a process (JAX's default: 100).
ENV_HEARTBEAT_TIMEOUT = "RACO_JAX_HEARTBEAT_TIMEOUT"


def initialize_distributed(environ: Mapping[str, str] | None = None) -> None:
    """Connects this process to the others of the run (``jax.distributed.initialize``).

    With :data:`ENV_NUM_PROCESSES` and :data:`ENV_PROCESS_ID` set (by :func:`launch` or by
    hand, with :data:`ENV_COORDINATOR`), they are passed on; otherwise JAX detects the cluster
    (TPU VMs, SLURM, ...). Must run before any JAX computation. Does nothing if the runtime is
    already initialised.

    Raises:
        ValueError: an incomplete or malformed set of variables (naming them).

    Example: ``raco-jax launch`` sets the variables; see the module docstring.
    """
    if jax.distributed.is_initialized():
        return
    environ = os.environ if environ is None else environ
    kwargs: dict[str, object] = {}
    if ENV_NUM_PROCESSES in environ or ENV_PROCESS_ID in environ:
        missing = [
            name
            for name in (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
            if not environ.get(name)
        ]
        if missing:
            raise ValueError(f"a multi-process run by hand needs {missing} set as well.")
        try:
            kwargs.update(
                coordinator_address=environ[ENV_COORDINATOR],
                num_processes=int(environ[ENV_NUM_PROCESSES]),
                process_id=int(environ[ENV_PROCESS_ID]),
            )
        except ValueError:
            raise ValueError(
                f"{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} must be integers, got "
                f"{environ[ENV_NUM_PROCESSES]!r} and {environ[ENV_PROCESS_ID]!r}."
            ) from None
    if environ.get(ENV_HEARTBEAT_TIMEOUT):
        kwargs["heartbeat_timeout_seconds"] = int(environ[ENV_HEARTBEAT_TIMEOUT])
    jax.distributed.initialize(**kwargs)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_environment(
    process_id: int,
    num_processes: int,
    coordinator: str,
    *,
    devices_per_process: int | None = None,
    heartbeat_timeout: int | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one process of a local multi-process run.

    Args:
        process_id: its index.
        num_processes: N.
        coordinator: ``host:port`` of process 0.
        devices_per_process: simulate this many CPU devices per process
            (``--xla_force_host_platform_device_count``, ``JAX_PLATFORMS=cpu``); None: the real
            devices (then each process should see its own, e.g. ``CUDA_VISIBLE_DEVICES``).
        heartbeat_timeout: seconds without a heartbeat before the others stop.
        base: the environment to start from (default: this process's).

    Returns:
        The environment.

    Example: see the module docstring.
    """
    env = dict(os.environ if base is None else base)
    env[ENV_COORDINATOR] = coordinator
    env[ENV_NUM_PROCESSES] = str(num_processes)
    env[ENV_PROCESS_ID] = str(process_id)
    if devices_per_process is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
        flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
        env["XLA_FLAGS"] = " ".join(flags)
        env["JAX_PLATFORMS"] = "cpu"
    if heartbeat_timeout is not None:
        env[ENV_HEARTBEAT_TIMEOUT] = str(heartbeat_timeout)
    return env


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def launch(
    argv: Sequence[str],
    num_processes: int,
    *,
    devices_per_process: int | None = None,
    port: int | None = None,
    log_dir: str | os.PathLike | None = None,
    heartbeat_timeout: int | None = None,
    poll_seconds: float = 0.2,
    program: Sequence[str] | None = None,
) -> int:
    """Runs ``raco-jax <argv>`` as ``num_processes`` processes of one run on this machine.

    Process 0 inherits the terminal; the others write to ``<log_dir>/process-<i>.log``
    (default: the current directory's ``raco_jax_launch/``), and each process's id goes to
    ``<log_dir>/process-<i>.pid``. If a process fails or is killed, the others are stopped
    (SIGTERM, then SIGKILL after 10 s) and a one-line message names it.

    Args:
        argv: the ``raco-jax`` arguments, e.g. ``["align", "--config", "run.yaml",
            "--distributed"]``.
        num_processes: N >= 1.
        devices_per_process: simulated CPU devices per process (see
            :func:`process_environment`).
        port: the coordinator's port on 127.0.0.1 (default: a free one).
        log_dir: where the other processes' output goes.
        heartbeat_timeout: seconds without a heartbeat before JAX gives up on a process.
        poll_seconds: how often the processes are checked.
        program: what to run with ``argv`` (default: ``python -m raco_jax.cli``), e.g. a script
            that wraps the command line.

    Returns:
        0 if every process succeeded; else the failing process's status (1 if it was killed).

    Example: ``raco-jax launch --num-processes 2 --devices-per-process 4 -- align --config
    run.yaml --mesh 2,4,1 --distributed``.
    """
    if num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1, got {num_processes}.")
    coordinator = f"127.0.0.1:{port or _free_port()}"
    logs = pathlib.Path(log_dir if log_dir is not None else "raco_jax_launch")
    logs.mkdir(parents=True, exist_ok=True)
    command = [*(program or (sys.executable, "-m", "raco_jax.cli")), *argv]
    processes: list[subprocess.Popen] = []
    outputs = []
    try:
        for i in range(num_processes):
            env = process_environment(
                i,
                num_processes,
                coordinator,
                devices_per_process=devices_per_process,
                heartbeat_timeout=heartbeat_timeout,
            )
            if i == 0:
                processes.append(subprocess.Popen(command, env=env))
            else:
                output = (logs / f"process-{i}.log").open("w")
                outputs.append(output)
                processes.append(
                    subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
                )
            (logs / f"process-{i}.pid").write_text(f"{processes[-1].pid}\n")
        while True:
            codes = [p.poll() for p in processes]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                index, code = failed[0]
                _stop(processes)
                where = "" if index == 0 else f" (its output: {logs / f'process-{index}.log'})"
                print(
                    f"raco-jax launch: process {index} of {num_processes} {_describe_exit(code)}"
                    f"{where}; the other processes were stopped. Rerun the same command with "
                    "--resume to continue from the last checkpoint.",
                    file=sys.stderr,
                    flush=True,
                )
                return code if code > 0 else 1
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        _stop(processes)
        raise
    finally:
        for output in outputs:
            output.close()


def _stop(processes: Sequence[subprocess.Popen], grace: float = 10.0) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + grace
    for p in processes:
        if p.poll() is None:
            try:
                p.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
