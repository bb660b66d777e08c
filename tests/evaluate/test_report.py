"""Front reports: files exist, tables and JSON match the inputs, hypervolumes match pareto."""

from __future__ import annotations

import csv
import json
import pathlib
import struct
from typing import Any

import numpy as np
import pytest

from raco_jax.evaluate.pareto import hypervolume
from raco_jax.evaluate.report import (
    FrontReport,
    front_table,
    method_hypervolumes,
    plot_fronts,
    write_front_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OBJECTIVES_2 = ("helpfulness", "harmlessness")
OBJECTIVES_3 = ("helpfulness", "harmlessness", "conciseness")


def sweep(objectives: tuple[str, ...], *, stderr: bool, seed: int = 0) -> list[dict[str, Any]]:
    """Two methods over a few weight vectors; RACO's front dominates the baseline's."""
    rng = np.random.default_rng(seed)
    results = []
    for method, shift in (("raco", 0.1), ("dpo_lw", 0.0)):
        for w in (0.1, 0.3, 0.5, 0.7, 0.9):
            weights = (w, 1 - w) if len(objectives) == 2 else (w, (1 - w) / 2, (1 - w) / 2)
            scores = {
                name: float(np.sqrt(weight) + shift + 0.01 * rng.normal())
                for name, weight in zip(objectives, weights, strict=True)
            }
            result: dict[str, Any] = {"method": method, "weights": weights, "scores": scores}
            if stderr:
                result["stderr"] = {name: 0.01 + 0.001 * k for k, name in enumerate(objectives)}
            results.append(result)
    return results


def png_size(path: pathlib.Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("objectives", [OBJECTIVES_2, OBJECTIVES_3])
def test_write_front_report(tmp_path: pathlib.Path, objectives: tuple[str, ...]) -> None:
    results = sweep(objectives, stderr=True)
    reference = (0.0,) * len(objectives)
    normalize = ((0.0,) * len(objectives), (2.0,) * len(objectives))
    report = write_front_report(
        results, tmp_path / "out", reference=reference, normalize=normalize, title="sweep"
    )
    assert isinstance(report, FrontReport)
    assert set(report.paths) == {"plot", "csv", "markdown", "json"}
    for path in report.paths.values():
        assert path.is_file() and path.stat().st_size > 0 and path.parent == tmp_path / "out"

    # PNG: a valid image of a sensible size
    width, height = png_size(report.paths["plot"])
    assert width > 200 and height > 200
    if len(objectives) == 3:
        assert width > 2 * height  # three pairwise panels side by side

    # hypervolumes match pareto.hypervolume, method by method
    for method in ("raco", "dpo_lw"):
        points = [[r["scores"][n] for n in objectives] for r in results if r["method"] == method]
        expected = hypervolume(points, reference, normalize=normalize)
        assert report.hypervolumes[method] == expected.value
        assert report.details[method] == expected
    assert report.hypervolumes["raco"] > report.hypervolumes["dpo_lw"]
    assert report.reference == reference and report.normalize == normalize
    assert report.objectives == objectives

    # CSV: one row per result, values round-trip exactly
    with report.paths["csv"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(results)
    for row, result in zip(rows, results, strict=True):
        assert row["method"] == result["method"]
        for name, weight in zip(objectives, result["weights"], strict=True):
            assert float(row[f"weight_{name}"]) == weight
        for name in objectives:
            assert float(row[name]) == result["scores"][name]
            assert float(row[f"stderr_{name}"]) == result["stderr"][name]
        assert row["on_method_front"] in ("True", "False")

    # JSON: states the conventions and repeats the inputs
    summary = json.loads(report.paths["json"].read_text())
    assert summary["objectives"] == list(objectives)
    assert summary["reference"] == list(reference)
    assert summary["normalize"] == {"low": list(normalize[0]), "high": list(normalize[1])}
    assert summary["maximize"] == [True] * len(objectives)
    assert summary["hypervolume"] == report.hypervolumes
    assert summary["hypervolume_details"]["raco"]["num_points"] == 5
    assert summary["files"] == {k: p.name for k, p in report.paths.items()}
    for entry, result in zip(summary["results"], results, strict=True):
        assert entry["method"] == result["method"]
        assert entry["weights"] == list(result["weights"])
        assert entry["scores"] == result["scores"]
        assert entry["stderr"] == result["stderr"]

    # Markdown: the table, the hypervolumes and the stated reference / normalisation
    markdown = report.paths["markdown"].read_text()
    assert markdown.startswith("# sweep")
    assert "Reference point:" in markdown and "Normalisation: (x - low)" in markdown
    assert f"| raco | {report.hypervolumes['raco']:.6g} | 5 |" in markdown
    assert markdown.count("| dpo_lw |") == 6  # five runs and one hypervolume row


def test_report_without_stderr_or_normalisation(tmp_path: pathlib.Path) -> None:
    results = sweep(OBJECTIVES_2, stderr=False)
    report = write_front_report(results, tmp_path, reference=(0.2, 0.2), prefix="toy")
    assert report.paths["plot"].name == "toy.png"
    assert report.normalize is None
    with report.paths["csv"].open(newline="") as handle:
        header = next(csv.reader(handle))
    assert not any(column.startswith("stderr_") for column in header)
    summary = json.loads(report.paths["json"].read_text())
    assert summary["normalize"] is None
    assert "Normalisation: none" in report.paths["markdown"].read_text()


def test_front_table_flags() -> None:
    results = [
        {"method": "a", "weights": (1.0, 0.0), "scores": {"x": 3.0, "y": 0.0}},
        {"method": "a", "weights": (0.5, 0.5), "scores": {"x": 1.0, "y": 1.0}},
        {"method": "a", "weights": (0.0, 1.0), "scores": {"x": 0.0, "y": 0.5}},
        {"method": "b", "weights": (0.5, 0.5), "scores": {"x": 2.0, "y": 2.0}},
    ]
    rows = front_table(results)
    assert [row["on_method_front"] for row in rows] == [True, True, False, True]
    assert [row["on_overall_front"] for row in rows] == [True, False, False, True]
    assert list(rows[0]) == [
        "method",
        "weight_x",
        "weight_y",
        "x",
        "y",
        "on_method_front",
        "on_overall_front",
    ]
    minimized = front_table(results, maximize=False)
    assert [row["on_method_front"] for row in minimized] == [True, False, True, True]
    # a subset of the objectives, with weights over more objectives than reported
    wide = [
        {**r, "weights": (*r["weights"], 0.0), "scores": {**r["scores"], "z": 1.0}} for r in results
    ]
    subset = front_table(wide, objectives=["y", "x"])
    assert list(subset[0])[:6] == ["method", "weight_1", "weight_2", "weight_3", "y", "x"]


def test_method_hypervolumes_minimized() -> None:
    results = sweep(OBJECTIVES_2, stderr=False)
    hvs = method_hypervolumes(results, reference=(2.0, 2.0), maximize=False)
    for method, result in hvs.items():
        points = [[r["scores"][n] for n in OBJECTIVES_2] for r in results if r["method"] == method]
        assert result == hypervolume(points, (2.0, 2.0), maximize=False)
    assert list(hvs) == ["raco", "dpo_lw"]


def test_plot_fronts_many_objectives(tmp_path: pathlib.Path) -> None:
    names = ("a", "b", "c", "d")
    results = [
        {"method": "m", "weights": (0.25,) * 4, "scores": dict(zip(names, row, strict=True))}
        for row in np.random.default_rng(0).uniform(size=(3, 4)).tolist()
    ]
    path = plot_fronts(results, tmp_path / "deep" / "fronts.png", title="four objectives")
    width, height = png_size(path)
    assert width > height  # two rows of three panels


@pytest.mark.parametrize(
    ("results", "kwargs", "error", "message"),
    [
        ([], {}, ValueError, "non-empty list"),
        ([{"method": "m", "weights": (1,), "scores": {"a": 1.0}}], {}, ValueError, "at least 2"),
        ([{"method": "m", "scores": {"a": 1.0, "b": 1.0}}], {}, ValueError, "lacks 'weights'"),
        (
            [{"method": "", "weights": (1, 0), "scores": {"a": 1.0, "b": 1.0}}],
            {},
            ValueError,
            "method",
        ),
        (
            [{"method": "m", "weights": (1, 0), "scores": {"a": 1.0, "b": float("nan")}}],
            {},
            ValueError,
            "finite",
        ),
        (
            [
                {"method": "m", "weights": (1, 0), "scores": {"a": 1.0, "b": 1.0}},
                {"method": "m", "weights": (1, 0), "scores": {"a": 1.0, "c": 1.0}},
            ],
            {},
            ValueError,
            r"results\[1\]\['scores'\].*missing \['b'\], unknown \['c'\]",
        ),
        (
            [{"method": "m", "weights": (1, 0), "scores": {"a": 1.0, "b": 1.0}}],
            {"objectives": ["a", "helpfulness"]},
            ValueError,
            r"missing \['helpfulness'\]",
        ),
        (
            [
                {"method": "m", "weights": (1, 0), "scores": {"a": 1.0, "b": 1.0}},
                {"method": "m", "weights": (1, 0, 0), "scores": {"a": 1.0, "b": 1.0}},
            ],
            {},
            ValueError,
            "has 3 entries",
        ),
        (
            [
                {
                    "method": "m",
                    "weights": (1, 0),
                    "scores": {"a": 1.0, "b": 1.0},
                    "stderr": {"c": 0.1},
                }
            ],
            {},
            ValueError,
            "stderr",
        ),
        (
            [{"method": "m", "weights": "1,0", "scores": {"a": 1.0, "b": 1.0}}],
            {},
            TypeError,
            "weights",
        ),
    ],
)
def test_result_validation(
    results: list[dict[str, Any]], kwargs: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        front_table(results, **kwargs)


def test_reference_must_match_objectives(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="one value per objective"):
        write_front_report(sweep(OBJECTIVES_2, stderr=False), tmp_path, reference=(0.0,))
