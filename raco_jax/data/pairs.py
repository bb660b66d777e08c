"""The multi-objective preference pair: one prompt, two responses, one sign per objective.

A :class:`PreferencePair` is ``(prompt, response_a, response_b)`` plus, for every objective it is
labeled for, a sign ``s_k``:

* ``+1``: ``response_a`` is preferred under objective ``k``;
* ``-1``: ``response_b`` is preferred;
* ``0``: the annotators judged a tie.

An objective the pair carries no label for is simply absent from :attr:`PreferencePair.signs`.
The difference matters for the loss: a tie counts in that objective's mean (it contributes
``log 2`` and no gradient), an unlabeled pair does not count at all. One data model thus covers
datasets whose objectives share pairs (PKU-SafeRLHF: helpfulness and harmlessness on every pair;
the RACO paper's Reddit data: quality and conciseness) and datasets whose objectives come from
different pairs (HH-RLHF: a helpful-base pair is labeled for ``helpful`` only, a harmless-base
pair for ``harmless`` only); both still need just one policy forward per batch.

Prompts and responses are plain strings or conversations (lists of ``{"role", "content"}``
messages); the tokeniser (:mod:`raco_jax.data.tokenize`) applies the model's chat template to
conversations.

Paper: P. Chen, X. Li, X. Chen, T. Lin, "Reward-free Alignment for Conflicting Objectives",
arXiv 2602.02495 (section 1 of ``reference/raco-algorithm.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

__all__ = [
    "Conversation",
    "Message",
    "PreferencePair",
    "Text",
    "conflict_rates",
    "conflicting_pairs",
    "is_conversation",
    "objective_signs",
    "sample_pairs",
    "text_is_empty",
    "validate_text",
]

Message: TypeAlias = dict[str, str]
"""One chat message: ``{"role": "user" | "assistant" | "system" | ..., "content": str}``."""

Conversation: TypeAlias = list[Message]
"""A list of chat messages."""

Text: TypeAlias = str | Conversation
"""A prompt or a response: a plain string or a conversation."""

_SIGN_VALUES = (-1, 0, 1)


def is_conversation(text: Any) -> bool:
    """Whether ``text`` is a conversation (a list of ``{"role", "content"}`` messages).

    >>> is_conversation([{"role": "user", "content": "Hi"}])
    True
    >>> is_conversation("Hi")
    False
    """
    return isinstance(text, list)


def validate_text(text: Any, name: str) -> Text:
    """Check that ``text`` is a string or a conversation and return it (messages copied to dicts).

    Raises:
        TypeError: ``text`` is neither, or a message is not a ``{"role": str, "content": str}``
            mapping; the message names ``name`` and the offending message.

    >>> validate_text([{"role": "user", "content": "Hi"}], "prompt")
    [{'role': 'user', 'content': 'Hi'}]
    >>> validate_text(3, "prompt")
    Traceback (most recent call last):
    ...
    TypeError: prompt must be a string or a list of {role, content} messages, got int
    """
    if isinstance(text, str):
        return text
    if isinstance(text, (list, tuple)):
        messages: Conversation = []
        for i, message in enumerate(text):
            if not isinstance(message, Mapping):
                raise TypeError(f"{name}[{i}] must be a {{role, content}} mapping, got {message!r}")
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise TypeError(
                    f"{name}[{i}] must have string 'role' and 'content', got {dict(message)!r}"
                )
            messages.append({"role": role, "content": content})
        return messages
    raise TypeError(
        f"{name} must be a string or a list of {{role, content}} messages, got {type(text).__name__}"
    )


def text_is_empty(text: Text) -> bool:
    """Whether a prompt or response holds no visible text (blank string, no messages, or only
    blank message contents).

    >>> text_is_empty("  "), text_is_empty([]), text_is_empty([{"role": "assistant", "content": "ok"}])
    (True, True, False)
    """
    if isinstance(text, str):
        return not text.strip()
    return all(not message["content"].strip() for message in text)


def _check_sign(objective: Any, sign: Any) -> int:
    if not isinstance(objective, str) or not objective:
        raise TypeError(f"signs keys must be non-empty objective names, got {objective!r}")
    if isinstance(sign, bool) or not isinstance(sign, (int, float, np.integer, np.floating)):
        raise TypeError(f"signs[{objective!r}] must be +1, -1 or 0, got {sign!r}")
    if sign not in _SIGN_VALUES:
        raise ValueError(f"signs[{objective!r}] must be +1, -1 or 0, got {sign!r}")
    return int(sign)


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """One preference pair with a sign per labeled objective.

    Attributes:
        prompt: the shared prompt (string or conversation).
        response_a: the first response (slot ``a``; rows ``0..B-1`` of a batch).
        response_b: the second response (slot ``b``; rows ``B..2B-1``).
        signs: ``{objective: s}`` with ``s`` in ``{+1, -1, 0}`` for every objective the pair is
            labeled for (``+1``: ``a`` preferred, ``-1``: ``b`` preferred, ``0``: tie). Objectives
            absent from the mapping are unlabeled and do not count in that objective's loss.
        source: where the pair came from (a subset or file name), if known.
        row: the index of the source row, if known.

    Example:

    >>> pair = PreferencePair("2+2?", "4", "5", signs={"helpful": 1, "harmless": 0})
    >>> pair.sign("helpful"), pair.sign("harmless"), pair.is_labeled("concise")
    (1, 0, False)
    >>> pair.swapped().signs
    {'helpful': -1, 'harmless': 0}
    """

    prompt: Text
    response_a: Text
    response_b: Text
    signs: Mapping[str, int]
    source: str | None = None
    row: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", validate_text(self.prompt, "prompt"))
        object.__setattr__(self, "response_a", validate_text(self.response_a, "response_a"))
        object.__setattr__(self, "response_b", validate_text(self.response_b, "response_b"))
        if not isinstance(self.signs, Mapping):
            raise TypeError(
                f"signs must be a mapping {{objective: +1 | -1 | 0}}, got {type(self.signs).__name__}"
            )
        signs = {objective: _check_sign(objective, s) for objective, s in self.signs.items()}
        object.__setattr__(self, "signs", signs)

    @property
    def objectives(self) -> tuple[str, ...]:
        """The objectives this pair is labeled for.

        >>> PreferencePair("q", "a", "b", {"helpful": 1}).objectives
        ('helpful',)
        """
        return tuple(self.signs)

    def is_labeled(self, objective: str) -> bool:
        """Whether the pair carries a label (possibly a tie) for ``objective``.

        >>> PreferencePair("q", "a", "b", {"helpful": 0}).is_labeled("helpful")
        True
        """
        return objective in self.signs

    def sign(self, objective: str) -> int:
        """The sign for ``objective``; ``0`` when the pair is unlabeled for it (check
        :meth:`is_labeled` to tell a tie from a missing label).

        >>> PreferencePair("q", "a", "b", {"helpful": -1}).sign("helpful")
        -1
        """
        return self.signs.get(objective, 0)

    def swapped(self) -> PreferencePair:
        """The same comparison with the responses exchanged and every sign negated.

        >>> PreferencePair("q", "a", "b", {"helpful": 1}).swapped().response_a
        'b'
        """
        return dataclasses.replace(
            self,
            response_a=self.response_b,
            response_b=self.response_a,
            signs={objective: -s if s else 0 for objective, s in self.signs.items()},
        )

    def restricted(self, objectives: Iterable[str]) -> PreferencePair:
        """The pair labeled only for those of ``objectives`` it already carries.

        >>> PreferencePair("q", "a", "b", {"helpful": 1, "harmless": -1}).restricted(["harmless"]).signs
        {'harmless': -1}
        """
        keep = set(objectives)
        return dataclasses.replace(
            self, signs={objective: s for objective, s in self.signs.items() if objective in keep}
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready row in the ``generic`` schema's layout (``prompt``, ``chosen`` = response a,
        ``rejected`` = response b, one ``sign_<objective>`` column per labeled objective), so that
        pairs saved as JSON lines load back with ``load_preferences(path, "generic")``.

        >>> PreferencePair("q", "a", "b", {"helpful": -1}).to_dict()
        {'prompt': 'q', 'chosen': 'a', 'rejected': 'b', 'sign_helpful': -1}
        """
        row: dict[str, Any] = {
            "prompt": self.prompt,
            "chosen": self.response_a,
            "rejected": self.response_b,
        }
        row.update({f"sign_{objective}": s for objective, s in self.signs.items()})
        return row


