r"""Judges: score responses to prompts on one or more objectives (higher is better).

A *judge* is any callable ``judge(prompts, responses) -> dict[str, np.ndarray]`` with an
``objectives`` attribute (a tuple of objective names): it returns one float64 array of ``n``
scores per objective, ``n = len(prompts) = len(responses)``, higher being better. The
:class:`Judge` protocol states this; :class:`BaseJudge` checks inputs and outputs for subclasses.

Implementations:

- :class:`LengthJudge`: conciseness (minus the length in words, characters or tokens), a
  preference for long answers, or closeness to a target length.
- :class:`LexiconJudge`: the rate of lexicon words in a response, counted as good (e.g. polite
  words) or bad (e.g. a harmlessness proxy counting forbidden words).
- :class:`RewardModelJudge`: a Hugging Face sequence-classification reward model (transformers
  + torch, batched, on CPU by default).
- :class:`ImplicitRewardJudge`: the implicit DPO reward
  :math:`\beta(\log\pi(y|x) - \log\pi_\text{ref}(y|x))` from two log-prob callables.
- :class:`CombinedJudge`: several judges' objectives as one judge.

:func:`summarize_scores` turns per-prompt scores into the mean and standard error per objective
that :func:`raco_jax.evaluate.report.write_front_report` takes. Only NumPy is imported with this
module; torch and transformers load when a :class:`RewardModelJudge` is built.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "BaseJudge",
    "CombinedJudge",
    "ImplicitRewardJudge",
    "Judge",
    "LengthJudge",
    "LexiconJudge",
    "RewardModelJudge",
    "summarize_scores",
]

_WORD = re.compile(r"[\w']+")


@runtime_checkable
class Judge(Protocol):
    """What the evaluation code expects of a judge.

    Attributes:
      objectives: the names of the objectives the judge scores, in order.

    Calling ``judge(prompts, responses)`` returns ``{objective: float64 array [n]}`` with one
    entry per name in ``objectives``; higher is better.

    Example:
      >>> isinstance(LengthJudge(), Judge)
      True
    """

    objectives: tuple[str, ...]

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """Scores ``responses[i]`` as an answer to ``prompts[i]``."""
        ...


def _check_texts(prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[str], list[str]]:
    """Checks that prompts and responses are equally long sequences of strings."""
    for name, texts in (("prompts", prompts), ("responses", responses)):
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"{name} must be a list of strings; got {type(texts).__name__}")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{index}] must be a str; got {type(text).__name__}")
    if len(prompts) != len(responses):
        raise ValueError(
            f"prompts and responses must have the same length (one response per prompt); "
            f"got {len(prompts)} prompts and {len(responses)} responses"
        )
    return list(prompts), list(responses)


def _check_objective_name(objective: str) -> str:
    if not isinstance(objective, str) or not objective:
        raise ValueError(f"objective must be a non-empty string; got {objective!r}")
    return objective


def _check_scores(
    scores: Mapping[str, Any], objectives: Sequence[str], num_texts: int, owner: str
) -> dict[str, np.ndarray]:
    """Checks a judge's output: exactly its objectives, each a float64 ``[n]`` array."""
    if not isinstance(scores, Mapping):
        raise TypeError(f"{owner} must return a dict of scores; got {type(scores).__name__}")
    missing = [name for name in objectives if name not in scores]
    unknown = [name for name in scores if name not in objectives]
    if missing or unknown:
        raise ValueError(
            f"{owner} declares objectives {list(objectives)} but returned {list(scores)} "
            f"(missing {missing}, unknown {unknown})"
        )
    checked = {}
    for name in objectives:
        values = np.asarray(scores[name], dtype=np.float64)
        if values.shape != (num_texts,):
            raise ValueError(
                f"{owner} returned scores[{name!r}] of shape {values.shape}; expected ({num_texts},)"
            )
        checked[name] = values + 0.0  # turns -0.0 into 0.0
    return checked


