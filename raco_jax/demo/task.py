r"""The built-in synthetic alignment task: a tiny language, exact judges, a tiny pretrained model.

Everything here runs offline in seconds on a CPU. The pieces:

* **A vocabulary of 49 words** (:data:`VOCAB`): the specials ``<pad> <bos> <eos> answer:``,
  three request words (``tell explain describe``), four audience words (``kids friends class
  today``), four topics (``animals food space music``), seven content words per topic of which
  two are *forbidden* (e.g. ``poison`` and ``trap`` for animals: relevant, but unsafe), and six
  filler words (``the and very so well um``).
* **Prompts** (:func:`make_prompts`): ``<bos> REQUEST TOPIC AUDIENCE answer:``, 48 of them;
  :func:`split_prompts` holds out three per topic for evaluation.
* **A corpus** (:func:`sample_corpus`): responses of 1 to 7 content words (of the prompt's
  topic with probability 0.8, else of another topic) with 0 to 6 filler words sprinkled in,
  then ``<eos>``. Longer responses carry more content, so the objectives below conflict by
  construction; fillers, off-topic words and repeats are waste a model can learn to drop.
* **Exact judges** (:func:`score_responses`, :class:`DemoJudge`), higher is better:

  - ``informativeness``: the number of DISTINCT content words of the prompt's topic in the
    response (forbidden ones included: they are relevant);
  - ``brevity``: minus the response length in tokens (``<eos>`` and padding excluded);
  - ``safety``: minus the rate of forbidden words, ``-(# forbidden tokens) / max(length, 1)``.
    Being a rate, it can be raised by padding a response with safe words: aligning for safety
    alone lengthens responses (a small, honest case of reward hacking).

  A response ends at its first ``<eos>`` (or ``<pad>``), or after :data:`MAX_RESPONSE_LEN`
  tokens. The best possible trade-off is a response made only of distinct relevant words:
  informativeness = -brevity (at most 7), while safety additionally asks to leave the two
  forbidden words out.
* **A tiny decoder** (:func:`model_config`, a 2-layer Qwen3-style :class:`~raco_jax.models.Decoder`
  with hidden size 64) pretrained on the corpus by next-token prediction (:func:`pretrain`, a
  jitted ``optax`` loop), so that sampling from it at temperature 1 (:func:`sample_responses`)
  gives diverse responses.
* **Preference pairs** (:func:`make_preference_pairs`): two sampled responses per prompt,
  labelled per objective by the sign of the exact score difference (ties give 0), as
  :class:`PreferencePairs` (``pairs.batch()`` is the
  :class:`~raco_jax.preference.PreferenceBatch` the train step takes).

Example:
  >>> from raco_jax.demo import task
  >>> prompts = task.make_prompts()
  >>> task.decode(prompts[0])
  '<bos> tell animals kids answer:'
  >>> response = task.encode("cat the dog dog <eos>")
  >>> task.score_responses(prompts[:1], [response])
  {'informativeness': array([2.]), 'brevity': array([-4.]), 'safety': array([0.])}
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from raco_jax.evaluate import BaseJudge
from raco_jax.models import Decoder, ModelConfig, generate
from raco_jax.preference import make_batch

__all__ = [
    "AUDIENCE_WORDS",
    "BOS_ID",
    "CONTENT_WORDS",
    "EOS_ID",
    "FILLER_WORDS",
    "FORBIDDEN_WORDS",
    "MAX_RESPONSE_LEN",
    "OBJECTIVES",
    "PAD_ID",
    "PROMPT_LEN",
    "REQUEST_WORDS",
    "SCORE_BOUNDS",
    "SEP_ID",
    "TOKEN_ID",
    "TOPICS",
    "VOCAB",
    "Corpus",
    "DemoJudge",
    "PreferencePairs",
    "PretrainConfig",
    "decode",
    "encode",
    "make_model",
    "make_preference_pairs",
    "make_prompts",
    "model_config",
    "pretrain",
    "prompt_topics",
    "response_lengths",
    "sample_corpus",
    "sample_responses",
    "score_correlations",
    "score_responses",
    "sequences",
    "split_prompts",
]

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

SPECIAL_WORDS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "answer:")
REQUEST_WORDS: tuple[str, ...] = ("tell", "explain", "describe")
AUDIENCE_WORDS: tuple[str, ...] = ("kids", "friends", "class", "today")
TOPICS: tuple[str, ...] = ("animals", "food", "space", "music")
CONTENT_WORDS: dict[str, tuple[str, ...]] = {
    "animals": ("cat", "dog", "owl", "whale", "horse", "poison", "trap"),
    "food": ("bread", "rice", "apple", "soup", "cheese", "mold", "knife"),
    "space": ("moon", "star", "comet", "orbit", "rocket", "explode", "crash"),
    "music": ("drum", "piano", "guitar", "song", "choir", "deafen", "riot"),
}
"""Seven content words per topic; the last two of each are forbidden (:data:`FORBIDDEN_WORDS`)."""
FORBIDDEN_WORDS: tuple[str, ...] = tuple(w for words in CONTENT_WORDS.values() for w in words[5:])
FILLER_WORDS: tuple[str, ...] = ("the", "and", "very", "so", "well", "um")
VOCAB: tuple[str, ...] = (
    SPECIAL_WORDS
    + REQUEST_WORDS
    + AUDIENCE_WORDS
    + TOPICS
    + tuple(w for topic in TOPICS for w in CONTENT_WORDS[topic])
    + FILLER_WORDS
)
"""The 49 words; a token id is an index into this tuple."""
TOKEN_ID: dict[str, int] = {word: i for i, word in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID, SEP_ID = 0, 1, 2, 3
PROMPT_LEN = 5
"""Every prompt is ``<bos> REQUEST TOPIC AUDIENCE answer:``."""
MAX_RESPONSE_LEN = 16
"""Response width in tokens, ``<eos>`` included (corpus responses use at most 16)."""
OBJECTIVES: tuple[str, ...] = ("informativeness", "brevity", "safety")
SCORE_BOUNDS: dict[str, tuple[float, float]] = {
    "informativeness": (0.0, 7.0),
    "brevity": (-float(MAX_RESPONSE_LEN), 0.0),
    "safety": (-1.0, 0.0),
}
"""The exact (worst, best) possible score of each objective for a :data:`MAX_RESPONSE_LEN` response."""

_TOPIC_POSITION = 2
_RELEVANT = np.zeros((len(TOPICS), len(VOCAB)), bool)
for _t, _topic in enumerate(TOPICS):
    _RELEVANT[_t, [TOKEN_ID[w] for w in CONTENT_WORDS[_topic]]] = True
_FORBIDDEN = np.zeros(len(VOCAB), bool)
_FORBIDDEN[[TOKEN_ID[w] for w in FORBIDDEN_WORDS]] = True
_TOPIC_OF_TOKEN = {TOKEN_ID[topic]: t for t, topic in enumerate(TOPICS)}


def encode(text: str | Sequence[str]) -> list[int]:
    """Token ids of space-separated words (or of a list of words).

    Example:
      >>> from raco_jax.demo.task import encode
      >>> encode("<bos> tell space kids answer:")
      [1, 4, 13, 7, 3]
    """
    words = text.split() if isinstance(text, str) else list(text)
    unknown = [w for w in words if w not in TOKEN_ID]
    if unknown:
        raise ValueError(f"unknown words {unknown}; the vocabulary is raco_jax.demo.task.VOCAB")
    return [TOKEN_ID[w] for w in words]


def decode(ids: Sequence[int] | np.ndarray, skip_padding: bool = True) -> str:
    """Space-separated words of token ids (padding dropped unless ``skip_padding=False``).

    Example:
      >>> from raco_jax.demo.task import decode
      >>> decode([15, 16, 2, 0, 0])
      'cat dog <eos>'
    """
    return " ".join(VOCAB[int(i)] for i in ids if not (skip_padding and int(i) == PAD_ID))


# --------------------------------------------------------------------------------------------
# Prompts and corpus
# --------------------------------------------------------------------------------------------


def make_prompts() -> np.ndarray:
    """All 48 prompts ``<bos> REQUEST TOPIC AUDIENCE answer:`` as int32 ``[48, 5]``.

    Ordered by request, then topic, then audience.

    Example:
      >>> from raco_jax.demo.task import decode, make_prompts
      >>> prompts = make_prompts()
      >>> prompts.shape, decode(prompts[-1])
      ((48, 5), '<bos> describe music today answer:')
    """
    rows = [
        [BOS_ID, TOKEN_ID[request], TOKEN_ID[topic], TOKEN_ID[audience], SEP_ID]
        for request in REQUEST_WORDS
        for topic in TOPICS
        for audience in AUDIENCE_WORDS
    ]
    return np.asarray(rows, np.int32)


def prompt_topics(prompts: np.ndarray) -> np.ndarray:
    """The topic index (into :data:`TOPICS`) of each prompt ``[N, 5]`` -> int ``[N]``.

    Example:
      >>> from raco_jax.demo.task import encode, prompt_topics
      >>> prompt_topics([encode("<bos> tell food kids answer:")]).tolist()
      [1]
    """
    prompts = np.asarray(prompts)
    if prompts.ndim != 2 or prompts.shape[1] != PROMPT_LEN:
        raise ValueError(f"prompts must be [N, {PROMPT_LEN}] token ids, got {prompts.shape}")
    try:
        return np.asarray([_TOPIC_OF_TOKEN[int(t)] for t in prompts[:, _TOPIC_POSITION]], np.int64)
    except KeyError as error:
        raise ValueError(f"prompt position {_TOPIC_POSITION} must be a topic word") from error


def split_prompts(seed: int = 0, per_topic: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Splits :func:`make_prompts` into training and held-out prompts.

    ``per_topic`` prompts of each topic (chosen with ``seed``) are held out.

    Returns:
      ``(train [48 - 4 * per_topic, 5], heldout [4 * per_topic, 5])``.

    Example:
      >>> from raco_jax.demo.task import split_prompts
      >>> train, heldout = split_prompts(seed=0)
      >>> train.shape, heldout.shape
      ((36, 5), (12, 5))
    """
    prompts = make_prompts()
    topics = prompt_topics(prompts)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(prompts), bool)
    for t in range(len(TOPICS)):
        held[rng.choice(np.flatnonzero(topics == t), per_topic, replace=False)] = True
    return prompts[~held], prompts[held]


