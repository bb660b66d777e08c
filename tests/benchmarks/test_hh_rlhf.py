"""The pieces of benchmarks/hh_rlhf.py on a few pairs with a tiny model: the fixed-seed split
(both data layouts), the signs of the written files, the whole sweep end to end (adapters and
configs saved, one shared reference cache, rerun skips finished runs), and re-evaluating the saved
runs with ``raco-jax evaluate --data-dir``. The real benchmark is not a test."""

from __future__ import annotations

import doctest
import gzip
import json
import math
import pathlib
import sys
from typing import Any

import pytest
from benchmark_scripts import load
from data import fixtures
from train.test_align import tiny_qwen3

from raco_jax.cli import main as cli_main
from raco_jax.data import load_preferences

REPO = pathlib.Path(__file__).resolve().parents[2]


hh = load("preference_sweep", "hh_rlhf")


def _rows(path: pathlib.Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def _write(path: pathlib.Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def _pool(n: int, tag: str) -> list[dict[str, str]]:
    return [
        {"chosen": f"\n\nHuman: q{tag}{i}\n\nAssistant: good {i}",
         "rejected": f"\n\nHuman: q{tag}{i}\n\nAssistant: bad {i}"}
        for i in range(n)
    ]  # fmt: skip


def test_docstring_examples(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    shared = sys.modules["preference_sweep"]  # the pieces hh_rlhf shares with conflict.py
    results = [doctest.testmod(module, optionflags=doctest.ELLIPSIS) for module in (hh, shared)]
    assert sum(r.attempted for r in results) >= 6 and sum(r.failed for r in results) == 0


def test_split_is_disjoint_seeded_and_drops_identical_rows(tmp_path) -> None:
    data = tmp_path / "data"
    for objective, subset in hh.SUBSETS.items():
        rows = _pool(20, objective[0])
        rows.append(
            {
                "chosen": "\n\nHuman: x\n\nAssistant: same",
                "rejected": "\n\nHuman: x\n\nAssistant: same",
            }
        )
        _write(data / f"{subset}.jsonl.gz", rows)
    counts = hh.split_subsets(data, tmp_path / "a", train_pairs=12, val_pairs=5, seed=3)
    assert counts == {
        "train": {"helpful": 12, "harmless": 12},
        "val": {"helpful": 5, "harmless": 5},
    }
    again = hh.split_subsets(data, tmp_path / "b", train_pairs=12, val_pairs=5, seed=3)
    other = hh.split_subsets(data, tmp_path / "c", train_pairs=12, val_pairs=5, seed=4)
    assert again == other == counts
    for subset in hh.SUBSETS.values():
        train = _rows(tmp_path / "a" / "train" / f"{subset}.jsonl.gz")
        val = _rows(tmp_path / "a" / "val" / f"{subset}.jsonl.gz")
        assert not {r["chosen"] for r in train} & {r["chosen"] for r in val}
        assert all(r["chosen"] != r["rejected"] for r in train + val)
        assert train == _rows(tmp_path / "b" / "train" / f"{subset}.jsonl.gz")  # same seed
        assert train != _rows(tmp_path / "c" / "train" / f"{subset}.jsonl.gz")  # another seed
    # more pairs asked than the pool holds: validation first, training gets the rest
    small = hh.split_subsets(data, tmp_path / "d", train_pairs=100, val_pairs=5, seed=0)
    assert small["train"] == {"helpful": 15, "harmless": 15}


def test_hub_layout_takes_validation_from_test(tmp_path) -> None:
    data = tmp_path / "hub"
    for objective, subset in hh.SUBSETS.items():
        _write(data / subset / "train.jsonl.gz", _pool(10, objective + "train"))
        _write(data / subset / "test.jsonl.gz", _pool(4, objective + "test"))
    counts = hh.split_subsets(data, tmp_path / "out", train_pairs=6, val_pairs=3, seed=0)
    assert counts == {"train": {"helpful": 6, "harmless": 6}, "val": {"helpful": 3, "harmless": 3}}
    val = _rows(tmp_path / "out" / "val" / "helpful-base.jsonl.gz")
    train = _rows(tmp_path / "out" / "train" / "helpful-base.jsonl.gz")
    assert all("helpfultest" in r["chosen"] for r in val)
    assert all("helpfultrain" in r["chosen"] for r in train)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hh.split_subsets(tmp_path / "nowhere", tmp_path / "x", 1, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no helpful-base data"):
        hh.split_subsets(tmp_path / "empty", tmp_path / "x", 1, 1)


def test_written_pairs_are_labeled_for_their_subset_only(tmp_path) -> None:
    data = fixtures.write_hh(tmp_path / "hh")
    hh.split_subsets(data, tmp_path / "split", train_pairs=6, val_pairs=2, seed=0)
    pairs, _ = load_preferences(tmp_path / "split" / "train", "hh-rlhf")
    by_objective = {"helpful": 0, "harmless": 0}
    for pair in pairs:
        assert len(pair.signs) == 1  # one objective labeled, the other unlabeled
        ((objective, sign),) = pair.signs.items()
        assert sign == 1  # chosen is response a
        assert objective in (pair.source or "")
        by_objective[objective] += 1
    assert by_objective["harmless"] == 6 and 4 <= by_objective["helpful"] <= 6


def test_real_data_split(shared_dir, tmp_path) -> None:
    data = shared_dir / "data" / "hh-rlhf"
    if not data.is_dir():
        pytest.skip(f"{data} is absent (the real HH-RLHF pairs live in ../shared)")
    assert all("all" in parts for parts in hh.subset_files(data).values())
    counts = hh.split_subsets(data, tmp_path, train_pairs=80, val_pairs=48, seed=0)
    assert counts == {
        "train": {"helpful": 80, "harmless": 80},
        "val": {"helpful": 48, "harmless": 48},
    }
    pairs, report = load_preferences(tmp_path / "val", "hh-rlhf")
    # the few rows with an empty response are reported and skipped by the loader
    assert 90 <= len(pairs) <= 96 and len(pairs) + sum(report.issues.values()) == 96


# -- the sweep end to end on a tiny model -----------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hh_bench")
    tokenizer = fixtures.family_tokenizer("qwen3", root / "tokenizer")
    model_dir = tiny_qwen3(root / "model", seed=1, vocab=16 * math.ceil(len(tokenizer) / 16))
    tokenizer.save_pretrained(model_dir)
    data = fixtures.write_hh(root / "hh")
    argv = [
        "--model", str(model_dir), "--data-dir", str(data), "--output-dir", str(root / "out"),
        "--methods", "raco,dpo-lw", "--weights", "0.5", "--steps", "2", "--batch-size", "4",
        "--train-pairs", "6", "--val-pairs", "3", "--learning-rate", "0.03",
        "--max-length", "64", "--max-prompt-length", "40", "--lora-rank", "4", "--eval-train", "--conflict-pairs", "8",
    ]  # fmt: skip
    assert hh.main(argv) == 0
    return {"root": root, "out": root / "out", "argv": argv}


def test_sweep_saves_runs_and_reports(sweep) -> None:
    out = sweep["out"]
    report = json.loads((out / "report.json").read_text())
    names = [pathlib.Path(r["run_dir"]).name for r in report["runs"]]
    assert names == ["raco-h0.5", "dpo-lw-h0.5"]
    assert report["base"]["accuracy/helpful"] == report["base"]["accuracy/harmless"] == 0.5
    for run in report["runs"]:
        run_dir = pathlib.Path(run["run_dir"])
        config = json.loads((run_dir / "config.json").read_text())
        assert config["max_steps"] == 2
        assert config["weights"] == [0.5, 0.5] and config["lora_rank"] == 4
        assert (run_dir / "final" / "adapter_model.safetensors").is_file()
        assert run["seconds_per_step"] > 0 and run["steps"] == 2
        assert -1.0 <= run["cos_median"] <= 1.0
        for name in ("helpful", "harmless"):
            assert 0.0 <= run[f"accuracy/{name}"] <= 1.0 and run[f"pairs/{name}"] > 0
    assert set(report["hypervolumes"]) == {"raco", "dpo-lw"}
    # DPO-LW's update is the weighted sum: the helpful share of its coefficients is w_helpful
    dpo_lw = next(r for r in report["runs"] if r["method"] == "dpo-lw")
    assert dpo_lw["share_first_mean"] == pytest.approx(0.5, abs=1e-6)
    assert dpo_lw["norm_ratio_median"] > 0 and math.isnan(dpo_lw["clip_changed_steps"])
    raco = next(r for r in report["runs"] if r["method"] == "raco")
    assert raco["clip_changed_steps"] in (0, 1, 2)
    in_sample = report["train_evaluation"]
    assert [pathlib.Path(r["run_dir"]).name for r in in_sample["runs"]] == names
    assert set(in_sample["hypervolumes"]) == {"raco", "dpo-lw"}
    assert "In-sample check" in (out / "report.md").read_text()
    # the gradients averaged over 8 pairs (two micro-batches of 4) at the base model
    conflict = report["conflict"]
    assert conflict["pairs"] == 8 and -1.0 <= conflict["cos"] <= 1.0
    assert conflict["grad_norm_helpful"] > 0 and conflict["grad_norm_harmless"] > 0
    assert "| base model |" in (out / "report.md").read_text()
    assert (out / "eval" / "front.png").is_file()
    assert len(list((out / "cache").glob("reference-*.npz"))) == 1  # computed once, shared


def test_rerun_skips_finished_runs(sweep, capsys) -> None:
    assert hh.main(sweep["argv"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier, skipped") == 2


def test_saved_runs_reevaluate_to_the_report(sweep, tmp_path, capsys) -> None:
    out = sweep["out"]
    runs = [str(p) for p in sorted((out / "runs").iterdir())]
    # the benchmark's evaluation batch (--eval-batch-size, 16): the same padded shapes give the
    # same float32 programs, so the re-evaluation must reproduce the report to rounding
    argv = [
        "evaluate",
        "--runs",
        *runs,
        "--data-dir",
        str(out / "data" / "val"),
        "--batch-size",
        "16",
    ]
    assert cli_main([*argv, "--output-dir", str(tmp_path), "--quiet"]) == 0, capsys.readouterr()
    again = {
        pathlib.Path(r["run_dir"]).name: r
        for r in json.loads((tmp_path / "preferences.json").read_text())["runs"]
    }
    for run in json.loads((out / "report.json").read_text())["runs"]:
        for key in ("accuracy/helpful", "accuracy/harmless", "margin/helpful", "loss/harmless"):
            assert again[pathlib.Path(run["run_dir"]).name][key] == pytest.approx(
                run[key], abs=1e-6
            )


def test_steps_where_the_clip_turns_the_update(tmp_path) -> None:
    """min(p*, w) changes the correction's direction only when some p*_k > w_k and p* is not a
    vertex e_k with w_k > 0 (raco-algorithm.md section 3)."""
    (tmp_path / "config.json").write_text(json.dumps({"method": "raco", "weights": [0.2, 0.8]}))
    duals = [(1.0, 0.0), (0.5, 0.5), (0.1, 0.9), (0.2, 0.8), (0.0, 1.0)]
    rows = [
        {"step": i + 1, "aggregation/cos/helpful/harmless": -0.1,
         "aggregation/dual/helpful": a, "aggregation/dual/harmless": b}
        for i, (a, b) in enumerate(duals)
    ]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert hh.gradient_conflict(tmp_path)["clip_changed_steps"] == 2  # (0.5, 0.5), (0.1, 0.9)
    (tmp_path / "config.json").write_text(json.dumps({"method": "dpo-lw", "weights": [0.2, 0.8]}))
    assert math.isnan(hh.gradient_conflict(tmp_path)["clip_changed_steps"])