class BaseJudge:
    """Base class for judges: validates inputs and outputs around :meth:`score`.

    Subclasses set ``objectives`` and implement ``score(prompts, responses)``, returning one
    array per objective; ``__call__`` checks that prompts and responses are equally long lists
    of strings and that the scores have the declared names and shape ``[n]``.

    Example:
      >>> class ExclamationJudge(BaseJudge):
      ...     objectives = ("calm",)
      ...     def score(self, prompts, responses):
      ...         return {"calm": [-r.count("!") for r in responses]}
      >>> ExclamationJudge()(["hi", "hi"], ["hello!!", "hello."])
      {'calm': array([-2.,  0.])}
    """

    objectives: tuple[str, ...] = ()

    def score(self, prompts: list[str], responses: list[str]) -> Mapping[str, Any]:
        """Returns ``{objective: [n] scores}`` for already-validated inputs."""
        raise NotImplementedError(f"{type(self).__name__} must implement score()")

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """Scores ``responses[i]`` as an answer to ``prompts[i]`` on every objective."""
        prompt_list, response_list = _check_texts(prompts, responses)
        scores = self.score(prompt_list, response_list)
        return _check_scores(scores, self.objectives, len(response_list), type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(objectives={self.objectives!r})"


def _token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Returns text -> number of tokens for an HF tokenizer or a callable text -> sequence."""
    if hasattr(tokenizer, "encode"):
        try:
            tokenizer.encode("a", add_special_tokens=False)
        except TypeError:
            return lambda text: len(tokenizer.encode(text))
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    if callable(tokenizer):
        return lambda text: len(tokenizer(text))
    raise TypeError(
        "tokenizer must have an encode(text) method (e.g. a transformers tokenizer) or be a "
        f"callable text -> sequence of tokens; got {type(tokenizer).__name__}"
    )


class LengthJudge(BaseJudge):
    """Scores responses by their length: conciseness, verbosity or closeness to a target.

    With ``n_i`` the length of response i (in ``unit``): ``prefer="short"`` scores
    :math:`-n_i` (conciseness), ``prefer="long"`` scores :math:`n_i`, and an integer
    ``prefer=t`` scores :math:`-|n_i - t|`. Words are runs of letters, digits, underscores and
    apostrophes; tokens need a ``tokenizer``.

    Args:
      objective: the objective's name.
      unit: ``"words"``, ``"characters"`` or ``"tokens"``.
      prefer: ``"short"``, ``"long"`` or a non-negative target length.
      tokenizer: for ``unit="tokens"``: a transformers tokenizer (special tokens are not
        counted) or any callable mapping a text to a sequence of tokens.

    Example:
      >>> LengthJudge()(["q", "q"], ["Yes.", "Well, it depends on the case."])
      {'conciseness': array([-1., -6.])}
      >>> LengthJudge("on_target", unit="characters", prefer=5)(["q"], ["abc"])
      {'on_target': array([-2.])}
      >>> LengthJudge(unit="tokens", tokenizer=list)(["q"], ["abc"])  # one token per character
      {'conciseness': array([-3.])}
    """

    def __init__(
        self,
        objective: str = "conciseness",
        *,
        unit: Literal["words", "characters", "tokens"] = "words",
        prefer: Literal["short", "long"] | int = "short",
        tokenizer: Any = None,
    ) -> None:
        self.objectives = (_check_objective_name(objective),)
        if unit not in ("words", "characters", "tokens"):
            raise ValueError(f"unit must be 'words', 'characters' or 'tokens'; got {unit!r}")
        if unit == "tokens" and tokenizer is None:
            raise ValueError(
                "unit='tokens' needs a tokenizer (a transformers tokenizer or a callable)"
            )
        if isinstance(prefer, bool) or not (
            prefer in ("short", "long") or (isinstance(prefer, int) and prefer >= 0)
        ):
            raise ValueError(
                f"prefer must be 'short', 'long' or a non-negative int target; got {prefer!r}"
            )
        self.unit = unit
        self.prefer = prefer
        if unit == "words":
            self._length: Callable[[str], int] = lambda text: len(_WORD.findall(text))
        elif unit == "characters":
            self._length = len
        else:
            self._length = _token_counter(tokenizer)

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        """Length-based scores of the responses (the prompts are not used)."""
        lengths = np.array([self._length(text) for text in responses], dtype=np.float64)
        if self.prefer == "short":
            values = -lengths
        elif self.prefer == "long":
            values = lengths
        else:
            values = -np.abs(lengths - float(self.prefer))
        return {self.objectives[0]: values}


class LexiconJudge(BaseJudge):
    """Scores responses by the rate of lexicon words (or phrases) they contain.

    The rate is the number of lexicon occurrences divided by the number of words of the
    response (0 for an empty response). Words are runs of letters, digits, underscores and
    apostrophes; a lexicon entry of several words matches that run of words. With
    ``polarity="negative"`` the score is minus the rate, e.g. a harmlessness proxy that counts
    forbidden words (0 is best); with ``"positive"`` it is the rate (e.g. polite words).

    Args:
      lexicon: the words or phrases to count (non-empty).
      objective: the objective's name.
      polarity: ``"negative"`` (lexicon words are bad) or ``"positive"`` (they are good).
      case_sensitive: match case exactly (default: case-insensitive).

    Example:
      >>> judge = LexiconJudge(["kill", "weapon"], objective="harmlessness")
      >>> judge(["q", "q"], ["Kill the weapon process", "Restart the process"])
      {'harmlessness': array([-0.5,  0. ])}
      >>> LexiconJudge(["thank you"], "politeness", polarity="positive")(["q"], ["Thank you so much"])
      {'politeness': array([0.25])}
    """

    def __init__(
        self,
        lexicon: Iterable[str],
        objective: str = "harmlessness",
        *,
        polarity: Literal["positive", "negative"] = "negative",
        case_sensitive: bool = False,
    ) -> None:
        self.objectives = (_check_objective_name(objective),)
        if polarity not in ("positive", "negative"):
            raise ValueError(f"polarity must be 'positive' or 'negative'; got {polarity!r}")
        if isinstance(lexicon, str):
            raise TypeError("lexicon must be a collection of words, not a single string")
        self.polarity = polarity
        self.case_sensitive = case_sensitive
        phrases: set[tuple[str, ...]] = set()
        for entry in lexicon:
            if not isinstance(entry, str):
                raise TypeError(f"lexicon entries must be strings; got {entry!r}")
            words = tuple(self._words(entry))
            if not words:
                raise ValueError(f"lexicon entry {entry!r} contains no word")
            phrases.add(words)
        if not phrases:
            raise ValueError("lexicon is empty")
        self.lexicon = frozenset(phrases)
        self._lengths = sorted({len(p) for p in phrases})

    def _words(self, text: str) -> list[str]:
        words = _WORD.findall(text)
        return words if self.case_sensitive else [w.lower() for w in words]

    def rate(self, text: str) -> float:
        """Lexicon occurrences per word of ``text``.

        Example:
          >>> LexiconJudge(["bad"]).rate("bad bad good")
          0.6666666666666666
        """
        words = self._words(text)
        if not words:
            return 0.0
        hits = sum(
            tuple(words[start : start + size]) in self.lexicon
            for size in self._lengths
            for start in range(len(words) - size + 1)
        )
        return hits / len(words)

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        """Lexicon rates of the responses, signed by the polarity."""
        sign = 1.0 if self.polarity == "positive" else -1.0
        return {self.objectives[0]: sign * np.array([self.rate(t) for t in responses])}


class RewardModelJudge(BaseJudge):
    """Scores with a Hugging Face sequence-classification reward model (torch, batched).

    Each (prompt, response) is encoded as a chat (user prompt, assistant response) with the
    tokenizer's chat template, as a text pair, or as the concatenation ``prompt + response``;
    the score is the model's logit when it has a single label, otherwise the logit of the
    chosen ``label``. Texts are scored in batches of ``batch_size`` (padded; the model reads
    the logit at the last non-padding token), in eval mode without gradients. The results do
    not depend on the batch size beyond float rounding.

    Args:
      model: a local directory or hub id (loaded with
        ``AutoModelForSequenceClassification.from_pretrained``; a hub id needs network access
        unless cached) or an already built ``transformers`` model.
      tokenizer: a tokenizer, a directory or hub id, or ``None`` to load it from ``model``
        (which must then be a path or id).
      objective: the objective's name.
      label: for models with several labels: the label's index or name (``config.label2id``).
      input_format: ``"chat"``, ``"pair"``, ``"concat"``, or ``"auto"`` (chat when the
        tokenizer has a chat template, else pair).
      batch_size: texts per forward pass.
      max_length: longer inputs are truncated to this many tokens.
      device: the torch device (``"cpu"`` by default).
      torch_dtype: the torch dtype to load the model in (e.g. ``"float32"``) when ``model``
        is a path or id; ``None`` keeps the checkpoint's default.

    Example:
      >>> import torch, transformers, tokenizers
      >>> vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "hi", "hello", "there"])}
      >>> core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
      >>> core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
      >>> tok = transformers.PreTrainedTokenizerFast(
      ...     tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")
      >>> _ = torch.manual_seed(0)
      >>> config = transformers.LlamaConfig(vocab_size=5, hidden_size=8, intermediate_size=16,
      ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, num_labels=1,
      ...     pad_token_id=0)
      >>> model = transformers.LlamaForSequenceClassification(config)
      >>> judge = RewardModelJudge(model, tok, objective="helpfulness", batch_size=2)
      >>> scores = judge(["hi", "hi", "hello"], ["hello there", "hi", "there"])
      >>> scores["helpfulness"].shape, scores["helpfulness"].dtype
      ((3,), dtype('float64'))
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        objective: str = "reward",
        label: int | str | None = None,
        input_format: Literal["auto", "chat", "pair", "concat"] = "auto",
        batch_size: int = 8,
        max_length: int = 1024,
        device: str = "cpu",
        torch_dtype: Any = None,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.objectives = (_check_objective_name(objective),)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int; got {max_length!r}")
        if input_format not in ("auto", "chat", "pair", "concat"):
            raise ValueError(
                f"input_format must be 'auto', 'chat', 'pair' or 'concat'; got {input_format!r}"
            )

        def is_path(value: Any) -> bool:
            return isinstance(value, str) or hasattr(value, "__fspath__")

        model_path = str(model) if is_path(model) else None
        if model_path is not None:
            kwargs = {} if torch_dtype is None else {"dtype": torch_dtype}
            model = AutoModelForSequenceClassification.from_pretrained(model_path, **kwargs)
        if tokenizer is None:
            if model_path is None:
                raise ValueError("tokenizer is required when model is an already built model")
            tokenizer = AutoTokenizer.from_pretrained(model_path)
        elif is_path(tokenizer):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "the tokenizer has neither a pad token nor an eos token to pad with"
                )
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id

        num_labels = int(model.config.num_labels)
        if label is None:
            if num_labels != 1:
                raise ValueError(
                    f"the model has {num_labels} labels {dict(model.config.id2label)}; pass "
                    "label= (an index or a name) to choose the logit to score with"
                )
            label_index = 0
        elif isinstance(label, str):
            id2label = dict(getattr(model.config, "id2label", None) or {})
            label2id = {str(name): int(index) for index, name in id2label.items()}
            label2id.update(dict(getattr(model.config, "label2id", None) or {}))
            if label not in label2id:
                raise ValueError(
                    f"unknown label {label!r}; the model's labels are {list(label2id)}"
                )
            label_index = int(label2id[label])
        else:
            label_index = int(label)
            if not 0 <= label_index < num_labels:
                raise ValueError(f"label index {label} out of range for {num_labels} labels")

        if input_format == "auto":
            input_format = "chat" if getattr(tokenizer, "chat_template", None) else "pair"
        if input_format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("input_format='chat' needs a tokenizer with a chat_template")

        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.label_index = label_index
        self.input_format = input_format
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self._torch = torch

    def _encode(self, prompts: list[str], responses: list[str]) -> Any:
        tok = self.tokenizer
        common = {
            "padding": True,
            "truncation": True,
            "max_length": self.max_length,
            "return_tensors": "pt",
        }
        if self.input_format == "pair":
            return tok(prompts, responses, **common)
        if self.input_format == "concat":
            return tok([p + r for p, r in zip(prompts, responses, strict=True)], **common)
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                tokenize=False,
            )
            for p, r in zip(prompts, responses, strict=True)
        ]
        return tok(texts, add_special_tokens=False, **common)

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        """Reward-model logits of the (prompt, response) pairs, batch by batch."""
        torch = self._torch
        values: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                stop = start + self.batch_size
                batch = self._encode(prompts[start:stop], responses[start:stop])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self.model(**batch).logits
                values.append(logits[:, self.label_index].float().cpu().numpy())
        scores = np.concatenate(values) if values else np.zeros(0)
        return {self.objectives[0]: scores.astype(np.float64)}


