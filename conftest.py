"""Pytest hooks for the whole repository: tests/ and the doctests under raco_jax/.

The environment (offline Hugging Face, 8 simulated devices, compilation cache) is set in
tests/conftest.py; nothing here imports JAX before it does.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest

# Every executable XLA:CPU compiles (or loads from the persistent cache) keeps its machine code
# in memory maps of its own: 300-400 for one CAGrad dual (K = 2..8), so a worker that runs a few
# hundred tests holds tens of thousands. Linux refuses new maps past vm.max_map_count (65530 by
# default) and XLA then dies in LLVM ("Cannot allocate memory", an abort) or in deserialising a
# cached executable (a segfault), killing the pytest worker. The guard below drops JAX's
# compilation caches, which unmaps them, whenever half of that limit is in use
# (RACO_JAX_REPORT_MAPS=FILE appends a line to FILE each time it does: pytest captures the
# workers' stderr).
_MAPS = "/proc/self/maps"
_MAX_MAP_COUNT = "/proc/sys/vm/max_map_count"


def _map_limit() -> int | None:
    try:
        with open(_MAX_MAP_COUNT) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None  # not Linux: no per-process map limit to guard


_LIMIT = _map_limit()


def _maps_in_use() -> int:
    with open(_MAPS, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _LIMIT is None or "jax" not in sys.modules or _maps_in_use() < _LIMIT // 2:
        return
    sys.modules["jax"].clear_caches()
    gc.collect()
    report = os.environ.get("RACO_JAX_REPORT_MAPS")
    if report:
        with open(report, "a") as f:
            f.write(f"pid {os.getpid()}: JAX caches cleared after {item.nodeid}, ")
            f.write(f"{_maps_in_use()} maps in use\n")
