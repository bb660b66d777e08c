"""Weight sweeps on the tiny Qwen 3 model: the Pareto front files, resumable reruns, and the
``raco-jax sweep`` / ``raco-jax evaluate`` commands."""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import pytest
from train.test_align import make_config, single_device_mesh
from train.test_align import workspace as workspace  # the module-scoped fixture

import raco_jax.evaluate.judged_runs
import raco_jax.sweep
from raco_jax.cli import main
from raco_jax.evaluate import evaluate_runs, parse_judge_spec
from raco_jax.sweep import parse_weights_grid, run_sweep, simplex_grid, weights_label
from raco_jax.train import run_is_finished

METHODS = ("raco", "dpo-lw")
FRONT_FILES = ("front.png", "front.csv", "front.md", "front.json", "responses.json")


@pytest.fixture(scope="module")
def sweep(workspace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-point sweep of two methods, evaluated with a length and a lexicon judge."""
    root = tmp_path_factory.mktemp("sweep")
    lexicon = root / "unsafe.txt"
    lexicon.write_text("# words of an unsafe answer\npetrol\nburn\n")
    judges = ["length", f"lexicon:{lexicon}"]
    config = make_config(workspace, root / "runs", eval_fraction=0.25)
    kwargs = dict(judges=judges, num_prompts=4, max_new_tokens=8, progress=False)
    result = run_sweep(config, simplex_grid(2, 3), METHODS, mesh=single_device_mesh(), **kwargs)
    return {"root": root, "config": config, "result": result, "judges": judges, "kwargs": kwargs}


def test_sweep_writes_the_front(sweep) -> None:
    result, root = sweep["result"], sweep["root"] / "runs"
    assert [(r.method, r.weights, r.status) for r in result.runs] == [
        (method, weights, "trained") for method in METHODS for weights in simplex_grid(2, 3)
    ]
    for run in result.runs:
        assert run.run_dir == root / run.method / weights_label(run.weights)
        assert run_is_finished(run.run_dir)
    evaluation = root / "evaluation"
    for name in FRONT_FILES:
        assert (evaluation / name).is_file(), name
    front = json.loads((evaluation / "front.json").read_text())
    assert front["objectives"] == ["conciseness", "harmlessness"]
    assert set(front["hypervolume"]) == set(METHODS)
    assert len(front["results"]) == 6
    responses = json.loads((evaluation / "responses.json").read_text())
    assert front["reference"] == [responses["reference"][o] for o in front["objectives"]]
    assert len(responses["prompts"]) == 4 and len(responses["runs"]) == 6
    assert all(len(run["responses"]) == 4 for run in responses["runs"])
    markdown = (evaluation / "front.md").read_text()
    assert "Reference point" in markdown and "raco" in markdown


def test_rerun_skips_finished_runs_and_resumes_unfinished_ones(sweep, monkeypatch) -> None:
    config, kwargs = sweep["config"], sweep["kwargs"]
    generated = []
    generate = raco_jax.evaluate.judged_runs.generate_responses

    def counting_generate(model, *args, **kw):
        generated.append(model)
        return generate(model, *args, **kw)

    monkeypatch.setattr(raco_jax.evaluate.judged_runs, "generate_responses", counting_generate)
    trained = []
    align = raco_jax.sweep.align

    def recording_align(run_config, **kw):
        trained.append(run_config.output_dir)
        return align(run_config, **kw)

    monkeypatch.setattr(raco_jax.sweep, "align", recording_align)

    rerun = run_sweep(config, simplex_grid(2, 3), METHODS, mesh=single_device_mesh(), **kwargs)
    assert [r.status for r in rerun.runs] == ["skipped"] * 6 and trained == []
    assert len(generated) == 1  # only the base model: every run's scores come from its cache
    assert rerun.report.hypervolumes == sweep["result"].report.hypervolumes

    unfinished = rerun.runs[1].run_dir
    shutil.rmtree(unfinished / "final")
    again = run_sweep(config, simplex_grid(2, 3), METHODS, mesh=single_device_mesh(), **kwargs)
    assert [r.status for r in again.runs] == ["skipped", "resumed"] + ["skipped"] * 4
    assert trained == [str(unfinished)] and run_is_finished(unfinished)


def test_sweep_command_reuses_finished_runs(sweep, tmp_path, capsys) -> None:
    config_file = tmp_path / "sweep.yaml"
    values = {k: v for k, v in sweep["config"].to_dict().items() if k not in ("weights",)}
    config_file.write_text(json.dumps(values))
    args = ["sweep", "--config", str(config_file), "--grid", "3", "--methods", ",".join(METHODS)]
    for judge in sweep["judges"]:
        args += ["--judge", judge]
    status = main([*args, "--num-prompts", "4", "--max-new-tokens", "8", "--quiet"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.count("skipped") == 6 and "front:" in out


def test_evaluate_command_with_the_implicit_judge(sweep, workspace, tmp_path, capsys) -> None:
    runs = [str(run.run_dir) for run in sweep["result"].runs if run.weights == (0.5, 0.5)]
    out_dir = tmp_path / "eval"
    status = main(
        [
            "evaluate",
            "--runs",
            *runs,
            "--data",
            str(workspace["data"]),
            "--schema",
            "pku-saferlhf",
            "--judge",
            "implicit",
            "--judge",
            "length",
            "--num-prompts",
            "3",
            "--max-new-tokens",
            "6",
            "--output-dir",
            str(out_dir),
            "--quiet",
        ]
    )
    assert status == 0, capsys.readouterr().err
    front = json.loads((out_dir / "front.json").read_text())
    assert front["objectives"] == ["implicit_reward", "conciseness"]
    responses = json.loads((out_dir / "responses.json").read_text())
    assert responses["reference"]["implicit_reward"] == 0.0  # the base model against itself
    assert all(
        any(abs(x) > 0 for x in run["scores"]["implicit_reward"]) for run in responses["runs"]
    )


def test_grids_and_judge_specs() -> None:
    assert simplex_grid(2, 1) == [(0.5, 0.5)]
    grid = simplex_grid(3, 2)
    assert len(grid) == 3 and all(abs(sum(w) - 1) < 1e-12 and min(w) > 0 for w in grid)
    assert parse_weights_grid("0.2,0.8;0.5,0.5;0.8,0.2", 2)[2] == (0.8, 0.2)
    with pytest.raises(ValueError, match="has 3 weights; the run has 2 objectives"):
        parse_weights_grid("0.2,0.3,0.5", 2)
    assert parse_judge_spec("reward-model:/models/rm:helpful").objective == "helpful"
    assert parse_judge_spec("lexicon:words.txt:polite:positive").option == "positive"
    with pytest.raises(ValueError, match="unknown judge 'gpt4'"):
        parse_judge_spec("gpt4")


def test_evaluation_needs_two_objectives_and_held_out_prompts(workspace, tmp_path) -> None:
    config = make_config(workspace, tmp_path / "runs")
    with pytest.raises(ValueError, match="needs held-out prompts"):
        run_sweep(
            config, [(0.5, 0.5)], ["raco"], judges=["length", "implicit"], mesh=single_device_mesh()
        )
    with pytest.raises(ValueError, match="at least 2 objectives"):
        evaluate_runs([tmp_path], ["q"], ["length"], tmp_path / "eval")
    assert not pathlib.Path(tmp_path / "runs").exists()
