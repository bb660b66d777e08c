"""Preference-dataset schemas: the registry of adapters from a dataset's rows to preference pairs.

A :class:`Schema` names an *adapter* that turns one row (a dict) into a
:class:`~raco_jax.data.pairs.PreferencePair` (or several, or a :class:`MalformedRow`), the
objectives it labels and the columns it needs. :func:`~raco_jax.data.load_preferences`
(:mod:`raco_jax.data.sources`) reads a dataset and hands its rows to the schema's adapter; the
built-in schemas live in :mod:`raco_jax.data.adapters` (documented there, with their exact
label-to-sign mappings). This module holds the registry (:func:`register_schema`,
:func:`get_schema`, :func:`list_schemas`), what adapters raise and receive (:class:`MalformedRow`,
:class:`SchemaError`, :class:`SchemaContext`), the :class:`LoadReport`, and the parsers adapters
share (:func:`ab_label_sign`, :func:`pairing_indices`, :func:`split_conversation_pair`,
:func:`parse_hh_transcript`, :func:`split_hh_pair`, :func:`parse_helpsteer_prompt`).

Registering a schema takes a few lines; an adapter gets one row (a dict) and returns a pair,
``None``, or yields several pairs; it raises (or yields) :class:`MalformedRow` for rows it cannot
use:

>>> from raco_jax.data import MalformedRow, PreferencePair, load_preferences, register_schema
>>> @register_schema("my-votes", objectives=("helpful", "safe"),
...                  columns=("question", "left", "right", "helpful_vote", "safe_vote"))
... def my_votes(row):
...     votes = {"left": 1, "right": -1, "tie": 0}
...     if row["helpful_vote"] not in votes:
...         raise MalformedRow("invalid_label", f"helpful_vote={row['helpful_vote']!r}")
...     return PreferencePair(row["question"], row["left"], row["right"],
...                           signs={"helpful": votes[row["helpful_vote"]],
...                                  "safe": votes.get(row["safe_vote"], 0)})
>>> rows = [{"question": "Hi?", "left": "Hello!", "right": "Go away.",
...          "helpful_vote": "left", "safe_vote": "tie"},
...         {"question": "Hi?", "left": "Hey", "right": "Yo",
...          "helpful_vote": "both", "safe_vote": "tie"}]
>>> pairs, report = load_preferences(rows, "my-votes")
>>> pairs[0].signs, report.issues
({'helpful': 1, 'safe': 0}, {'invalid_label': 1})
>>> _ = unregister_schema("my-votes")
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from raco_jax.data.pairs import (
    Conversation,
    Text,
)

__all__ = [
    "FILTER_REASONS",
    "HH_ASSISTANT",
    "HH_HUMAN",
    "LoadReport",
    "MalformedRow",
    "Schema",
    "SchemaContext",
    "SchemaError",
    "ab_label_sign",
    "get_schema",
    "list_schemas",
    "pairing_indices",
    "parse_helpsteer_prompt",
    "parse_hh_transcript",
    "register_schema",
    "split_conversation_pair",
    "split_hh_pair",
    "unregister_schema",
]

HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"

#: Reasons that filter a row without it being malformed (never raise in strict mode).
FILTER_REASONS = frozenset({"unlabeled_for_objectives"})


# ----------------------------------------------------------------------------------------------
# Errors, context, report
# ----------------------------------------------------------------------------------------------


class MalformedRow(Exception):
    """A row (or part of it) an adapter cannot use.

    Raise it to skip the whole row; yield it (from a generator adapter) to report a partial
    problem and go on. ``reason`` is a short snake_case key counted in :class:`LoadReport`;
    ``item`` (grouped schemas only) is the position, in the group handed to the adapter, of the
    row the problem is in.

    >>> err = MalformedRow("invalid_label", "Quality='C'")
    >>> err.reason, str(err)
    ('invalid_label', "invalid_label: Quality='C'")
    """

    def __init__(self, reason: str, message: str = "", *, item: int | None = None) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message
        self.item = item


class SchemaError(ValueError):
    """A configuration problem that concerns the whole dataset, not one row (always raised).

    >>> isinstance(SchemaError("no subset"), ValueError)
    True
    """


@dataclasses.dataclass(frozen=True)
class SchemaContext:
    """What an adapter may want to know besides the row.

    Attributes:
        schema: the schema's name.
        part: the name of the part being read: a local file's name without extensions
            (``"helpful-base"``), the hub ``data_dir``, or the hub id / ``"rows"``.
        options: the schema options (defaults updated with the caller's keyword arguments).
        objectives: the objectives the schema provides for this dataset.
    """

    schema: str
    part: str
    options: Mapping[str, Any]
    objectives: tuple[str, ...]


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_preferences` read, built and skipped.

    Attributes:
        schema: the schema's name.
        source: a description of the source.
        objectives: the objectives of the returned pairs, in order (the requested ones, or all
            the schema provides).
        rows_read: rows read from the source (over all parts).
        pairs_built: pairs returned.
        issues: ``{reason: count}`` of malformed rows or row parts (each skipped or left
            unlabeled).
        filtered: ``{reason: count}`` of usable rows left out on purpose.
        first_rows: ``{reason: [row indices]}``, the first :attr:`max_examples` indices (counted
            over all parts, in reading order).
        first_messages: ``{reason: message}`` of the first occurrence.
        parts: ``(name, first row index, row count)`` per part read.

    >>> report = LoadReport("generic", "rows", ("preference",))
    >>> report.record("empty_response", 3, "chosen is empty")
    >>> report.issues, report.first_rows, report.ok
    ({'empty_response': 1}, {'empty_response': [3]}, False)
    """

    schema: str
    source: str
    objectives: tuple[str, ...]
    rows_read: int = 0
    pairs_built: int = 0
    issues: dict[str, int] = dataclasses.field(default_factory=dict)
    filtered: dict[str, int] = dataclasses.field(default_factory=dict)
    first_rows: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    first_messages: dict[str, str] = dataclasses.field(default_factory=dict)
    parts: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    max_examples: int = 5

    @property
    def ok(self) -> bool:
        """True when no row was malformed (filtered rows do not count)."""
        return not self.issues

    @property
    def num_issues(self) -> int:
        """Total count of malformed rows or row parts."""
        return sum(self.issues.values())

    def record(self, reason: str, row: int, message: str = "") -> None:
        """Count one occurrence of ``reason`` at (global) row index ``row``."""
        counts = self.filtered if reason in FILTER_REASONS else self.issues
        counts[reason] = counts.get(reason, 0) + 1
        examples = self.first_rows.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(row)
        if message and reason not in self.first_messages:
            self.first_messages[reason] = message

    def summary(self) -> str:
        """A few human-readable lines.

        >>> report = LoadReport("generic", "rows", ("preference",), rows_read=2, pairs_built=1)
        >>> report.record("empty_response", 1, "chosen is empty")
        >>> print(report.summary())
        generic from rows: 2 rows read, 1 pairs built, objectives preference
          issue empty_response: 1 (rows [1]; first: chosen is empty)
        """
        lines = [
            f"{self.schema} from {self.source}: {self.rows_read} rows read, "
            f"{self.pairs_built} pairs built, objectives {', '.join(self.objectives)}"
        ]
        for kind, counts in (("issue", self.issues), ("filtered", self.filtered)):
            for reason, count in sorted(counts.items()):
                detail = f"rows {self.first_rows.get(reason, [])}"
                if reason in self.first_messages:
                    detail += f"; first: {self.first_messages[reason]}"
                lines.append(f"  {kind} {reason}: {count} ({detail})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

ObjectivesSpec = tuple[str, ...] | Callable[[Sequence[str], Mapping[str, Any]], tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class Schema:
    """A registered dataset layout.

    Attributes:
        name: the registry key.
        adapter: ``adapter(row, context)`` (or ``adapter(row)``) -> a pair, ``None``, or an
            iterable of pairs and :class:`MalformedRow` items. With ``group_by`` set, ``row`` is
            the list of rows sharing a key.
        objectives: the objectives the schema labels, or a function ``(columns, options) ->
            objectives`` when they depend on the dataset (``generic``).
        columns: columns the dataset must have (checked once per part, before any row is read).
        hub_ids: hub datasets this schema reads; ``load_preferences`` picks the schema from them.
        load_kwargs: default ``datasets.load_dataset`` arguments for the hub (config, revision).
        options: the schema's options with their defaults; ``load_preferences`` routes keyword
            arguments with these names to the adapter (all others go to ``load_dataset``).
        group_by: a column name (or ``row -> key`` function): rows sharing a key are handed to the
            adapter together (rows per (prompt, response) datasets such as HelpSteer2).
        description: one line for :func:`list_schemas` users.
        check_part: ``check_part(part name, options)`` raises :class:`SchemaError` when a part
            cannot be read with these options; it runs before the part is loaded (so a hub
            download does not happen in vain).
    """

    name: str
    adapter: Callable[..., Any]
    objectives: ObjectivesSpec
    columns: tuple[str, ...] = ()
    hub_ids: tuple[str, ...] = ()
    load_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    group_by: str | Callable[[Mapping[str, Any]], Any] | None = None
    description: str = ""
    check_part: Callable[[str, Mapping[str, Any]], None] | None = None

    def objectives_for(
        self, columns: Sequence[str], options: Mapping[str, Any] | None = None
    ) -> tuple[str, ...]:
        """The objectives this schema provides for a dataset with ``columns``.

        >>> get_schema("pku-saferlhf").objectives_for([])
        ('helpful', 'harmless')
        >>> get_schema("generic").objectives_for(["prompt", "chosen", "rejected", "sign_safe"])
        ('safe',)
        """
        if callable(self.objectives):
            merged = {**self.options, **(options or {})}
            return tuple(self.objectives(tuple(columns), merged))
        return tuple(self.objectives)


_REGISTRY: dict[str, Schema] = {}


def register_schema(
    name: str,
    adapter: Callable[..., Any] | None = None,
    *,
    objectives: ObjectivesSpec,
    columns: Sequence[str] = (),
    hub_ids: Sequence[str] = (),
    load_kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    group_by: str | Callable[[Mapping[str, Any]], Any] | None = None,
    description: str = "",
    check_part: Callable[[str, Mapping[str, Any]], None] | None = None,
    overwrite: bool = False,
) -> Any:
    """Register a dataset schema; usable as ``register_schema(name, adapter, ...)`` or as a
    decorator ``@register_schema(name, ...)`` (which returns the adapter unchanged).

    Args:
        name: the registry key (also accepted by :func:`load_preferences` as ``schema``).
        adapter: the row adapter (see :class:`Schema`); omit it to get a decorator.
        objectives: the objective names the adapter labels, or ``(columns, options) -> names``.
        columns: required columns; hub_ids, load_kwargs, options, group_by, description,
            check_part: see :class:`Schema`.
        overwrite: replace an existing schema of that name instead of raising.

    Returns:
        the registered :class:`Schema`, or a decorator when ``adapter`` is omitted.

    >>> from raco_jax.data import PreferencePair, load_preferences
    >>> def swap_adapter(row):
    ...     return PreferencePair(row["q"], row["worse"], row["better"], {"quality": -1})
    >>> schema = register_schema("swapped", swap_adapter, objectives=("quality",),
    ...                          columns=("q", "better", "worse"))
    >>> pairs, _ = load_preferences([{"q": "x", "better": "good", "worse": "bad"}], "swapped")
    >>> pairs[0].response_a, pairs[0].signs
    ('bad', {'quality': -1})
    >>> unregister_schema("swapped").name
    'swapped'
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not callable(objectives):
        objectives = tuple(objectives)
        if not objectives or not all(isinstance(o, str) and o for o in objectives):
            raise ValueError(f"objectives must be non-empty objective names, got {objectives!r}")

    def register(fn: Callable[..., Any]) -> Schema:
        if not callable(fn):
            raise TypeError(f"adapter must be callable, got {fn!r}")
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"schema {name!r} is already registered; pass overwrite=True")
        schema = Schema(
            name=name,
            adapter=fn,
            objectives=objectives,
            columns=tuple(columns),
            hub_ids=tuple(hub_ids),
            load_kwargs=dict(load_kwargs or {}),
            options=dict(options or {}),
            group_by=group_by,
            description=description,
            check_part=check_part,
        )
        _REGISTRY[name] = schema
        return schema

    if adapter is None:

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            register(fn)
            return fn

        return decorator
    return register(adapter)


def unregister_schema(name: str) -> Schema:
    """Remove a schema from the registry and return it.

    >>> _ = register_schema("tmp", lambda row: None, objectives=("x",))
    >>> unregister_schema("tmp").name
    'tmp'
    """
    try:
        return _REGISTRY.pop(name)
    except KeyError:
        raise ValueError(f"schema {name!r} is not registered; known: {list_schemas()}") from None


def list_schemas() -> tuple[str, ...]:
    """Names of the registered schemas.

    >>> "hh-rlhf" in list_schemas()
    True
    """
    return tuple(_REGISTRY)


def get_schema(name: str) -> Schema:
    """The schema registered as ``name`` or reading the hub dataset ``name``.

    >>> get_schema("Anthropic/hh-rlhf").name
    'hh-rlhf'
    >>> get_schema("nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown schema 'nope'; registered: ...
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    for schema in _REGISTRY.values():
        if name in schema.hub_ids:
            return schema
    raise ValueError(f"unknown schema {name!r}; registered: {', '.join(_REGISTRY)}")


# ----------------------------------------------------------------------------------------------
# Parsers shared by adapters
# ----------------------------------------------------------------------------------------------


_AB_SIGNS = {
    "a": 1,
    "summary_a": 1,
    "summary a": 1,
    "b": -1,
    "summary_b": -1,
    "summary b": -1,
    "tie": 0,
    "equal": 0,
    "same": 0,
}


def ab_label_sign(value: Any, column: str = "label") -> int:
    """The sign of an ``"A"``/``"B"``/``"tie"`` label: ``A -> +1, B -> -1, tie -> 0``.

    Case and surrounding blanks are ignored; ``"Summary_A"``/``"Summary_B"``, ``"equal"`` and
    ``"same"`` are accepted too. Anything else raises :class:`MalformedRow` (``invalid_label``).

    >>> ab_label_sign("A"), ab_label_sign(" b "), ab_label_sign("Tie")
    (1, -1, 0)
    >>> ab_label_sign("C", "Quality")
    Traceback (most recent call last):
    ...
    raco_jax.data.schemas.MalformedRow: invalid_label: Quality='C' (expected A, B or tie)
    """
    if isinstance(value, str) and value.strip().lower() in _AB_SIGNS:
        return _AB_SIGNS[value.strip().lower()]
    raise MalformedRow("invalid_label", f"{column}={value!r} (expected A, B or tie)")


def pairing_indices(
    n: int, pairing: str = "all", max_pairs: int | None = None
) -> list[tuple[int, int]]:
    """Which completions of one prompt are paired: ``(i, j)`` with ``a = i``, ``b = j``.

    Args:
        n: number of usable completions.
        pairing: ``"all"`` (every ``i < j``, in lexicographic order) or ``"consecutive"``
            (``(0, 1), (1, 2), ...``).
        max_pairs: keep at most this many pairs (the first ones in that order); ``None``: all.

    >>> pairing_indices(3)
    [(0, 1), (0, 2), (1, 2)]
    >>> pairing_indices(4, "consecutive", max_pairs=2)
    [(0, 1), (1, 2)]
    """
    if pairing == "all":
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    elif pairing == "consecutive":
        pairs = [(i, i + 1) for i in range(n - 1)]
    else:
        raise SchemaError(f"pairing must be 'all' or 'consecutive', got {pairing!r}")
    if max_pairs is not None:
        if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1:
            raise SchemaError(
                f"max_pairs_per_prompt must be a positive int or None, got {max_pairs!r}"
            )
        pairs = pairs[:max_pairs]
    return pairs


def split_conversation_pair(
    conversation_a: Conversation, conversation_b: Conversation
) -> tuple[Conversation, Conversation, Conversation]:
    """Split two conversations into their shared leading messages (the prompt) and the rest.

    Raises :class:`MalformedRow`: ``prompt_mismatch`` when they share no leading message,
    ``empty_response`` when one of them has nothing after the shared part, or
    ``identical_responses`` when they are equal.

    >>> user = {"role": "user", "content": "Summarise: ..."}
    >>> prompt, a, b = split_conversation_pair(
    ...     [user, {"role": "assistant", "content": "Short."}],
    ...     [user, {"role": "assistant", "content": "Longer one."}])
    >>> prompt == [user], a[0]["content"], b[0]["content"]
    (True, 'Short.', 'Longer one.')
    """
    if conversation_a == conversation_b:
        raise MalformedRow("identical_responses", "the two conversations are equal")
    shared = 0
    for message_a, message_b in zip(conversation_a, conversation_b, strict=False):
        if message_a != message_b:
            break
        shared += 1
    # The responses must start with the turn that differs; never split inside a shared reply.
    while (
        shared
        and conversation_a[shared - 1]["role"] == "assistant"
        and (shared == len(conversation_a) or shared == len(conversation_b))
    ):
        shared -= 1
    if shared == 0:
        raise MalformedRow("prompt_mismatch", "the two conversations share no leading message")
    prompt = conversation_a[:shared]
    response_a, response_b = conversation_a[shared:], conversation_b[shared:]
    if not response_a or not response_b:
        raise MalformedRow("empty_response", "a conversation has no message after the prompt")
    return prompt, response_a, response_b


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_transcript(text: str) -> Conversation:
    """Parse an HH-RLHF transcript ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` into messages.

    Roles become ``user``/``assistant``; contents are stripped; consecutive turns of one speaker
    are merged (joined by a blank line) so roles alternate, as chat templates require.

    >>> parse_hh_transcript("\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Bye")
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}, {'role': 'user', 'content': 'Bye'}]
    """
    pieces = _HH_TURN.split(text)
    if pieces[0].strip() or len(pieces) < 3:
        raise MalformedRow("invalid_transcript", "expected '\\n\\nHuman: ...' turns")
    messages: Conversation = []
    for speaker, content in zip(pieces[1::2], pieces[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        content = content.strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = (messages[-1]["content"] + "\n\n" + content).strip()
        else:
            messages.append({"role": role, "content": content})
    return messages


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH-RLHF transcripts into ``(prompt, chosen_response, rejected_response)``.

    The prompt is the common prefix of the two transcripts, cut right after its last
    ``"\\n\\nAssistant:"``; the responses are what follows (with their leading space).

    >>> split_hh_pair("\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "\\n\\nHuman: Hi\\n\\nAssistant: Go away.")
    ('\\n\\nHuman: Hi\\n\\nAssistant:', ' Hello!', ' Go away.')
    """
    shared = 0
    for char_a, char_b in zip(chosen, rejected, strict=False):
        if char_a != char_b:
            break
        shared += 1
    cut = chosen.rfind(HH_ASSISTANT, 0, shared)
    if cut < 0:
        raise MalformedRow("prompt_mismatch", "no shared '\\n\\nAssistant:' turn")
    prompt = chosen[: cut + len(HH_ASSISTANT)]
    chosen_response, rejected_response = chosen[len(prompt) :], rejected[len(prompt) :]
    if HH_HUMAN in chosen_response or HH_HUMAN in rejected_response:
        raise MalformedRow(
            "prompt_mismatch", "the transcripts diverge before the last assistant turn"
        )
    if not chosen_response.strip() or not rejected_response.strip():
        side = "chosen" if not chosen_response.strip() else "rejected"
        raise MalformedRow("empty_response", f"the {side} response is empty")
    return prompt, chosen_response, rejected_response


_HELPSTEER_TURN = re.compile(r"\n?<extra_id_1>(User|Assistant)\n")


def parse_helpsteer_prompt(prompt: str) -> Text:
    """A HelpSteer2 prompt as a conversation when it holds several turns, else unchanged.

    HelpSteer2 writes multi-turn prompts as the first user turn followed by
    ``"\\n<extra_id_1>Assistant\\n..."`` and ``"\\n<extra_id_1>User\\n..."`` turns.

    >>> parse_helpsteer_prompt("Hi\\n<extra_id_1>Assistant\\nHello!\\n<extra_id_1>User\\nA joke?")
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}, {'role': 'user', 'content': 'A joke?'}]
    >>> parse_helpsteer_prompt("Just one turn")
    'Just one turn'
    """
    pieces = _HELPSTEER_TURN.split(prompt)
    if len(pieces) == 1:
        return prompt
    messages: Conversation = [{"role": "user", "content": pieces[0].strip()}]
    for speaker, content in zip(pieces[1::2], pieces[2::2], strict=True):
        role = "user" if speaker == "User" else "assistant"
        if messages[-1]["role"] == role:
            messages[-1]["content"] = (messages[-1]["content"] + "\n\n" + content.strip()).strip()
        else:
            messages.append({"role": role, "content": content.strip()})
    return messages
