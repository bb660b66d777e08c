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


def test_gram_crossover_rows_name_the_path_and_report() -> None:
    rows = aggregators.bench_gram_crossover([2], [1024, 1 << 17], repeats=1, entries=1 << 18)
    # On CPU (this suite) gram_matrix takes XLA's dot for small leaves and the chunked
    # reduction from 2^17 entries per objective at K <= 4.
    assert [(r["size"], r["path"]) for r in rows] == [(1024, "dot"), (1 << 17, "chunked")]
    assert [r["leaves"] for r in rows] == [64, 2]  # entries // size, at most 64
    for r in rows:
        assert r["gram_matrix_ms"] > 0 and r["dot_ms"] > 0 and r["per_pair_ms"] > 0
        assert r["ratio"] == pytest.approx(r["gram_matrix_ms"] / r["dot_ms"])
    # The timed alternative computes the same upper triangle.
    x = np.random.default_rng(0).standard_normal((3, 1024)).astype(np.float32)
    expected = (x.astype(np.float64) @ x.T.astype(np.float64))[np.triu_indices(3)]
    np.testing.assert_allclose(aggregators._per_pair_sums(jnp.asarray(x)), expected, rtol=1e-5,
                               atol=1e-4)  # fmt: skip
    meta = {"machine": "m", "jax": "0", "backend": "cpu", "devices": "cpu", "dtype": "float32",
            "repeats": 1, "date": "2026-12-07"}  # fmt: skip
    text = aggregators.report([], [], {}, meta, crossover_rows=rows)
    assert "| 2 | 131072 | 2 | chunked |" in text and "| 2 | 1024 | 64 | dot |" in text
    assert "per-pair sums (YNNPACK)" in text


def test_streamed_bytes_count_each_pass_over_the_stack() -> None:
    # K = 4, P = 1000 float32: the Gram reads 4P; the weighted sum reads 4P and writes P; a
    # Gram-based update reads the stack twice and writes P.
    assert aggregators._streamed_bytes("gram_matrix alone", 4, 1000, jnp.float32) == 16_000
    assert aggregators._streamed_bytes("weighted_sum (baseline)", 4, 1000, jnp.float32) == 20_000
    assert aggregators._streamed_bytes("clipped_cagrad", 4, 1000, jnp.bfloat16) == 18_000
