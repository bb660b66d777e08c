"""benchmarks/conflict.py on a tiny model: ``--quick`` end to end (every method, two seeds of the
weighted ones, MODPO's margin model, the cached lower layers, the report's statistics), the
rerun that skips finished runs, ``raco-jax evaluate`` of the saved runs on another file of the
schema, and the pieces (qa-feedback split, run plan, diagnostics for K = 3). The real sweep is
not a test."""

from __future__ import annotations

import doctest
import gzip
import json
import math
import pathlib
from typing import Any

import pytest
from benchmark_scripts import load
from data import fixtures
from flax import nnx

from raco_jax.cli import main as cli_main
from raco_jax.models import Decoder, ModelConfig, save_pretrained

REPO = pathlib.Path(__file__).resolve().parents[2]


shared = load("preference_sweep")
conflict = load("conflict")
step_costs = load("step_costs")


def _hh_rows(n: int, tag: str) -> list[dict[str, str]]:
    """HH-RLHF transcripts whose chosen answer is the longer one on about 2 pairs in 3."""
    rows = []
    for i in range(n):
        prompt = f"\n\nHuman: question {tag} {i}?\n\nAssistant:"
        long, short = f" a long answer {i} " + "with detail " * (1 + i % 3), f" short {i}"
        chosen, rejected = (long, short) if i % 3 else (short, long)
        rows.append({"chosen": prompt + chosen, "rejected": prompt + rejected})
    return rows