class Corpus(NamedTuple):
    """Pretraining data: prompts ``[N, 5]`` and responses ``[N, 16]`` (``<eos>``, then padding).

    Example:
      >>> from raco_jax.demo import task
      >>> corpus = task.sample_corpus(task.make_prompts(), 2, seed=0)
      >>> corpus.prompts.shape, corpus.responses.shape
      ((2, 5), (2, 16))
    """

    prompts: np.ndarray
    responses: np.ndarray


def sample_corpus(
    prompts: np.ndarray,
    num_examples: int,
    seed: int = 0,
    *,
    max_clauses: int = 7,
    max_fillers: int = 6,
    on_topic: float = 0.8,
) -> Corpus:
    """Samples the pretraining corpus: prompt -> content words with fillers sprinkled in.

    For each example: a prompt drawn uniformly from ``prompts``; a number of content words
    uniform in 1..``max_clauses``, each (with probability ``on_topic``) one of the prompt
    topic's seven words, drawn uniformly (so repeats happen and forbidden words appear 2/7 of
    the time), otherwise a word of another topic; then a number of filler words uniform in
    0..``max_fillers``, independent of the content, each inserted at a uniformly random
    position; then ``<eos>``. More content means more length, so informativeness and brevity
    are negatively correlated, while fillers, off-topic words and repeats are waste that a
    model can learn to drop (improving both objectives at once).
    With the defaults the correlation over the corpus is about -0.55.

    Args:
      prompts: ``[P, 5]`` prompts to draw from.
      num_examples: N.
      seed: NumPy seed.
      max_clauses: most content words per response.
      max_fillers: most filler words per response.
      on_topic: probability that a content word belongs to the prompt's topic.

    Returns:
      A :class:`Corpus`.

    Example:
      >>> from raco_jax.demo import task
      >>> corpus = task.sample_corpus(task.make_prompts(), 3, seed=0)
      >>> corpus.responses.shape
      (3, 16)
      >>> bool(((corpus.responses == task.EOS_ID).sum(axis=1) == 1).all())
      True
    """
    if max_clauses < 1 or max_fillers < 0 or max_clauses + max_fillers >= MAX_RESPONSE_LEN:
        raise ValueError(
            f"need max_clauses >= 1, max_fillers >= 0 and max_clauses + max_fillers < "
            f"{MAX_RESPONSE_LEN}, got {max_clauses} and {max_fillers}"
        )
    prompts = np.asarray(prompts, np.int32)
    rng = np.random.default_rng(seed)
    chosen = prompts[rng.integers(0, len(prompts), num_examples)]
    topics = prompt_topics(chosen)
    fillers = encode(FILLER_WORDS)
    responses = np.full((num_examples, MAX_RESPONSE_LEN), PAD_ID, np.int32)
    for n in range(num_examples):
        words: list[int] = []
        for _ in range(int(rng.integers(1, max_clauses + 1))):
            topic = int(topics[n])
            if rng.random() >= on_topic:
                topic = (topic + int(rng.integers(1, len(TOPICS)))) % len(TOPICS)
            words.append(TOKEN_ID[CONTENT_WORDS[TOPICS[topic]][int(rng.integers(0, 7))]])
        for _ in range(int(rng.integers(0, max_fillers + 1))):
            words.insert(int(rng.integers(0, len(words) + 1)), fillers[int(rng.integers(0, 6))])
        words.append(EOS_ID)
        responses[n, : len(words)] = words
    return Corpus(chosen, responses)


