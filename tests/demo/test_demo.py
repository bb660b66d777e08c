"""The demo pipeline: ``run_demo`` (quick), its report files, determinism, the CLI parser."""

from __future__ import annotations

import csv
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import raco_jax.demo as demo_run
from raco_jax.cli import build_parser
from raco_jax.demo import Aligner, DemoConfig, demo_config, prepare, run_demo, task, weight_grid
from raco_jax.demo.task import PretrainConfig
from raco_jax.train import TrainStep, make_optimizer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TINY = DemoConfig(
    corpus_size=256,
    pretrain=PretrainConfig(steps=40, steps_per_call=20),
    num_pairs=64,
    batch_size=16,
    align_steps=6,
    methods=("raco", "dpo-lw"),
    weights=((0.7, 0.3), (0.3, 0.7)),
    eval_samples_per_prompt=4,
)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One quick demo (2 objectives), shared by the report tests."""
    out = tmp_path_factory.mktemp("demo_quick")
    return run_demo(out, quick=True, progress=False)


@pytest.fixture(scope="module")
def tiny_setup() -> demo_run.DemoSetup:
    return prepare(TINY)


# --------------------------------------------------------------------------------------------
# The quick demo and its report
# --------------------------------------------------------------------------------------------


def test_quick_demo_writes_a_parseable_report(quick: dict) -> None:
    out = pathlib.Path(quick["output_dir"])
    names = {p.name for p in out.iterdir()}
    assert {
        "front.png",
        "front.csv",
        "front.md",
        "front.json",
        "run_config.json",
        "samples.md",
    } <= names
    assert (out / "front.png").read_bytes()[:8] == PNG_SIGNATURE
    with (out / "front.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    config = demo_config(quick=True)
    assert len(rows) == len(config.methods) * len(config.weights)
    assert [row["method"] for row in rows[:: len(config.weights)]] == list(config.methods)
    for row in rows:
        for name in config.objectives:
            assert math.isfinite(float(row[name]))
    front = json.loads((out / "front.json").read_text())
    assert front["objectives"] == list(config.objectives)
    assert front["reference"] == pytest.approx(quick["reference"])
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["config"]["align_steps"] == config.align_steps
    assert saved["hypervolumes"] == quick["hypervolumes"]
    markdown = (out / "front.md").read_text()
    assert "## Hypervolume per method" in markdown
    assert "## Normalised hypervolume against the worst possible scores" in markdown
    assert "answer:" in (out / "samples.md").read_text()


def test_quick_demo_numbers(quick: dict) -> None:
    methods = demo_config(quick=True).methods
    assert list(quick["hypervolumes"]) == list(methods)
    for method in methods:
        assert math.isfinite(quick["hypervolumes"][method]) and quick["hypervolumes"][method] >= 0
        assert 0.0 < quick["hypervolumes_vs_worst"][method] < 1.0
    assert quick["correlations"]["informativeness/brevity"] < -0.3
    pretrained = quick["pretrained"]["scores"]
    assert quick["reference"] == [pretrained["informativeness"], pretrained["brevity"]]
    # the weights steer: more weight on informativeness gives more informative responses
    for method in methods:
        runs = [r for r in quick["results"] if r["method"] == method]
        assert runs[0]["weights"][0] > runs[-1]["weights"][0]
        assert runs[0]["scores"]["informativeness"] > runs[-1]["scores"]["informativeness"]
        assert runs[0]["scores"]["brevity"] < runs[-1]["scores"]["brevity"]
    # one compile of the train step per method, whatever the number of weight vectors
    for method in methods:
        assert quick["compiles"][f"train_step/{method}"] == 1
    assert quick["compiles"]["generate"] <= 2  # pairs (2 x 512 rows) and evaluation
    assert "Hypervolume per method" in quick["summary"]


# --------------------------------------------------------------------------------------------
# Determinism and the injected weights
# --------------------------------------------------------------------------------------------


def test_same_seed_same_numbers(tiny_setup: demo_run.DemoSetup) -> None:
    again = prepare(TINY)
    np.testing.assert_array_equal(tiny_setup.pairs.signs, again.pairs.signs)
    np.testing.assert_array_equal(tiny_setup.batch.ref_logps, again.batch.ref_logps)
    assert tiny_setup.pretrained["scores"] == again.pretrained["scores"]
    batches = demo_run.alignment_batches(tiny_setup)
    aligner = Aligner(tiny_setup.model, "raco", TINY.objectives, steps=TINY.align_steps)
    first, history = aligner.train(tiny_setup.model, (0.7, 0.3), batches)
    second, history_again = aligner.train(tiny_setup.model, (0.7, 0.3), batches)
    assert history == history_again
    for a, b in zip(
        jax.tree.leaves(nnx.state(first)), jax.tree.leaves(nnx.state(second)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert aligner.step.num_traces == 1


def test_tiny_demo_is_deterministic(tmp_path: pathlib.Path) -> None:
    first = run_demo(tmp_path / "a", config=TINY, progress=False)
    second = run_demo(tmp_path / "b", config=TINY, progress=False)
    assert (tmp_path / "a" / "front.csv").read_text() == (tmp_path / "b" / "front.csv").read_text()
    assert first["results"] == second["results"]
    assert first["hypervolumes_vs_worst"] == second["hypervolumes_vs_worst"]


@pytest.mark.parametrize("method", ["raco", "dpo-lw", "cagrad"])
def test_demo_optimizer_matches_make_optimizer(method: str) -> None:
    """Weights written into the injected state aggregate exactly like the library chain's."""
    weights = (0.2, 0.8)
    keys = jax.random.split(jax.random.key(0), 3)
    params = {"a": jax.random.normal(keys[0], (3, 4)), "b": jax.random.normal(keys[1], (5,))}
    stacked = jax.tree.map(
        lambda p: (
            jax.random.normal(keys[2], (2, *p.shape))
            * jnp.arange(1.0, 3.0).reshape((2,) + (1,) * p.ndim)
        ),
        params,
    )
    reference = make_optimizer(method, weights, learning_rate=0.1, c=0.4)
    injected = demo_run.demo_optimizer(method, (0.5, 0.5), 0.1, c=0.4)
    state = injected.init(params)
    head, *rest = state
    state = (head._replace(hyperparams={**head.hyperparams, "weights": jnp.asarray(weights)}),)
    state = (*state, *rest)
    ref_state = reference.init(params)
    for _ in range(3):
        expected, ref_state = reference.update(stacked, ref_state, params)
        got, state = injected.update(stacked, state, params)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="method"):
        demo_run.demo_optimizer("mgda", weights, 0.1)


