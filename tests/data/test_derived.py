"""Derived objectives (concise), the qa-feedback schema on its real rows, conflict rates,
sampling across objectives, and one-line errors for unreadable files."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from raco_jax.data import (
    PreferencePair,
    byte_tokenizer,
    conflict_rates,
    derived_objectives,
    load_preferences,
    parse_dataset_source,
    sample_pairs,
    tokenize_pairs,
)

TOKENIZER = byte_tokenizer(None)  # one token per byte: lengths are easy to state


def test_concise_prefers_the_shorter_completion_in_tokens() -> None:
    pairs = [
        PreferencePair("q", "short", "much longer", {"helpful": -1}),
        PreferencePair("q", "much longer", "short", {"helpful": 1}),
        PreferencePair("q", "same", "size", {}),  # no human label: concise still labels it
    ]
    data = tokenize_pairs(pairs, TOKENIZER, ("helpful", "concise"), 64, 16)
    assert data.signs.tolist() == [[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0]]
    assert data.labeled.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    # lengths before truncation: both responses cut to the same length still compare
    cut = tokenize_pairs(pairs[:2], TOKENIZER, ("concise",), 8, 4)
    assert [len(ids) for ids in cut.input_ids_a] == [len(ids) for ids in cut.input_ids_b]
    assert cut.signs.tolist() == [[1.0, -1.0]] and "concise" in derived_objectives()


def test_load_preferences_accepts_derived_objectives(shared_dir) -> None:
    hh = shared_dir / "data" / "hh-rlhf"
    helpful, report = load_preferences(hh, "hh-rlhf", objectives=("helpful", "concise"))
    assert report.objectives == ("helpful", "concise")
    assert all(pair.objectives == ("helpful",) for pair in helpful)  # harmless-only: filtered
    assert report.filtered["unlabeled_for_objectives"] > 1000
    everything, _ = load_preferences(hh, "hh-rlhf", objectives=("concise",))
    assert len(everything) == report.pairs_built + report.filtered["unlabeled_for_objectives"]
    with pytest.raises(ValueError, match="derived objectives \\['concise'\\]"):
        load_preferences(hh, "hh-rlhf", objectives=("honest",))


def test_conflict_rates_on_the_real_data(shared_dir) -> None:
    """Helpful-base: the more helpful answer is the longer one on ~59% of its pairs;
    qa-feedback: ~51% (the shared data's README states 58.8% and 51%)."""
    qa, _ = load_preferences(shared_dir / "data" / "qa-feedback", "qa-feedback",
                             objectives=("quality", "concise"))  # fmt: skip
    data = tokenize_pairs(qa, TOKENIZER, ("quality", "concise"), 4096, 2048)
    rates = conflict_rates(data.signs, data.labeled, ("quality", "concise"))["quality/concise"]
    assert (rates["pairs"], rates["decisive"], rates["conflicts"]) == (2364, 2062, 1048)
    hh, _ = load_preferences(shared_dir / "data" / "hh-rlhf", "hh-rlhf",
                             objectives=("helpful", "harmless", "concise"))  # fmt: skip
    data = tokenize_pairs(hh, TOKENIZER, ("helpful", "harmless", "concise"), 4096, 2048)
    rates = conflict_rates(data.signs, data.labeled, ("helpful", "harmless", "concise"))
    assert rates["helpful/harmless"]["pairs"] == 0  # disjoint subsets: never the same pair
    assert rates["helpful/concise"]["decisive"] == 1857
    assert rates["helpful/concise"]["conflicts"] == 1095  # 59.0%
    assert 0.44 < rates["harmless/concise"]["rate"] < 0.46


def test_qa_feedback_real_rows(shared_dir) -> None:
    path = shared_dir / "data" / "qa-feedback" / "dev_feedback.json.gz"
    rows = json.loads(gzip.open(path, "rt").read())
    pairs, report = load_preferences(path.parent, "qa-feedback")
    assert report.rows_read == 394 and report.ok and len(pairs) == 6 * 394
    signs = np.array([pair.signs["quality"] for pair in pairs])
    assert (np.sum(signs == 1), np.sum(signs == -1), np.sum(signs == 0)) == (1264, 803, 297)
    first = rows[0]
    order = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    for pair, (i, j), judgement in zip(pairs[:6], order, first["preference"], strict=True):
        assert pair.response_a == first[f"prediction {i}"].strip()
        assert pair.response_b == first[f"prediction {j}"].strip()
        assert pair.signs["quality"] == {1: 1, 2: -1, 0: 0}[judgement]
    assert pairs[0].prompt.endswith("Question: " + first["question"].strip())
    assert pairs[0].prompt.startswith("Passages:\n[" + first["passages"][0][0])
    short, _ = load_preferences(path.parent, "qa-feedback", passages=False)
    assert short[0].prompt == first["question"].strip()


def test_sample_pairs_draws_across_objectives() -> None:
    pairs = [PreferencePair(f"h{i}", "a", "b", {"helpful": 1}) for i in range(90)]
    pairs += [PreferencePair(f"s{i}", "a", "b", {"harmless": -1}) for i in range(10)]
    picked = sample_pairs(pairs, 10, ("helpful", "harmless"), seed=0)
    kinds = [p.objectives[0] for p in picked]
    assert len(picked) == 10 and kinds.count("harmless") == 1 and kinds.count("helpful") == 9
    assert [pairs.index(p) for p in picked] == sorted(pairs.index(p) for p in picked)
    assert picked == sample_pairs(pairs, 10, ("helpful", "harmless"), seed=0)
    assert picked != sample_pairs(pairs, 10, ("helpful", "harmless"), seed=1)
    tiny = sample_pairs(pairs, 2, ("helpful", "harmless"))
    assert sorted(p.objectives[0] for p in tiny) == ["harmless", "helpful"]
    assert sample_pairs(pairs, 500, ("helpful",)) == pairs
    with pytest.raises(ValueError, match="positive int"):
        sample_pairs(pairs, 0, ("helpful",))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", "", r"empty\.jsonl: no rows \(the file is empty\)"),
        ("blank.jsonl", "\n\n", r"blank\.jsonl: no rows"),
        ("list.json", "[]", r"list\.json: no rows \(an empty JSON list\)"),
        ("bad.jsonl", '{"chosen": "a", "rejected": "b"}\n{"chosen": \n', r"bad\.jsonl line 2: not valid JSON"),
        ("array.jsonl", '{"chosen": "a", "rejected": "b"}\n[1, 2]\n', r"array\.jsonl line 2: a row must be a JSON object"),
    ],
)  # fmt: skip
def test_unreadable_files_are_one_clear_error(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_preferences(path, "generic")


def test_compressed_files_are_checked_too(tmp_path) -> None:
    path = tmp_path / "pairs.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"chosen": "a", "rejected": "b"}\nnot json\n')
    with pytest.raises(ValueError, match=r"pairs\.jsonl\.gz line 2: not valid JSON"):
        load_preferences(path, "generic")


def test_parse_dataset_source() -> None:
    assert parse_dataset_source("PKU-Alignment/PKU-SafeRLHF") == "PKU-Alignment/PKU-SafeRLHF"
    assert parse_dataset_source("a.jsonl,b.jsonl, ") == ["a.jsonl", "b.jsonl"]
