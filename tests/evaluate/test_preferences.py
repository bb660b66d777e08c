"""Preference metrics of saved runs (``raco-jax evaluate --data-dir``): the metric formulas
against NumPy, and two saved runs of a tiny Qwen 3 (one exporting LoRA adapters, one a merged
checkpoint) re-scored on HH-RLHF-format pairs against an independent per-sequence computation."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import numpy as np
import pytest
from data import fixtures
from train.test_align import single_device_mesh, tiny_qwen3

from raco_jax.cli import main
from raco_jax.data import load_preferences, sample_pairs
from raco_jax.evaluate.preferences import evaluate_preference_runs, pair_metrics
from raco_jax.train import align
from raco_jax.train.config import AlignConfig

OBJECTIVES = ("helpful", "harmless")
BETA = 0.2


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def test_pair_metrics_against_numpy() -> None:
    rng = np.random.default_rng(0)
    n = 40
    policy = (rng.normal(-20, 3, n), rng.normal(-20, 3, n))
    reference = (rng.normal(-20, 3, n), rng.normal(-20, 3, n))
    signs = rng.choice([-1.0, 0.0, 1.0], size=(2, n), p=[0.4, 0.1, 0.5])
    labeled = (rng.random((2, n)) < 0.7).astype(float)
    got = pair_metrics(policy, reference, signs, labeled, OBJECTIVES, beta=BETA)
    delta = BETA * ((policy[0] - reference[0]) - (policy[1] - reference[1]))
    for k, name in enumerate(OBJECTIVES):
        mask = (labeled[k] > 0) & (signs[k] != 0)
        margins = signs[k][mask] * delta[mask]
        assert got[f"pairs/{name}"] == mask.sum()
        assert got[f"accuracy/{name}"] == pytest.approx(np.mean(margins > 0), abs=1e-12)
        assert got[f"margin/{name}"] == pytest.approx(np.mean(margins), rel=1e-9)
        # the DPO loss averages over the labeled, untied pairs
        assert got[f"loss/{name}"] == pytest.approx(-np.mean(_log_sigmoid(margins)), rel=1e-5)
        acc = got[f"accuracy/{name}"]
        assert got[f"accuracy_stderr/{name}"] == pytest.approx(
            math.sqrt(acc * (1 - acc) / mask.sum())
        )


def test_pair_metrics_of_the_reference_and_of_missing_labels() -> None:
    ref = (np.full(4, -3.0), np.full(4, -5.0))
    signs = np.array([[1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    got = pair_metrics(ref, ref, signs, np.ones((2, 4)), OBJECTIVES, beta=BETA)
    assert got["accuracy/helpful"] == 0.5 and got["margin/helpful"] == 0.0
    assert got["loss/helpful"] == pytest.approx(math.log(2.0), rel=1e-6)
    assert got["pairs/harmless"] == 0 and math.isnan(got["accuracy/harmless"])


# -- saved runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two finished runs on HH-RLHF-format pairs: RACO with LoRA adapters exported, DPO-LW with
    the adapters merged into a full checkpoint."""
    root = tmp_path_factory.mktemp("preference_runs")
    tokenizer = fixtures.family_tokenizer("qwen3", root / "tokenizer")
    vocab = 16 * math.ceil(len(tokenizer) / 16)
    model_dir = tiny_qwen3(root / "model", seed=1, vocab=vocab)
    tokenizer.save_pretrained(model_dir)
    data = fixtures.write_hh(root / "hh")
    results = {}
    for method, export in (("raco", "adapter"), ("dpo-lw", "merged")):
        config = AlignConfig(
            model=str(model_dir),
            dataset=str(data),
            schema="hh-rlhf",
            objectives=OBJECTIVES,
            weights=(0.6, 0.4),
            method=method,
            beta=BETA,
            batch_size=4,
            max_steps=3,
            max_length=64,
            max_prompt_length=40,
            learning_rate=3e-2,
            lora_rank=4,
            lora_alpha=8.0,
            export_lora=export,
            dtype="float32",
            log_every=1,
            output_dir=str(root / "runs" / method),
            cache_dir=str(root / "shared_cache"),
        )
        results[method] = align(config, mesh=single_device_mesh(), progress=False)
    return {"root": root, "model": model_dir, "data": data, "results": results}


def _independent_logps(model: Any, tokenized: Any) -> tuple[np.ndarray, np.ndarray]:
    """Summed completion log-probs, one unpadded sequence at a time, log-softmax in float64."""
    out = []
    for ids_list, side in ((tokenized.input_ids_a, 0), (tokenized.input_ids_b, 1)):
        values = []
        for i, ids in enumerate(ids_list):
            mask = np.asarray(tokenized.collate([i], batch_size=1)["loss_mask"])[side]
            ids = np.asarray(ids)
            logits = np.asarray(model(ids[None]), np.float64)[0]
            logprobs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
            counted = mask[1 : len(ids)] > 0
            values.append(logprobs[np.arange(len(ids) - 1), ids[1:]][counted].sum())
        out.append(np.asarray(values))
    return out[0], out[1]