def test_aligner_trains_like_a_train_step_built_for_the_weights(
    tiny_setup: demo_run.DemoSetup,
) -> None:
    """The shared compiled step (weights in the optimizer state) follows the same trajectory.

    Parameters agree to float32 rounding amplified by Adam's first steps (coordinates with
    near-zero gradients), so the weighted losses are compared.
    """
    batches = demo_run.alignment_batches(tiny_setup)[:4]
    aligner = Aligner(tiny_setup.model, "raco", TINY.objectives, steps=4, beta=TINY.beta)
    weights = (0.2, 0.8)
    _, history = aligner.train(tiny_setup.model, weights, batches)
    tx = make_optimizer("raco", weights, learning_rate=aligner.schedule, c=0.4)
    step = TrainStep(
        tiny_setup.model,
        tx,
        method="raco",
        objectives=TINY.objectives,
        weights=weights,
        beta=TINY.beta,
        donate=False,
    )
    state = step.init(tiny_setup.model)
    losses = []
    for batch in batches:
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-4)
    assert history["loss"][-1] < history["loss"][0]


# --------------------------------------------------------------------------------------------
# Configuration and command line
# --------------------------------------------------------------------------------------------


def test_weight_grids_are_on_the_simplex() -> None:
    for k in (2, 3):
        for quick in (False, True):
            grid = weight_grid(k, quick)
            assert all(len(w) == k and abs(sum(w) - 1) < 1e-9 and min(w) > 0 for w in grid)
            assert len(set(grid)) == len(grid)
    assert len(weight_grid(2)) == 5 and len(weight_grid(3)) == 7
    with pytest.raises(ValueError, match="2 or 3"):
        weight_grid(4)


def test_config_validation() -> None:
    assert DemoConfig(num_objectives=3).weights == weight_grid(3)
    assert DemoConfig(num_objectives=3).objectives == task.OBJECTIVES
    with pytest.raises(ValueError, match="subset"):
        DemoConfig(methods=("mgda",))
    with pytest.raises(ValueError, match="simplex"):
        DemoConfig(weights=((0.5, 0.6),))
    with pytest.raises(ValueError, match="2 or 3"):
        DemoConfig(num_objectives=4)


def test_parser() -> None:
    parser = build_parser()
    args = parser.parse_args(["demo"])
    assert (args.quick, args.seed, args.objectives, args.output_dir) == (False, 0, 2, "raco_demo")
    args = parser.parse_args(["demo", "--quick", "--seed", "3", "--output-dir", "x"])
    assert (args.quick, args.seed, args.output_dir) == (True, 3, "x")
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--objectives", "4"])


@pytest.mark.slow
def test_cli_three_objectives_quick(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    out = tmp_path / "k3"
    args = parser.parse_args(
        ["demo", "--quick", "--objectives", "3", "--output-dir", str(out), "--no-progress"]
    )
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert f"Report written to {out}" in printed and "informativeness/safety" in printed
    with (out / "front.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * len(weight_grid(3, quick=True))
    assert {"informativeness", "brevity", "safety"} <= set(rows[0])
    summary = json.loads((out / "run_config.json").read_text())
    assert len(summary["reference"]) == 3
    assert all(math.isfinite(v) for v in summary["hypervolumes"].values())
    assert all(0 < v < 1 for v in summary["hypervolumes_vs_worst"].values())