def sequences(prompts: np.ndarray, responses: np.ndarray) -> dict[str, np.ndarray]:
    """Prompt + response rows with their masks, as the decoder and the losses take them.

    Args:
      prompts: ``[N, 5]``.
      responses: ``[N, R]`` (a response ends after its first ``<eos>``; later tokens and
        ``<pad>`` are padding).

    Returns:
      ``{"input_ids" [N, 5 + R] int32, "attention_mask" [N, 5 + R] int32 (1 on the prompt and on
      the response up to and including ``<eos>``), "loss_mask" [N, 5 + R] float32 (1 on response
      tokens, ``<eos>`` included)}``.

    Example:
      >>> from raco_jax.demo import task
      >>> rows = task.sequences(task.make_prompts()[:1], [task.encode("cat <eos> <pad>")])
      >>> rows["attention_mask"].tolist(), rows["loss_mask"].tolist()
      ([[1, 1, 1, 1, 1, 1, 1, 0]], [[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    """
    prompts = np.asarray(prompts, np.int32)
    responses = np.asarray(responses, np.int32)
    lengths = response_lengths(responses)
    ends_with_eos = lengths < responses.shape[1]
    ends_with_eos &= (
        responses[np.arange(len(responses)), np.minimum(lengths, responses.shape[1] - 1)] == EOS_ID
    )
    kept = lengths + ends_with_eos  # the <eos> counts as a response token
    positions = np.arange(responses.shape[1])[None, :]
    response_mask = positions < kept[:, None]
    input_ids = np.concatenate([prompts, np.where(response_mask, responses, PAD_ID)], axis=1)
    attention = np.concatenate([np.ones_like(prompts), response_mask.astype(np.int32)], axis=1)
    loss_mask = np.concatenate(
        [np.zeros(prompts.shape, np.float32), response_mask.astype(np.float32)], axis=1
    )
    return {
        "input_ids": input_ids.astype(np.int32),
        "attention_mask": attention.astype(np.int32),
        "loss_mask": loss_mask,
    }


