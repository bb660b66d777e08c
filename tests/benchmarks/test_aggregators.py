"""The pieces of benchmarks/aggregators.py on tiny inputs: the stacked test gradients, the dual
timings in their three forms (in a jitted program, per call, under vmap) and their report. The
timings themselves are never asserted; the real run is not a test."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from benchmark_scripts import load

aggregators = load("aggregators")


def test_stacked_tree_has_the_requested_size_over_mixed_leaves() -> None:
    tree = aggregators.stacked_tree(3, 200_000, jnp.float32)
    assert len(tree) == aggregators.LEAVES
    sizes = [int(np.prod(leaf.shape[1:])) for leaf in tree.values()]
    assert all(leaf.shape[0] == 3 for leaf in tree.values())
    assert 0.95 * 200_000 <= sum(sizes) <= 200_000 and max(sizes) > 10 * min(sizes)


def test_solver_timings_and_their_report() -> None:
    rows = aggregators.bench_solver([2, 3], batch=3, repeats=1, calls=2)
    assert [r["K"] for r in rows] == [2, 3] and [r["supports"] for r in rows] == [3, 7]
    for r in rows:
        for key in ("in_program_us", "in_program_enumeration_us", "single_call_us",
                    "single_enumeration_us", "dispatch_floor_us", "us_per_matrix"):  # fmt: skip
            assert r[key] > 0 and np.isfinite(r[key]), key
        assert r["us_per_matrix"] == pytest.approx(1e3 * r["batch_ms"] / 3)
    meta = {"machine": "m", "jax": "0", "backend": "cpu", "devices": "cpu", "dtype": "float32",
            "repeats": 1, "date": "2026-12-06"}  # fmt: skip
    text = aggregators.report([], rows, {}, meta)
    assert "in a jitted program, us per solve" in text and "vmap over 3 matrices" in text
    assert f"| 3 | 7 | {rows[1]['in_program_us']:.1f} |" in text
