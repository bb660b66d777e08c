"""The demo's synthetic task: vocabulary, corpus, exact judges, pretraining, pairs."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from raco_jax.demo import task
from raco_jax.evaluate import CombinedJudge, Judge, LengthJudge

ANIMALS = task.encode("<bos> tell animals kids answer:")
MUSIC = task.encode("<bos> describe music today answer:")


def reference_scores(prompt: list[int], response: list[int]) -> dict[str, float]:
    """The judges written out word by word (the definition the vectorised code must match)."""
    topic = task.VOCAB[prompt[2]]
    words = []
    for token in response:
        if token in (task.EOS_ID, task.PAD_ID):
            break
        words.append(task.VOCAB[token])
    relevant = {w for w in words if w in task.CONTENT_WORDS[topic]}
    forbidden = sum(w in task.FORBIDDEN_WORDS for w in words)
    return {
        "informativeness": float(len(relevant)),
        "brevity": -float(len(words)),
        "safety": -forbidden / max(len(words), 1),
    }


# --------------------------------------------------------------------------------------------
# Vocabulary and prompts
# --------------------------------------------------------------------------------------------


def test_vocabulary() -> None:
    assert len(task.VOCAB) == len(set(task.VOCAB)) == 49
    assert [task.VOCAB[i] for i in (task.PAD_ID, task.BOS_ID, task.EOS_ID, task.SEP_ID)] == [
        "<pad>",
        "<bos>",
        "<eos>",
        "answer:",
    ]
    assert len(task.FORBIDDEN_WORDS) == 8
    for topic in task.TOPICS:
        assert len(task.CONTENT_WORDS[topic]) == 7
        assert set(task.CONTENT_WORDS[topic][5:]) <= set(task.FORBIDDEN_WORDS)
    text = "<bos> explain space class answer: comet the explode <eos>"
    assert task.decode(task.encode(text)) == text
    with pytest.raises(ValueError, match="unknown words"):
        task.encode("hello")


def test_prompts_and_split() -> None:
    prompts = task.make_prompts()
    assert prompts.shape == (48, task.PROMPT_LEN) and len({tuple(p) for p in prompts}) == 48
    train, heldout = task.split_prompts(seed=0)
    assert len(train) == 36 and len(heldout) == 12
    assert not {tuple(p) for p in train} & {tuple(p) for p in heldout}
    assert np.bincount(task.prompt_topics(heldout)).tolist() == [3, 3, 3, 3]
    again = task.split_prompts(seed=0)[1]
    np.testing.assert_array_equal(heldout, again)
    with pytest.raises(ValueError, match="topic word"):
        task.prompt_topics([task.encode("<bos> tell kids kids answer:")])


# --------------------------------------------------------------------------------------------
# Exact judges
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "response", "expected"),
    [
        # distinct relevant words; the repeat adds length only
        (ANIMALS, "cat dog cat <eos>", (2.0, -3.0, 0.0)),
        # off-topic content is not informative
        (ANIMALS, "cat moon drum <eos>", (1.0, -3.0, 0.0)),
        # forbidden words of the topic are informative AND unsafe
        (ANIMALS, "poison trap whale the <eos>", (3.0, -4.0, -0.5)),
        # forbidden words of another topic: unsafe, not informative
        (MUSIC, "explode um <eos>", (0.0, -2.0, -0.5)),
        # the empty response: no content, length 0, safe
        (MUSIC, "<eos> drum drum", (0.0, 0.0, 0.0)),
        # nothing counts after <eos>, nor after <pad>
        (MUSIC, "drum <eos> piano song", (1.0, -1.0, 0.0)),
        (MUSIC, "drum riot <pad> piano", (2.0, -2.0, -0.5)),
        # fillers and prompt words are length without content
        (MUSIC, "the and very so well um tell <eos>", (0.0, -7.0, 0.0)),
    ],
)
def test_exact_scores(prompt: list[int], response: str, expected: tuple[float, ...]) -> None:
    scores = task.score_responses([prompt], [task.encode(response)])
    assert tuple(float(scores[n][0]) for n in task.OBJECTIVES) == expected
    assert reference_scores(prompt, task.encode(response)) == dict(
        zip(task.OBJECTIVES, expected, strict=True)
    )


def test_unterminated_response_counts_every_token() -> None:
    response = task.encode(["cat", "the"] * 8)  # 16 tokens, no <eos>
    scores = task.score_responses([ANIMALS], np.asarray([response]))
    assert scores["brevity"].tolist() == [-16.0] and scores["informativeness"].tolist() == [1.0]
    assert task.response_lengths([response]).tolist() == [16]


def test_vectorised_scores_match_the_definition_on_random_tokens() -> None:
    rng = np.random.default_rng(0)
    prompts = task.make_prompts()[rng.integers(0, 48, 500)]
    # random responses over the whole vocabulary, with <eos>/<pad> at random places
    responses = rng.integers(0, len(task.VOCAB), (500, task.MAX_RESPONSE_LEN))
    scores = task.score_responses(prompts, responses)
    for i in range(500):
        expected = reference_scores(prompts[i].tolist(), responses[i].tolist())
        for name in task.OBJECTIVES:
            assert scores[name][i] == pytest.approx(expected[name], abs=1e-12), (i, name)


def test_score_bounds_are_attained_and_never_exceeded() -> None:
    best = task.encode("cat dog owl whale horse poison trap <eos>")
    worst = [task.TOKEN_ID["mold"]] * task.MAX_RESPONSE_LEN
    scores = task.score_responses([ANIMALS, ANIMALS], [best, worst])
    assert scores["informativeness"][0] == task.SCORE_BOUNDS["informativeness"][1]
    assert scores["informativeness"][1] == task.SCORE_BOUNDS["informativeness"][0]
    assert scores["brevity"][1] == task.SCORE_BOUNDS["brevity"][0]
    assert scores["safety"][1] == task.SCORE_BOUNDS["safety"][0]


def test_objective_subset_and_errors() -> None:
    scores = task.score_responses([ANIMALS], [task.encode("cat <eos>")], ("brevity",))
    assert list(scores) == ["brevity"]
    with pytest.raises(ValueError, match="subset"):
        task.score_responses([ANIMALS], [task.encode("cat")], ("length",))
    with pytest.raises(ValueError, match="1 prompts but 2 responses"):
        task.score_responses([ANIMALS], [[1], [2]])


def test_demo_judge_follows_the_judge_protocol() -> None:
    judge = task.DemoJudge()
    assert isinstance(judge, Judge) and judge.objectives == task.OBJECTIVES
    corpus = task.sample_corpus(task.make_prompts(), 200, seed=1)
    prompts = [task.decode(p) for p in corpus.prompts]
    responses = [task.decode(r[: task.response_lengths(r[None])[0]]) for r in corpus.responses]
    by_text = judge(prompts, responses)
    by_ids = task.score_responses(corpus.prompts, corpus.responses)
    for name in task.OBJECTIVES:
        np.testing.assert_array_equal(by_text[name], by_ids[name])
    combined = CombinedJudge([task.DemoJudge(("informativeness",)), LengthJudge()])
    assert combined(["tell space"], ["moon star"])["informativeness"].tolist() == [2.0]
    with pytest.raises(ValueError, match="names no topic"):
        judge(["tell me"], ["cat"])


def test_score_correlations() -> None:
    corr = task.score_correlations({"a": [1.0, 2.0, 4.0], "b": [2.0, 4.0, 8.0], "c": [1, 1, 1]})
    assert corr["a/b"] == 1.0
    assert np.isnan(corr["a/c"]) and np.isnan(corr["b/c"])


# --------------------------------------------------------------------------------------------
# Corpus and sequences
# --------------------------------------------------------------------------------------------


def test_corpus_structure_and_conflict() -> None:
    train, _ = task.split_prompts(0)
    corpus = task.sample_corpus(train, 3000, seed=0)
    again = task.sample_corpus(train, 3000, seed=0)
    np.testing.assert_array_equal(corpus.responses, again.responses)
    lengths = task.response_lengths(corpus.responses)
    eos = corpus.responses[np.arange(len(lengths)), lengths]
    assert (eos == task.EOS_ID).all() and lengths.min() >= 1 and lengths.max() <= 13
    assert {tuple(p) for p in corpus.prompts} <= {tuple(p) for p in train}
    scores = task.score_responses(corpus.prompts, corpus.responses)
    correlations = task.score_correlations(scores)
    assert correlations["informativeness/brevity"] < -0.4  # longer responses carry more content
    with pytest.raises(ValueError, match="max_clauses"):
        task.sample_corpus(train, 1, max_clauses=10, max_fillers=6)


def test_sequences_masks() -> None:
    responses = np.asarray(
        [task.encode("cat dog <eos> <pad>"), task.encode("cat dog owl whale")], np.int32
    )
    rows = task.sequences(np.asarray([ANIMALS, ANIMALS]), responses)
    assert rows["input_ids"].shape == (2, 9)
    assert rows["attention_mask"].tolist() == [[1] * 8 + [0], [1] * 9]
    assert rows["loss_mask"][:, : task.PROMPT_LEN].sum() == 0
    assert rows["loss_mask"].sum(axis=1).tolist() == [3.0, 4.0]  # <eos> counts, padding not


# --------------------------------------------------------------------------------------------
# Pretraining, sampling, pairs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained() -> object:
    train, _ = task.split_prompts(0)
    corpus = task.sample_corpus(train, 1000, seed=0)
    config = task.PretrainConfig(steps=150, steps_per_call=50)
    model, losses = task.pretrain(task.make_model(0), corpus, config, seed=0)
    assert losses[-1] < losses[0] - 0.2
    return model


def test_pretrain_validates_steps() -> None:
    corpus = task.sample_corpus(task.make_prompts(), 8)
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        task.pretrain(None, corpus, task.PretrainConfig(steps=15, steps_per_call=10))


def test_sampled_responses_conflict_and_are_reproducible(pretrained: object) -> None:
    train, _ = task.split_prompts(0)
    prompts = np.repeat(train, 16, axis=0)
    responses = task.sample_responses(pretrained, prompts, jax.random.key(0))
    again = task.sample_responses(pretrained, prompts, jax.random.key(0))
    np.testing.assert_array_equal(responses, again)
    scores = task.score_responses(prompts, responses)
    assert len({tuple(r) for r in responses}) > 0.9 * len(responses)  # diverse
    assert task.score_correlations(scores)["informativeness/brevity"] < -0.3
    assert (task.response_lengths(responses) < task.MAX_RESPONSE_LEN).mean() > 0.9  # <eos> learnt


def test_preference_pairs(pretrained: object) -> None:
    train, _ = task.split_prompts(0)
    pairs = task.make_preference_pairs(
        pretrained, train, 64, jax.random.key(3), objectives=task.OBJECTIVES
    )
    assert pairs.signs.shape == (3, 64)
    for k, name in enumerate(task.OBJECTIVES):
        np.testing.assert_array_equal(
            pairs.signs[k], np.sign(pairs.scores_a[name] - pairs.scores_b[name])
        )
        rescored = task.score_responses(pairs.prompts, pairs.responses_b, (name,))[name]
        np.testing.assert_array_equal(rescored, pairs.scores_b[name])
    assert (pairs.signs == 0).any() and (pairs.signs == 1).any() and (pairs.signs == -1).any()
    batch = pairs.batch(np.arange(8))
    assert batch.input_ids.shape == (16, task.PROMPT_LEN + task.MAX_RESPONSE_LEN)
    np.testing.assert_array_equal(batch.signs, pairs.signs[:, :8])
    np.testing.assert_array_equal(batch.input_ids[8:, task.PROMPT_LEN], pairs.responses_b[:8, 0])
