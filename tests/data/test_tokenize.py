"""Tokenisation per model-family chat template, truncation, bucketing, batching and resumption."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from data import fixtures
from hypothesis import given, settings
from hypothesis import strategies as st

from raco_jax.data import (
    BATCH_KEYS,
    PreferenceBatchIterator,
    PreferencePair,
    bucket_length,
    byte_tokenizer,
    load_preferences,
    tokenize_pairs,
)

OBJECTIVES = ("helpful", "harmless")
PAIRS = [
    PreferencePair("What is 2+2?", "It is 4.", "Five.", {"helpful": 1, "harmless": 0}),
    PreferencePair(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "A joke?"},
        ],
        "Knock knock.",
        "No.",
        {"helpful": -1},
    ),
    PreferencePair(
        [{"role": "user", "content": "How do I pick a lock?"}],
        [{"role": "assistant", "content": "I'd rather not help with that."}],
        [{"role": "assistant", "content": "Use a tension wrench."}],
        {"harmless": 1},
    ),
]
RESPONSES = [
    ("It is 4.", "Five."),
    ("Knock knock.", "No."),
    ("I'd rather not help with that.", "Use a tension wrench."),
]


@pytest.fixture(scope="module")
def family_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tokenizers")
    return {family: fixtures.family_tokenizer(family, root) for family in fixtures.FAMILIES}


def expected_completion(family: str, response: str, thinking: bool = True) -> str:
    spec = fixtures.FAMILIES[family]
    if family == "qwen3":
        return ("<think>\n\n</think>\n\n" if thinking else "") + response + "<|im_end|>"
    if family == "gemma3":
        return response + "<end_of_turn><eos>"
    return response + spec["end_of_turn"]


def prompt_messages(pair: PreferencePair) -> list[dict[str, str]]:
    if isinstance(pair.prompt, str):
        return [{"role": "user", "content": pair.prompt}]
    return pair.prompt


def real_rows(batch: dict[str, np.ndarray]):
    """(row, ids, loss mask) over the 2B rows, cut at the end of the attention mask."""
    for row in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][row].sum())
        assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()
        yield row, batch["input_ids"][row, :n], batch["loss_mask"][row, :n]


# ----------------------------------------------------------------------------------------------
# Per-family templates
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(fixtures.FAMILIES))
def test_family_template_batch(family_tokenizers, family):
    tokenizer = family_tokenizers[family]
    data = tokenize_pairs(PAIRS, tokenizer, OBJECTIVES, max_length=256, max_prompt_length=192)
    batch = data.collate([0, 1, 2])
    assert tuple(batch) == BATCH_KEYS
    assert batch["input_ids"].dtype == np.int32 and batch["attention_mask"].dtype == np.int32
    assert batch["loss_mask"].dtype == np.float32 and batch["signs"].dtype == np.float32
    size, width = 3, batch["input_ids"].shape[1]
    assert batch["input_ids"].shape == (2 * size, width) == batch["loss_mask"].shape
    assert width == 1 << (width - 1).bit_length() and width <= 256  # a power-of-two bucket
    assert width >= max(data.lengths())
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    for row, ids, loss in real_rows(batch):
        pair_index, side = row % size, row // size
        assert (batch["input_ids"][row, len(ids) :] == pad).all()
        if bos is None:
            assert family == "qwen3"
        else:
            assert ids[0] == bos and (ids == bos).sum() == 1  # exactly one BOS
        assert ids[-1] == eos  # EOS after each response
        # The loss mask covers exactly the completion: one contiguous block up to the end.
        start = int(np.argmax(loss))
        assert loss[start:].all() and not loss[:start].any()
        completion = tokenizer.decode(ids[loss == 1])
        assert completion == expected_completion(family, RESPONSES[pair_index][side])
        rendered_prompt = tokenizer.apply_chat_template(
            prompt_messages(PAIRS[pair_index]), tokenize=False, add_generation_prompt=True
        )
        assert tokenizer.decode(ids[loss == 0]) == rendered_prompt
    np.testing.assert_array_equal(batch["signs"], [[1, -1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(batch["labeled"], [[1, 1, 0], [1, 0, 1]])


def test_qwen3_template_kwargs_and_system_prompt(family_tokenizers):
    tokenizer = family_tokenizers["qwen3"]
    data = tokenize_pairs(
        PAIRS[:1],
        tokenizer,
        ["helpful"],
        128,
        96,
        chat_template_kwargs={"enable_thinking": False},
        system_prompt="Be brief.",
    )
    ids, prompt_length = data.input_ids_a[0], data.prompt_lengths_a[0]
    assert tokenizer.decode(ids[prompt_length:]) == expected_completion("qwen3", "It is 4.", False)
    assert tokenizer.decode(ids[:prompt_length]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_gemma3_system_prompt_folds_into_first_turn(family_tokenizers):
    tokenizer = family_tokenizers["gemma3"]
    data = tokenize_pairs(PAIRS[:1], tokenizer, ["helpful"], 128, 96, system_prompt="Be brief.")
    prompt = tokenizer.decode(data.input_ids_b[0][: data.prompt_lengths_b[0]])
    assert prompt == (
        "<bos><start_of_turn>user\nBe brief.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    )


@pytest.mark.parametrize("family", sorted(fixtures.FAMILIES))
def test_plain_strings_without_template(family_tokenizers, family):
    tokenizer = family_tokenizers[family]
    pair = PreferencePair("Q: 2+2? A:", " 4", " 5", {"helpful": 1})
    data = tokenize_pairs([pair], tokenizer, ["helpful"], 64, 32, use_chat_template=False)
    ids = list(data.input_ids_a[0])
    body = tokenizer("Q: 2+2? A: 4", add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    assert ids == bos + body + [tokenizer.eos_token_id]  # BOS as the tokenizer adds it, once
    assert tokenizer.decode(ids[data.prompt_lengths_a[0] :]) == " 4" + tokenizer.eos_token
    if bos:
        no_bos = tokenize_pairs(
            [pair], tokenizer, ["helpful"], 64, 32, use_chat_template=False, add_bos=False
        )
        assert list(no_bos.input_ids_a[0]) == [*body, tokenizer.eos_token_id]
    else:
        with pytest.raises(ValueError, match="no bos_token_id"):
            tokenize_pairs([pair], tokenizer, ["helpful"], 64, 32, add_bos=True)


def test_conversation_without_template_uses_hh_format(family_tokenizers):
    tokenizer = family_tokenizers["qwen3"]
    data = tokenize_pairs(PAIRS[1:2], tokenizer, OBJECTIVES, 128, 96, use_chat_template=False)
    ids, prompt_length = data.input_ids_a[0], data.prompt_lengths_a[0]
    assert tokenizer.decode(ids[:prompt_length]) == (
        "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: A joke?\n\nAssistant:"
    )
    assert tokenizer.decode(ids[prompt_length:]) == " Knock knock.<|im_end|>"


# ----------------------------------------------------------------------------------------------
# Truncation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(fixtures.FAMILIES))
def test_truncation_keeps_prompt_end_and_response_start(family_tokenizers, family):
    tokenizer = family_tokenizers[family]
    long_prompt = "Begin " + " ".join(f"w{i}" for i in range(100)) + " END?"
    long_response = "START " + "x" * 300
    pairs = [PreferencePair(long_prompt, long_response, "Short.", {"helpful": 1})]
    full = tokenize_pairs(pairs, tokenizer, ["helpful"], 2048, 1024)
    cut = tokenize_pairs(pairs, tokenizer, ["helpful"], max_length=128, max_prompt_length=64)
    assert cut.num_truncated_prompts == 1 and cut.num_truncated_completions == 1
    bos = tokenizer.bos_token_id
    for side in ("a", "b"):
        full_ids = getattr(full, f"input_ids_{side}")[0]
        full_prompt_length = getattr(full, f"prompt_lengths_{side}")[0]
        ids = getattr(cut, f"input_ids_{side}")[0]
        prompt_length = getattr(cut, f"prompt_lengths_{side}")[0]
        assert prompt_length == 64 and len(ids) <= 128
        prompt, full_prompt = list(ids[:prompt_length]), list(full_ids[:full_prompt_length])
        if bos is not None:
            assert prompt[0] == bos and prompt.count(bos) == 1
            assert prompt[1:] == full_prompt[-63:]  # the END of the prompt
        else:
            assert prompt == full_prompt[-64:]
        completion, full_completion = list(ids[prompt_length:]), list(full_ids[full_prompt_length:])
        assert completion == full_completion[: len(completion)]  # the START of the response
    assert len(cut.input_ids_a[0]) == 128 and cut.input_ids_a[0][-1] != tokenizer.eos_token_id
    assert cut.input_ids_b[0][-1] == tokenizer.eos_token_id  # the short response fits whole
    assert "START xxx" in tokenizer.decode(cut.input_ids_a[0][64:])
    assert tokenizer.decode(cut.input_ids_a[0][:64]).count("END?") == 1
    batch = cut.collate([0])
    assert batch["input_ids"].shape == (2, 128)  # the bucket is capped at max_length


def test_max_completion_length_and_argument_checks(family_tokenizers):
    tokenizer = family_tokenizers["llama3"]
    pair = PreferencePair("Q", "abcdefghij" * 5, "ok", {"helpful": 1})
    data = tokenize_pairs([pair], tokenizer, ["helpful"], 256, 128, max_completion_length=8)
    assert len(data.input_ids_a[0]) - data.prompt_lengths_a[0] == 8
    assert data.num_truncated_completions == 1
    with pytest.raises(ValueError, match="max_prompt_length"):
        tokenize_pairs([pair], tokenizer, ["helpful"], 64, 64)
    with pytest.raises(TypeError, match=r"pairs\[0\] must be a PreferencePair"):
        tokenize_pairs([{"prompt": "q"}], tokenizer, ["helpful"])
    with pytest.raises(ValueError, match="distinct"):
        tokenize_pairs([pair], tokenizer, [])
    qwen = family_tokenizers["qwen3"]  # no BOS: an empty raw prompt would leave no tokens
    empty = PreferencePair("", "a", "b", {"helpful": 1})
    with pytest.raises(ValueError, match=r"pairs\[0\] .*the prompt has no tokens"):
        tokenize_pairs([empty], qwen, ["helpful"], 64, 32, use_chat_template=False)


@pytest.mark.parametrize("family", sorted(fixtures.FAMILIES))
def test_batches_satisfy_the_preference_batch_contract(family_tokenizers, family):
    batch_module = pytest.importorskip("raco_jax.preference.batch")
    data = tokenize_pairs(PAIRS, family_tokenizers[family], OBJECTIVES, 128, 96)
    for batch in PreferenceBatchIterator(data, 2, seed=1, buckets=32):
        built = batch_module.make_batch(**batch)  # casts and validates
        assert built.num_pairs == 2 and built.num_objectives == 2


@functools.lru_cache(maxsize=1)
def _llama3_bytes():
    return byte_tokenizer("llama3")


@settings(max_examples=40, deadline=None)
@given(
    prompt_chars=st.integers(1, 60),
    response_chars=st.integers(1, 60),
    max_length=st.integers(4, 48),
    data=st.data(),
)
def test_truncation_invariants(prompt_chars, response_chars, max_length, data):
    max_prompt_length = data.draw(st.integers(1, max_length - 1))
    tokenizer = _llama3_bytes()
    pair = PreferencePair("p" * prompt_chars, "r" * response_chars, "s", {"helpful": 1})
    full = tokenize_pairs([pair], tokenizer, ["helpful"], 4096, 2048)
    cut = tokenize_pairs([pair], tokenizer, ["helpful"], max_length, max_prompt_length)
    ids, prompt_length = list(cut.input_ids_a[0]), int(cut.prompt_lengths_a[0])
    full_ids, full_prompt_length = list(full.input_ids_a[0]), int(full.prompt_lengths_a[0])
    assert len(ids) <= max_length and prompt_length <= max_prompt_length
    assert len(ids) > prompt_length  # at least one completion token survives
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    kept = prompt_length - 1
    assert ids[1:prompt_length] == (
        full_ids[full_prompt_length - kept : full_prompt_length] if kept else []
    )
    completion = ids[prompt_length:]
    assert completion == full_ids[full_prompt_length : full_prompt_length + len(completion)]
    batch = cut.collate([0], buckets=8)
    assert batch["input_ids"].shape[1] % 8 == 0 or batch["input_ids"].shape[1] == max_length
    assert batch["loss_mask"][0].sum() == len(completion)


# ----------------------------------------------------------------------------------------------
# Bucketing and collation
# ----------------------------------------------------------------------------------------------


def test_bucket_length_rules():
    assert [bucket_length(n) for n in (1, 2, 3, 64, 65)] == [1, 2, 4, 64, 128]
    assert [bucket_length(n, 64) for n in (1, 64, 65, 130)] == [64, 64, 128, 192]
    assert bucket_length(100, [64, 96, 128]) == 128 and bucket_length(200, [64], 300) == 300
    assert bucket_length(513, "pow2", max_length=768) == 768
    with pytest.raises(ValueError, match="exceeds max_length"):
        bucket_length(10, max_length=8)
    with pytest.raises(ValueError, match="buckets must be"):
        bucket_length(10, "pow3")
    with pytest.raises(ValueError, match="exceeds every bucket"):
        bucket_length(10, [4, 8])


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 5000), max_length=st.integers(1, 5000), multiple=st.integers(1, 300))
def test_bucket_length_properties(length, max_length, multiple):
    if length > max_length:
        length, max_length = max_length, length
    for buckets in ("pow2", multiple):
        padded = bucket_length(length, buckets, max_length)
        assert length <= padded <= max_length
        if padded != max_length:
            assert padded % multiple == 0 if buckets == multiple else padded & (padded - 1) == 0


def test_collate_pads_the_batch_with_rows_that_count_nowhere(family_tokenizers):
    data = tokenize_pairs(PAIRS, family_tokenizers["llama3"], OBJECTIVES, 256, 192)
    batch = data.collate([2, 0], batch_size=4, buckets=64)
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] % 64 == 0
    np.testing.assert_array_equal(batch["labeled"], [[0, 1, 0, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(batch["signs"], [[0, 1, 0, 0], [1, 0, 0, 0]])
    for row in (2, 3, 6, 7):
        assert not batch["loss_mask"][row].any() and batch["attention_mask"][row].any()
    np.testing.assert_array_equal(batch["input_ids"][2], batch["input_ids"][0])  # a copy of pair 2
    with pytest.raises(ValueError, match="smaller than len"):
        data.collate([0, 1, 2], batch_size=2)
    with pytest.raises(ValueError, match="out of range"):
        data.collate([3])


# ----------------------------------------------------------------------------------------------
# The batch iterator
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eleven(family_tokenizers):
    tokenizer = family_tokenizers["qwen3"]
    pairs = [
        PreferencePair(f"q{i:02d}", f"yes {i}", "no", {"helpful": 1 if i % 2 else -1})
        for i in range(11)
    ]
    return tokenizer, tokenize_pairs(pairs, tokenizer, ["helpful"], 64, 32, use_chat_template=False)


def pair_ids(tokenizer, batch) -> list[int]:
    """The pair index of each REAL pair row (q00..q10 are the prompts)."""
    size = batch["labeled"].shape[1]
    return [
        int(tokenizer.decode(batch["input_ids"][r, 1:3]))
        for r in range(size)
        if batch["loss_mask"][r].any()
    ]


def test_iterator_epochs_shuffle_and_last_batch(eleven):
    tokenizer, data = eleven
    batches = list(PreferenceBatchIterator(data, 4, seed=3))
    assert len(batches) == 3 and [b["labeled"].shape for b in batches] == [(1, 4)] * 3
    visited = [i for b in batches for i in pair_ids(tokenizer, b)]
    assert sorted(visited) == list(range(11)) and visited != list(range(11))
    assert batches[-1]["labeled"].sum() == 3  # 3 real pairs + 1 padding row
    again = [pair_ids(tokenizer, b) for b in PreferenceBatchIterator(data, 4, seed=3)]
    assert again == [pair_ids(tokenizer, b) for b in batches]
    other = [pair_ids(tokenizer, b) for b in PreferenceBatchIterator(data, 4, seed=4)]
    assert other != again
    ordered = [pair_ids(tokenizer, b) for b in PreferenceBatchIterator(data, 4, shuffle=False)]
    assert ordered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    dropped = list(PreferenceBatchIterator(data, 4, drop_last=True))
    assert len(dropped) == 2
    short = list(PreferenceBatchIterator(data, 4, pad_last=False, shuffle=False))
    assert short[-1]["input_ids"].shape[0] == 6 and short[-1]["signs"].shape == (1, 3)
    two_epochs = PreferenceBatchIterator(data, 4, num_epochs=2)
    assert len(two_epochs) == 6 and len(list(two_epochs)) == 6
    forever = PreferenceBatchIterator(data, 4, num_epochs=None)
    assert len([next(forever) for _ in range(10)]) == 10
    with pytest.raises(ValueError, match="no batch"):
        PreferenceBatchIterator(data, 12, drop_last=True)


def test_iterator_resumes_exactly(eleven):
    tokenizer, data = eleven
    reference = [
        pair_ids(tokenizer, b) for b in PreferenceBatchIterator(data, 4, seed=7, num_epochs=2)
    ]
    for cut in range(len(reference)):
        first = PreferenceBatchIterator(data, 4, seed=7, num_epochs=2)
        for _ in range(cut):
            next(first)
        state = json.loads(json.dumps(first.state_dict()))
        resumed = PreferenceBatchIterator(data, 4, seed=7, num_epochs=2)
        resumed.load_state_dict(state)
        assert [pair_ids(tokenizer, b) for b in resumed] == reference[cut:]
    mismatched = PreferenceBatchIterator(data, 4, seed=8)
    with pytest.raises(ValueError, match=r"state\['seed'\]"):
        mismatched.load_state_dict(PreferenceBatchIterator(data, 4, seed=7).state_dict())


# ----------------------------------------------------------------------------------------------
# A real tokenizer end to end
# ----------------------------------------------------------------------------------------------


def test_smollm2_tokenizer_on_real_hh_pairs(shared_dir, tmp_path):
    from raco_jax.models.bundled import RealWeightsUnavailable, smollm2_135m_instruct_gguf

    try:
        path = smollm2_135m_instruct_gguf()
    except RealWeightsUnavailable as err:
        pytest.skip(str(err))
    from raco_jax.models.gguf_io import gguf_tokenizer

    hh = shared_dir / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"
    if not hh.is_file():
        pytest.skip(f"{hh} not found")
    pairs, _ = load_preferences(hh, "hh-rlhf", split="train[:6]", cache_dir=str(tmp_path / "cache"))
    tokenizer = gguf_tokenizer(path)
    data = tokenize_pairs(
        pairs, tokenizer, ["helpful", "harmless"], max_length=1024, max_prompt_length=768
    )
    batch = data.collate(range(len(pairs)), buckets=64)
    size = len(pairs)
    assert batch["input_ids"].shape[1] % 64 == 0
    np.testing.assert_array_equal(batch["labeled"], [[1] * size, [0] * size])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id  # <|im_start|>, <|im_end|>
    for row, ids, loss in real_rows(batch):
        pair = pairs[row % size]
        response = pair.response_a if row < size else pair.response_b
        assert ids[0] == bos and ids[1] != bos  # one BOS (the template's first <|im_start|>)
        assert ids[-1] == eos
        assert tokenizer.decode(ids[loss == 1]) == response + "<|im_end|>"
        assert tokenizer.decode(ids[loss == 0]).startswith("<|im_start|>system\n")
    raw = tokenize_pairs(pairs[:1], tokenizer, ["helpful"], 1024, 768, use_chat_template=False)
    assert raw.input_ids_a[0][0] != bos  # SmolLM2's tokenizer adds no BOS to raw text
