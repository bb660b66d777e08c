"""Preference-dataset schemas: a registry of adapters from a dataset's rows to preference pairs.

:func:`load_preferences` reads a dataset (a Hugging Face hub id, local ``.json``/``.jsonl``/
``.jsonl.gz``/``.parquet``/``.csv`` files or a directory of them, a ``datasets.Dataset``, or a list
of row dicts), hands every row to the adapter of a registered :class:`Schema` and returns the
:class:`~raco_jax.data.pairs.PreferencePair` list together with a :class:`LoadReport`. Nothing is
dropped silently: a row that cannot be used (missing column, empty response, a label outside the
schema, ...) is counted per reason, with the first few row indices, or raises a ``ValueError``
naming the row when ``strict=True``.

Built-in schemas and their exact label-to-sign mappings (``+1``: slot ``a`` preferred, ``-1``:
slot ``b`` preferred, ``0``: tie; an objective missing from a pair's ``signs`` is unlabeled):

``pku-saferlhf`` (``PKU-Alignment/PKU-SafeRLHF``, ``-10K``, ``-30K``)
    Columns ``prompt, response_0, response_1, better_response_id, safer_response_id``.
    ``a = response_0``, ``b = response_1``; ``helpful = +1 if better_response_id == 0, -1 if 1``;
    ``harmless = +1 if safer_response_id == 0, -1 if 1``. Any other id is ``invalid_label``.

``reddit-summary`` (``RACOo/RedditSummary-Alignment``, the RACO paper's data)
    Columns ``Summary_A, Summary_B`` (conversations ``[user: post + instruction, assistant:
    summary]``) and ``Quality, Verbosity`` (``"A"``, ``"B"`` or ``"tie"``, case-insensitive;
    ``"Summary_A"``/``"Summary_B"``, ``"equal"``, ``"same"`` are accepted too). The prompt is the
    leading messages the two conversations share (the post); the responses are the rest.
    ``quality``: ``A -> +1, B -> -1, tie -> 0``. ``conciseness``: the ``Verbosity`` label names
    the summary PREFERRED on the verbosity axis, i.e. the less verbose one (this is how the
    authors' conversion script and trainer read it: ``raco_s_verbosity = +1`` when the label is
    ``A``, and their verbosity objective "prefers the shorter completion"), so
    ``A -> +1, B -> -1, tie -> 0`` as well. If your copy labels the MORE verbose summary instead,
    pass ``verbosity_label="more_verbose"`` to flip the sign.
    A missing ``Quality``/``Verbosity`` value leaves that objective unlabeled (reported as
    ``missing_label``).

``hh-rlhf`` (``Anthropic/hh-rlhf``)
    Columns ``chosen, rejected``: whole transcripts ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``.
    The prompt is the common prefix of the two, cut after its last ``"\\n\\nAssistant:"``; the
    responses are what follows. ``a = chosen`` with sign ``+1`` for the subset's objective only:
    ``helpful`` for ``helpful-*`` subsets, ``harmless`` for ``harmless-base``; the pair is
    unlabeled for the other objective. The subset comes from ``data_dir`` (hub: ``data_dir=
    "helpful-base"`` or a tuple of subsets), from the local file's path (``helpful-base.jsonl.gz``,
    or ``helpful-base/train.jsonl.gz`` in a local clone of the hub repository), or from the
    ``subset=`` option; a part whose subset cannot be told raises :class:`SchemaError` before it
    is loaded. With ``conversation=True`` (default) the prompt is parsed
    into ``{role: user/assistant}`` messages (consecutive turns of one speaker merged) and the
    responses are the assistant texts, so chat templates apply; ``conversation=False`` keeps the
    raw transcript text (prompt ends with ``"Assistant:"``, responses keep their leading space).
    Pairs whose responses contain a further ``"\\n\\nHuman:"`` turn (the two transcripts diverge
    before the last assistant turn) are ``prompt_mismatch``.

``summarize-from-feedback`` (``openai/summarize_from_feedback``, config ``comparisons``, loaded
from the hub with ``revision="refs/convert/parquet"``)
    Columns ``info`` (``post``, ``title``, ``subreddit``, or ``article`` for news rows),
    ``summaries`` (two ``{text, policy, note}``) and ``choice``. Prompt
    ``"SUBREDDIT: r/{subreddit}\\n\\nTITLE: {title}\\n\\nPOST: {post}\\n\\nTL;DR:"`` (news rows:
    ``"ARTICLE: {article}\\n\\nTL;DR:"``; both templates are options), responses
    ``" " + summaries[i].text.strip()``. ``quality = +1 if choice == 0, -1 if choice == 1``.

``ultrafeedback`` (``openbmb/UltraFeedback``)
    Columns ``instruction`` and ``completions`` (each with ``response`` and
    ``annotations[aspect]["Rating"]``, a string ``"1"``..``"5"`` or ``"N/A"``). Objectives
    ``helpfulness, honesty, instruction_following, truthfulness``. Pairs are built from the
    completions of the same prompt (see *pairing* below); per aspect
    ``sign = sign(rating_a - rating_b)`` (equal ratings: tie ``0``); a ``"N/A"`` rating leaves
    that aspect unlabeled for every pair involving the completion.

``helpsteer2`` (``nvidia/HelpSteer2``, ``nvidia/HelpSteer``)
    Columns ``prompt, response, helpfulness, correctness, coherence, complexity, verbosity``
    (integers 0-4), one row per (prompt, response). Rows are grouped by identical prompt (in order
    of first appearance) and paired as below. Per attribute ``sign = sign(rating_a - rating_b)``,
    i.e. ``+1`` means ``a`` has the HIGHER rating (for ``verbosity`` and ``complexity``: ``a`` is
    more verbose / more complex); objective ``conciseness`` is ``-verbosity``. Multi-turn prompts
    (turns separated by ``"<extra_id_1>User"``/``"<extra_id_1>Assistant"`` lines) become
    conversations when ``conversation=True`` (default).

``generic``
    Columns ``prompt, chosen, rejected`` (strings or conversations; without a ``prompt`` column,
    conversational ``chosen``/``rejected`` are split at their shared leading messages, like TRL),
    ``a = chosen``, plus optional ``sign_<objective>`` columns (``+1``/``-1``/``0``; ``null`` =
    unlabeled; the RACO reference code's ``raco_s_<objective>`` spelling is accepted too) and
    optional ``labeled_<objective>`` booleans. Without sign columns every pair gets ``+1`` for the
    single objective named by the ``objective`` option (default ``"preference"``).

*Pairing* (``ultrafeedback``, ``helpsteer2``): options ``pairing="all"`` (default; every
``i < j``, ``a`` = the earlier completion, so up to 6 pairs from UltraFeedback's 4 completions)
or ``"consecutive"`` (``(0, 1), (1, 2), ...``) and ``max_pairs_per_prompt`` (default ``None``:
no cap; with a cap the first pairs in that order are kept); see :func:`pairing_indices`.

Rows whose two responses are identical (``identical_responses``) or which carry no label for any
requested objective (``unlabeled_for_objectives``, e.g. harmless-base pairs when only ``helpful``
is requested) are skipped too; the latter is counted under :attr:`LoadReport.filtered` and is
never an error in strict mode.

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
import inspect
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from raco_jax.data.pairs import (
    Conversation,
    PreferencePair,
    Text,
    is_conversation,
    text_is_empty,
    validate_text,
)

__all__ = [
    "LoadReport",
    "MalformedRow",
    "Schema",
    "SchemaContext",
    "SchemaError",
    "ab_label_sign",
    "get_schema",
    "list_schemas",
    "load_preferences",
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

_DATA_SUFFIXES = {
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")


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
# Helpers shared by adapters
# ----------------------------------------------------------------------------------------------


def _required(row: Mapping[str, Any], column: str) -> Any:
    value = row.get(column)
    if value is None:
        raise MalformedRow("missing_column", f"{column!r} is missing or null")
    return value


def _required_text(row: Mapping[str, Any], column: str, reason: str) -> str:
    value = _required(row, column)
    if not isinstance(value, str):
        raise MalformedRow(
            "invalid_row", f"{column!r} must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise MalformedRow(reason, f"{column!r} is empty")
    return value


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


def _choice_sign(value: Any, column: str) -> int:
    """``0 -> +1`` (slot a preferred), ``1 -> -1``."""
    if isinstance(value, bool) or value not in (0, 1):
        raise MalformedRow("invalid_label", f"{column}={value!r} (expected 0 or 1)")
    return 1 if int(value) == 0 else -1


def _rating(value: Any, column: str, low: int, high: int, na: tuple[str, ...] = ()) -> int | None:
    """An integer rating in [low, high]; None for a documented 'not applicable' value."""
    if isinstance(value, str):
        text = value.strip()
        if text in na:
            return None
        try:
            value = int(text)
        except ValueError:
            raise MalformedRow(
                "invalid_label", f"{column}={value!r} (expected {low}..{high})"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise MalformedRow("invalid_label", f"{column}={value!r} (expected {low}..{high})")
    if not low <= int(value) <= high:
        raise MalformedRow("invalid_label", f"{column}={value!r} (expected {low}..{high})")
    return int(value)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


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


def _as_messages(value: Any, column: str) -> Conversation:
    if not isinstance(value, (list, tuple)):
        raise MalformedRow("invalid_row", f"{column!r} must be a list of messages")
    try:
        messages = validate_text(list(value), column)
    except TypeError as err:
        raise MalformedRow("invalid_row", str(err)) from None
    assert isinstance(messages, list)
    return messages


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


# ----------------------------------------------------------------------------------------------
# Built-in adapters
# ----------------------------------------------------------------------------------------------


def _pku_adapter(row: Mapping[str, Any], context: SchemaContext) -> Iterator[Any]:
    prompt = _required_text(row, "prompt", "empty_prompt")
    response_0 = _required_text(row, "response_0", "empty_response")
    response_1 = _required_text(row, "response_1", "empty_response")
    signs: dict[str, int] = {}
    for objective, column in (("helpful", "better_response_id"), ("harmless", "safer_response_id")):
        if row.get(column) is None:
            yield MalformedRow("missing_label", f"{column!r} is missing or null")
            continue
        signs[objective] = _choice_sign(row[column], column)
    yield PreferencePair(prompt, response_0, response_1, signs)


def _reddit_adapter(row: Mapping[str, Any], context: SchemaContext) -> Iterator[Any]:
    summary_a, summary_b = _required(row, "Summary_A"), _required(row, "Summary_B")
    if isinstance(summary_a, str) and isinstance(summary_b, str):
        prompt_value = row.get("prompt") if row.get("prompt") is not None else row.get("post")
        if not isinstance(prompt_value, str):
            raise MalformedRow(
                "missing_column", "string summaries need a 'prompt' or 'post' column"
            )
        prompt: Text = prompt_value
        response_a: Text = summary_a
        response_b: Text = summary_b
    else:
        prompt, response_a, response_b = split_conversation_pair(
            _as_messages(summary_a, "Summary_A"), _as_messages(summary_b, "Summary_B")
        )
    verbosity_label = context.options["verbosity_label"]
    if verbosity_label not in ("preferred", "more_verbose"):
        raise SchemaError(
            f"verbosity_label must be 'preferred' or 'more_verbose', got {verbosity_label!r}"
        )
    flip = -1 if verbosity_label == "more_verbose" else 1
    signs: dict[str, int] = {}
    for objective, column, factor in (
        ("quality", "Quality", 1),
        ("conciseness", "Verbosity", flip),
    ):
        if row.get(column) is None:
            yield MalformedRow("missing_label", f"{column!r} is missing or null")
            continue
        signs[objective] = factor * ab_label_sign(row[column], column)
    yield PreferencePair(prompt, response_a, response_b, signs)


_HH_OBJECTIVES = ("helpful", "harmless")


def _hh_objective(subset: str) -> str:
    name = subset.lower()
    if "harmless" in name:
        return "harmless"
    if "helpful" in name:
        return "helpful"
    raise SchemaError(
        f"cannot tell which objective HH-RLHF part {subset!r} labels: name the file after its "
        "subset (helpful-base.jsonl.gz, harmless-base.jsonl.gz), load the hub dataset with "
        "data_dir='helpful-base' / 'harmless-base', or pass subset='helpful-base'"
    )


def _hh_check_part(part: str, options: Mapping[str, Any]) -> None:
    _hh_objective(options.get("subset") or part)


def _hh_adapter(row: Mapping[str, Any], context: SchemaContext) -> PreferencePair:
    objective = _hh_objective(context.options.get("subset") or context.part)
    chosen = _required(row, "chosen")
    rejected = _required(row, "rejected")
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise MalformedRow("invalid_row", "'chosen' and 'rejected' must be transcript strings")
    prompt, chosen_response, rejected_response = split_hh_pair(chosen, rejected)
    if not context.options["conversation"]:
        return PreferencePair(prompt, chosen_response, rejected_response, {objective: 1})
    messages = parse_hh_transcript(prompt[: -len(HH_ASSISTANT)])
    if messages[-1]["role"] != "user":
        raise MalformedRow("invalid_transcript", "the prompt does not end with a human turn")
    return PreferencePair(
        messages, chosen_response.strip(), rejected_response.strip(), {objective: 1}
    )


def _summarize_adapter(row: Mapping[str, Any], context: SchemaContext) -> PreferencePair:
    info = _required(row, "info")
    summaries = _required(row, "summaries")
    choice = _required(row, "choice")
    if not isinstance(info, Mapping):
        raise MalformedRow("invalid_row", "'info' must be a struct")
    if info.get("post"):
        prompt = context.options["prompt_template"].format(
            subreddit=info.get("subreddit") or "",
            title=info.get("title") or "",
            post=info["post"],
        )
    elif info.get("article"):
        prompt = context.options["article_template"].format(
            article=info["article"], title=info.get("title") or "", site=info.get("site") or ""
        )
    else:
        raise MalformedRow("empty_prompt", "info.post and info.article are both empty")
    if not isinstance(summaries, (list, tuple)) or len(summaries) != 2:
        raise MalformedRow("not_a_pair", "'summaries' must hold exactly two summaries")
    texts = []
    for i, summary in enumerate(summaries):
        text = summary.get("text") if isinstance(summary, Mapping) else None
        if not isinstance(text, str) or not text.strip():
            raise MalformedRow("empty_response", f"summaries[{i}].text is empty")
        texts.append(" " + text.strip())
    return PreferencePair(prompt, texts[0], texts[1], {"quality": _choice_sign(choice, "choice")})


_ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


def _ultrafeedback_adapter(row: Mapping[str, Any], context: SchemaContext) -> Iterator[Any]:
    prompt = _required_text(row, "instruction", "empty_prompt")
    completions = _required(row, "completions")
    if not isinstance(completions, (list, tuple)):
        raise MalformedRow("invalid_row", "'completions' must be a list")
    usable: list[tuple[str, dict[str, int | None]]] = []
    for j, completion in enumerate(completions):
        response = completion.get("response") if isinstance(completion, Mapping) else None
        if not isinstance(response, str) or not response.strip():
            yield MalformedRow("empty_response", f"completions[{j}].response is empty")
            continue
        annotations = completion.get("annotations") or {}
        ratings: dict[str, int | None] = {}
        for aspect in _ULTRAFEEDBACK_ASPECTS:
            rating = (annotations.get(aspect) or {}).get("Rating")
            if rating is None:
                yield MalformedRow("missing_label", f"completions[{j}] has no {aspect} rating")
                ratings[aspect] = None
                continue
            try:
                ratings[aspect] = _rating(rating, f"completions[{j}].{aspect}", 1, 5, ("N/A",))
            except MalformedRow as err:
                yield err
                ratings[aspect] = None
        usable.append((response, ratings))
    if len(usable) < 2:
        raise MalformedRow("too_few_responses", f"{len(usable)} usable completion(s)")
    options = context.options
    for i, j in pairing_indices(len(usable), options["pairing"], options["max_pairs_per_prompt"]):
        (response_a, ratings_a), (response_b, ratings_b) = usable[i], usable[j]
        signs = {
            aspect: _sign(ratings_a[aspect] - ratings_b[aspect])  # type: ignore[operator]
            for aspect in _ULTRAFEEDBACK_ASPECTS
            if ratings_a[aspect] is not None and ratings_b[aspect] is not None
        }
        yield PreferencePair(prompt, response_a, response_b, signs)


_HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def _helpsteer_adapter(rows: Sequence[Mapping[str, Any]], context: SchemaContext) -> Iterator[Any]:
    usable: list[tuple[str, dict[str, int | None]]] = []
    for k, row in enumerate(rows):
        response = row.get("response")
        if not isinstance(response, str) or not response.strip():
            yield MalformedRow("empty_response", "'response' is empty", item=k)
            continue
        ratings: dict[str, int | None] = {}
        for attribute in _HELPSTEER_ATTRIBUTES:
            if row.get(attribute) is None:
                yield MalformedRow("missing_label", f"{attribute!r} is missing or null", item=k)
                ratings[attribute] = None
                continue
            try:
                ratings[attribute] = _rating(row[attribute], attribute, 0, 4)
            except MalformedRow as err:
                err.item = k
                yield err
                ratings[attribute] = None
        usable.append((response, ratings))
    if len(usable) < 2:
        raise MalformedRow("too_few_responses", f"{len(usable)} usable response(s) for the prompt")
    prompt_text = rows[0]["prompt"]
    prompt = parse_helpsteer_prompt(prompt_text) if context.options["conversation"] else prompt_text
    options = context.options
    for i, j in pairing_indices(len(usable), options["pairing"], options["max_pairs_per_prompt"]):
        (response_a, ratings_a), (response_b, ratings_b) = usable[i], usable[j]
        signs: dict[str, int] = {}
        for attribute in _HELPSTEER_ATTRIBUTES:
            if ratings_a[attribute] is not None and ratings_b[attribute] is not None:
                signs[attribute] = _sign(ratings_a[attribute] - ratings_b[attribute])  # type: ignore[operator]
        if "verbosity" in signs:
            signs["conciseness"] = -signs["verbosity"]
        yield PreferencePair(prompt, response_a, response_b, signs)


_GENERIC_SIGN_PREFIXES = ("sign_", "raco_s_")


def _generic_objectives(columns: Sequence[str], options: Mapping[str, Any]) -> tuple[str, ...]:
    names: list[str] = []
    for prefix in _GENERIC_SIGN_PREFIXES:
        for column in columns:
            if column.startswith(prefix) and len(column) > len(prefix):
                name = column[len(prefix) :]
                if name not in names:
                    names.append(name)
    return tuple(names) or (options["objective"],)


def _generic_sign(value: Any, column: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (-1, 0, 1):
        raise MalformedRow("invalid_label", f"{column}={value!r} (expected +1, -1 or 0)")
    return int(value)


def _generic_adapter(row: Mapping[str, Any], context: SchemaContext) -> Iterator[Any]:
    chosen, rejected = _required(row, "chosen"), _required(row, "rejected")
    prompt = row.get("prompt")
    if prompt is None:
        if not (is_conversation(chosen) and is_conversation(rejected)):
            raise MalformedRow(
                "missing_column", "'prompt' is missing and chosen/rejected are not conversations"
            )
        prompt, chosen, rejected = split_conversation_pair(
            _as_messages(chosen, "chosen"), _as_messages(rejected, "rejected")
        )
    default = context.options["objective"]
    has_sign_columns = any(
        str(column).startswith(prefix) for column in row for prefix in _GENERIC_SIGN_PREFIXES
    )
    signs: dict[str, int] = {}
    for objective in context.objectives:
        columns = [p + objective for p in _GENERIC_SIGN_PREFIXES if p + objective in row]
        if not columns:
            if objective == default and not has_sign_columns:
                signs[objective] = 1
            continue
        column = next((c for c in columns if row[c] is not None), None)
        labeled = row.get(f"labeled_{objective}")
        if labeled is not None and not labeled:
            continue
        if column is None:
            if labeled:
                yield MalformedRow("missing_label", f"labeled_{objective} is true but no sign")
            continue
        signs[objective] = _generic_sign(row[column], column)
    yield PreferencePair(prompt, chosen, rejected, signs)


_PAIRING_OPTIONS = {"pairing": "all", "max_pairs_per_prompt": None}

register_schema(
    "pku-saferlhf",
    _pku_adapter,
    objectives=("helpful", "harmless"),
    columns=("prompt", "response_0", "response_1", "better_response_id", "safer_response_id"),
    hub_ids=(
        "PKU-Alignment/PKU-SafeRLHF",
        "PKU-Alignment/PKU-SafeRLHF-10K",
        "PKU-Alignment/PKU-SafeRLHF-30K",
    ),
    description="PKU-SafeRLHF: helpful from better_response_id, harmless from safer_response_id",
)
register_schema(
    "reddit-summary",
    _reddit_adapter,
    objectives=("quality", "conciseness"),
    columns=("Summary_A", "Summary_B", "Quality", "Verbosity"),
    hub_ids=("RACOo/RedditSummary-Alignment",),
    options={"verbosity_label": "preferred"},
    description="RACO paper's Reddit TL;DR pairs: quality and conciseness (A/B/tie labels)",
)
register_schema(
    "hh-rlhf",
    _hh_adapter,
    objectives=_HH_OBJECTIVES,
    columns=("chosen", "rejected"),
    hub_ids=("Anthropic/hh-rlhf",),
    options={"conversation": True, "subset": None},
    description="Anthropic HH-RLHF: helpful-* and harmless-base subsets, one objective per pair",
    check_part=_hh_check_part,
)
register_schema(
    "summarize-from-feedback",
    _summarize_adapter,
    objectives=("quality",),
    columns=("info", "summaries", "choice"),
    hub_ids=("openai/summarize_from_feedback",),
    load_kwargs={"name": "comparisons", "revision": "refs/convert/parquet"},
    options={
        "prompt_template": "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:",
        "article_template": "ARTICLE: {article}\n\nTL;DR:",
    },
    description="OpenAI summarize-from-feedback comparisons: quality from choice",
)
register_schema(
    "ultrafeedback",
    _ultrafeedback_adapter,
    objectives=_ULTRAFEEDBACK_ASPECTS,
    columns=("instruction", "completions"),
    hub_ids=("openbmb/UltraFeedback",),
    options=dict(_PAIRING_OPTIONS),
    description="UltraFeedback: pairs of completions, one sign per rated aspect",
)
register_schema(
    "helpsteer2",
    _helpsteer_adapter,
    objectives=(*_HELPSTEER_ATTRIBUTES, "conciseness"),
    columns=("prompt", "response", *_HELPSTEER_ATTRIBUTES),
    hub_ids=("nvidia/HelpSteer2", "nvidia/HelpSteer"),
    options={**_PAIRING_OPTIONS, "conversation": True},
    group_by="prompt",
    description="HelpSteer2: responses of one prompt paired, one sign per 0-4 attribute",
)
register_schema(
    "generic",
    _generic_adapter,
    objectives=_generic_objectives,
    columns=("chosen", "rejected"),
    options={"objective": "preference"},
    description="prompt/chosen/rejected with optional sign_<objective>/labeled_<objective>",
)


# ----------------------------------------------------------------------------------------------
# Reading sources
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Part:
    name: str
    rows: Iterable[Mapping[str, Any]]
    columns: tuple[str, ...]


def _builder_for(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    if suffixes and suffixes[-1] in _DATA_SUFFIXES:
        return _DATA_SUFFIXES[suffixes[-1]]
    raise ValueError(
        f"cannot tell the format of {str(path)!r}: expected .json, .jsonl, .parquet or .csv "
        "(optionally compressed, e.g. .jsonl.gz)"
    )


def _part_name(path: Path, root: Path | None = None) -> str:
    relative = path.relative_to(root) if root is not None else Path(path.name)
    return str(relative.parent / relative.name.split(".")[0]).removeprefix("./")


def _is_data_file(path: Path) -> bool:
    try:
        _builder_for(path)
    except ValueError:
        return False
    return path.is_file()


def _directory_files(root: Path, split: str, load_kwargs: Mapping[str, Any]) -> list[Path]:
    """Data files under ``root`` (hidden folders and the datasets cache skipped); when some are
    named after the split (``train.jsonl.gz``, ``train-00000-of-00002.parquet``), only those."""
    cache = load_kwargs.get("cache_dir")
    cache_path = Path(cache).resolve() if cache else None
    files = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") for part in parts) or not _is_data_file(path):
            continue
        if cache_path is not None and cache_path in path.resolve().parents:
            continue
        files.append(path)
    base_split = split.split("[")[0]
    named = [
        p
        for p in files
        if p.name.split(".")[0] == base_split or p.name.startswith(base_split + "-")
    ]
    return named or files


def _load_local(
    path: Path, split: str, load_kwargs: Mapping[str, Any], name: str | None = None
) -> _Part:
    import datasets

    base_split = split.split("[")[0] or "train"
    dataset = datasets.load_dataset(
        _builder_for(path), data_files={base_split: [str(path)]}, split=split, **load_kwargs
    )
    return _Part(name or _part_name(path), dataset, tuple(dataset.column_names))


def _dataset_part(name: str, dataset: Any, split: str) -> _Part:
    columns = dataset.column_names
    if isinstance(columns, Mapping):  # a DatasetDict: pick the split
        base_split = split.split("[")[0]
        if base_split not in dataset:
            raise ValueError(f"split {split!r} not in the dataset's splits {list(dataset)}")
        dataset = dataset[base_split]
        columns = dataset.column_names
    return _Part(name, dataset, tuple(columns or ()))


def _is_path_list(source: Any) -> bool:
    return (
        isinstance(source, Sequence)
        and not isinstance(source, str)
        and bool(source)
        and all(isinstance(item, (str, os.PathLike)) for item in source)
    )


def _read_parts(
    source: Any,
    schema: Schema | None,
    split: str,
    load_kwargs: dict[str, Any],
    precheck: Callable[[str], None],
) -> tuple[list[_Part], str]:
    """The parts of ``source``; ``precheck(part name)`` runs before each part is loaded."""
    if hasattr(source, "column_names"):  # datasets.Dataset / IterableDataset / DatasetDict
        precheck("dataset")
        return [_dataset_part("dataset", source, split)], type(source).__name__
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = _directory_files(path, split, load_kwargs)
            if not files:
                raise ValueError(f"no .json/.jsonl/.parquet/.csv files in directory {str(path)!r}")
            names = [_part_name(p, path) for p in files]
            for name in names:
                precheck(name)
            parts = [
                _load_local(p, split, load_kwargs, name)
                for p, name in zip(files, names, strict=True)
            ]
            return parts, str(path)
        if path.is_file():
            precheck(_part_name(path))
            return [_load_local(path, split, load_kwargs)], str(path)
        if isinstance(source, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", source):
            return _load_hub(source, schema, split, load_kwargs, precheck), source
        raise ValueError(f"source {str(source)!r} is neither an existing path nor a hub id")
    if _is_path_list(source):
        paths = [Path(item) for item in source]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"source files not found: {missing}")
        for p in paths:
            precheck(_part_name(p))
        return [_load_local(p, split, load_kwargs) for p in paths], ", ".join(map(str, paths))
    if isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        rows = list(source)
        if not all(isinstance(row, Mapping) for row in rows):
            raise TypeError("source rows must be mappings (dicts) of column -> value")
        columns: list[str] = []
        for row in rows[:1000]:
            columns.extend(c for c in row if c not in columns)
        precheck("rows")
        return [_Part("rows", rows, tuple(columns))], f"{len(rows)} in-memory rows"
    raise TypeError(
        "source must be a hub id, a path (file or directory), a list of paths, a datasets.Dataset "
        f"or a list of row dicts; got {type(source).__name__}"
    )


def _load_hub(
    source: str,
    schema: Schema | None,
    split: str,
    load_kwargs: dict[str, Any],
    precheck: Callable[[str], None],
) -> list[_Part]:
    import datasets

    kwargs = {**(schema.load_kwargs if schema else {}), **load_kwargs}
    data_dirs = kwargs.pop("data_dir", None)
    if isinstance(data_dirs, (list, tuple)):
        for data_dir in data_dirs:
            precheck(str(data_dir))
        parts = []
        for data_dir in data_dirs:
            dataset = datasets.load_dataset(source, data_dir=data_dir, split=split, **kwargs)
            parts.append(_dataset_part(str(data_dir), dataset, split))
        return parts
    name = str(data_dirs) if data_dirs else source
    precheck(name)
    if data_dirs is not None:
        kwargs["data_dir"] = data_dirs
    dataset = datasets.load_dataset(source, split=split, **kwargs)
    return [_dataset_part(name, dataset, split)]


def _infer_schema(source: Any, columns: Sequence[str]) -> Schema:
    if isinstance(source, str):
        for schema in _REGISTRY.values():
            if source in schema.hub_ids:
                return schema
    fitting = [s for s in _REGISTRY.values() if s.columns and set(s.columns) <= set(columns)]
    if not fitting:
        raise ValueError(
            f"no registered schema fits columns {list(columns)}; pass schema= one of "
            f"{list_schemas()} or register one"
        )
    best = max(len(s.columns) for s in fitting)
    candidates = [s.name for s in fitting if len(s.columns) == best]
    if len(candidates) > 1:
        raise ValueError(
            f"columns {list(columns)} fit several schemas {candidates}; pass schema= explicitly"
        )
    return _REGISTRY[candidates[0]]


def _call_adapter(schema: Schema, unit: Any, context: SchemaContext) -> list[Any]:
    """Run the adapter; a row error raised part-way is returned as the last item, after what was
    yielded before it (partial problems yielded earlier are never lost)."""
    adapter = schema.adapter
    try:
        n_params = len(inspect.signature(adapter).parameters)
    except (TypeError, ValueError):
        n_params = 2
    items: list[Any] = []
    try:
        result = adapter(unit, context) if n_params >= 2 else adapter(unit)
        if isinstance(result, (PreferencePair, MalformedRow)):
            items.append(result)
        elif result is not None:
            for item in result:
                items.append(item)
    except SchemaError:
        raise
    except MalformedRow as err:
        items.append(err)
    except (KeyError, TypeError, ValueError) as err:
        reason = "missing_column" if isinstance(err, KeyError) else "invalid_row"
        items.append(MalformedRow(reason, f"{type(err).__name__}: {err}"))
    return items


def _group_rows(
    schema: Schema, rows: Iterable[Mapping[str, Any]], start: int
) -> Iterator[tuple[list[int], Any]]:
    groups: dict[Any, list[int]] = {}
    members: dict[Any, list[Mapping[str, Any]]] = {}
    missing: list[int] = []
    key_fn = schema.group_by
    for offset, row in enumerate(rows):
        key = key_fn(row) if callable(key_fn) else row.get(key_fn)  # type: ignore[arg-type]
        if key is None or (isinstance(key, str) and not key.strip()):
            missing.append(start + offset)
            continue
        if isinstance(key, list):
            key = repr(key)
        groups.setdefault(key, []).append(start + offset)
        members.setdefault(key, []).append(row)
    for index in missing:
        yield [index], None
    for key, indices in groups.items():
        yield indices, members[key]


@dataclasses.dataclass
class _Recorder:
    """Counts a problem in the report, or raises it (strict mode) naming the row."""

    report: LoadReport
    strict: bool
    schema: str
    part: str
    start: int

    def __call__(self, index: int, reason: str, message: str) -> None:
        if self.strict and reason not in FILTER_REASONS:
            raise ValueError(
                f"{self.schema} row {index - self.start} of {self.part}: {reason}: {message}"
            )
        self.report.record(reason, index, message)


def _checked_pair(
    pair: PreferencePair, wanted: tuple[str, ...], recorder: _Recorder, index: int
) -> PreferencePair | None:
    if text_is_empty(pair.prompt):
        recorder(index, "empty_prompt", "the prompt is empty")
        return None
    if text_is_empty(pair.response_a) or text_is_empty(pair.response_b):
        side = "a" if text_is_empty(pair.response_a) else "b"
        recorder(index, "empty_response", f"response_{side} is empty")
        return None
    if pair.response_a == pair.response_b:
        recorder(index, "identical_responses", "the two responses are identical")
        return None
    pair = pair.restricted(wanted)
    if not pair.signs:
        recorder(index, "unlabeled_for_objectives", f"no label for {list(wanted)}")
        return None
    return dataclasses.replace(
        pair,
        source=pair.source if pair.source is not None else recorder.part,
        row=pair.row if pair.row is not None else index - recorder.start,
    )


def load_preferences(
    source: Any,
    schema: str | Schema | None = None,
    objectives: Sequence[str] | None = None,
    split: str = "train",
    strict: bool = False,
    **kwargs: Any,
) -> tuple[list[PreferencePair], LoadReport]:
    """Load a preference dataset as :class:`~raco_jax.data.pairs.PreferencePair` objects.

    Args:
        source: a hub id (``"PKU-Alignment/PKU-SafeRLHF"``, needs network or the local HF
            cache), a local ``.json``/``.jsonl``/``.jsonl.gz``/``.parquet``/``.csv`` file, a list
            of such files, a directory (the data files under it, sorted; when some are named after
            the split, like ``helpful-base/train.jsonl.gz``, only those), a ``datasets.Dataset``
            (or ``DatasetDict``, from which ``split`` is taken), or a list of row dicts. Local
            files are read with ``datasets.load_dataset("json" / "parquet" / "csv",
            data_files=...)``, one part per file (HH-RLHF takes each file's subset from its
            path).
        schema: a registered schema name (see the module docstring), a :class:`Schema`, or
            ``None`` to pick it from the hub id or, failing that, from the columns.
        objectives: the objectives to keep, in order (default: all the schema provides). Pairs
            labeled for none of them are skipped (``filtered['unlabeled_for_objectives']``).
        split: the split to read (slices like ``"train[:50]"`` work); for local files it only
            names the split.
        strict: raise ``ValueError`` naming the row at the first malformed row instead of
            counting it.
        **kwargs: schema options (e.g. ``pairing``, ``max_pairs_per_prompt``, ``subset``,
            ``conversation``, ``verbosity_label``, ``objective``), the rest is passed to
            ``datasets.load_dataset`` (``cache_dir``, ``revision``, ``data_dir``, ...).

    Returns:
        ``(pairs, report)``: the pairs in reading order and a :class:`LoadReport`.

    Raises:
        ValueError: unknown schema, objectives the schema does not provide, a part lacking a
            required column, or (strict) a malformed row.
        SchemaError: (a ``ValueError``) options or a part the schema cannot read, e.g. an
            HH-RLHF part whose subset is unknown.
        TypeError: keyword arguments that are neither schema options nor usable by
            ``datasets.load_dataset`` (in-memory sources take none).

    Example (PKU-SafeRLHF layout, in memory):

    >>> rows = [dict(prompt="How do I pick a lock?", response_0="Use a pick.",
    ...              response_1="I can't help with that.", better_response_id=0,
    ...              safer_response_id=1),
    ...         dict(prompt="Hi", response_0="Hello", response_1="", better_response_id=0,
    ...              safer_response_id=0)]
    >>> pairs, report = load_preferences(rows, "pku-saferlhf")
    >>> pairs[0].signs
    {'helpful': 1, 'harmless': -1}
    >>> report.issues, report.first_rows
    ({'empty_response': 1}, {'empty_response': [1]})
    >>> load_preferences(rows, "pku-saferlhf", strict=True)
    Traceback (most recent call last):
    ...
    ValueError: pku-saferlhf row 1 of rows: empty_response: 'response_1' is empty
    >>> load_preferences(rows, "pku-saferlhf", objectives=["concise"])
    Traceback (most recent call last):
    ...
    ValueError: objectives ['concise'] are not provided by schema 'pku-saferlhf', which provides ['helpful', 'harmless']
    """
    resolved = get_schema(schema) if isinstance(schema, str) else schema
    if resolved is None and isinstance(source, str):
        resolved = next((s for s in _REGISTRY.values() if source in s.hub_ids), None)
    if resolved is not None and not isinstance(resolved, Schema):
        raise TypeError(f"schema must be a name, a Schema or None, got {type(schema).__name__}")
    option_names = set(resolved.options) if resolved else set()
    if resolved is None:  # options may belong to the schema inferred later
        option_names = {name for s in _REGISTRY.values() for name in s.options}
    options = {k: v for k, v in kwargs.items() if k in option_names}
    load_kwargs = {k: v for k, v in kwargs.items() if k not in option_names}

    def precheck(part: str) -> None:
        if resolved is not None and resolved.check_part is not None:
            resolved.check_part(part, {**resolved.options, **options})

    parts, description = _read_parts(source, resolved, split, load_kwargs, precheck)
    if resolved is None:
        resolved = _infer_schema(source, parts[0].columns if parts else ())
    unknown = set(options) - set(resolved.options)
    if not isinstance(source, (str, os.PathLike)) and not _is_path_list(source):
        unknown |= set(load_kwargs)  # nothing is passed to datasets.load_dataset for these
    if unknown:
        raise TypeError(
            f"schema {resolved.name!r} has no option(s) {sorted(unknown)}; its options are "
            f"{sorted(resolved.options)} (other keyword arguments go to datasets.load_dataset, "
            "for hub ids and files only)"
        )
    merged_options = {**resolved.options, **options}
    if resolved.check_part is not None:  # again, in case the schema was inferred from columns
        for part in parts:
            resolved.check_part(part.name, merged_options)

    provided: list[str] = []
    part_objectives: list[tuple[str, ...]] = []
    for part in parts:
        missing = [c for c in resolved.columns if c not in part.columns]
        if missing and part.columns:
            raise ValueError(
                f"{part.name} lacks column(s) {missing} that schema {resolved.name!r} needs; "
                f"it has {list(part.columns)}"
            )
        names = resolved.objectives_for(part.columns, merged_options)
        part_objectives.append(names)
        provided.extend(n for n in names if n not in provided)
    if objectives is None:
        wanted = tuple(provided)
    else:
        if isinstance(objectives, str):
            raise TypeError("objectives must be a sequence of names, e.g. ['helpful', 'harmless']")
        wanted = tuple(objectives)
        if len(set(wanted)) != len(wanted) or not wanted:
            raise ValueError(f"objectives must be distinct names, got {list(wanted)}")
        absent = [o for o in wanted if o not in provided]
        if absent:
            raise ValueError(
                f"objectives {absent} are not provided by schema {resolved.name!r}, "
                f"which provides {provided}"
            )

    report = LoadReport(resolved.name, description, wanted)
    pairs: list[PreferencePair] = []
    start = 0
    for part, names in zip(parts, part_objectives, strict=True):
        context = SchemaContext(resolved.name, part.name, merged_options, names)
        recorder = _Recorder(report, strict, resolved.name, part.name, start)
        if resolved.group_by is not None:
            units: Iterable[tuple[list[int], Any]] = _group_rows(resolved, part.rows, start)
        else:
            units = (([start + offset], row) for offset, row in enumerate(part.rows))
        count = 0
        for indices, unit in units:
            count += len(indices)
            if unit is None:
                recorder(indices[0], "missing_column", f"{resolved.group_by!r} is missing or empty")
                continue
            for item in _call_adapter(resolved, unit, context):
                if isinstance(item, MalformedRow):
                    recorder(indices[item.item or 0], item.reason, item.message)
                    continue
                if not isinstance(item, PreferencePair):
                    raise TypeError(
                        f"schema {resolved.name!r} adapter returned {type(item).__name__}; "
                        "expected PreferencePair or MalformedRow"
                    )
                pair = _checked_pair(item, wanted, recorder, indices[0])
                if pair is not None:
                    pairs.append(pair)
        report.parts.append((part.name, start, count))
        start += count
    report.rows_read = start
    report.pairs_built = len(pairs)
    return pairs, report
