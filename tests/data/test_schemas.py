"""Schema adapters on small files in each dataset's real column layout, and on real HH-RLHF pairs."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest
from data import fixtures

from raco_jax.data import (
    MalformedRow,
    PreferencePair,
    SchemaError,
    get_schema,
    list_schemas,
    load_preferences,
    objective_signs,
    pairing_indices,
    register_schema,
    unregister_schema,
)
from raco_jax.data.schemas import parse_hh_transcript, split_conversation_pair


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("preference-fixtures")
    return {
        "pku": fixtures.write_pku(root),
        "reddit": fixtures.write_reddit(root),
        "hh": fixtures.write_hh(root / "hh-rlhf"),
        "summarize": fixtures.write_summarize(root),
        "ultrafeedback": fixtures.write_ultrafeedback(root),
        "helpsteer2": fixtures.write_helpsteer2(root),
        "generic": fixtures.write_generic(root),
        "generic_conversations": fixtures.write_generic_conversations(root),
        "cache": root / "hf-cache",
    }


def load(files: dict[str, Path], name: str, schema: str | None, **kwargs):
    return load_preferences(files[name], schema, cache_dir=str(files["cache"]), **kwargs)


def _sign(choice: int) -> int:
    return 1 if choice == 0 else -1


# ----------------------------------------------------------------------------------------------
# PKU-SafeRLHF
# ----------------------------------------------------------------------------------------------


def test_pku_signs_and_report(files):
    pairs, report = load(files, "pku", "pku-saferlhf")
    assert report.rows_read == 13 and report.pairs_built == len(pairs) == 9
    for pair, (better, safer) in zip(pairs[:8], fixtures.PKU_VALID_IDS, strict=True):
        assert pair.signs == {"helpful": _sign(better), "harmless": _sign(safer)}
        assert pair.response_a.startswith("Spray")  # slot a is response_0
    assert pairs[8].signs == {"helpful": -1} and pairs[8].row == 12
    assert report.issues == {
        "empty_response": 1,
        "invalid_label": 1,
        "missing_column": 1,
        "identical_responses": 1,
        "missing_label": 1,
    }
    assert report.first_rows["empty_response"] == [8]
    assert report.first_rows["invalid_label"] == [9]
    assert report.first_rows["missing_column"] == [10]
    assert report.first_rows["identical_responses"] == [11]
    assert "better_response_id=2" in report.first_messages["invalid_label"]
    assert report.objectives == ("helpful", "harmless")
    assert pairs[0].source == "train" and pairs[0].row == 0


def test_pku_objective_selection_and_errors(files):
    pairs, report = load(files, "pku", "pku-saferlhf", objectives=["harmless"])
    assert report.objectives == ("harmless",)
    assert all(set(p.signs) == {"harmless"} for p in pairs)
    assert len(pairs) == 8  # row 12 has no harmless label
    assert report.filtered == {"unlabeled_for_objectives": 1}
    with pytest.raises(ValueError, match=r"objectives \['honest'\] are not provided"):
        load(files, "pku", "pku-saferlhf", objectives=["helpful", "honest"])
    with pytest.raises(ValueError, match="distinct"):
        load(files, "pku", "pku-saferlhf", objectives=["helpful", "helpful"])


def test_schema_inferred_from_columns_and_hub_id(files):
    pairs, report = load(files, "pku", None)
    assert report.schema == "pku-saferlhf" and len(pairs) == 9
    assert get_schema("PKU-Alignment/PKU-SafeRLHF-30K").name == "pku-saferlhf"
    assert get_schema("openai/summarize_from_feedback").load_kwargs == {
        "name": "comparisons",
        "revision": "refs/convert/parquet",
    }
    # chosen/rejected alone fit both hh-rlhf and generic: ambiguous, so the caller must choose.
    with pytest.raises(ValueError, match="several schemas"):
        load_preferences([{"chosen": "a", "rejected": "b"}])


def test_missing_column_in_the_whole_part_is_an_error(files):
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['safer_response_id'\]"):
        load_preferences(
            [dict(prompt="p", response_0="a", response_1="b", better_response_id=0)],
            "pku-saferlhf",
        )


# ----------------------------------------------------------------------------------------------
# RACOo/RedditSummary-Alignment
# ----------------------------------------------------------------------------------------------

_AB = {"a": 1, "b": -1, "tie": 0}


def test_reddit_quality_and_conciseness(files):
    pairs, report = load(files, "reddit", "reddit-summary")
    assert len(pairs) == 9 and report.rows_read == 13
    for pair, (quality, verbosity) in zip(pairs[:8], fixtures.REDDIT_VALID_LABELS, strict=True):
        assert pair.signs == {
            "quality": _AB[quality.lower()],
            "conciseness": _AB[verbosity.lower()],
        }
        assert pair.prompt[0]["role"] == "user" and len(pair.prompt) == 1
        assert pair.prompt[0]["content"].startswith("Summarize the following Reddit post.")
        assert pair.response_a[0]["role"] == "assistant"
        assert pair.response_a[0]["content"].startswith("Roommate eats")
    assert pairs[8].signs == {"quality": -1}
    assert report.issues == {
        "invalid_label": 1,
        "empty_response": 1,
        "prompt_mismatch": 1,
        "missing_label": 1,
        "missing_column": 1,
    }
    assert report.first_rows == {
        "invalid_label": [8],
        "empty_response": [9],
        "prompt_mismatch": [10],
        "missing_label": [11],
        "missing_column": [12],
    }


def test_reddit_verbosity_label_flip(files):
    pairs, _ = load(files, "reddit", "reddit-summary", verbosity_label="more_verbose")
    for pair, (_, verbosity) in zip(pairs[:8], fixtures.REDDIT_VALID_LABELS, strict=True):
        assert pair.signs["conciseness"] == -_AB[verbosity.lower()]
    with pytest.raises(SchemaError, match="verbosity_label"):
        load(files, "reddit", "reddit-summary", verbosity_label="shorter")


# ----------------------------------------------------------------------------------------------
# Anthropic HH-RLHF
# ----------------------------------------------------------------------------------------------


def test_hh_subsets_become_objectives(files):
    pairs, report = load(files, "hh", "hh-rlhf")
    assert [name for name, _, _ in report.parts] == ["harmless-base", "helpful-base"]
    assert report.parts == [("harmless-base", 0, 10), ("helpful-base", 10, 10)]
    harmless = [p for p in pairs if p.source == "harmless-base"]
    helpful = [p for p in pairs if p.source == "helpful-base"]
    assert len(harmless) == 9 and len(helpful) == 7
    assert all(p.signs == {"harmless": 1} for p in harmless)
    assert all(p.signs == {"helpful": 1} for p in helpful)
    _signs, labeled = objective_signs(pairs, ["helpful", "harmless"])
    assert labeled.sum(axis=0).tolist() == [1.0] * len(pairs)  # one objective per pair
    assert report.issues == {
        "prompt_mismatch": 2,
        "empty_response": 1,
        "identical_responses": 1,
    }
    assert report.first_rows["prompt_mismatch"] == [9, 18]
    assert report.first_rows["empty_response"] == [17]
    multi_turn = helpful[3]
    assert [m["role"] for m in multi_turn.prompt] == ["user", "assistant", "user"]
    assert multi_turn.prompt[-1]["content"] == "And times two?"
    assert multi_turn.response_a == "It is 12." and multi_turn.response_b == "No idea."


def test_hh_objective_filter_and_raw_mode(files):
    pairs, report = load(files, "hh", "hh-rlhf", objectives=["helpful"])
    assert len(pairs) == 7 and report.filtered == {"unlabeled_for_objectives": 9}
    raw, _ = load(files, "hh", "hh-rlhf", conversation=False)
    rows = [json.loads(line) for line in gzip.open(files["hh"] / "helpful-base.jsonl.gz", "rt")]
    for pair in (p for p in raw if p.source == "helpful-base"):
        assert pair.prompt.endswith("\n\nAssistant:")
        assert pair.prompt + pair.response_a == rows[pair.row]["chosen"]
        assert pair.prompt + pair.response_b == rows[pair.row]["rejected"]


def test_hh_subset_must_be_known(files, tmp_path):
    odd = tmp_path / "pairs.jsonl"
    odd.write_text(
        json.dumps(
            {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
        )
    )
    with pytest.raises(SchemaError, match="cannot tell which objective"):
        load_preferences(odd, "hh-rlhf", cache_dir=str(files["cache"]))
    pairs, _ = load_preferences(
        odd, "hh-rlhf", subset="harmless-base", cache_dir=str(files["cache"])
    )
    assert pairs[0].signs == {"harmless": 1}


def test_hh_hub_without_subset_fails_before_loading():
    # Offline: a download attempt would raise a connection error, not SchemaError.
    with pytest.raises(SchemaError, match="data_dir='helpful-base'"):
        load_preferences("Anthropic/hh-rlhf")


def test_hh_local_clone_layout_and_split_selection(files, tmp_path):
    clone = tmp_path / "hh-rlhf-clone"
    for subset in ("helpful-base", "harmless-base"):
        fixtures.write_hh(tmp_path / "tmp")
        data = (tmp_path / "tmp" / f"{subset}.jsonl.gz").read_bytes()
        for split in ("train", "test"):
            (clone / subset).mkdir(parents=True, exist_ok=True)
            (clone / subset / f"{split}.jsonl.gz").write_bytes(data)
    (clone / "red-team-attempts").mkdir()
    (clone / "red-team-attempts" / "red_team_attempts.jsonl.gz").write_bytes(b"")
    pairs, report = load_preferences(clone, "hh-rlhf", split="test", cache_dir=str(files["cache"]))
    assert [name for name, _, _ in report.parts] == ["harmless-base/test", "helpful-base/test"]
    assert {p.source for p in pairs} == {"harmless-base/test", "helpful-base/test"}
    assert len(pairs) == 16
    assert all(
        p.signs == ({"helpful": 1} if p.source.startswith("helpful") else {"harmless": 1})
        for p in pairs
    )


def test_hh_transcript_parsing():
    transcript = "\n\nHuman: Hi\n\nHuman: again\n\nAssistant: Hello\n\nHuman: Bye"
    assert parse_hh_transcript(transcript) == [
        {"role": "user", "content": "Hi\n\nagain"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    with pytest.raises(MalformedRow):
        parse_hh_transcript("no turns here")


@pytest.mark.parametrize("subset", ["helpful-base", "harmless-base"])
def test_hh_real_pairs(shared_dir, tmp_path, subset):
    path = shared_dir / "data" / "hh-rlhf" / f"{subset}.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    pairs, report = load_preferences(
        path, "hh-rlhf", split="train[:50]", cache_dir=str(tmp_path / "cache")
    )
    assert report.rows_read == 50
    assert len(pairs) + report.num_issues == 50 and len(pairs) >= 45
    objective = subset.split("-")[0]
    for pair in pairs:
        assert pair.signs == {objective: 1}
        assert pair.prompt[0]["role"] == "user" and pair.prompt[-1]["role"] == "user"
        roles = [m["role"] for m in pair.prompt]
        assert all(a != b for a, b in itertools.pairwise(roles))  # alternating
        assert pair.response_a.strip() and pair.response_a != pair.response_b
    raw, _ = load_preferences(
        path, "hh-rlhf", split="train[:50]", conversation=False, cache_dir=str(tmp_path / "cache")
    )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(next(f)) for _ in range(50)]
    for pair in raw:
        assert pair.prompt + pair.response_a == rows[pair.row]["chosen"]
        assert pair.prompt + pair.response_b == rows[pair.row]["rejected"]


# ----------------------------------------------------------------------------------------------
# summarize_from_feedback, UltraFeedback, HelpSteer2
# ----------------------------------------------------------------------------------------------


def test_summarize_from_feedback(files):
    pairs, report = load(files, "summarize", "summarize-from-feedback")
    assert len(pairs) == 7 and report.rows_read == 10
    for i, pair in enumerate(pairs[:6]):
        assert pair.signs == {"quality": 1 if i % 2 == 0 else -1}
        assert pair.prompt.startswith("SUBREDDIT: r/legaladvice\n\nTITLE: Landlord ignores heating")
        assert pair.prompt.endswith("\n\nTL;DR:")
        assert pair.response_a == f" Landlord won't fix heat ({i})."
    assert pairs[6].prompt.startswith("ARTICLE: A large storm") and pairs[6].signs == {
        "quality": -1
    }
    assert report.issues == {"invalid_label": 1, "not_a_pair": 1, "empty_response": 1}
    assert report.first_rows == {"invalid_label": [7], "not_a_pair": [8], "empty_response": [9]}


def test_ultrafeedback_pairs_per_aspect(files):
    pairs, report = load(files, "ultrafeedback", "ultrafeedback")
    assert len(pairs) == 9
    first = [p for p in pairs if p.row == 0]
    assert [(p.response_a, p.response_b) for p in first][:3] == [
        ("2", "4"),
        ("2", "7 is prime."),
        ("2", "Numbers are fun."),
    ]
    assert first[0].signs == {
        "helpfulness": 1,
        "honesty": 1,
        "instruction_following": 1,
        "truthfulness": 1,
    }
    assert first[1].signs == {  # ratings 5,5,5,5 vs 4,5,5,5: ties kept as 0
        "helpfulness": 1,
        "honesty": 0,
        "instruction_following": 0,
        "truthfulness": 0,
    }
    (na_pair,) = [p for p in pairs if p.row == 1]
    assert "honesty" not in na_pair.signs and na_pair.signs["helpfulness"] == 1
    (skip_empty,) = [p for p in pairs if p.row == 2]
    assert (skip_empty.response_a, skip_empty.response_b) == ("Hello!", "Hi.")
    (bad_rating,) = [p for p in pairs if p.row == 3]
    assert bad_rating.signs == {"helpfulness": 0, "honesty": 0, "instruction_following": 0}
    assert report.issues == {
        "empty_response": 1,
        "invalid_label": 1,
        "too_few_responses": 1,
        "empty_prompt": 1,
    }
    assert report.first_rows == {
        "empty_response": [2],
        "invalid_label": [3],
        "too_few_responses": [4],
        "empty_prompt": [5],
    }


def test_ultrafeedback_pairing_options(files):
    consecutive, _ = load(files, "ultrafeedback", "ultrafeedback", pairing="consecutive")
    assert len([p for p in consecutive if p.row == 0]) == 3
    capped, _ = load(files, "ultrafeedback", "ultrafeedback", max_pairs_per_prompt=2)
    assert len([p for p in capped if p.row == 0]) == 2
    assert pairing_indices(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(SchemaError, match="pairing"):
        load(files, "ultrafeedback", "ultrafeedback", pairing="random")


def test_helpsteer2_grouping_and_signs(files):
    pairs, report = load(files, "helpsteer2", "helpsteer2")
    assert len(pairs) == 7 and report.rows_read == 12
    p1 = [p for p in pairs if p.row == 0]
    assert len(p1) == 3  # rows 0, 1 and 11 share the prompt
    assert p1[0].signs == {
        "helpfulness": 1,
        "correctness": 1,
        "coherence": 0,
        "complexity": 1,
        "verbosity": -1,
        "conciseness": 1,
    }
    assert p1[2].response_b == "Light in, sugar out."
    (multi,) = [p for p in pairs if p.row == 2]
    assert multi.prompt == [
        {"role": "user", "content": "What is a good name for a cat?"},
        {"role": "assistant", "content": "Whiskers."},
        {"role": "user", "content": "Something less common?"},
    ]
    p4 = [p for p in pairs if p.row == 5]
    assert len(p4) == 3 and "helpfulness" not in p4[0].signs and p4[1].signs["helpfulness"] == 1
    assert report.issues == {
        "missing_column": 1,
        "too_few_responses": 2,
        "invalid_label": 1,
        "empty_response": 1,
    }
    assert report.first_rows["invalid_label"] == [6]
    assert report.first_rows["empty_response"] == [9]
    assert report.first_rows["too_few_responses"] == [4, 8]
    assert report.first_rows["missing_column"] == [10]
    raw, _ = load(files, "helpsteer2", "helpsteer2", conversation=False)
    assert next(p for p in raw if p.row == 2).prompt == fixtures.HELPSTEER_MULTI_TURN


# ----------------------------------------------------------------------------------------------
# generic
# ----------------------------------------------------------------------------------------------


def test_generic_sign_columns(files):
    pairs, report = load(files, "generic", "generic")
    assert report.objectives == ("helpful", "harmless")
    assert [p.signs for p in pairs] == [
        {"helpful": 1, "harmless": -1},
        {"helpful": 1},
        {"harmless": 1},
        {"helpful": 0, "harmless": 0},
        {"harmless": -1},
    ]
    assert report.issues == {"invalid_label": 1, "empty_response": 1, "missing_column": 1}
    assert report.first_rows == {"invalid_label": [4], "empty_response": [5], "missing_column": [6]}


def test_generic_conversations_and_raco_prefix(files):
    pairs, report = load(files, "generic_conversations", "generic")
    assert report.objectives == ("quality", "verbosity") and report.ok
    assert [p.signs for p in pairs] == [
        {"quality": 1, "verbosity": 1},
        {"quality": -1, "verbosity": 1},
        {"quality": 0, "verbosity": -1},
    ]
    assert pairs[0].prompt == [
        {"role": "user", "content": "Summarize: the meeting moved to Friday."}
    ]
    assert pairs[0].response_a == [{"role": "assistant", "content": "Meeting now Friday."}]


def test_generic_default_objective_and_round_trip(files, tmp_path):
    rows = [{"prompt": "Hi", "chosen": "Hello", "rejected": "Bye"}]
    pairs, report = load_preferences(rows, "generic")
    assert pairs[0].signs == {"preference": 1} and report.objectives == ("preference",)
    pairs, _ = load_preferences(rows, "generic", objective="helpful")
    assert pairs[0].signs == {"helpful": 1}
    inconsistent = [{**rows[0], "sign_safe": None, "labeled_safe": True, "sign_fun": 1}]
    pairs, report = load_preferences(inconsistent, "generic")
    assert pairs[0].signs == {"fun": 1} and report.issues == {"missing_label": 1}
    original, _ = load(files, "generic", "generic")
    path = tmp_path / "saved.jsonl"
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in original))
    reloaded, _ = load_preferences(path, "generic", cache_dir=str(files["cache"]))
    assert [(p.prompt, p.response_a, p.response_b, p.signs) for p in reloaded] == [
        (p.prompt, p.response_a, p.response_b, p.signs) for p in original
    ]


# ----------------------------------------------------------------------------------------------
# Strict mode, registry, data model
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "schema", "row", "reason"),
    [
        ("pku", "pku-saferlhf", 8, "empty_response"),
        ("reddit", "reddit-summary", 8, "invalid_label"),
        ("summarize", "summarize-from-feedback", 7, "invalid_label"),
        ("ultrafeedback", "ultrafeedback", 2, "empty_response"),
        ("helpsteer2", "helpsteer2", 10, "missing_column"),
        ("generic", "generic", 4, "invalid_label"),
    ],
)
def test_strict_mode_names_the_row(files, name, schema, row, reason):
    with pytest.raises(ValueError, match=rf"{schema} row {row} of \S+: {reason}"):
        load(files, name, schema, strict=True)


def test_strict_mode_hh_names_file_and_row(files):
    with pytest.raises(ValueError, match=r"hh-rlhf row 9 of harmless-base: prompt_mismatch"):
        load(files, "hh", "hh-rlhf", strict=True)
    # Filtering by objective is not an error, even in strict mode.
    pairs, _ = load_preferences(
        [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}],
        "hh-rlhf",
        subset="helpful-base",
        objectives=["harmless"],
        strict=True,
    )
    assert pairs == []


def test_register_schema_decorator_and_registry(files, tmp_path):
    @register_schema("test-votes", objectives=("fun",), columns=("q", "x", "y", "vote"))
    def votes(row, context):
        if row["vote"] not in ("x", "y"):
            raise MalformedRow("invalid_label", f"vote={row['vote']!r}")
        assert context.part == "votes" and context.objectives == ("fun",)
        return PreferencePair(
            row["q"], row["x"], row["y"], {"fun": 1 if row["vote"] == "x" else -1}
        )

    try:
        assert "test-votes" in list_schemas()
        path = tmp_path / "votes.jsonl"
        path.write_text(
            "\n".join(
                json.dumps(r)
                for r in [
                    {"q": "pun?", "x": "a pun", "y": "no", "vote": "x"},
                    {"q": "pun?", "x": "b", "y": "c", "vote": "z"},
                ]
            )
        )
        pairs, report = load_preferences(path, "test-votes", cache_dir=str(files["cache"]))
        assert pairs[0].signs == {"fun": 1} and report.first_rows == {"invalid_label": [1]}
        with pytest.raises(ValueError, match="already registered"):
            register_schema("test-votes", votes, objectives=("fun",))
    finally:
        unregister_schema("test-votes")
    assert "test-votes" not in list_schemas()
    with pytest.raises(TypeError, match="no option"):
        load_preferences(
            [{"prompt": "a", "chosen": "b", "rejected": "c"}], "generic", pairing="all"
        )


def test_sources_and_errors(files, tmp_path):
    with pytest.raises(ValueError, match="neither an existing path nor a hub id"):
        load_preferences("definitely not here.jsonl", "generic")
    text_file = tmp_path / "pairs.txt"
    text_file.write_text("prompt chosen rejected")
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_preferences([text_file], "generic")
    with pytest.raises(ValueError, match="unknown schema"):
        load_preferences([], "nope")
    # Several files load as one part each, in the given order.
    pairs, report = load_preferences(
        [files["generic"], files["generic"]], "generic", cache_dir=str(files["cache"])
    )
    assert len(pairs) == 10 and [p[1] for p in report.parts] == [0, 8]


def test_pair_model_validation():
    with pytest.raises(ValueError, match=r"signs\['helpful'\] must be \+1, -1 or 0"):
        PreferencePair("q", "a", "b", {"helpful": 2})
    with pytest.raises(TypeError, match="response_b must be a string"):
        PreferencePair("q", "a", None, {"helpful": 1})
    with pytest.raises(TypeError, match=r"prompt\[0\] must have string 'role' and 'content'"):
        PreferencePair([{"role": "user"}], "a", "b", {})
    pair = PreferencePair("q", "a", "b", {"helpful": 1.0})
    assert pair.signs == {"helpful": 1} and isinstance(pair.signs["helpful"], int)
    assert pair.swapped().swapped() == pair


def test_split_conversation_pair_rules():
    user = {"role": "user", "content": "u"}
    with pytest.raises(MalformedRow, match="prompt_mismatch"):
        split_conversation_pair([user], [{"role": "user", "content": "v"}])
    with pytest.raises(MalformedRow, match="identical_responses"):
        split_conversation_pair([user], [user])
