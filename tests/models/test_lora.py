"""LoRA adapters: unchanged start, adapter-only training, disabling, merging and HF export.

A tiny random Llama 3 checkpoint gets adapters on every projection (and ``lm_head``); a few
adam steps on a toy loss (next-token cross-entropy plus a squared log-prob anchor to the
adapter-free model, as a DPO reference would be used) move only the adapters.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

pytest.importorskip("torch", reason="LoRA export tests need torch")
pytest.importorskip("transformers", reason="LoRA export tests need transformers")

from models import tiny_checkpoints as tiny

from raco_jax.models import (
    Decoder,
    LoRAConfig,
    ModelConfig,
    apply_lora,
    from_pretrained,
    generate,
    lora_params,
    make_mesh,
    merge_lora,
    model_shardings,
    save_pretrained,
)
from raco_jax.models.lora import LoRALinear, LoRAParam, lora_disabled, without_lora
from raco_jax.models.sharding import logical_axes

TARGETS = (*LoRAConfig(rank=1, alpha=1.0).target_modules, "lm_head")
STEPS = 4


@nnx.jit
def _forward(model: Decoder, ids: jax.Array) -> jax.Array:
    return model(ids)


@nnx.jit
def _base_forward(model: Decoder, ids: jax.Array) -> jax.Array:
    return without_lora(model)(ids)


def _toy_loss(model: Decoder, ids: jax.Array) -> jax.Array:
    logprobs = jax.nn.log_softmax(model(ids[:, :-1]))
    token_logprobs = jnp.take_along_axis(logprobs, ids[:, 1:, None], axis=-1)[..., 0]
    reference = jax.nn.log_softmax(without_lora(model)(ids[:, :-1]))
    reference = jnp.take_along_axis(reference, ids[:, 1:, None], axis=-1)[..., 0]
    anchor = jnp.mean(jnp.square(token_logprobs - jax.lax.stop_gradient(reference)))
    return -jnp.mean(token_logprobs) + 0.1 * anchor


@nnx.jit
def _train_step(model: Decoder, optimizer: nnx.Optimizer, ids: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(_toy_loss, argnums=nnx.DiffState(0, LoRAParam))(model, ids)
    optimizer.update(model, grads)
    return loss


def _base_weights(model: nnx.Module) -> dict[tuple[Any, ...], np.ndarray]:
    state = nnx.state(model, nnx.All(nnx.Param, nnx.Not(LoRAParam)))
    return {tuple(p): np.array(v.get_value()) for p, v in nnx.to_flat_state(state)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Any]:
    directory, hf_model = tiny.llama(tmp_path_factory.mktemp("llama_lora"), tie=False)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, tiny.VOCAB, size=(2, 16)), jnp.int32)
    model, _ = from_pretrained(directory)
    base_logits = np.asarray(_forward(model, ids))
    base_weights = _base_weights(model)
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0, target_modules=TARGETS), rngs=nnx.Rngs(0))
    initial_logits = np.asarray(_forward(model, ids))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=LoRAParam)
    losses = [float(_train_step(model, optimizer, ids)) for _ in range(STEPS)]
    return {
        "directory": directory,
        "hf_model": hf_model,
        "ids": ids,
        "model": model,
        "optimizer": optimizer,
        "base_logits": base_logits,
        "base_weights": base_weights,
        "initial_logits": initial_logits,
        "losses": losses,
    }


def test_adapters_are_in_place_and_start_as_the_identity(setup) -> None:
    model = setup["model"]
    layer = model.layers[1].self_attn.q_proj
    assert isinstance(layer, LoRALinear) and isinstance(model.lm_head, LoRALinear)
    assert layer.lora_a.shape == (64, 4) and layer.lora_b.shape == (4, 4, 16)
    np.testing.assert_allclose(setup["initial_logits"], setup["base_logits"], atol=1e-6, rtol=0)


def test_training_moves_only_the_adapters(setup) -> None:
    model, losses = setup["model"], setup["losses"]
    assert losses[-1] < losses[0]
    after = _base_weights(model)
    assert after.keys() == setup["base_weights"].keys()
    for path, value in setup["base_weights"].items():
        np.testing.assert_array_equal(after[path], value, err_msg=str(path))
    for path, variable in nnx.to_flat_state(lora_params(model)):
        if path[-1] == "lora_b":
            assert np.abs(np.asarray(variable.get_value())).max() > 0, path
    logits = np.asarray(_forward(model, setup["ids"]))
    assert np.abs(logits - setup["base_logits"]).max() > 1e-2


def test_optimizer_state_covers_exactly_the_adapters(setup) -> None:
    model, optimizer = setup["model"], setup["optimizer"]
    num_adapters = len(jax.tree.leaves(lora_params(model)))
    assert num_adapters == 2 * (7 * 2 + 1)  # A and B of 7 projections x 2 layers + lm_head
    adam_state = optimizer.opt_state[0]
    mu_paths = {tuple(p) for p, _ in nnx.to_flat_state(nnx.State(adam_state.mu))}
    lora_paths = {tuple(p) for p, _ in nnx.to_flat_state(lora_params(model))}
    assert mu_paths == lora_paths


def test_disabled_adapters_give_the_base_logits(setup) -> None:
    model, ids, base = setup["model"], setup["ids"], setup["base_logits"]
    np.testing.assert_allclose(np.asarray(_base_forward(model, ids)), base, atol=1e-6, rtol=0)
    with lora_disabled(model):
        assert not model.layers[0].mlp.down_proj.lora_enabled
        np.testing.assert_allclose(np.asarray(_forward(model, ids)), base, atol=1e-6, rtol=0)
    assert model.layers[0].mlp.down_proj.lora_enabled
    view = nnx.view(model, lora_enabled=False)
    assert not view.lm_head.lora_enabled and model.lm_head.lora_enabled
    assert view.lm_head.kernel is model.lm_head.kernel  # a view: the same parameters


def test_merged_model_matches_adapted_and_exports_to_transformers(setup, tmp_path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model, ids = setup["model"], setup["ids"]
    adapted = np.asarray(_forward(model, ids))
    merged = merge_lora(model)
    assert type(merged) is Decoder and not jax.tree.leaves(nnx.state(merged, LoRAParam))
    # The merge itself is exact to float32 rounding: every merged kernel is W + (alpha/r) A B
    # computed in float64, within the float32 forward error bound of that sum of r + 1 products:
    # (r + 2) eps (|W| + (alpha/r) |A| |B|) (Higham, Accuracy and Stability, ch. 3).
    merged_params = {tuple(p): v.get_value() for p, v in nnx.to_flat_state(nnx.state(merged))}
    adapted_layers = [
        (tuple(path), module) for path, module in nnx.iter_modules(model)
        if isinstance(module, LoRALinear)
    ]  # fmt: skip
    assert len(adapted_layers) >= 2 * len(TARGETS) - 1
    for path, module in adapted_layers:
        a, b = (np.asarray(x[...], np.float64) for x in (module.lora_a, module.lora_b))
        kernel = np.asarray(module.kernel[...], np.float64)
        update = module.scale * np.tensordot(a, b, 1)
        got = np.asarray(merged_params[(*path, "kernel")], np.float64)
        magnitude = np.abs(kernel) + module.scale * np.tensordot(np.abs(a), np.abs(b), 1)
        bound = (module.rank + 2) * float(np.finfo(np.float32).eps) * magnitude
        assert np.all(np.abs(got - (kernel + update)) <= bound), path
    # The forward passes then differ only by the order of float32 sums (x W + x A B vs x (W + A B)
    # in every adapted projection), carried through the layers: up to ~20 ulps of the largest
    # logit here (1.0e-5 at |logit| 6.5; the adapted model alone, run eagerly and under jit,
    # differs by 6.8e-6), so the bound is 32 ulps of the largest logit.
    resolution = 32 * float(np.spacing(np.float32(np.max(np.abs(adapted)))))
    np.testing.assert_allclose(np.asarray(_forward(merged, ids)), adapted, atol=resolution, rtol=0)
    # the source model still holds its (unmerged) adapters
    assert isinstance(model.layers[0].self_attn.v_proj, LoRALinear)

    save_pretrained(merged, None, tmp_path)
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    hf_model.eval()
    with torch.no_grad():
        hf_logits = hf_model(input_ids=torch.from_numpy(np.asarray(ids, np.int64))).logits
    np.testing.assert_allclose(hf_logits.float().numpy(), adapted, atol=1e-4, rtol=0)


def test_generate_with_adapters_equals_generate_with_merged(setup) -> None:
    model, ids = setup["model"], setup["ids"]
    gen = functools.partial(generate, input_ids=ids[:, :6], max_new_tokens=4)
    np.testing.assert_array_equal(
        np.asarray(gen(model).tokens), np.asarray(gen(merge_lora(model)).tokens)
    )


def test_adapters_carry_logical_sharding_axes(setup) -> None:
    model = setup["model"]
    q_proj, down_proj = model.layers[0].self_attn.q_proj, model.layers[0].mlp.down_proj
    assert logical_axes(q_proj.lora_a) == ("embed", "lora_rank")
    assert logical_axes(q_proj.lora_b) == ("lora_rank", "heads", "head_dim")
    assert logical_axes(down_proj.lora_a) == ("mlp", "lora_rank")
    shardings = model_shardings(model, make_mesh((2, 2, 2), devices=jax.devices()[:8]))
    q_shardings = shardings["layers"][0]["self_attn"]["q_proj"]
    assert q_shardings["lora_a"].spec == jax.sharding.PartitionSpec("fsdp", None)
    assert q_shardings["lora_b"].spec == jax.sharding.PartitionSpec(None, "tensor", None)


def _tiny_decoder() -> Decoder:
    config = ModelConfig(
        model_type="llama",
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_layers=1,
        num_heads=2,
    )
    return Decoder(config, rngs=nnx.Rngs(0))


def test_apply_lora_errors_and_dropout() -> None:
    model = _tiny_decoder()
    with pytest.raises(ValueError, match=r"target_modules \['qkv_proj'\]"):
        apply_lora(model, LoRAConfig(rank=2, alpha=2.0, target_modules=("qkv_proj",)), nnx.Rngs(0))
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="dropout"):
        LoRAConfig(rank=1, alpha=1.0, dropout=1.0)
    config = LoRAConfig(rank=2, alpha=2.0, target_modules=("up_proj",), dropout=0.5)
    apply_lora(model, config, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="already holds LoRA"):
        apply_lora(model, config, rngs=nnx.Rngs(1))
    up_proj = model.layers[0].mlp.up_proj
    up_proj.lora_b[...] = jnp.ones_like(up_proj.lora_b[...])
    x = jnp.ones((4, 16))
    trained = up_proj(x)  # dropout active (training mode)
    model.eval()
    evaluated = up_proj(x)
    expected = up_proj.kernel[...].T @ x.T + 1.0 * (
        up_proj.lora_b[...].T @ (up_proj.lora_a[...].T @ x.T)
    )
    np.testing.assert_allclose(np.asarray(evaluated), np.asarray(expected.T), atol=1e-5)
    assert np.abs(np.asarray(trained - evaluated)).max() > 1e-3


def test_save_pretrained_refuses_unmerged_adapters(tmp_path) -> None:
    from flax import nnx

    from raco_jax.models import Decoder, ModelConfig, save_pretrained
    from raco_jax.models.lora import LoRAConfig, apply_lora

    config = ModelConfig(
        model_type="llama",
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_layers=1,
        num_heads=2,
    )
    model = apply_lora(Decoder(config, rngs=nnx.Rngs(0)), LoRAConfig(rank=2, alpha=4), nnx.Rngs(1))
    with pytest.raises(ValueError, match="merge_lora"):
        save_pretrained(model, config, tmp_path)


def test_saved_adapters_load_back_onto_the_base_model(setup, tmp_path) -> None:
    """The trained adapters (every projection and lm_head) saved in PEFT layout and loaded onto
    a freshly read base model give the adapted model's logits; the files hold PEFT's shapes."""
    import json

    from safetensors.numpy import load_file

    from raco_jax.models.lora import load_lora_adapters, save_lora_adapters

    config = LoRAConfig(rank=4, alpha=8.0, target_modules=TARGETS)
    save_lora_adapters(setup["model"], tmp_path, config, base_model="tiny-llama")
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"], saved["base_model_name_or_path"]) == (
        4,
        8.0,
        "tiny-llama",
    )
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    q_a = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    q_b = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    hidden = setup["model"].config.hidden_size
    assert q_a.shape == (4, hidden) and q_b.shape[1] == 4

    base, _ = from_pretrained(setup["directory"])
    loaded = load_lora_adapters(base, tmp_path)
    trained = np.asarray(_forward(setup["model"], setup["ids"]))
    assert not np.allclose(trained, setup["base_logits"], atol=1e-4)  # adapters were trained
    np.testing.assert_allclose(np.asarray(_forward(loaded, setup["ids"])), trained, atol=1e-6)
    for (path, ours), (_, theirs) in zip(
        nnx.to_flat_state(nnx.state(loaded, LoRAParam)),
        nnx.to_flat_state(nnx.state(setup["model"], LoRAParam)),
        strict=True,
    ):
        np.testing.assert_array_equal(ours.get_value(), theirs.get_value(), err_msg=str(path))


def test_loading_adapters_checks_files_and_base_model(setup, tmp_path) -> None:
    from raco_jax.models.lora import load_lora_adapters, save_lora_adapters

    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json"):
        load_lora_adapters(Decoder(setup["model"].config, rngs=nnx.Rngs(0)), tmp_path)
    save_lora_adapters(
        setup["model"], tmp_path, LoRAConfig(rank=4, alpha=8.0, target_modules=TARGETS)
    )
    other = ModelConfig(
        model_type="llama",
        vocab_size=tiny.VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_layers=1,
        num_heads=2,
    )
    with pytest.raises(ValueError, match="different base model"):
        load_lora_adapters(Decoder(other, rngs=nnx.Rngs(0)), tmp_path)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        save_lora_adapters(Decoder(other, rngs=nnx.Rngs(0)), tmp_path, LoRAConfig(rank=1, alpha=1))