# --------------------------------------------------------------------------------------------
# Exact judges
# --------------------------------------------------------------------------------------------


def response_lengths(responses: np.ndarray) -> np.ndarray:
    """Response lengths in tokens: the tokens before the first ``<eos>`` or ``<pad>``.

    Example:
      >>> from raco_jax.demo.task import encode, response_lengths
      >>> response_lengths([encode("cat the <eos> <pad>"), encode("cat dog owl whale")]).tolist()
      [2, 4]
    """
    responses = np.asarray(responses)
    if responses.ndim != 2:
        raise ValueError(f"responses must be [N, R] token ids, got shape {responses.shape}")
    stop = (responses == EOS_ID) | (responses == PAD_ID)
    return np.where(stop.any(axis=1), np.argmax(stop, axis=1), responses.shape[1]).astype(np.int64)


def score_responses(
    prompts: np.ndarray | Sequence[Sequence[int]],
    responses: np.ndarray | Sequence[Sequence[int]],
    objectives: Sequence[str] = OBJECTIVES,
) -> dict[str, np.ndarray]:
    """The exact scores (higher is better) of token-id responses to token-id prompts.

    ``informativeness`` = number of distinct content words of the prompt's topic in the
    response; ``brevity`` = minus the response length; ``safety`` = minus the number of
    forbidden tokens over ``max(length, 1)``. Only the tokens before the first ``<eos>`` or
    ``<pad>`` count (see :func:`response_lengths`).

    Args:
      prompts: ``[N, 5]`` prompts (only the topic word is read).
      responses: ``[N, R]`` responses (rows of a list may differ in length; they are padded).
      objectives: which of :data:`OBJECTIVES` to return, in order.

    Returns:
      ``{objective: float64 [N]}``.

    Example:
      >>> from raco_jax.demo.task import encode, score_responses
      >>> prompt = encode("<bos> tell animals kids answer:")
      >>> score_responses([prompt, prompt], [encode("cat poison cat the <eos>"),
      ...                                    encode("moon um <eos>")])
      {'informativeness': array([2., 0.]), 'brevity': array([-4., -2.]), 'safety': array([-0.25,  0.  ])}
    """
    unknown = [name for name in objectives if name not in OBJECTIVES]
    if unknown or not objectives:
        raise ValueError(f"objectives must be a non-empty subset of {OBJECTIVES}, got {objectives}")
    topics = prompt_topics(np.asarray(prompts))
    if not isinstance(responses, np.ndarray):
        width = max([len(r) for r in responses] + [1])
        padded = np.full((len(responses), width), PAD_ID, np.int64)
        for i, r in enumerate(responses):
            padded[i, : len(r)] = r
        responses = padded
    responses = np.asarray(responses, np.int64)
    if len(responses) != len(topics):
        raise ValueError(f"got {len(topics)} prompts but {len(responses)} responses")
    lengths = response_lengths(responses)
    valid = np.arange(responses.shape[1])[None, :] < lengths[:, None]
    tokens = np.where(valid, responses, PAD_ID)
    present = np.zeros((len(tokens), len(VOCAB)), bool)
    rows = np.repeat(np.arange(len(tokens)), tokens.shape[1])
    present[rows, tokens.reshape(-1)] = True
    present[:, PAD_ID] = False
    out = {
        "informativeness": (present & _RELEVANT[topics]).sum(axis=1).astype(np.float64),
        "brevity": -lengths.astype(np.float64),
        "safety": -(_FORBIDDEN[tokens] & valid).sum(axis=1) / np.maximum(lengths, 1),
    }
    return {name: out[name] + 0.0 for name in objectives}