def _write(path: pathlib.Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("conflict")
    tokenizer = fixtures.family_tokenizer("qwen3", root / "tokenizer")
    config = ModelConfig(
        model_type="qwen3", vocab_size=16 * math.ceil(len(tokenizer) / 16), hidden_size=32,
        intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
        tie_word_embeddings=True,
    )  # fmt: skip
    save_pretrained(Decoder(config, rngs=nnx.Rngs(1)), config, root / "model")
    tokenizer.save_pretrained(root / "model")
    _write(root / "hh" / "helpful-base.jsonl.gz", _hh_rows(40, "h"))
    argv = [
        "--quick", "--model", str(root / "model"), "--data-dir", str(root / "hh"),
        "--output-dir", str(root / "out"), "--learning-rate", "0.05", "--lora-rank", "4",
        "--lora-layers=-1", "--max-length", "48", "--max-prompt-length", "24",
        "--eval-batch-size", "8", "--gen-batch-size", "8", "--bootstrap", "50",
    ]  # fmt: skip
    assert conflict.main(argv) == 0
    return {"root": root, "out": root / "out", "argv": argv}


def test_docstring_examples(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    results = [
        doctest.testmod(m, optionflags=doctest.ELLIPSIS) for m in (conflict, step_costs, shared)
    ]
    assert sum(r.attempted for r in results) >= 20 and sum(r.failed for r in results) == 0


def test_quick_sweep_runs_every_method_and_reports(sweep) -> None:
    out = sweep["out"]
    report = json.loads((out / "report.json").read_text())
    names = {pathlib.Path(r["run_dir"]).name for r in report["runs"]}
    weighted = {f"{m}-w0.5_0.5-s{s}" for m in ("raco", "dpo-lw", "cagrad") for s in (0, 1)}
    others = {"mgda-s0", "mgda-s1", "pcgrad-s0", "pcgrad-s1", "amopo-w0.5_0.5-s0",
              "modpo-w0.5_0.5-s0"}  # fmt: skip
    assert names == weighted | others
    # MODPO's margin model: a DPO run on concise alone, exported as a full checkpoint
    margin = out / "margins" / "dpo-concise"
    assert json.loads((margin / "config.json").read_text())["weights"] == [0.0, 1.0]
    assert (margin / "final" / "model.safetensors").is_file()
    # the conflict rates come first: helpful vs concise on the same pairs
    rates = report["conflicts"]["val"]["helpful/concise"]
    assert rates["decisive"] > 0 and 0 < rates["rate"] < 1
    assert report["first_layer"] == 1  # LoRA on the last layer: evaluation starts there
    for run in report["runs"]:
        config = json.loads((pathlib.Path(run["run_dir"]) / "config.json").read_text())
        assert config["cache_layer_inputs"] and config["lora_layers"] == [-1]
        assert config["max_steps"] == 3 and config["batch_size"] == 4
        for name in ("helpful", "concise"):
            assert 0 <= run[f"accuracy/{name}"] <= 1 and run[f"pairs/{name}"] > 0
            assert run[f"pairs_conflicting/{name}"] > 0
        if run["method"] not in ("amopo", "modpo"):  # one backward pass: no per-objective cosines
            assert run["diagnostics"]["steps"] == 3
            assert -1 <= run["diagnostics"]["pairs"]["helpful/concise"]["cos_median"] <= 1
        assert report["lengths"][run["run_dir"]]["mean_tokens"] > 0
    assert set(report["hypervolumes"]) == set(conflict.METHODS)
    assert (out / "front_mean.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    means = conflict.seed_mean_front(report["runs"], ["helpful", "concise"])
    raco_means = [m for m in means if m["method"] == "raco"]
    assert len(means) == 7 and len(raco_means) == 1  # one point per (method, weights)
    runs = [r for r in report["runs"] if r["method"] == "raco"]
    assert raco_means[0]["scores"]["accuracy/helpful"] == pytest.approx(
        (runs[0]["accuracy/helpful"] + runs[1]["accuracy/helpful"]) / 2
    )
    raco = report["hypervolumes"]["raco"]
    assert raco["seeds"] == 2 and len(raco["per_seed"]) == 2
    assert raco["bootstrap"]["low"] <= raco["bootstrap"]["high"]
    compared = {
        (c["a"], c["b"], tuple(c["weights"]), c["objective"]) for c in report["comparisons"]
    }
    assert len(compared) == 2 * 2  # (raco - dpo-lw, raco - cagrad) x 2 objectives
    assert all(c["all"]["seeds"] == 2 for c in report["comparisons"])
    # answer lengths paired over both seeds and the prompts, as the difference of the saved ones
    lengths = report["lengths"]
    assert len(report["length_comparisons"]) == 2  # raco - dpo-lw, raco - cagrad at one weight
    for c in report["length_comparisons"]:
        runs = [f"{m}-w0.5_0.5-s{s}" for m in (c["a"], c["b"]) for s in (0, 1)]
        dirs = {pathlib.Path(d).name: d for d in lengths if d != "base"}
        a = [x for r in runs[:2] for x in lengths[dirs[r]]["lengths"]]
        b = [x for r in runs[2:] for x in lengths[dirs[r]]["lengths"]]
        assert c["tokens"]["seeds"] == 2 and c["tokens"]["pairs"] == len(a) // 2
        assert math.isclose(c["tokens"]["mean"], (sum(a) - sum(b)) / len(a), abs_tol=1e-9)
    text = (out / "report.md").read_text()
    assert text.index("Conflict rate") < text.index("| base model |")
    assert "raco - dpo-lw" in text and "bootstrap 90%" in text
    assert "Paired answer-length differences" in text
    # every run's reference log-probs and lower layers come from one shared cache
    assert len(list((out / "cache").glob("layer-inputs-*.npz"))) == 1


def test_rerun_skips_finished_runs(sweep, capsys) -> None:
    assert conflict.main(sweep["argv"]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 13  # 12 runs + margin


def test_saved_runs_score_on_another_file_of_the_schema(sweep, tmp_path, capsys) -> None:
    other = tmp_path / "other"
    _write(other / "helpful-base.jsonl.gz", _hh_rows(12, "other"))
    runs = [str(p) for p in sorted((sweep["out"] / "runs").iterdir())[:3]]
    argv = [
        "evaluate",
        "--runs",
        *runs,
        "--data-dir",
        str(other),
        "--output-dir",
        str(tmp_path / "e"),
    ]
    assert cli_main([*argv, "--quiet"]) == 0, capsys.readouterr()
    saved = json.loads((tmp_path / "e" / "preferences.json").read_text())
    assert [r["run_dir"] for r in saved["runs"]] == runs
    assert saved["base"]["pairs/helpful"] == 12
    for run in saved["runs"]:
        assert 0 <= run["accuracy/helpful"] <= 1 and 0 <= run["accuracy_conflicting/concise"] <= 1


def test_qa_feedback_split_keeps_questions_apart(shared_dir, tmp_path) -> None:
    data = shared_dir / "data" / "qa-feedback"
    if not data.is_dir():
        pytest.skip(f"{data} is absent")
    counts = conflict.split_qa_feedback(data, tmp_path, train_pairs=60, val_pairs=500, seed=0)
    assert counts["val"] == {"questions": 105, "pairs": 630} and counts["train"]["questions"] == 10
    train = shared.read_rows(tmp_path / "train" / "feedback.json.gz")
    val = shared.read_rows(tmp_path / "val" / "feedback.json.gz")
    assert not {r["question"] for r in train} & {r["question"] for r in val}
    from raco_jax.data import load_preferences

    pairs, _ = load_preferences(str(tmp_path / "val"), "qa-feedback", objectives=["quality"])
    assert len(pairs) >= 500  # untied quality labels


def test_three_objective_diagnostics_and_plan(tmp_path) -> None:
    names = ["helpful", "harmless", "concise"]
    (tmp_path / "config.json").write_text(
        json.dumps({"method": "raco", "weights": [0.5, 0.3, 0.2]})
    )
    rows = [
        {"step": i + 1, "aggregation/cos/helpful/harmless": 0.1 * i - 0.1,
         "aggregation/cos/helpful/concise": -0.2, "aggregation/cos/harmless/concise": 0.3,
         "aggregation/dual/helpful": p[0], "aggregation/dual/harmless": p[1],
         "aggregation/dual/concise": p[2], "aggregation/num_clipped": 1.0,
         "aggregation/coefficients/helpful": 0.6, "aggregation/coefficients/harmless": 0.2,
         "aggregation/coefficients/concise": 0.2}
        for i, p in enumerate([(0.5, 0.3, 0.2), (1.0, 0.0, 0.0), (0.2, 0.2, 0.6)])
    ]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = shared.run_diagnostics(tmp_path, names)
    assert stats["steps"] == 3 and set(stats["pairs"]) == {
        "helpful/harmless", "helpful/concise", "harmless/concise"}  # fmt: skip
    assert stats["pairs"]["helpful/concise"]["frac_conflicting"] == 1.0
    # (0.5, 0.3, 0.2) = w: nothing clipped; (1, 0, 0): a vertex, min(p, w) parallel; (0.2, 0.2,
    # 0.6): min = (0.2, 0.2, 0.2), another direction
    assert stats["clip_changed_steps"] == 1
    assert stats["share_gap"] == pytest.approx(0.1)
    grid = conflict.weight_grid(3, 3)
    plan = conflict.plan_runs(conflict.METHODS, grid, seeds=3, extra_seeds=1)
    counts = {m: sum(r.method == m for r in plan) for m in conflict.METHODS}
    assert counts == {"raco": 18, "dpo-lw": 18, "cagrad": 18, "mgda": 3, "pcgrad": 3,
                      "amopo": 6, "modpo": 6}  # fmt: skip
    assert list(conflict.margin_specs(names)) == ["harmless", "concise"]
