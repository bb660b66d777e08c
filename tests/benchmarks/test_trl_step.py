"""The pieces of benchmarks/trl_step.py that need neither TRL nor the RACO fork: the pairs and
their word-level tokenizer, the parameter-name mapping (raco_jax state <-> HF names and layout)
on a real transformers checkpoint, the batch built from collated tensors, the config rewrite for
transformers 4, and the raco_jax loss/gradient pieces the agreement figures rest on. The real
benchmark is not a test."""

from __future__ import annotations

import doctest
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from benchmark_scripts import load
from flax import nnx

from raco_jax.models import from_pretrained, hf_param_map, model_from_tensors

REPO = pathlib.Path(__file__).resolve().parents[2]


bench = load("trl_step")
QUICK = bench.Sizes.quick()


def test_doctests() -> None:
    assert doctest.testmod(bench, raise_on_error=False).failed == 0


def test_pairs_are_seeded_and_avoid_special_ids() -> None:
    a, b = bench.make_pairs(QUICK, seed=3), bench.make_pairs(QUICK, seed=3)
    assert a.prompts == b.prompts and a.chosen == b.chosen and a.rejected == b.rejected
    ids = [i for rows in (a.prompts, a.chosen, a.rejected) for row in rows for i in row]
    assert min(ids) >= bench.FIRST_WORD_ID and max(ids) < QUICK.vocab_size
    assert set(np.unique(a.signs[1:])) <= {-1.0, 1.0} and (a.signs[0] == 1).all()
    assert a.signs_for(2).shape == (2, QUICK.pairs)


def test_tokenizer_gives_the_ids_back_and_splits_eos() -> None:
    tokenizer = bench.make_tokenizer(QUICK.vocab_size)
    ids = [5, 17, QUICK.vocab_size - 1]
    prompt, completion = bench.words(ids[:1]), " " + bench.words(ids[1:]) + "<eos>"
    encoded = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    assert encoded == [*ids, bench.EOS_ID]
    assert tokenizer.pad_token_id == bench.PAD_ID and tokenizer.eos_token_id == bench.EOS_ID


@pytest.mark.parametrize("arch", bench.ARCHS)
def test_hf_named_matches_the_transformers_checkpoint(arch: str, tmp_path: pathlib.Path) -> None:
    """The name/layout mapping the gradient comparison uses, on a checkpoint transformers wrote."""
    from safetensors.numpy import load_file

    path = bench.build_checkpoint(arch, QUICK, tmp_path / arch, seed=0)
    model, config = from_pretrained(path)
    named = bench.hf_named(config, nnx.state(model, nnx.Param))
    tensors = load_file(str(path / "model.safetensors"))
    assert set(named) == set(hf_param_map(config))
    for key, value in named.items():
        np.testing.assert_array_equal(value, tensors[key], err_msg=key)
    rebuilt = model_from_tensors(config, named)  # and back: the inverse of from_pretrained
    for (p1, v1), (p2, v2) in zip(
        nnx.to_flat_state(nnx.state(model, nnx.Param)),
        nnx.to_flat_state(nnx.state(rebuilt, nnx.Param)),
        strict=True,
    ):
        assert p1 == p2
        np.testing.assert_array_equal(np.asarray(v1.get_value()), np.asarray(v2.get_value()))


def test_transformers4_config_restates_rope() -> None:
    llama = {"model_type": "llama", **bench.hf_config_kwargs("llama3", QUICK)}
    rewritten = bench.transformers4_config(llama)
    assert "rope_parameters" not in rewritten and "rope_parameters" in llama
    assert rewritten["rope_theta"] == 500_000.0
    assert rewritten["rope_scaling"]["rope_type"] == "llama3"
    assert rewritten["rope_scaling"]["factor"] == 8.0
    qwen = bench.transformers4_config(
        {"model_type": "qwen3", **bench.hf_config_kwargs("qwen3", QUICK)}
    )
    assert qwen["rope_theta"] == 1_000_000.0 and "rope_scaling" not in qwen