def objective_signs(
    pairs: Sequence[PreferencePair], objectives: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The sign and label matrices of ``pairs`` for ``objectives``, objective-major.

    Returns:
        ``(signs, labeled)``, both float32 of shape ``[K, N]``: ``signs[k, i]`` in ``{+1, -1, 0}``
        (0 for ties and for unlabeled pairs) and ``labeled[k, i]`` in ``{0, 1}``.

    >>> pairs = [PreferencePair("q", "a", "b", {"helpful": 1}),
    ...          PreferencePair("q", "c", "d", {"harmless": 0})]
    >>> signs, labeled = objective_signs(pairs, ["helpful", "harmless"])
    >>> signs.tolist(), labeled.tolist()
    ([[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])
    """
    objectives = tuple(objectives)
    signs = np.zeros((len(objectives), len(pairs)), np.float32)
    labeled = np.zeros((len(objectives), len(pairs)), np.float32)
    for i, pair in enumerate(pairs):
        for k, objective in enumerate(objectives):
            if objective in pair.signs:
                signs[k, i] = pair.signs[objective]
                labeled[k, i] = 1.0
    return signs, labeled


def sample_pairs(
    pairs: Sequence[PreferencePair],
    max_pairs: int,
    objectives: Sequence[str],
    seed: int = 0,
) -> list[PreferencePair]:
    """At most ``max_pairs`` pairs drawn across the objectives with a fixed seed.

    Pairs are grouped by the requested objectives they are labeled for (HH-RLHF: helpful-only
    and harmless-only pairs); each group gets a share proportional to its size (largest
    remainders), and at least one pair while ``max_pairs`` allows (taken from the largest
    shares), so every objective that has labeled pairs is represented. Within a group the pairs are drawn uniformly with ``seed``;
    the result keeps the reading order. With ``max_pairs >= len(pairs)`` every pair is kept.

    Example:
        >>> from raco_jax.data import PreferencePair, sample_pairs
        >>> pairs = [PreferencePair(f"q{i}", "a", "b", {"helpful": 1}) for i in range(8)]
        >>> pairs += [PreferencePair(f"r{i}", "a", "b", {"harmless": 1}) for i in range(2)]
        >>> picked = sample_pairs(pairs, 4, ["helpful", "harmless"])
        >>> [p.objectives[0] for p in picked].count("harmless"), len(picked)
        (1, 4)
    """
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1:
        raise ValueError(f"max_pairs must be a positive int, got {max_pairs!r}.")
    if max_pairs >= len(pairs):
        return list(pairs)
    wanted = tuple(objectives)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, pair in enumerate(pairs):
        key = tuple(o for o in wanted if o in pair.signs)
        groups.setdefault(key, []).append(i)
    keys = sorted(groups, key=lambda k: (-len(groups[k]), k))
    exact = {k: max_pairs * len(groups[k]) / len(pairs) for k in keys}
    quota = {k: int(exact[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: (-(exact[k] - quota[k]), keys.index(k)))
    for k in by_remainder[: max_pairs - sum(quota.values())]:
        quota[k] += 1
    for k in reversed(keys):  # every group at least once, taken from the largest ones
        if quota[k] == 0:
            donor = max(keys, key=lambda d: quota[d])
            if quota[donor] <= 1:
                break
            quota[donor] -= 1
            quota[k] = 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for k in keys:
        members = groups[k]
        take = min(quota[k], len(members))
        chosen.extend(int(members[j]) for j in rng.permutation(len(members))[:take])
    return [pairs[i] for i in sorted(chosen)]


def conflict_rates(
    signs: np.ndarray, labeled: np.ndarray, objectives: Sequence[str]
) -> dict[str, dict[str, float]]:
    """How often two objectives disagree on the same pairs.

    For every pair of objectives ``(i, j)``: ``pairs`` labeled for both, ``decisive`` of them
    untied for both, ``conflicts`` where the signs differ, and ``rate = conflicts / decisive``
    (NaN without a decisive pair). Objectives labeled on disjoint pairs (HH-RLHF's helpful-base
    and harmless-base) share no pair at all.

    Args:
        signs: ``[K, N]`` in {+1, -1, 0}; labeled: ``[K, N]`` in {0, 1} (e.g. of
            :class:`~raco_jax.data.TokenizedPairs`).
        objectives: the K names.

    Returns:
        ``{"<i>/<j>": {"pairs", "decisive", "conflicts", "rate"}}``.

    Example:
        >>> import numpy as np
        >>> from raco_jax.data import conflict_rates
        >>> signs = np.array([[1, 1, -1, 1], [-1, 1, 1, 0]])
        >>> conflict_rates(signs, np.ones((2, 4)), ["quality", "concise"])["quality/concise"]
        {'pairs': 4, 'decisive': 3, 'conflicts': 2, 'rate': 0.6666666666666666}
    """
    signs = np.asarray(signs)
    labeled = np.asarray(labeled) > 0
    names = list(objectives)
    if signs.shape != labeled.shape or signs.shape[0] != len(names):
        raise ValueError(
            f"signs {signs.shape} and labeled {labeled.shape} must be [K, N] for K = {len(names)}."
        )
    out: dict[str, dict[str, float]] = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            both = labeled[i] & labeled[j]
            decisive = both & (signs[i] != 0) & (signs[j] != 0)
            conflicts = decisive & (signs[i] != signs[j])
            n = int(decisive.sum())
            out[f"{names[i]}/{names[j]}"] = {
                "pairs": int(both.sum()),
                "decisive": n,
                "conflicts": int(conflicts.sum()),
                "rate": float(conflicts.sum() / n) if n else float("nan"),
            }
    return out


def conflicting_pairs(signs: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """Which pairs each objective disagrees on with another objective.

    ``out[k, i]`` is True when pair ``i`` is labeled and untied for objective ``k`` and for some
    other objective ``j`` whose sign differs (the pairs where pleasing ``k`` means displeasing
    ``j``); the accuracy of objective ``k`` on them is the one a method must trade off.

    Args:
        signs: ``[K, N]`` in {+1, -1, 0}; labeled: ``[K, N]`` in {0, 1}.

    Returns:
        bool ``[K, N]``.

    Example:
        >>> import numpy as np
        >>> from raco_jax.data import conflicting_pairs
        >>> signs = np.array([[1, 1, -1, 1], [-1, 1, 1, 0]])
        >>> conflicting_pairs(signs, np.ones((2, 4))).astype(int).tolist()
        [[1, 0, 1, 0], [1, 0, 1, 0]]
    """
    signs = np.asarray(signs)
    decisive = (np.asarray(labeled) > 0) & (signs != 0)
    if signs.shape != decisive.shape or signs.ndim != 2:
        raise ValueError(
            f"signs and labeled must both be [K, N], got {signs.shape} and {decisive.shape}."
        )
    out = np.zeros(signs.shape, bool)
    for k in range(signs.shape[0]):
        for j in range(signs.shape[0]):
            if j != k:
                out[k] |= decisive[k] & decisive[j] & (signs[k] != signs[j])
    return out