class ImplicitRewardJudge(BaseJudge):
    r"""The implicit DPO reward :math:`\beta(\log\pi(y|x) - \log\pi_\text{ref}(y|x))`.

    Model-agnostic: ``policy_logps_fn(prompts, responses)`` and
    ``reference_logps_fn(prompts, responses)`` each return the ``[n]`` summed log-probabilities
    of the response tokens given the prompt (NumPy, JAX or torch arrays, or lists), under the
    policy and the reference model. Higher means the policy prefers the response more than the
    reference does; under DPO this is the learned reward up to a prompt-only term.

    Args:
      policy_logps_fn: ``(prompts, responses) -> [n]`` policy log-probs.
      reference_logps_fn: ``(prompts, responses) -> [n]`` reference log-probs.
      beta: the DPO temperature (positive).
      objective: the objective's name.
      batch_size: call the functions on chunks of this many texts (``None``: all at once).

    Example:
      >>> policy = lambda prompts, responses: [-1.0 * len(r) for r in responses]
      >>> reference = lambda prompts, responses: [-2.0 * len(r) for r in responses]
      >>> ImplicitRewardJudge(policy, reference, beta=0.5)(["q", "q"], ["ab", "abcd"])
      {'implicit_reward': array([1., 2.])}
    """

    def __init__(
        self,
        policy_logps_fn: Callable[[list[str], list[str]], Any],
        reference_logps_fn: Callable[[list[str], list[str]], Any],
        *,
        beta: float = 0.1,
        objective: str = "implicit_reward",
        batch_size: int | None = None,
    ) -> None:
        for name, fn in (
            ("policy_logps_fn", policy_logps_fn),
            ("reference_logps_fn", reference_logps_fn),
        ):
            if not callable(fn):
                raise TypeError(f"{name} must be callable (prompts, responses) -> [n] log-probs")
        if not (isinstance(beta, int | float) and math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a positive finite number; got {beta!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be None or a positive int; got {batch_size!r}")
        self.objectives = (_check_objective_name(objective),)
        self.policy_logps_fn = policy_logps_fn
        self.reference_logps_fn = reference_logps_fn
        self.beta = float(beta)
        self.batch_size = batch_size

    @staticmethod
    def _logps(fn: Callable[..., Any], name: str, prompts: list[str], responses: list[str]) -> Any:
        values = np.asarray(fn(prompts, responses), dtype=np.float64)
        if values.shape != (len(prompts),):
            raise ValueError(
                f"{name} returned shape {values.shape}; expected ({len(prompts)},) "
                "(one summed log-prob per response)"
            )
        return values

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        """Implicit rewards of the responses, chunk by chunk."""
        size = self.batch_size or max(len(prompts), 1)
        rewards = []
        for start in range(0, len(prompts), size):
            chunk = prompts[start : start + size], responses[start : start + size]
            policy = self._logps(self.policy_logps_fn, "policy_logps_fn", *chunk)
            reference = self._logps(self.reference_logps_fn, "reference_logps_fn", *chunk)
            rewards.append(self.beta * (policy - reference))
        return {self.objectives[0]: np.concatenate(rewards) if rewards else np.zeros(0)}


class CombinedJudge(BaseJudge):
    """Several judges as one: the union of their objectives, optionally a chosen subset.

    Objective names must be distinct across the judges. With ``objectives=[...]`` only those
    are returned, in that order (and only the judges needed for them are run).

    Args:
      judges: the judges (anything following the :class:`Judge` protocol).
      objectives: the objectives to return, or ``None`` for all of them in judge order.

    Example:
      >>> judge = CombinedJudge([LengthJudge(), LexiconJudge(["bad"], "harmlessness")])
      >>> judge.objectives
      ('conciseness', 'harmlessness')
      >>> judge(["q"], ["a bad day"])
      {'conciseness': array([-3.]), 'harmlessness': array([-0.33333333])}
      >>> CombinedJudge(judge.judges, objectives=["harmlessness"]).objectives
      ('harmlessness',)
    """

    def __init__(self, judges: Sequence[Any], objectives: Sequence[str] | None = None) -> None:
        judges = list(judges)
        if not judges:
            raise ValueError("judges is empty; CombinedJudge needs at least one judge")
        owner: dict[str, int] = {}
        for index, judge in enumerate(judges):
            names = getattr(judge, "objectives", None)
            if not callable(judge) or names is None or isinstance(names, str):
                raise TypeError(
                    f"judges[{index}] must be a callable with an 'objectives' tuple; got {judge!r}"
                )
            for name in names:
                if name in owner:
                    raise ValueError(
                        f"objective {name!r} is scored by both judges[{owner[name]}] and "
                        f"judges[{index}]; give them distinct objective names"
                    )
                owner[name] = index
        if objectives is None:
            selected = tuple(owner)
        else:
            if isinstance(objectives, str):
                raise TypeError("objectives must be a list of names, not a single string")
            selected = tuple(objectives)
            unknown = [name for name in selected if name not in owner]
            if unknown:
                raise ValueError(f"unknown objectives {unknown}; the judges score {list(owner)}")
            if len(set(selected)) != len(selected):
                raise ValueError(f"objectives has duplicates: {list(selected)}")
        self.judges = tuple(judges)
        self.objectives = selected
        self._owner = owner

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        """Runs the needed judges once each and collects the selected objectives."""
        needed = sorted({self._owner[name] for name in self.objectives})
        collected: dict[str, np.ndarray] = {}
        for index in needed:
            judge = self.judges[index]
            collected.update(
                _check_scores(
                    judge(prompts, responses),
                    tuple(judge.objectives),
                    len(responses),
                    f"judges[{index}] ({type(judge).__name__})",
                )
            )
        return {name: collected[name] for name in self.objectives}


def summarize_scores(scores: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Mean and standard error of the mean of per-prompt scores, per objective.

    The standard error is ``std(ddof=1) / sqrt(n)`` (0 for a single prompt). The output plugs
    into a report result: ``{"method": ..., "weights": ..., **summarize_scores(scores)}``.

    Args:
      scores: ``{objective: [n] scores}``, as returned by a judge.

    Returns:
      ``{"scores": {objective: mean}, "stderr": {objective: standard error}}``.

    Example:
      >>> summarize_scores({"conciseness": [-1.0, -3.0]})
      {'scores': {'conciseness': -2.0}, 'stderr': {'conciseness': 1.0}}
    """
    means: dict[str, float] = {}
    errors: dict[str, float] = {}
    for name, raw in scores.items():
        values = np.asarray(raw, dtype=np.float64)
        if values.ndim != 1 or values.shape[0] == 0:
            raise ValueError(f"scores[{name!r}] must be a non-empty 1-D array; got {values.shape}")
        means[name] = float(values.mean())
        errors[name] = (
            float(values.std(ddof=1) / math.sqrt(values.shape[0])) if values.shape[0] > 1 else 0.0
        )
    return {"scores": means, "stderr": errors}