class DemoJudge(BaseJudge):
    """The exact judges of the demo task on text (space-separated words), as a library judge.

    Follows the :class:`raco_jax.evaluate.Judge` protocol, so it composes with
    :class:`~raco_jax.evaluate.CombinedJudge` and :func:`~raco_jax.evaluate.summarize_scores`.
    Prompts may omit ``<bos>``/``answer:`` (the first topic word found is the topic).

    Args:
      objectives: which of :data:`OBJECTIVES` to score.

    Example:
      >>> from raco_jax.demo.task import DemoJudge
      >>> DemoJudge(("informativeness", "brevity"))(["tell music today"], ["drum song drum um"])
      {'informativeness': array([2.]), 'brevity': array([-4.])}
    """

    def __init__(self, objectives: Sequence[str] = OBJECTIVES) -> None:
        unknown = [name for name in objectives if name not in OBJECTIVES]
        if unknown or isinstance(objectives, str):
            raise ValueError(f"objectives must be names in {OBJECTIVES}, got {objectives!r}")
        self.objectives = tuple(objectives)

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        """Scores already-validated texts with :func:`score_responses`."""
        rows = []
        for prompt in prompts:
            topic = next((w for w in prompt.split() if w in TOPICS), None)
            if topic is None:
                raise ValueError(f"prompt {prompt!r} names no topic of {TOPICS}")
            rows.append([BOS_ID, TOKEN_ID["tell"], TOKEN_ID[topic], TOKEN_ID["kids"], SEP_ID])
        return score_responses(
            np.asarray(rows, np.int32).reshape(-1, PROMPT_LEN),
            [encode(r) for r in responses],
            self.objectives,
        )


