"""Judges: the interface, the heuristic judges, reward models on a tiny random checkpoint."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pytest

from raco_jax.evaluate.judges import (
    BaseJudge,
    CombinedJudge,
    ImplicitRewardJudge,
    Judge,
    LengthJudge,
    LexiconJudge,
    RewardModelJudge,
    summarize_scores,
)

WORDS = ["how", "do", "i", "bake", "bread", "mix", "flour", "water", "and", "salt", "then", "it"]
PROMPTS = ["how do i bake bread", "how do i mix flour", "then", "bake it"]
RESPONSES = ["mix flour and water then bake", "mix it", "salt", "bake bread and then bake it now"]


# ---------------------------------------------------------------- interface and validation


def test_judges_follow_the_protocol() -> None:
    judges = [LengthJudge(), LexiconJudge(["x"]), ImplicitRewardJudge(len, len)]
    for judge in judges:
        assert isinstance(judge, Judge)
        assert isinstance(judge.objectives, tuple)
    assert "LengthJudge(objectives=('conciseness',))" == repr(LengthJudge())


def test_input_validation() -> None:
    judge = LengthJudge()
    with pytest.raises(ValueError, match="2 prompts and 1 responses"):
        judge(["a", "b"], ["c"])
    with pytest.raises(TypeError, match=r"responses\[1\] must be a str"):
        judge(["a", "b"], ["c", 3])
    with pytest.raises(TypeError, match="prompts must be a list of strings"):
        judge("ab", ["c", "d"])
    assert judge([], [])["conciseness"].shape == (0,)


def test_output_validation() -> None:
    class Wrong(BaseJudge):
        objectives = ("a",)

        def __init__(self, scores: Any) -> None:
            self.scores = scores

        def score(self, prompts: list[str], responses: list[str]) -> Any:
            return self.scores

    with pytest.raises(ValueError, match=r"missing \['a'\], unknown \['b'\]"):
        Wrong({"b": [1.0]})(["p"], ["r"])
    with pytest.raises(ValueError, match=r"shape \(2,\); expected \(1,\)"):
        Wrong({"a": [1.0, 2.0]})(["p"], ["r"])
    with pytest.raises(TypeError, match="dict of scores"):
        Wrong([1.0])(["p"], ["r"])
    with pytest.raises(NotImplementedError):
        BaseJudge()(["p"], ["r"])


# ---------------------------------------------------------------- length and lexicon judges


def test_length_judge_units_and_preferences() -> None:
    prompts, responses = ["q"] * 3, ["", "one two, three!", "it's fine"]
    assert LengthJudge()(prompts, responses)["conciseness"].tolist() == [0.0, -3.0, -2.0]
    chars = LengthJudge("chars", unit="characters", prefer="long")(prompts, responses)
    assert chars["chars"].tolist() == [0.0, 15.0, 9.0]
    target = LengthJudge("target", prefer=2)(prompts, responses)
    assert target["target"].tolist() == [-2.0, -1.0, 0.0]
    tokens = LengthJudge(unit="tokens", tokenizer=str.split)(prompts, responses)
    assert tokens["conciseness"].tolist() == [0.0, -3.0, -2.0]
    assert tokens["conciseness"].dtype == np.float64


def test_length_judge_with_hf_tokenizer(word_tokenizer: Any) -> None:
    judge = LengthJudge(unit="tokens", tokenizer=word_tokenizer)
    # special tokens are not counted; unknown words are one [UNK] token each
    assert judge(["q", "q"], ["mix flour", "mix unknownword and"])["conciseness"].tolist() == [
        -2.0,
        -3.0,
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit": "bytes"}, "unit must be"),
        ({"unit": "tokens"}, "needs a tokenizer"),
        ({"prefer": "medium"}, "prefer must be"),
        ({"prefer": -1}, "prefer must be"),
        ({"prefer": True}, "prefer must be"),
        ({"objective": ""}, "objective must be"),
    ],
)
def test_length_judge_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LengthJudge(**kwargs)


def test_lexicon_judge_rates() -> None:
    judge = LexiconJudge(["kill", "Steal", "blow up"], "harmlessness")
    scores = judge(
        ["q"] * 4,
        ["", "How to steal and KILL", "blow up the balloon, then blow it up", "nice day"],
    )["harmlessness"]
    np.testing.assert_allclose(scores, [0.0, -2 / 5, -1 / 8, 0.0])
    sensitive = LexiconJudge(["Steal"], case_sensitive=True)(["q", "q"], ["steal", "Steal it"])
    np.testing.assert_allclose(sensitive["harmlessness"], [0.0, -0.5])
    positive = LexiconJudge(["please"], "politeness", polarity="positive")
    assert positive(["q"], ["please, please help"])["politeness"].tolist() == [2 / 3]
    assert LexiconJudge(["bad"]).rate("bad bad good") == pytest.approx(2 / 3)


def test_lexicon_judge_errors() -> None:
    with pytest.raises(ValueError, match="lexicon is empty"):
        LexiconJudge([])
    with pytest.raises(TypeError, match="single string"):
        LexiconJudge("kill")
    with pytest.raises(ValueError, match="contains no word"):
        LexiconJudge(["!!"])
    with pytest.raises(ValueError, match="polarity"):
        LexiconJudge(["x"], polarity="bad")


# ---------------------------------------------------------------- implicit reward


def test_implicit_reward_judge() -> None:
    calls: list[int] = []

    def policy(prompts: list[str], responses: list[str]) -> np.ndarray:
        calls.append(len(prompts))
        return np.array([-float(len(p) + len(r)) for p, r in zip(prompts, responses, strict=True)])

    def reference(prompts: list[str], responses: list[str]) -> list[float]:
        return [-2.0 * len(r) for r in responses]

    expected = 0.5 * np.array([len(r) - len(p) for p, r in zip(PROMPTS, RESPONSES, strict=True)])
    whole = ImplicitRewardJudge(policy, reference, beta=0.5, objective="dpo")(PROMPTS, RESPONSES)
    np.testing.assert_allclose(whole["dpo"], expected)
    assert calls == [4]
    chunked = ImplicitRewardJudge(policy, reference, beta=0.5, batch_size=3)(PROMPTS, RESPONSES)
    np.testing.assert_allclose(chunked["implicit_reward"], expected)
    assert calls == [4, 3, 1]


def test_implicit_reward_judge_accepts_jax_arrays() -> None:
    import jax.numpy as jnp

    judge = ImplicitRewardJudge(
        lambda p, r: jnp.ones(len(p)), lambda p, r: jnp.zeros(len(p)), beta=2.0
    )
    assert judge(["a", "b"], ["c", "d"])["implicit_reward"].tolist() == [2.0, 2.0]


def test_implicit_reward_judge_errors() -> None:
    with pytest.raises(ValueError, match=r"policy_logps_fn returned shape \(3,\); expected \(2,\)"):
        ImplicitRewardJudge(lambda p, r: [0.0] * 3, lambda p, r: [0.0] * 2)(["a", "b"], ["c", "d"])
    with pytest.raises(ValueError, match="beta"):
        ImplicitRewardJudge(len, len, beta=0.0)
    with pytest.raises(TypeError, match="reference_logps_fn must be callable"):
        ImplicitRewardJudge(len, None)
    with pytest.raises(ValueError, match="batch_size"):
        ImplicitRewardJudge(len, len, batch_size=0)


# ---------------------------------------------------------------- combined judge and summary


def test_combined_judge_merges_and_selects() -> None:
    runs: list[str] = []

    class Counting(BaseJudge):
        def __init__(self, name: str) -> None:
            self.objectives = (name,)

        def score(self, prompts: list[str], responses: list[str]) -> dict[str, Any]:
            runs.append(self.objectives[0])
            return {self.objectives[0]: np.ones(len(responses))}

    length, lexicon = LengthJudge(), LexiconJudge(["bake"], "no_baking")
    combined = CombinedJudge([length, lexicon, Counting("extra")])
    assert combined.objectives == ("conciseness", "no_baking", "extra")
    scores = combined(PROMPTS, RESPONSES)
    assert list(scores) == ["conciseness", "no_baking", "extra"]
    np.testing.assert_array_equal(scores["conciseness"], length(PROMPTS, RESPONSES)["conciseness"])
    np.testing.assert_array_equal(scores["no_baking"], lexicon(PROMPTS, RESPONSES)["no_baking"])
    runs.clear()
    subset = CombinedJudge(combined.judges, objectives=["no_baking", "conciseness"])
    assert list(subset(PROMPTS, RESPONSES)) == ["no_baking", "conciseness"]
    assert runs == []  # the unused judge is not run


def test_combined_judge_errors() -> None:
    with pytest.raises(ValueError, match="scored by both"):
        CombinedJudge([LengthJudge(), LengthJudge()])
    with pytest.raises(ValueError, match=r"unknown objectives \['helpfulness'\]"):
        CombinedJudge([LengthJudge()], objectives=["helpfulness"])
    with pytest.raises(ValueError, match="at least one judge"):
        CombinedJudge([])
    with pytest.raises(TypeError, match="objectives"):
        CombinedJudge([len])
    with pytest.raises(ValueError, match="2 prompts and 1 responses"):
        CombinedJudge([LengthJudge()])(["a", "b"], ["c"])


def test_summarize_scores() -> None:
    summary = summarize_scores({"a": [1.0, 2.0, 3.0, 6.0], "b": np.array([5.0])})
    assert summary["scores"] == {"a": 3.0, "b": 5.0}
    assert summary["stderr"]["a"] == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    assert summary["stderr"]["b"] == 0.0
    with pytest.raises(ValueError, match="non-empty 1-D"):
        summarize_scores({"a": []})


# ---------------------------------------------------------------- reward-model judge


def _build_word_tokenizer() -> Any:
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[EOS]", *WORDS, ":"])}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )


def _tiny_reward_model(vocab_size: int, num_labels: int, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=0,
        id2label={i: name for i, name in enumerate(["bad", "ok", "good"][:num_labels])},
        attn_implementation="eager",
    )
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # larger weights than the 0.02 init, so that inputs matter
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def word_tokenizer() -> Any:
    return _build_word_tokenizer()


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory: pytest.TempPathFactory, word_tokenizer: Any) -> pathlib.Path:
    path = tmp_path_factory.mktemp("tiny_reward_model")
    _tiny_reward_model(len(word_tokenizer), num_labels=1, seed=0).save_pretrained(path)
    word_tokenizer.save_pretrained(path)
    return path


def test_reward_model_judge_from_directory(reward_dir: pathlib.Path) -> None:
    import torch

    judge = RewardModelJudge(str(reward_dir), objective="helpfulness", batch_size=3)
    assert judge.input_format == "pair"
    scores = judge(PROMPTS, RESPONSES)["helpfulness"]
    assert scores.shape == (4,) and scores.dtype == np.float64
    assert np.all(np.isfinite(scores)) and np.unique(scores).size == 4
    # deterministic, and independent of the batch size (padding is masked out)
    np.testing.assert_array_equal(judge(PROMPTS, RESPONSES)["helpfulness"], scores)
    for batch_size in (1, 2, 8):
        other = RewardModelJudge(reward_dir, objective="helpfulness", batch_size=batch_size)
        np.testing.assert_allclose(other(PROMPTS, RESPONSES)["helpfulness"], scores, atol=1e-5)
    # equal to an unpadded forward pass of the pair
    encoded = judge.tokenizer(PROMPTS[1], RESPONSES[1], return_tensors="pt")
    with torch.no_grad():
        direct = judge.model(**encoded).logits[0, 0].item()
    assert scores[1] == pytest.approx(direct, abs=1e-5)
    assert judge([], [])["helpfulness"].shape == (0,)


def test_reward_model_judge_labels_and_formats(word_tokenizer: Any) -> None:
    model = _tiny_reward_model(len(word_tokenizer), num_labels=3, seed=1)
    with pytest.raises(ValueError, match="pass label="):
        RewardModelJudge(model, word_tokenizer)
    with pytest.raises(ValueError, match="unknown label 'great'"):
        RewardModelJudge(model, word_tokenizer, label="great")
    with pytest.raises(ValueError, match="out of range"):
        RewardModelJudge(model, word_tokenizer, label=3)
    with pytest.raises(ValueError, match="tokenizer is required"):
        RewardModelJudge(model)
    with pytest.raises(ValueError, match="batch_size"):
        RewardModelJudge(model, word_tokenizer, label=0, batch_size=0)
    with pytest.raises(ValueError, match="chat_template"):
        RewardModelJudge(model, word_tokenizer, label=0, input_format="chat")
    by_name = RewardModelJudge(model, word_tokenizer, label="good")(PROMPTS, RESPONSES)
    by_index = RewardModelJudge(model, word_tokenizer, label=2)(PROMPTS, RESPONSES)
    np.testing.assert_array_equal(by_name["reward"], by_index["reward"])
    first = RewardModelJudge(model, word_tokenizer, label=0)(PROMPTS, RESPONSES)
    assert not np.allclose(first["reward"], by_index["reward"])

    concat = RewardModelJudge(model, word_tokenizer, label=2, input_format="concat")
    joined = [p + " " for p in PROMPTS]
    np.testing.assert_allclose(
        concat(joined, RESPONSES)["reward"], by_index["reward"], atol=1e-5
    )  # word-level tokens: "p " + "r" tokenises like the pair (p, r)

    chat_tokenizer = _build_word_tokenizer()
    chat_tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    )
    chat = RewardModelJudge(model, chat_tokenizer, label=2, batch_size=2)
    assert chat.input_format == "chat"
    chat_scores = chat(PROMPTS, RESPONSES)["reward"]
    texts = [f"user : {p} assistant : {r}" for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    expected = RewardModelJudge(model, word_tokenizer, label=2, input_format="concat")(
        texts, [""] * len(texts)
    )["reward"]
    np.testing.assert_allclose(chat_scores, expected, atol=1e-5)
