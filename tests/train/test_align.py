"""The alignment run end to end on a tiny Qwen 3 checkpoint: every method, checkpoints, logs,
the Hugging Face export, kill and resume through the CLI, a sharded run against one device, bad
configs failing before anything loads, NaN and out-of-memory handling, and the communication of
the compiled step under a mesh."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data import fixtures
from flax import nnx
from models import tiny_checkpoints

from raco_jax.train import align, check_run, make_schedule, split_train_eval
from raco_jax.train.config import AlignConfig
from raco_jax.train.failures import NonFiniteLossError
from raco_jax.train.mesh import run_mesh

OBJECTIVES = ("helpful", "harmless")
NUM_ROWS = 24
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_qwen3(path: pathlib.Path, *, seed: int, vocab: int) -> pathlib.Path:
    """A 1-layer Qwen 3 checkpoint (hidden 32) whose vocabulary covers the byte tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    kw = dict(
        tiny_checkpoints.LLAMA_KW,
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    config = Qwen3Config(
        **kw,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    tiny_checkpoints._randomize(model, seed=seed, norm_center=1.0)
    return tiny_checkpoints._finish(model, path)[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """A tiny Qwen 3 model with a chat-template tokenizer, a margin model, PKU-style rows."""
    root = tmp_path_factory.mktemp("align")
    tokenizer = fixtures.family_tokenizer("qwen3", root / "tokenizer")
    vocab = 16 * math.ceil(len(tokenizer) / 16)
    model_dir = tiny_qwen3(root / "model", seed=1, vocab=vocab)
    tokenizer.save_pretrained(model_dir)
    margin_dir = tiny_qwen3(root / "margin", seed=5, vocab=vocab)
    rows = [fixtures._pku_row(i, i % 2, (i // 2) % 2) for i in range(NUM_ROWS)]
    data = root / "pku.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"root": root, "model": model_dir, "margin": margin_dir, "data": data}


def make_config(workspace: dict[str, pathlib.Path], output_dir: pathlib.Path, **changes: Any):
    values = {
        "model": str(workspace["model"]),
        "dataset": str(workspace["data"]),
        "schema": "pku-saferlhf",
        "objectives": OBJECTIVES,
        "weights": (0.7, 0.3),
        "batch_size": 4,
        "max_steps": 2,
        "max_length": 48,
        "max_prompt_length": 32,
        "learning_rate": 1e-3,
        "dtype": "float32",
        "log_every": 1,
        "output_dir": str(output_dir),
        **changes,
    }
    return AlignConfig(**values)


def single_device_mesh() -> jax.sharding.Mesh:
    return run_mesh((1, 1, 1), devices=jax.devices()[:1])


def records(run_dir: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def params_of(model: Any) -> dict[str, np.ndarray]:
    return {
        jax.tree_util.keystr(tuple(path)): np.asarray(value.get_value())
        for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def read_safetensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
    from raco_jax.models import read_safetensors

    return read_safetensors(directory / "model.safetensors")


def assert_hf_logits_match(final_dir: pathlib.Path, model: Any, atol: float = 1e-4) -> None:
    """transformers loads the export and gives our model's logits."""
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(final_dir, dtype="float32")
    hf_model.eval()
    ids = np.random.default_rng(0).integers(1, 250, size=(2, 20)).astype(np.int32)
    mask = np.ones_like(ids)
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    theirs = tiny_checkpoints.hf_logits(hf_model, ids, mask)
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=1e-4)


# -- every method end to end ------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["raco", "cagrad", "dpo-lw", "mgda", "pcgrad", "dpo", "amopo", "modpo"]
)
def test_every_method_end_to_end(workspace, tmp_path, method) -> None:
    extra: dict[str, Any] = {"save_every": 1}
    if method == "modpo":  # margin rewards from a second model (one per non-target objective)
        extra["margin_models"] = (str(workspace["margin"]),)
    if method == "raco":  # held-out evaluation every step
        extra.update(eval_fraction=0.2, eval_every=1)
    if method == "dpo-lw":  # logits projected 16 positions at a time
        extra["time_chunk_size"] = 16
    config = make_config(workspace, tmp_path / method, method=method, **extra)
    result = align(config, mesh=single_device_mesh(), progress=False)
    out = tmp_path / method

    assert result.status == "completed" and result.step == 2
    assert json.loads((out / "config.json").read_text())["method"] == method
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [
        1,
        2,
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_step"] == 2
    train = [r for r in records(out) if "loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    for record in train:
        assert all(math.isfinite(record[f"loss/{o}"]) for o in OBJECTIVES)
        assert "rewards/helpful/accuracies" in record and "learning_rate" in record
        if method in ("raco", "cagrad", "dpo-lw", "mgda", "pcgrad"):
            assert "aggregation/cos/helpful/harmless" in record
            assert "grad_norm/helpful" in record
    if method == "raco":
        assert "aggregation/num_clipped" in train[0]
        evals = [r for r in records(out) if "eval_loss" in r]
        assert [r["step"] for r in evals] == [1, 2]
        assert "eval_rewards/harmless/accuracies" in evals[-1]
        assert result.eval_metrics["eval_loss"] == evals[-1]["eval_loss"]
    final = out / "final"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in final.iterdir()
    }
    if method in ("raco", "modpo"):
        assert_hf_logits_match(final, result.model)
    # the export holds the trained parameters, not the initial ones
    start = read_safetensors(workspace["model"])
    end = read_safetensors(final)
    assert not np.allclose(start["model.norm.weight"], end["model.norm.weight"])


def test_lora_exports_merged_and_adapters(workspace, tmp_path) -> None:
    from safetensors.numpy import load_file

    from raco_jax.models import merge_lora, save_pretrained

    config = make_config(
        workspace,
        tmp_path / "lora",
        lora_rank=4,
        lora_alpha=8.0,
        reference="lora_base",
        export_lora="adapter",
        learning_rate=1e-2,
    )
    result = align(config, mesh=single_device_mesh(), progress=False)
    adapters = load_file(str(result.final_dir / "adapter_model.safetensors"))
    adapter_config = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8.0
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    assert adapters[f"{key}.lora_A.weight"].shape == (4, 32)
    assert adapters[f"{key}.lora_B.weight"].shape == (32, 4)  # 4 heads x head_dim 8
    # PEFT's merge W + (alpha / r) B A on the base weights gives our merged model
    base = read_safetensors(workspace["model"])
    merged_ours = merge_lora(result.model)
    for name in ("q_proj", "o_proj"):
        stem = f"base_model.model.model.layers.0.self_attn.{name}"
        b, a = adapters[f"{stem}.lora_B.weight"], adapters[f"{stem}.lora_A.weight"]
        assert np.abs(b).max() > 0  # the adapters were trained
        peft_merged = base[f"model.layers.0.self_attn.{name}.weight"] + 2.0 * b @ a
        kernel = np.asarray(getattr(merged_ours.layers[0].self_attn, name).kernel[...])
        in_ndim = 2 if name == "o_proj" else 1
        ours = kernel.reshape(int(np.prod(kernel.shape[:in_ndim])), -1).T
        np.testing.assert_allclose(ours, peft_merged, atol=1e-6)
    # PEFT loads the adapters onto the transformers base model: the same logits as ours
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert adapter_config["base_model_name_or_path"] == str(workspace["model"])
    base_hf = AutoModelForCausalLM.from_pretrained(workspace["model"], dtype="float32")
    peft_model = PeftModel.from_pretrained(base_hf, result.final_dir).eval()
    ids = np.random.default_rng(1).integers(1, 250, size=(2, 20)).astype(np.int32)
    mask = np.ones_like(ids)
    np.testing.assert_allclose(
        np.asarray(result.model(jnp.asarray(ids), jnp.asarray(mask))),
        tiny_checkpoints.hf_logits(peft_model, ids, mask),
        atol=1e-4,
        rtol=1e-4,
    )
    # the merged export loads in transformers and gives the LoRA model's logits
    merged_dir = tmp_path / "merged"
    save_pretrained(merge_lora(result.model), result.model.config, merged_dir)
    result.tokenizer.save_pretrained(merged_dir)
    assert_hf_logits_match(merged_dir, result.model)


def test_per_micro_batch_aggregation(workspace, tmp_path) -> None:
    """aggregate_at='micro_batch': each half batch is aggregated, AdamW steps once per batch."""
    config = make_config(
        workspace, tmp_path / "micro", micro_batches=2, aggregate_at="micro_batch", max_steps=3
    )
    result = align(config, mesh=single_device_mesh(), progress=False)
    train = [r for r in records(tmp_path / "micro") if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3] and int(result.state.step) == 6
    assert [r["learning_rate"] for r in train] == pytest.approx(
        [float(make_schedule(config, 3)(s)) for s in range(3)]
    )


# -- kill and resume through the CLI ------------------------------------------------------------


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


# Runs `raco-jax align` with each step after the second slowed down, as a long job would be.
SLOW_CLI = """
import sys, time
from raco_jax.train import logs
log = logs.RunLogger.log
def slow_log(self, step, *args, **kwargs):
    if step >= 3:
        time.sleep(30)
    return log(self, step, *args, **kwargs)
logs.RunLogger.log = slow_log
from raco_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_and_resume_gives_the_uninterrupted_run(workspace, tmp_path) -> None:
    config = make_config(workspace, tmp_path / "unused", max_steps=4, save_every=2)
    config_file = tmp_path / "run.json"
    values = {k: v for k, v in config.to_dict().items() if k != "output_dir"}
    config_file.write_text(json.dumps(values))
    # JSON is YAML: the config file is read by the YAML loader.
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(config_file.read_text())
    env = _subprocess_env()
    cli = [sys.executable, "-m", "raco_jax.cli", "align", "--config", str(yaml_file)]

    whole = tmp_path / "whole"
    done = subprocess.run(
        [*cli, "--output-dir", str(whole)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"final model: {whole / 'final'}" in done.stdout

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SLOW_CLI,
            "align",
            "--config",
            str(yaml_file),
            "--output-dir",
            str(killed),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while not (killed / "checkpoints" / "2").is_dir():
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.time() < deadline, "no checkpoint after 240 s"
            time.sleep(0.2)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "final").exists()

    resumed = subprocess.run(
        [*cli, "--output-dir", str(killed), "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 2" in resumed.stdout
    want, got = read_safetensors(whole / "final"), read_safetensors(killed / "final")
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, rtol=0, err_msg=name)
    assert [r["step"] for r in records(killed) if "loss" in r] == [1, 2, 3, 4]
    np.testing.assert_allclose(
        [r["loss"] for r in records(killed) if "loss" in r],
        [r["loss"] for r in records(whole) if "loss" in r],
        atol=1e-6,
    )


# -- a sharded run --------------------------------------------------------------------------------


def test_sharded_run_matches_one_device(workspace, tmp_path) -> None:
    assert jax.device_count() == 8
    results = {}
    for name, mesh in (("one", single_device_mesh()), ("mesh", run_mesh((2, 2, 2)))):
        config = make_config(workspace, tmp_path / name, mesh=(2, 2, 2), log_every=1)
        results[name] = align(config, mesh=mesh, progress=False)
    leaf = results["mesh"].model.layers[0].self_attn.q_proj.kernel[...]
    assert leaf.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    adam = results["mesh"].state.opt_state[-1].inner_state[0]  # AdamW's moments: like the params
    assert adam.mu["layers"][0]["self_attn"]["q_proj"]["kernel"][...].sharding == leaf.sharding
    np.testing.assert_allclose(
        [r["loss"] for r in records(tmp_path / "mesh") if "loss" in r],
        [r["loss"] for r in records(tmp_path / "one") if "loss" in r],
        atol=1e-5,
    )
    one, sharded = params_of(results["one"].model), params_of(results["mesh"].model)
    for name in one:
        np.testing.assert_allclose(sharded[name], one[name], atol=1e-5, err_msg=name)


# -- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "ppo"}, "unknown method 'ppo'"),
        ({"weights": (0.2, 0.3, 0.5)}, "weights has 3 entries but objectives has 2"),
        ({"weights": (0.5, 0.6)}, "weights must sum to 1"),
        ({"objectives": ("helpful", "honest")}, r"objective\(s\) \['honest'\] are not provided"),
        ({"mesh": (3, 1, 1)}, r"mesh \(3, 1, 1\) does not divide the 8 available devices"),
        ({"mesh": (8, 1, 1)}, "batch_size 4 must be divisible by the mesh's data x fsdp = 8"),
        ({"method": "modpo"}, "needs one margin reward model per objective"),
        ({"eval_every": 5}, "eval_every=5 needs held-out pairs"),
        ({"schema": "nope"}, "unknown schema 'nope'"),
    ],
)
def test_bad_config_fails_before_anything_loads(
    workspace, tmp_path, monkeypatch, changes, message
) -> None:
    import raco_jax.train.alignment

    def no_loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the config was checked")

    monkeypatch.setattr(raco_jax.train.alignment, "from_pretrained", no_loading)
    out = tmp_path / "run"
    config = make_config(workspace, out, **changes).replace(model=str(tmp_path / "no-model"))
    with pytest.raises(ValueError, match=message):
        align(config, progress=False)
    assert not out.exists()


def test_existing_checkpoints_need_resume(workspace, tmp_path) -> None:
    (tmp_path / "run" / "checkpoints" / "2").mkdir(parents=True)
    config = make_config(workspace, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds checkpoints"):
        check_run(config, mesh_shape=(1, 1, 1))
    (tmp_path / "run" / "config.json").write_text(json.dumps(config.replace(c=0.2).to_dict()))
    with pytest.raises(ValueError, match=r"its config differs in \['c'\]"):
        check_run(config.replace(resume=True), mesh_shape=(1, 1, 1))


def test_resume_without_a_checkpoint_says_it_starts_fresh(workspace, tmp_path, capsys) -> None:
    config = make_config(workspace, tmp_path / "run", resume=True, max_steps=1)
    result = align(config, mesh=single_device_mesh(), progress=True)
    printed = capsys.readouterr().out
    assert f"resume: no checkpoint in {tmp_path / 'run' / 'checkpoints'}" in printed
    assert "starting the run from step 0" in printed and result.start_step == 0


def test_schema_objectives_and_uniform_weights_are_the_defaults(workspace, tmp_path) -> None:
    config = make_config(workspace, tmp_path / "run").replace(objectives=(), weights=())
    result = align(config, mesh=single_device_mesh(), progress=False)
    assert result.config.objectives == OBJECTIVES and result.config.weights == (0.5, 0.5)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["objectives"] == list(OBJECTIVES) and stored["weights"] == [0.5, 0.5]


def _generic_rows(labels: Sequence[str], offset: int) -> list[dict[str, Any]]:
    """Generic-schema rows, each labeled for ONE objective (the other column absent)."""
    return [
        {
            "prompt": f"Question {offset + i}: is {i} even?",
            "chosen": "Yes." if i % 2 == 0 else "No, it is odd.",
            "rejected": "No." if i % 2 == 0 else "Yes, even.",
            f"sign_{objective}": 1 if i % 3 else -1,
        }
        for i, objective in enumerate(labels)
    ]


def test_eval_losses_are_exact_on_batches_of_one_objective(workspace, tmp_path) -> None:
    """eval_loss/<k> is the mean over ALL pairs labeled for k and eval_loss = sum_k w_k of
    them, even when every held-out batch holds pairs of a single objective (issue 10: the
    absent objective used to count as 0 and halve eval_loss)."""
    from raco_jax.data import load_preferences, tokenize_pairs
    from raco_jax.models import from_pretrained, load_tokenizer
    from raco_jax.train.pair_logps import pair_logps

    data = tmp_path / "data"
    data.mkdir()
    train = _generic_rows(["helpful", "harmless"] * 4, 0)
    held_out = _generic_rows(["helpful"] * 4 + ["harmless"] * 4, 100)  # batches of 4: one each
    for name, rows in (("train", train), ("test", held_out)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = make_config(
        workspace, tmp_path / "run", dataset=str(data), schema="generic", eval_split="test",
        learning_rate=3e-2, max_steps=3,
    )  # fmt: skip
    result = align(config, mesh=single_device_mesh(), progress=False)
    metrics = result.eval_metrics

    pairs, _ = load_preferences(str(data), "generic", objectives=OBJECTIVES, split="test")
    tokenizer = load_tokenizer(workspace["model"])
    tokens = tokenize_pairs(
        pairs, tokenizer, OBJECTIVES, config.max_length, config.max_prompt_length
    )
    policy = np.asarray(pair_logps(result.model, tokens, 4), np.float64)
    base, _ = from_pretrained(workspace["model"])
    reference = np.asarray(pair_logps(base, tokens, 4), np.float64)
    margins = (policy[0] - reference[0]) - (policy[1] - reference[1])
    signs, labeled = np.asarray(tokens.signs), np.asarray(tokens.labeled)
    expected = {}
    for k, name in enumerate(OBJECTIVES):
        mask = labeled[k] > 0
        z = config.beta * signs[k][mask] * margins[mask]
        expected[name] = float(np.mean(np.logaddexp(0.0, -z)))  # -log sigmoid(z)
        np.testing.assert_allclose(metrics[f"eval_loss/{name}"], expected[name], rtol=1e-5)
    weighted = 0.7 * expected["helpful"] + 0.3 * expected["harmless"]
    np.testing.assert_allclose(metrics["eval_loss"], weighted, rtol=1e-5)
    assert (
        metrics["eval_pairs/helpful/decisive"] == 4 and metrics["eval_pairs/harmless/decisive"] == 4
    )


def test_nan_stops_and_keeps_the_last_good_checkpoint(workspace, tmp_path, monkeypatch) -> None:
    from raco_jax.train.step import TrainStep

    call = TrainStep.__call__

    def nan_from_step_3(self, state, batch):
        state, metrics = call(self, state, batch)
        if int(state.step) >= 3:
            metrics = {**metrics, "loss": jnp.float32(jnp.nan)}
        return state, metrics

    monkeypatch.setattr(TrainStep, "__call__", nan_from_step_3)
    out = tmp_path / "run"
    config = make_config(workspace, out, max_steps=4, save_every=2, log_every=2)
    with pytest.raises(NonFiniteLossError) as info:
        align(config, mesh=single_device_mesh(), progress=False)
    assert info.value.step == 4 and info.value.names == ("loss",)
    assert "last good checkpoint: step 2" in "\n".join(info.value.__notes__)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "step 2" in summary["error"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    assert not (out / "final").exists()


def test_out_of_memory_names_the_knobs(workspace, tmp_path, monkeypatch) -> None:
    from raco_jax.train.step import TrainStep

    def out_of_memory(self, state, batch):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1 GiB")

    monkeypatch.setattr(TrainStep, "__call__", out_of_memory)
    config = make_config(workspace, tmp_path / "run", reference="online")
    with pytest.raises(MemoryError, match="micro_batches") as info:
        align(config, mesh=single_device_mesh(), progress=False)
    assert "--micro-batches 2" in str(info.value) and "--lora-rank 16" in str(info.value)


# -- helpers ---------------------------------------------------------------------------------------


def test_schedule_and_split() -> None:
    schedule = make_schedule(
        AlignConfig(learning_rate=2.0, warmup_ratio=0.25, schedule="linear"), 8
    )
    assert [float(schedule(s)) for s in (0, 1, 2, 5, 8)] == [0.0, 1.0, 2.0, 1.0, 0.0]
    constant = make_schedule(
        AlignConfig(learning_rate=2.0, warmup_ratio=0.0, schedule="constant"), 8
    )
    assert float(constant(0)) == float(constant(7)) == 2.0
    train, held_out = split_train_eval(list(range(20)), 0.25, seed=3)
    assert (len(train), len(held_out)) == (15, 5)
    assert split_train_eval(list(range(20)), 0.25, seed=3) == (train, held_out)


# -- communication of the compiled step under a mesh ---------------------------------------------

_DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "bf16": 2, "pred": 1, "f64": 8, "s64": 8}
_COLLECTIVE = re.compile(
    r"= (.*?) (all-reduce|reduce-scatter|all-gather|all-to-all|collective-permute)(?:-start)?\("
)


def collectives(hlo: str) -> list[tuple[str, list[int], int]]:
    """(kind, element counts of each operand, bytes) of every collective in compiled HLO."""
    found = []
    for line in hlo.splitlines():
        match = _COLLECTIVE.search(line)
        if not match:
            continue
        shapes = re.findall(r"(f32|s32|u32|bf16|pred|f64|s64)\[([\d,]*)\]", match.group(1))
        sizes = [math.prod(int(d) for d in dims.split(",") if d) for _, dims in shapes]
        size_bytes = sum(
            n * _DTYPE_BYTES[dtype] for n, (dtype, _) in zip(sizes, shapes, strict=True)
        )
        found.append((match.group(2), sizes, size_bytes))
    return found


@pytest.mark.parametrize("shape", [(2, 4, 1), (2, 2, 2)])
def test_gram_adds_only_k_by_k_communication(shape) -> None:
    """Under a mesh, the aggregation communicates K x K partial Gram matrices and scalars only,
    and the full step communicates nothing beyond the gradient computation but those."""
    from jax.sharding import NamedSharding, PartitionSpec

    from raco_jax.models import Decoder, ModelConfig, shard_model
    from raco_jax.preference import make_batch, objective_counts
    from raco_jax.train import TrainStep, make_optimizer
    from raco_jax.train.mesh import shard_batch, shard_train_state, shard_train_step

    k = 2
    mesh = run_mesh(shape)
    config = ModelConfig(
        model_type="qwen3",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
    )
    model = shard_model(Decoder(config, rngs=nnx.Rngs(0)), mesh)
    weights = (0.5, 0.5)
    step = TrainStep(
        model,
        make_optimizer("raco", weights),
        method="raco",
        objectives=OBJECTIVES,
        weights=weights,
    )
    state, shardings = shard_train_state(step.init(model), mesh)
    shard_train_step(step, shardings, mesh)
    rng = np.random.default_rng(0)
    pairs, length = 8, 16
    loss_mask = np.zeros((2 * pairs, length))
    loss_mask[:, 8:] = 1
    batch = shard_batch(
        make_batch(
            rng.integers(1, 64, (2 * pairs, length)),
            np.ones((2 * pairs, length)),
            loss_mask,
            rng.choice([-1.0, 1.0], (k, pairs)),
            ref_logps=rng.normal(size=2 * pairs),
        ),
        mesh,
    )
    num_leaves = len(jax.tree.leaves(state.params))

    # 1. The aggregation chain alone, on stacked gradients sharded like the parameters (the
    # objective axis unsharded): only K x K Gram partial sums and scalars cross devices.
    stacked_shardings = jax.tree.map(
        lambda s: NamedSharding(mesh, PartitionSpec(None, *s.spec)), shardings.params
    )

    def stacked_grads(state, batch):
        normalizer = objective_counts(batch.signs, batch.labeled)
        return step._grads(state.params, state.rest, state.ref_state, batch, normalizer)[1]

    abstract = jax.tree.map(
        lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        jax.eval_shape(stacked_grads, state, batch),
        stacked_shardings,
    )
    update = jax.jit(
        lambda g, s, p: step.tx.update(g, s, p),
        out_shardings=(shardings.params, shardings.opt_state),
    )
    aggregation = collectives(
        update.lower(abstract, state.opt_state, state.params).compile().as_text()
    )
    assert aggregation, "expected the partial Gram matrices to be all-reduced"
    assert all(kind == "all-reduce" for kind, _, _ in aggregation), aggregation
    assert max(max(sizes) for _, sizes, _ in aggregation) <= k * k, aggregation
    # one K x K partial sum per leaf and per reduction over a mesh axis
    hops = sum(size > 1 for size in mesh.shape.values())
    gram_bytes = sum(sizes.count(k * k) for _, sizes, _ in aggregation) * k * k * 4
    assert 0 < gram_bytes <= hops * num_leaves * k * k * 4

    # 2. The whole compiled step, against the program that only computes the stacked
    # gradients (same shardings): what the step adds never carries a stacked gradient, only
    # K x K partial Grams, per-row or scalar metrics and small replicated parameters (norms).
    full = collectives(step.lower(state, batch).compile().as_text())
    grads_only = collectives(
        jax.jit(stacked_grads, out_shardings=stacked_shardings)
        .lower(state, batch)
        .compile()
        .as_text()
    )

    def multiset(found):  # per operand: XLA combines small and large reductions differently
        counts: dict[tuple[str, int], int] = {}
        for kind, sizes, _ in found:
            for size in sizes:
                counts[kind, size] = counts.get((kind, size), 0) + 1
        return counts

    full_counts, grads_counts = multiset(full), multiset(grads_only)
    added = {
        key: count - grads_counts.get(key, 0)
        for key, count in full_counts.items()
        if count > grads_counts.get(key, 0)
    }
    replicated_sizes = [
        leaf.size for leaf in jax.tree.leaves(state.params) if leaf.sharding.is_fully_replicated
    ]
    allowed = max(k * k, 2 * pairs, *replicated_sizes)
    smallest_sharded = min(
        k * leaf.size
        for leaf in jax.tree.leaves(state.params)
        if not leaf.sharding.is_fully_replicated
    )
    assert allowed < smallest_sharded, (allowed, smallest_sharded)
    assert all(size <= allowed for (_, size) in added), (allowed, added)
    assert added.get(("all-reduce", k * k), 0) > 0, added