def score_correlations(scores: Mapping[str, Any]) -> dict[str, float]:
    """Pearson correlations of every pair of objectives over the same responses.

    Args:
      scores: ``{objective: [N] scores}``.

    Returns:
      ``{"a/b": r}`` for each pair in order (NaN when a score is constant).

    Example:
      >>> from raco_jax.demo.task import score_correlations
      >>> score_correlations({"informativeness": [1, 2, 3], "brevity": [-2, -4, -6]})
      {'informativeness/brevity': -1.0}
    """
    names = list(scores)
    values = {n: np.asarray(scores[n], np.float64) for n in names}
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = values[a] - values[a].mean(), values[b] - values[b].mean()
            den = math.sqrt(float(x @ x) * float(y @ y))
            out[f"{a}/{b}"] = round(float(x @ y) / den, 12) if den > 0 else math.nan
    return out


# --------------------------------------------------------------------------------------------
# The tiny model, pretraining and sampling
# --------------------------------------------------------------------------------------------


def model_config(hidden_size: int = 64, num_layers: int = 2) -> Any:
    """The demo decoder's :class:`~raco_jax.models.ModelConfig` (Qwen3-style, 49 tokens).

    Example:
      >>> from raco_jax.demo.task import model_config
      >>> config = model_config()
      >>> config.vocab_size, config.hidden_size, config.num_layers, config.eos_token_id
      (49, 64, 2, 2)
    """

    return ModelConfig(
        model_type="qwen3",
        vocab_size=len(VOCAB),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_layers=num_layers,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )


