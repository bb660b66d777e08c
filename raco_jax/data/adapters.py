"""The built-in dataset schemas, registered when :mod:`raco_jax.data` is imported.

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

``qa-feedback`` (FineGrainedRLHF's ``tasks/qa_feedback/data/*_feedback.json``, Wu et al.,
NeurIPS 2023; ``../shared/data/qa-feedback/dev_feedback.json.gz``)
    One row per ASQA question: ``question``, ``passages`` (``[title, sentence, ...]`` lists),
    ``prediction 1`` .. ``prediction 4`` (four answers of one model) and ``preference``, six
    human judgements in the order ``1v2, 1v3, 1v4, 2v3, 2v4, 3v4``: ``1`` = the first answer
    of the pair is preferred (``quality = +1``, ``a`` = the lower-numbered answer), ``2`` = the
    second (``-1``), ``0`` = no preference (a tie, ``0``). So each row gives 6 pairs. The answers
    were written from the passages, so the prompt holds them: ``"Passages:\n[title] text\n...
    \n\nQuestion: ..."`` (the question last, so that ``max_prompt_length`` cuts passages
    first); ``passages=False`` gives the question alone. Add the derived objective ``concise``
    for the paper's quality-vs-conciseness setting on human labels.

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

Example:

>>> from raco_jax.data import get_schema
>>> get_schema("PKU-Alignment/PKU-SafeRLHF").objectives
('helpful', 'harmless')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from raco_jax.data.pairs import Conversation, PreferencePair, Text, is_conversation, validate_text
from raco_jax.data.schemas import (
    HH_ASSISTANT,
    MalformedRow,
    SchemaContext,
    SchemaError,
    ab_label_sign,
    pairing_indices,
    parse_helpsteer_prompt,
    parse_hh_transcript,
    register_schema,
    split_conversation_pair,
    split_hh_pair,
)

__all__: list[str] = []


# ----------------------------------------------------------------------------------------------
# Helpers of the adapters
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


def _as_messages(value: Any, column: str) -> Conversation:
    if not isinstance(value, (list, tuple)):
        raise MalformedRow("invalid_row", f"{column!r} must be a list of messages")
    try:
        messages = validate_text(list(value), column)
    except TypeError as err:
        raise MalformedRow("invalid_row", str(err)) from None
    assert isinstance(messages, list)
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


_QA_ORDER = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))
_QA_SIGNS = {1: 1, 2: -1, 0: 0}


def _qa_prompt(row: Mapping[str, Any], passages: bool) -> str:
    question = _required_text(row, "question", "empty_prompt").strip()
    if not passages:
        return question
    blocks = []
    for passage in row.get("passages") or ():
        if isinstance(passage, (list, tuple)) and passage:
            title, *sentences = (str(piece).strip() for piece in passage)
            blocks.append(f"[{title}] " + " ".join(s for s in sentences if s))
    if not blocks:
        return question
    return "Passages:\n" + "\n".join(blocks) + f"\n\nQuestion: {question}"


def _qa_feedback_adapter(row: Mapping[str, Any], context: SchemaContext) -> Iterator[Any]:
    prompt = _qa_prompt(row, bool(context.options["passages"]))
    preference = _required(row, "preference")
    if not isinstance(preference, (list, tuple)) or len(preference) != len(_QA_ORDER):
        raise MalformedRow(
            "invalid_label",
            f"'preference' must hold {len(_QA_ORDER)} judgements (1v2, 1v3, 1v4, 2v3, 2v4, 3v4)",
        )
    for (i, j), judgement in zip(_QA_ORDER, preference, strict=True):
        answers = [row.get(f"prediction {k}") for k in (i, j)]
        if not all(isinstance(a, str) and a.strip() for a in answers):
            yield MalformedRow("empty_response", f"prediction {i} or {j} is empty")
            continue
        if isinstance(judgement, bool) or judgement not in _QA_SIGNS:
            yield MalformedRow("invalid_label", f"preference {i}v{j} = {judgement!r} (0, 1 or 2)")
            continue
        yield PreferencePair(
            prompt, answers[0].strip(), answers[1].strip(), {"quality": _QA_SIGNS[judgement]}
        )


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
    "qa-feedback",
    _qa_feedback_adapter,
    objectives=("quality",),
    columns=("question", *(f"prediction {k}" for k in range(1, 5)), "preference"),
    options={"passages": True},
    description="FineGrainedRLHF qa-feedback: 4 answers per question, 6 pairwise judgements",
)
register_schema(
    "generic",
    _generic_adapter,
    objectives=_generic_objectives,
    columns=("chosen", "rejected"),
    options={"objective": "preference"},
    description="prompt/chosen/rejected with optional sign_<objective>/labeled_<objective>",
)