def _collated(pairs: Any) -> dict[str, Any]:
    """What TRL's DataCollatorForPreference returns for the pairs (chosen rows, then rejected)."""
    import torch

    rows = [p + c + [bench.EOS_ID] for p, c in zip(pairs.prompts, pairs.chosen, strict=True)]
    rows += [p + r + [bench.EOS_ID] for p, r in zip(pairs.prompts, pairs.rejected, strict=True)]
    prompt_lengths = [len(p) for p in pairs.prompts] * 2
    width = max(map(len, rows))
    ids = np.zeros((len(rows), width), np.int64)
    attention = np.zeros_like(ids)
    completion = np.zeros_like(ids)
    for i, (row, n) in enumerate(zip(rows, prompt_lengths, strict=True)):
        ids[i, : len(row)] = row
        attention[i, : len(row)] = 1
        completion[i, n : len(row)] = 1
    b = len(pairs.prompts)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(attention),
        "completion_mask": torch.from_numpy(completion),
        "ref_chosen_logps": torch.arange(b, dtype=torch.float32) - 50.0,
        "ref_rejected_logps": torch.arange(b, dtype=torch.float32) - 60.0,
    }


def test_preference_batch_keeps_trl_layout() -> None:
    pairs = bench.make_pairs(QUICK)
    inputs = _collated(pairs)
    batch = bench.preference_batch(inputs, pairs.signs_for(3))
    b = QUICK.pairs
    assert batch.num_pairs == b and batch.num_objectives == 3
    np.testing.assert_array_equal(batch.input_ids, inputs["input_ids"].numpy())
    np.testing.assert_array_equal(batch.loss_mask, inputs["completion_mask"].numpy())
    np.testing.assert_array_equal(batch.ref_logps[:b], np.arange(b) - 50.0)
    np.testing.assert_array_equal(batch.ref_logps[b:], np.arange(b) - 60.0)


def test_losses_grads_and_direction(tmp_path: pathlib.Path) -> None:
    """The raco_jax side of the agreement: on TRL's pairs (both sign rows +1) the K = 2 losses
    are equal and the weighted gradient is each objective's; the stacked gradients weighted by w
    give that gradient; the clipped CAGrad direction is sum_k a_k g_k with a_k >= w_k."""
    path = bench.build_checkpoint("qwen3", QUICK, tmp_path / "policy", seed=0)
    pairs = bench.make_pairs(QUICK)
    inputs = _collated(pairs)
    same = bench.preference_batch(inputs, np.ones((2, QUICK.pairs), np.float32))
    losses, grads, _ = bench.jax_losses_and_grads(path, same, stacked=False)
    assert losses.shape == (2,) and losses[0] == pytest.approx(losses[1], abs=1e-7)
    _, stacked_same, _ = bench.jax_losses_and_grads(path, same, stacked=True)
    for g, s in zip(jax.tree.leaves(grads), jax.tree.leaves(stacked_same), strict=True):
        np.testing.assert_allclose(g, s[0], rtol=1e-4, atol=1e-6)

    batch = bench.preference_batch(inputs, pairs.signs_for(3))
    _, stacked, _ = bench.jax_losses_and_grads(path, batch, stacked=True)
    direction, coefficients = bench.clipped_cagrad_direction(stacked, 3)
    assert coefficients.shape == (3,)
    assert np.all(coefficients >= np.asarray(bench.WEIGHTS[3]) - 1e-6)
    for d, s in zip(jax.tree.leaves(direction), jax.tree.leaves(stacked), strict=True):
        expected = jnp.tensordot(jnp.asarray(coefficients), s, axes=1)
        np.testing.assert_allclose(d, expected, rtol=1e-4, atol=1e-6)


def test_compare_tensors_refuses_mismatched_names() -> None:
    with pytest.raises(ValueError, match="tensor names differ"):
        bench.compare_tensors({"a": np.zeros(1)}, {"b": np.zeros(1)})
    with pytest.raises(ValueError, match="shapes"):
        bench.compare_tensors({"a": np.zeros(1)}, {"a": np.zeros(2)})