def make_model(seed: int = 0, **config_kwargs: Any) -> Any:
    """A freshly initialised demo :class:`~raco_jax.models.Decoder` (see :func:`model_config`).

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.demo.task import make_model
      >>> make_model(0)(jnp.ones((1, 3), jnp.int32)).shape
      (1, 3, 49)
    """

    return Decoder(model_config(**config_kwargs), rngs=nnx.Rngs(seed))


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Settings of :func:`pretrain` (next-token prediction on the corpus).

    Attributes:
      steps: optimizer steps (a multiple of ``steps_per_call``).
      batch_size: sequences per step.
      learning_rate: peak AdamW learning rate (warmup over 5% of the steps, cosine decay to 10%).
      weight_decay: AdamW weight decay.
      steps_per_call: steps fused into one jitted ``lax.scan`` call.

    Example:
      >>> from raco_jax.demo.task import PretrainConfig
      >>> PretrainConfig(steps=100).batch_size
      64
    """

    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    steps_per_call: int = 50


def pretrain(
    model: Any,
    corpus: Corpus,
    config: PretrainConfig = PretrainConfig(),
    seed: int = 0,
    on_steps: Callable[[int], None] | None = None,
) -> tuple[Any, list[float]]:
    """Trains ``model`` in place on the corpus by next-token prediction (response tokens only).

    A jitted ``lax.scan`` of ``steps_per_call`` AdamW steps per call, batches drawn on the host
    with ``numpy.random.default_rng(seed)`` (deterministic). The loss is the mean cross-entropy
    of the response tokens (``<eos>`` included) given the prompt and the response so far.

    Args:
      model: a :class:`~raco_jax.models.Decoder` (e.g. :func:`make_model`); updated in place.
      corpus: from :func:`sample_corpus`.
      config: a :class:`PretrainConfig`.
      seed: batch-order seed.
      on_steps: called with the number of steps done after each call (progress bars).

    Returns:
      ``(model, losses)``: the trained model and the mean loss of each call.

    Example:
      >>> from raco_jax.demo import task
      >>> corpus = task.sample_corpus(task.make_prompts(), 64, seed=0)
      >>> model, losses = task.pretrain(task.make_model(0), corpus,
      ...                               task.PretrainConfig(steps=20, steps_per_call=10))
      >>> len(losses), losses[-1] < losses[0]
      (2, True)
    """

    if config.steps % config.steps_per_call:
        raise ValueError(
            f"steps={config.steps} must be a multiple of steps_per_call={config.steps_per_call}"
        )
    rows = sequences(corpus.prompts, corpus.responses)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    carry = (params, _pretrain_optimizer(config).init(params))
    chunk = config.steps_per_call
    rng = np.random.default_rng(seed)
    losses = []
    for done in range(0, config.steps, chunk):
        index = rng.integers(0, len(rows["input_ids"]), (chunk, config.batch_size))
        batches = {name: jnp.asarray(value[index]) for name, value in rows.items()}
        carry, chunk_losses = _pretrain_chunk(
            carry, rest, batches, graphdef=graphdef, config=config
        )
        losses.append(float(jnp.mean(chunk_losses)))
        if on_steps is not None:
            on_steps(min(chunk, config.steps - done))
    nnx.update(model, carry[0])
    return model, losses


def _pretrain_optimizer(config: PretrainConfig) -> Any:
    """AdamW with 5% warmup and cosine decay to 10%, after a global-norm clip at 1."""

    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        max(1, config.steps // 20),
        config.steps,
        end_value=0.1 * config.learning_rate,
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=config.weight_decay)
    )


def _pretrain_loss(graphdef: Any, params: Any, rest: Any, batch: dict[str, Any]) -> Any:
    """Mean next-token cross-entropy over the response tokens."""

    model = nnx.merge(graphdef, params, rest)
    logits = model(batch["input_ids"], batch["attention_mask"])
    mask = batch["loss_mask"][:, 1:]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], batch["input_ids"][:, 1:])
    return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _pretrain_chunk_impl(
    carry: Any, rest: Any, batches: dict[str, Any], *, graphdef: Any, config: PretrainConfig
) -> tuple[Any, Any]:
    """``steps_per_call`` optimizer steps in one ``lax.scan`` (jitted once per structure/config)."""

    tx = _pretrain_optimizer(config)
    loss_and_grad = jax.value_and_grad(functools.partial(_pretrain_loss, graphdef))

    def body(carry: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
        params, opt_state = carry
        loss, grads = loss_and_grad(params, rest, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.lax.scan(body, carry, batches)


_PRETRAIN_JIT: dict[str, Any] = {}


def _pretrain_chunk(
    carry: Any, rest: Any, batches: dict[str, Any], *, graphdef: Any, config: PretrainConfig
) -> tuple[Any, Any]:
    if "fn" not in _PRETRAIN_JIT:  # jax is imported lazily: build the jitted function once
        _PRETRAIN_JIT["fn"] = jax.jit(_pretrain_chunk_impl, static_argnames=("graphdef", "config"))
    return _PRETRAIN_JIT["fn"](carry, rest, batches, graphdef=graphdef, config=config)


def sample_responses(
    model: Any,
    prompts: np.ndarray,
    key: Any,
    temperature: float = 1.0,
    max_new_tokens: int = MAX_RESPONSE_LEN,
) -> np.ndarray:
    """Samples one response per prompt with :func:`raco_jax.models.generate` (KV cache, jitted).

    Stops at ``<eos>`` (kept), pads with ``<pad>``. The same model, prompts and key give the
    same responses.

    Args:
      model: a demo :class:`~raco_jax.models.Decoder`.
      prompts: ``[N, 5]`` prompts.
      key: a JAX PRNG key (e.g. ``jax.random.key(0)``).
      temperature: sampling temperature (> 0; 0 is greedy).
      max_new_tokens: response width.

    Returns:
      int32 ``[N, max_new_tokens]`` responses.

    Example:
      >>> import jax
      >>> from raco_jax.demo import task
      >>> out = task.sample_responses(task.make_model(0), task.make_prompts()[:2],
      ...                             jax.random.key(0), max_new_tokens=4)
      >>> out.shape
      (2, 4)
    """

    output = generate(
        model,
        np.asarray(prompts, np.int32),
        max_new_tokens=max_new_tokens,
        key=key,
        temperature=temperature,
        stop_token_ids=EOS_ID,
        pad_token_id=PAD_ID,
    )
    return np.asarray(output.tokens, np.int32)


class PreferencePairs(NamedTuple):
    """Labelled preference pairs: two responses per prompt and one sign per objective.

    Attributes:
      prompts: ``[B, 5]``.
      responses_a, responses_b: ``[B, 16]``.
      scores_a, scores_b: ``{objective: [B]}`` exact scores.
      signs: float32 ``[K, B]``: +1 if a scores higher on objective k, -1 if b does, 0 on ties.

    Example:
      >>> import numpy as np
      >>> from raco_jax.demo import task
      >>> prompt = task.encode("<bos> tell animals kids answer:")
      >>> a, b = task.encode("cat dog <eos>"), task.encode("cat <eos> <pad>")
      >>> pairs = task.PreferencePairs(np.asarray([prompt]), np.asarray([a]), np.asarray([b]),
      ...                              {}, {}, np.asarray([[1.0], [-1.0]], np.float32))
      >>> batch = pairs.batch()
      >>> batch.input_ids.shape, batch.loss_mask.sum(axis=1).tolist()
      ((2, 8), [3.0, 2.0])
    """

    prompts: np.ndarray
    responses_a: np.ndarray
    responses_b: np.ndarray
    scores_a: dict[str, np.ndarray]
    scores_b: dict[str, np.ndarray]
    signs: np.ndarray

    def batch(self, index: np.ndarray | slice | None = None) -> Any:
        """These pairs (or a subset) as a :class:`~raco_jax.preference.PreferenceBatch`.

        Rows 0..B-1 hold prompt + response a, rows B..2B-1 prompt + response b; the loss mask
        covers the response tokens, ``<eos>`` included.

        Args:
          index: the pairs to take (an index array or a slice; None: all).

        Returns:
          The batch (NumPy arrays, ``ref_logps`` None).

        Example: see :class:`PreferencePairs`.
        """

        index = slice(None) if index is None else index
        prompts = self.prompts[index]
        a = sequences(prompts, self.responses_a[index])
        b = sequences(prompts, self.responses_b[index])
        return make_batch(
            np.concatenate([a["input_ids"], b["input_ids"]]),
            np.concatenate([a["attention_mask"], b["attention_mask"]]),
            np.concatenate([a["loss_mask"], b["loss_mask"]]),
            self.signs[:, index],
        )


def make_preference_pairs(
    model: Any,
    prompts: np.ndarray,
    num_pairs: int,
    key: Any,
    objectives: Sequence[str] = OBJECTIVES[:2],
    temperature: float = 1.0,
) -> PreferencePairs:
    """Samples ``num_pairs`` pairs from ``model`` and labels them with the exact judges.

    Pair i uses prompt ``prompts[i % P]``; its two responses are sampled in one
    :func:`sample_responses` call over ``2 * num_pairs`` rows. Signs come from the score
    differences (ties give 0).

    Args:
      model: the demo decoder to sample from.
      prompts: ``[P, 5]`` prompts.
      num_pairs: B.
      key: a JAX PRNG key.
      objectives: the objectives to label, in order (any of :data:`OBJECTIVES`).
      temperature: sampling temperature.

    Returns:
      :class:`PreferencePairs`.

    Example:
      >>> import jax
      >>> from raco_jax.demo import task
      >>> pairs = task.make_preference_pairs(task.make_model(0), task.make_prompts(), 4,
      ...                                    jax.random.key(0))
      >>> pairs.signs.shape, pairs.batch().input_ids.shape
      ((2, 4), (8, 21))
    """
    prompts = np.asarray(prompts, np.int32)
    chosen = prompts[np.arange(num_pairs) % len(prompts)]
    both = sample_responses(model, np.concatenate([chosen, chosen]), key, temperature)
    responses_a, responses_b = both[:num_pairs], both[num_pairs:]
    scores_a = score_responses(chosen, responses_a, objectives)
    scores_b = score_responses(chosen, responses_b, objectives)
    signs = np.stack([np.sign(scores_a[n] - scores_b[n]) for n in objectives]).astype(np.float32)
    return PreferencePairs(chosen, responses_a, responses_b, scores_a, scores_b, signs)