def test_saved_runs_are_rescored_like_an_independent_computation(runs) -> None:
    from raco_jax.data import load_preferences, tokenize_pairs
    from raco_jax.models import from_pretrained, load_tokenizer

    out = runs["root"] / "evaluation"
    dirs = [runs["results"][m].output_dir for m in ("raco", "dpo-lw")]
    evaluation = evaluate_preference_runs(dirs, runs["data"], out, log=None)
    assert evaluation.objectives == OBJECTIVES
    assert evaluation.base["accuracy/helpful"] == evaluation.base["accuracy/harmless"] == 0.5

    pairs, _ = load_preferences(runs["data"], "hh-rlhf", objectives=OBJECTIVES)
    tokenized = tokenize_pairs(pairs, load_tokenizer(runs["model"]), OBJECTIVES, 64, 40)
    base, _ = from_pretrained(runs["model"])
    ref_a, ref_b = _independent_logps(base, tokenized)
    signs = np.asarray(tokenized.signs)
    labeled = np.asarray(tokenized.labeled)
    assert evaluation.base["pairs/helpful"] == 7 and evaluation.base["pairs/harmless"] == 9
    for run, method in zip(evaluation.runs, ("raco", "dpo-lw"), strict=True):
        assert run["method"] == method and run["weights"] == [0.6, 0.4]
        pol_a, pol_b = _independent_logps(runs["results"][method].model, tokenized)
        delta = BETA * ((pol_a - ref_a) - (pol_b - ref_b))
        for k, name in enumerate(OBJECTIVES):
            mask = (labeled[k] > 0) & (signs[k] != 0)
            margins = signs[k][mask] * delta[mask]
            assert np.min(np.abs(margins)) > 1e-4  # no accuracy decided by rounding
            assert run[f"accuracy/{name}"] == pytest.approx(np.mean(margins > 0), abs=1e-12)
            assert run[f"margin/{name}"] == pytest.approx(np.mean(margins), abs=2e-5)
            assert run[f"loss/{name}"] == pytest.approx(-np.mean(_log_sigmoid(margins)), abs=2e-5)
        assert abs(run["margin/helpful"]) > 1e-3  # the run moved away from the base model

    # files: tables, front with hypervolume against the base accuracies, the cache
    saved = json.loads((out / "preferences.json").read_text())
    assert saved["hypervolume_reference"] == [0.5, 0.5]
    assert saved["runs"][0]["accuracy/helpful"] == evaluation.runs[0]["accuracy/helpful"]
    table = (out / "preferences.md").read_text()
    assert "base model" in table and "raco" in table and "dpo-lw" in table
    front = json.loads((out / "front.json").read_text())
    assert set(front["hypervolume"]) == {"raco", "dpo-lw"} and front["reference"] == [0.5, 0.5]
    assert (out / "front.png").stat().st_size > 0
    assert len(list((out / "cache").glob("policy-*.npz"))) == 2
    assert len(list((out / "cache").glob("reference-*.npz"))) == 1


def test_the_runs_shared_one_reference_cache(runs) -> None:
    cache = runs["root"] / "shared_cache"
    assert len(list(cache.glob("reference-*.npz"))) == 1
    for result in runs["results"].values():
        assert not (result.output_dir / "cache").exists()


def test_evaluate_command_on_a_pairs_directory(runs, tmp_path, capsys) -> None:
    dirs = [str(runs["results"][m].output_dir) for m in ("raco", "dpo-lw")]
    argv = ["evaluate", "--runs", *dirs, "--data-dir", str(runs["data"])]
    status = main([*argv, "--output-dir", str(tmp_path / "a"), "--max-pairs", "12", "--quiet"])
    assert status == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "a" / "preferences.json").read_text())
    # twelve pairs drawn across both objectives with a fixed seed, not the first file's twelve
    pairs, _ = load_preferences(str(runs["data"]), "hh-rlhf", objectives=["helpful", "harmless"])
    drawn = sample_pairs(pairs, 12, ["helpful", "harmless"], seed=0)
    want = {o: sum(o in p.signs for p in drawn) for o in ("helpful", "harmless")}
    assert min(want.values()) >= 3 and sum(want.values()) == 12
    assert {o: saved["base"][f"pairs/{o}"] for o in want} == want
    assert main([*argv, "--output-dir", str(tmp_path / "c"), "--max-pairs", "1"]) == 2
    assert "no labeled, untied pair for ['" in capsys.readouterr().err
    assert main([*argv, "--data", str(runs["data"]), "--output-dir", str(tmp_path / "b")]) == 2
    assert "not both" in capsys.readouterr().err


def test_evaluation_errors_name_the_problem(runs, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        evaluate_preference_runs([tmp_path], runs["data"], tmp_path / "out", log=None)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    config = json.loads((runs["results"]["raco"].output_dir / "config.json").read_text())
    (unfinished / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not finished"):
        evaluate_preference_runs([unfinished], runs["data"], tmp_path / "out", log=None)
    other = pathlib.Path(tmp_path / "other")
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**config, "model": "another/model"}))
    (other / "final").mkdir()
    with pytest.raises(ValueError, match="one base model"):
        evaluate_preference_runs(
            [runs["results"]["raco"].output_dir, other], runs["data"], tmp_path / "out", log=None
        )
