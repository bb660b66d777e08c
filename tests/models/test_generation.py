"""`raco_jax.models.generate`: greedy parity with transformers, per-row stopping, sampling, caching.

Tiny random Llama 3 and Qwen 3 checkpoints (tests/models/tiny_checkpoints.py) are decoded
greedily by both implementations from a batch of left-padded prompts of different lengths;
the generated ids must be identical.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch", reason="generation parity tests need torch")
pytest.importorskip("transformers", reason="generation parity tests need transformers")

from models import tiny_checkpoints as tiny

from raco_jax.models import GenerationConfig, from_pretrained, generate
from raco_jax.models import generation as generation_module

BATCH, PROMPT_LEN, NEW_TOKENS = 3, 12, 10
PROMPT_LENGTHS = (12, 7, 4)
PAD = 0

BUILDERS = {
    # std 0.1 keeps Llama's logits O(1), far from float32 argmax ties
    "llama3": functools.partial(tiny.llama, tie=False, std=0.1),
    "qwen3": tiny.qwen3,
}


def _prompts(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[3, 12]`` left-padded prompts of 12, 7 and 4 real tokens (ids in 3..247)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, tiny.VOCAB - 8, size=(BATCH, PROMPT_LEN)).astype(np.int32)
    mask = np.zeros((BATCH, PROMPT_LEN), np.int32)
    for row, length in enumerate(PROMPT_LENGTHS):
        mask[row, PROMPT_LEN - length :] = 1
    return ids * mask, mask


def _hf_generate(
    hf_model: Any, ids: np.ndarray, mask: np.ndarray, eos: list[int] | None
) -> np.ndarray:
    """transformers' greedy ``generate``: the new tokens, ``[B, <= NEW_TOKENS]``."""
    import torch
    from transformers import GenerationConfig as HFGenerationConfig

    config = HFGenerationConfig(
        do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=eos, pad_token_id=PAD
    )
    with torch.no_grad():
        out = hf_model.generate(
            torch.from_numpy(ids.astype(np.int64)),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
            generation_config=config,
        )
    return out[:, PROMPT_LEN:].numpy()


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def family(request, tmp_path_factory) -> tuple[str, Any, Any]:
    directory, hf_model = BUILDERS[request.param](tmp_path_factory.mktemp(request.param))
    model, _ = from_pretrained(directory)
    return request.param, model, hf_model


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> tuple[Any, Any]:
    directory, hf_model = BUILDERS["llama3"](tmp_path_factory.mktemp("llama3_gen"))
    model, _ = from_pretrained(directory)
    return model, hf_model


def test_greedy_matches_transformers(family) -> None:
    name, model, hf_model = family
    ids, mask = _prompts()
    out = generate(model, ids, mask, max_new_tokens=NEW_TOKENS)
    assert out.tokens.shape == (BATCH, NEW_TOKENS) and out.tokens.dtype == jnp.int32
    expected = _hf_generate(hf_model, ids, mask, eos=None)
    np.testing.assert_array_equal(np.asarray(out.tokens), expected, err_msg=name)
    assert out.lengths.tolist() == [NEW_TOKENS] * BATCH
    assert not bool(out.done.any())


def _per_row_stop_token(tokens: np.ndarray) -> int:
    """A token that some rows emit early and some never, so rows stop at different steps."""
    for step in range(1, NEW_TOKENS - 2):
        for row in range(BATCH):
            token = int(tokens[row, step])
            emitted = [token in tokens[r] for r in range(BATCH)]
            if token not in tokens[row, :step] and not all(emitted):
                return token
    raise AssertionError(f"no usable stop token in {tokens.tolist()}")


def test_per_row_stopping_matches_transformers(llama) -> None:
    model, hf_model = llama
    ids, mask = _prompts()
    free = np.asarray(generate(model, ids, mask, max_new_tokens=NEW_TOKENS).tokens)
    stop = _per_row_stop_token(free)
    unused = int(next(t for t in range(tiny.VOCAB) if t not in free and t != PAD))
    stops = (stop, unused)
    out = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, stop_token_ids=stops)
    tokens = np.asarray(out.tokens)

    # each row: the unstopped tokens up to and including its first stop token, then padding
    for row in range(BATCH):
        hits = np.flatnonzero(np.isin(free[row], stops))
        length = int(hits[0]) + 1 if hits.size else NEW_TOKENS
        assert int(out.lengths[row]) == length
        assert bool(out.done[row]) == bool(hits.size)
        np.testing.assert_array_equal(tokens[row, :length], free[row, :length])
        assert (tokens[row, length:] == PAD).all()
    assert out.done.any() and not out.done.all()

    expected = _hf_generate(hf_model, ids, mask, eos=list(stops))
    width = expected.shape[1]
    np.testing.assert_array_equal(tokens[:, :width], expected)
    assert (tokens[:, width:] == PAD).all()


