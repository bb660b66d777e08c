"""LoRA on the top layers only, the frozen layers below computed once per pair, and only the
positions that score completions projected onto the vocabulary: the same computation as the full
forward pass (losses, per-objective gradients, updates, an align run, the evaluation of saved
runs); the adapters round-trip with PEFT's ``layers_to_transform``."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from raco_jax.data import PreferencePair, byte_tokenizer, tokenize_pairs
from raco_jax.evaluate import evaluate_preference_runs, pair_rewards
from raco_jax.models import (
    Decoder,
    LoRAConfig,
    LoRAParam,
    ModelConfig,
    apply_lora,
    load_lora_adapters,
    save_lora_adapters,
    save_pretrained,
)
from raco_jax.models.lora import lora_params
from raco_jax.preference import PreferenceBatch
from raco_jax.train import AlignConfig, TrainStep, align, load_run_model, make_optimizer
from raco_jax.train.config import validate_config
from raco_jax.train.mesh import run_mesh
from raco_jax.train.pair_logps import pair_layer_inputs, pair_logps

TOKENIZER = byte_tokenizer("chatml")
CONFIG = ModelConfig(
    model_type="qwen3", vocab_size=len(TOKENIZER), hidden_size=32, intermediate_size=64,
    num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
)  # fmt: skip
OBJECTIVES = ("helpful", "concise")


def _pairs(n: int) -> list[PreferencePair]:
    return [
        PreferencePair(f"Question {i}?", "Yes. " * (1 + i % 3), "No.", {"helpful": 1 - 2 * (i % 2)})
        for i in range(n)
    ]


def _tokenized(n: int = 8):
    return tokenize_pairs(_pairs(n), TOKENIZER, OBJECTIVES, 48, 24, max_completion_length=12)


def _model(layers=(-1,)) -> Decoder:
    model = Decoder(CONFIG, rngs=nnx.Rngs(0))
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0, layers=layers), rngs=nnx.Rngs(1))
    # nonzero adapters, so that the policy is not the reference
    nnx.update(model, jax.tree.map(lambda x: x + 0.05, lora_params(model)))
    return model


def test_lora_on_top_layers_only_and_its_errors(tmp_path) -> None:
    model = _model(layers=(-1,))
    assert sorted(lora_params(model)["layers"]) == [2]
    with pytest.raises(ValueError, match="outside the model's 3 layers"):
        apply_lora(Decoder(CONFIG, rngs=nnx.Rngs(0)), LoRAConfig(4, 8.0, layers=(3,)), nnx.Rngs(1))
    with pytest.raises(ValueError, match="non-empty sequence of ints"):
        LoRAConfig(4, 8.0, layers=())
    lora = LoRAConfig(rank=4, alpha=8.0, layers=(-1,))
    save_lora_adapters(model, tmp_path, lora)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["layers_to_transform"] == [2]  # PEFT's key, resolved to layer indices
    loaded = load_lora_adapters(Decoder(CONFIG, rngs=nnx.Rngs(0)), tmp_path)
    ids = jnp.array([[1, 2, 3, 4]])
    np.testing.assert_allclose(loaded(ids), model(ids), atol=1e-6)
    config = AlignConfig(objectives=OBJECTIVES, weights=(0.5, 0.5), lora_rank=4)
    with pytest.raises(ValueError, match="cache_layer_inputs needs LoRA on some layers"):
        validate_config(config.replace(cache_layer_inputs=True), require_data=False)
    with pytest.raises(ValueError, match="needs LoRA: set lora_rank > 0"):
        validate_config(config.replace(lora_rank=0, lora_layers=(-1,)), require_data=False)


def test_step_from_layer_inputs_equals_the_full_step() -> None:
    tokenized = _tokenized()
    indices = list(range(4))
    fields = tokenized.collate(indices, batch_size=4)
    base = Decoder(CONFIG, rngs=nnx.Rngs(0))
    stream = pair_layer_inputs(base, tokenized, layer=2, batch_size=4)
    ref = np.zeros(8, np.float32)
    full = PreferenceBatch(**fields, ref_logps=ref)
    cached = full._replace(layer_inputs=stream.collate(indices, 4, fields["input_ids"].shape[1]))
    results = []  # the full forward; from layer 2; from layer 2 scoring the completions only
    for first_layer, batch, window in ((0, full, None), (2, cached, None), (2, cached, 12)):
        model = _model(layers=(-1,))
        tx = make_optimizer("raco", (0.6, 0.4), learning_rate=1e-2)
        step = TrainStep(
            model, tx, method="raco", objectives=OBJECTIVES, weights=(0.6, 0.4), wrt=LoRAParam,
            first_layer=first_layer, max_completion_length=window,
        )  # fmt: skip
        state, metrics = step(step.init(model), jax.tree.map(jnp.asarray, batch))
        results.append((metrics, state.params))
    m_full, p_full = results[0]
    for m_other, p_other in results[1:]:
        for key in ("loss/helpful", "loss/concise", "grad_norm/helpful", "grad_norm/concise",
                    "aggregation/cos/helpful/concise", "update_norm"):  # fmt: skip
            np.testing.assert_allclose(m_other[key], m_full[key], rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(p_other), jax.tree.leaves(p_full), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="first_layer=2: batches must hold layer_inputs"):
        step._check_batch(full)
    too_long = np.ones_like(cached.loss_mask)
    too_long[:, 0] = 0.0  # every token after the first scored: longer than the window
    with pytest.raises(ValueError, match="more than max_completion_length=12"):
        step._check_batch(cached._replace(loss_mask=too_long))


def test_align_and_evaluation_from_cached_layer_inputs(tmp_path) -> None:
    save_pretrained(Decoder(CONFIG, rngs=nnx.Rngs(0)), CONFIG, tmp_path / "model")
    TOKENIZER.save_pretrained(tmp_path / "model")
    rows = [p.to_dict() for p in _pairs(8)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = AlignConfig(
        model=str(tmp_path / "model"), dataset=str(data), schema="generic", objectives=OBJECTIVES,
        weights=(0.5, 0.5), batch_size=4, max_steps=2, max_length=48, max_prompt_length=24,
        max_completion_length=12, learning_rate=5e-2, dtype="float32", log_every=1, lora_rank=4,
        lora_layers=(-2, -1),
        cache_layer_inputs=True, export_lora="adapter", output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    align(config, mesh=run_mesh((1, 1, 1), jax.devices()[:1]), progress=False)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss/helpful"] == pytest.approx(np.log(2), abs=1e-6)  # policy = reference
    assert list((tmp_path / "run" / "cache").glob("layer-inputs-*.npz"))
    assert json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())[
        "layers_to_transform"
    ] == [1, 2]
    runs = [tmp_path / "run"]
    evaluation = evaluate_preference_runs(runs, data, tmp_path / "eval", schema="generic", log=None)
    assert evaluation.first_layer == 1  # the run adapts layers 1 and 2 only
    tokenized = _tokenized()
    reference = pair_logps(Decoder(CONFIG, rngs=nnx.Rngs(0)), tokenized, 4)
    for run in runs:  # the full forward pass of the saved run gives the same margins
        policy = pair_logps(load_run_model(run)[0], tokenized, 4)
        np.testing.assert_allclose(
            evaluation.rewards[str(run)], pair_rewards(policy, reference, 0.1), atol=1e-5
        )
    assert np.load(tmp_path / "eval" / "pair_rewards.npz")["rewards"].shape == (1, 8)
    path = pathlib.Path(evaluation.paths["json"])
    assert "accuracy_conflicting/concise" in json.loads(path.read_text())["runs"][0]
