"""benchmarks/demo_seeds.py without the demo itself (tests/demo runs that): the statistics over
seeds, the report, and the resumable loop, with ``run_demo`` replaced by a stub that writes what
the real one writes. The real multi-seed run is not a test."""

from __future__ import annotations

import doctest
import json
import math
import pathlib
from typing import Any

import pytest
from benchmark_scripts import load

import raco_jax.demo

demo_seeds = load("demo_seeds")


def _result(raco: float, dpo_lw: float, cagrad: float) -> dict[str, Any]:
    return {
        "hypervolumes_vs_worst": {"raco": raco, "dpo-lw": dpo_lw, "cagrad": cagrad},
        "timings_s": {"total": 12.0},
    }


def test_docstring_examples() -> None:
    result = doctest.testmod(demo_seeds)
    assert result.attempted >= 3 and result.failed == 0


def test_summary_statistics_match_numpy() -> None:
    results = {
        0: _result(0.40, 0.38, 0.41),
        1: _result(0.42, 0.43, 0.40),
        2: _result(0.45, 0.41, 0.44),
    }
    summary = demo_seeds.summarize(results)
    diff = [0.02, -0.01, 0.04]
    d = summary["differences"]["raco - dpo-lw"]
    assert d["per_seed"] == pytest.approx(diff)
    mean = sum(diff) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in diff) / 2 / 3)
    assert d["mean"] == pytest.approx(mean) and d["se"] == pytest.approx(se)
    assert d["z"] == pytest.approx(mean / se) and d["wins"] == 2 and d["seeds"] == 3
    assert summary["hypervolume"]["cagrad"]["mean"] == pytest.approx((0.41 + 0.40 + 0.44) / 3)
    assert summary["ranks"] == {"raco": 1, "dpo-lw": 1, "cagrad": 1}
    # One seed: no spread, and the report says so rather than inventing one.
    one = demo_seeds.summarize({3: _result(0.4, 0.4, 0.4)})
    assert math.isnan(one["hypervolume"]["raco"]["se"]) and math.isnan(
        one["differences"]["raco - dpo-lw"]["z"]
    )
    with pytest.raises(ValueError, match="no demo results"):
        demo_seeds.summarize({})


def test_main_runs_missing_seeds_only_and_writes_the_report(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_run_demo(output_dir, *, quick, seed, num_objectives, progress):
        calls.append((seed, quick, num_objectives))
        result = _result(0.40 + 0.01 * seed, 0.40, 0.39)
        out = pathlib.Path(output_dir)
        out.mkdir(parents=True)
        (out / "run_config.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(raco_jax.demo, "run_demo", fake_run_demo)
    argv = ["--seeds", "2", "--quick", "--output-dir", str(tmp_path)]
    assert demo_seeds.main(argv) == 0
    assert calls == [(0, True, 2), (1, True, 2)]
    # A rerun with one more seed runs only the new one and reads the others back.
    assert demo_seeds.main(["--seeds", "3", *argv[2:]]) == 0
    assert calls[2:] == [(2, True, 2)]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["seeds"] == [0, 1, 2] and report["quick"] is True
    assert report["differences"]["raco - dpo-lw"]["per_seed"] == pytest.approx([0.0, 0.01, 0.02])
    assert report["differences"]["raco - cagrad"]["wins"] == 3
    text = (tmp_path / "report.md").read_text()
    assert "| 2 | 0.4200 | 0.4000 | 0.3900 | 12 |" in text
    assert "raco - cagrad: +0.0200 ± 0.0058" in text


def test_rejects_no_seeds() -> None:
    with pytest.raises(SystemExit):
        demo_seeds.parse_args(["--seeds", "0"])