def test_all_rows_stopped_ends_early_and_pads(llama) -> None:
    model, _ = llama
    ids, mask = _prompts()
    free = np.asarray(generate(model, ids, mask, max_new_tokens=NEW_TOKENS).tokens)
    out = generate(model, ids, mask, max_new_tokens=NEW_TOKENS, stop_token_ids=free[:, 0])
    assert out.done.all() and out.lengths.tolist() == [1] * BATCH
    np.testing.assert_array_equal(np.asarray(out.tokens[:, 0]), free[:, 0])
    assert (np.asarray(out.tokens[:, 1:]) == PAD).all()


def test_right_padding_gives_the_same_tokens(llama) -> None:
    model, _ = llama
    ids, mask = _prompts()
    right_ids, right_mask = np.zeros_like(ids), np.zeros_like(mask)
    for row, length in enumerate(PROMPT_LENGTHS):
        right_ids[row, :length] = ids[row, PROMPT_LEN - length :]
        right_mask[row, :length] = 1
    left = generate(model, ids, mask, max_new_tokens=NEW_TOKENS)
    right = generate(model, right_ids, right_mask, max_new_tokens=NEW_TOKENS)
    np.testing.assert_array_equal(np.asarray(left.tokens), np.asarray(right.tokens))


def test_sampling_is_reproducible_and_top_p_tiny_is_greedy(llama) -> None:
    model, _ = llama
    ids, mask = _prompts(seed=1)
    sample = functools.partial(
        generate, model, ids, mask, max_new_tokens=NEW_TOKENS, temperature=1.5, top_p=0.95
    )
    first = np.asarray(sample(key=jax.random.key(0)).tokens)
    np.testing.assert_array_equal(np.asarray(sample(key=jax.random.key(0)).tokens), first)
    other = np.asarray(sample(key=jax.random.key(1)).tokens)
    assert (other != first).any()
    greedy = np.asarray(generate(model, ids, mask, max_new_tokens=NEW_TOKENS).tokens)
    assert (first != greedy).any()
    nucleus_of_one = sample(key=jax.random.key(2), top_p=1e-6)
    np.testing.assert_array_equal(np.asarray(nucleus_of_one.tokens), greedy)


def test_second_call_with_the_same_shapes_does_not_recompile(llama) -> None:
    model, _ = llama
    ids, mask = _prompts(seed=2)
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=0.7, top_p=0.9)
    generate(model, ids, mask, key=jax.random.key(0), config=config)
    traces = generation_module._TRACE_COUNT
    cache_size = generation_module._generate_program._cache_size()
    # new prompt values, temperature, top_p and key: the same program
    other_ids, other_mask = _prompts(seed=3)
    out = generate(
        model,
        other_ids,
        other_mask,
        key=jax.random.key(5),
        temperature=1.3,
        top_p=0.5,
        config=config,
    )
    out.tokens.block_until_ready()
    assert generation_module._TRACE_COUNT == traces
    assert generation_module._generate_program._cache_size() == cache_size


def test_select_tokens_top_k_and_top_p() -> None:
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]] * 512))
    keys = jax.random.key(0)
    select = functools.partial(
        generation_module._select_tokens,
        temperature=jnp.float32(1.0),
        sample=True,
    )
    top2 = select(logits, keys, top_p=jnp.float32(1.0), top_k=2, use_top_p=False)
    assert set(np.asarray(top2).tolist()) == {0, 1}
    # mass before token 2 is 0.8 < 0.85: tokens 0, 1, 2 are in the nucleus, token 3 is not
    nucleus = select(logits, keys, top_p=jnp.float32(0.85), top_k=0, use_top_p=True)
    assert set(np.asarray(nucleus).tolist()) == {0, 1, 2}
    everything = select(logits, keys, top_p=jnp.float32(1.0), top_k=0, use_top_p=False)
    assert set(np.asarray(everything).tolist()) == {0, 1, 2, 3}


def test_generation_config_and_argument_errors(llama) -> None:
    model, _ = llama
    ids, mask = _prompts()
    with pytest.raises(TypeError, match="max_new_tokens"):
        generate(model, ids, mask)
    with pytest.raises(ValueError, match="pass key="):
        generate(model, ids, mask, max_new_tokens=2, temperature=1.0)
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(max_new_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="attention_mask"):
        generate(model, ids, mask[:, :3], max_new_tokens=2)
    with pytest.raises(ValueError, match="vocab_size"):
        generate(model, ids, mask, max_new_tokens=2, stop_token_ids=tiny.VOCAB)
    assert GenerationConfig(max_new_tokens=1, stop_token_ids=None).stop_token_ids == ()
    assert GenerationConfig(max_new_tokens=1, stop_token_ids=[1, 2]).stop_token_ids == (1, 2)
