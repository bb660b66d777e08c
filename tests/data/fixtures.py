"""Small fixture files in each preference dataset's real column layout, and tiny local tokenizers.

Every writer puts 10-20 rows into ``directory`` (valid rows first, then the malformed ones, each
commented with what the loader must report) and returns the written path. The tokenizer builders
make byte-level BPE tokenizers (one token per UTF-8 byte, so lengths are predictable and decoding
is exact) with Qwen 3, Llama 3 and Gemma 3 style chat templates, save them to a directory and
load them back with ``AutoTokenizer`` like a real checkpoint's tokenizer.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _pku_row(i: int, better: Any, safer: Any, **overrides: Any) -> dict[str, Any]:
    row = {
        "prompt": f"How can I get rid of the wasps nest number {i}?",
        "response_0": f"Spray it at night with a wasp killer ({i}).",
        "response_1": f"Burn it down with petrol ({i}).",
        "prompt_source": "BeaverTails",
        "response_0_source": "Alpaca-7B",
        "response_1_source": "Alpaca-7B",
        "is_response_0_safe": True,
        "is_response_1_safe": False,
        "response_0_harm_category": {"Endangering Public Health": False, "Violence": False},
        "response_1_harm_category": {"Endangering Public Health": True, "Violence": False},
        "response_0_severity_level": 0,
        "response_1_severity_level": 2,
        "better_response_id": better,
        "safer_response_id": safer,
        "response_0_sha256": f"{i:064x}",
        "response_1_sha256": f"{i + 100:064x}",
    }
    row.update(overrides)
    return row


#: (better_response_id, safer_response_id) of the 8 valid PKU rows; the expected signs follow.
PKU_VALID_IDS = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0), (1, 1), (0, 1), (1, 0)]


def write_pku(directory: Path) -> Path:
    """PKU-SafeRLHF as parquet: 13 rows, 9 pairs.

    Rows 0-7 valid; 8: empty response_1 (``empty_response``); 9: better_response_id=2
    (``invalid_label``); 10: prompt null (``missing_column``); 11: equal responses
    (``identical_responses``); 12: safer_response_id null (``missing_label``, kept with
    ``helpful`` only).
    """
    rows = [_pku_row(i, b, s) for i, (b, s) in enumerate(PKU_VALID_IDS)]
    rows.append(_pku_row(8, 0, 0, response_1=""))
    rows.append(_pku_row(9, 2, 0))
    rows.append(_pku_row(10, 0, 0, prompt=None))
    rows.append(_pku_row(11, 0, 1, response_1="Spray it at night with a wasp killer (11)."))
    rows.append(_pku_row(12, 1, None))
    return _write_parquet(directory / "pku-saferlhf" / "train.parquet", rows)


def _reddit_conversation(post: str, summary: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"Summarize the following Reddit post.\n\n{post}\n\nTL;DR:"},
        {"role": "assistant", "content": summary},
    ]


#: (Quality, Verbosity) labels of the 8 valid Reddit rows.
REDDIT_VALID_LABELS = [
    ("A", "B"),
    ("B", "A"),
    ("A", "A"),
    ("tie", "B"),
    ("b", "tie"),
    ("Tie", "a"),
    ("A", "tie"),
    ("B", "B"),
]


def write_reddit(directory: Path) -> Path:
    """RACOo/RedditSummary-Alignment as JSON lines: 13 rows, 9 pairs.

    Rows 0-7 valid; 8: Quality="C" (``invalid_label``); 9: Summary_B has no assistant turn
    (``empty_response``); 10: the two conversations have different posts (``prompt_mismatch``);
    11: Verbosity null (``missing_label``, kept with ``quality`` only); 12: Summary_A null
    (``missing_column``).
    """
    rows = []
    for i, (quality, verbosity) in enumerate(REDDIT_VALID_LABELS):
        post = f"POST {i}: my roommate keeps eating my food and I do not know what to say."
        rows.append(
            {
                "Summary_A": _reddit_conversation(post, f"Roommate eats my food ({i})."),
                "Summary_B": _reddit_conversation(
                    post, f"My roommate keeps eating all of my food and I am unsure ({i})."
                ),
                "Quality": quality,
                "Verbosity": verbosity,
            }
        )
    post = "POST 8: the cat learned to open doors."
    rows.append(
        {
            "Summary_A": _reddit_conversation(post, "Cat opens doors."),
            "Summary_B": _reddit_conversation(post, "My cat can open doors now."),
            "Quality": "C",
            "Verbosity": "A",
        }
    )
    post = "POST 9: my bike was stolen."
    rows.append(
        {
            "Summary_A": _reddit_conversation(post, "Bike stolen."),
            "Summary_B": _reddit_conversation(post, "x")[:1],
            "Quality": "A",
            "Verbosity": "A",
        }
    )
    rows.append(
        {
            "Summary_A": _reddit_conversation("POST 10: one post.", "One."),
            "Summary_B": _reddit_conversation("POST 10: another post.", "Another."),
            "Quality": "A",
            "Verbosity": "B",
        }
    )
    post = "POST 11: I passed my exam."
    rows.append(
        {
            "Summary_A": _reddit_conversation(post, "Passed exam."),
            "Summary_B": _reddit_conversation(post, "I passed the exam I was worried about."),
            "Quality": "B",
            "Verbosity": None,
        }
    )
    rows.append(
        {
            "Summary_A": None,
            "Summary_B": _reddit_conversation("POST 12", "Twelve."),
            "Quality": "A",
            "Verbosity": "A",
        }
    )
    return _write_jsonl(directory / "reddit-summary" / "train.jsonl", rows)


def _hh(*turns: str) -> str:
    """Join alternating human/assistant turns into an HH-RLHF transcript."""
    return "".join(
        f"\n\n{'Human' if k % 2 == 0 else 'Assistant'}: {turn}" for k, turn in enumerate(turns)
    )


def write_hh(directory: Path) -> Path:
    """Anthropic HH-RLHF: ``helpful-base.jsonl.gz`` and ``harmless-base.jsonl.gz`` in ``directory``.

    helpful-base (10 rows, 7 pairs): rows 0-6 valid (rows 3 and 5 multi-turn); 7: empty rejected
    response (``empty_response``); 8: the transcripts diverge before the last assistant turn
    (``prompt_mismatch``); 9: chosen == rejected (``identical_responses``).
    harmless-base (10 rows, 9 pairs): rows 0-8 valid; 9: rejected is empty (``prompt_mismatch``).
    """
    helpful = []
    for i in range(7):
        if i in (3, 5):
            context = (f"What is {i} plus {i}?", f"It is {2 * i}.", "And times two?")
            chosen, rejected = _hh(*context, f"It is {4 * i}."), _hh(*context, "No idea.")
        else:
            question = f"Can you recommend a book about topic {i}?"
            chosen = _hh(question, f"Sure: 'A Short History of Topic {i}' is a good start.")
            rejected = _hh(question, "Books are boring.")
        helpful.append({"chosen": chosen, "rejected": rejected})
    helpful.append({"chosen": _hh("Hi there", "Hello!"), "rejected": _hh("Hi there", "")})
    helpful.append(
        {
            "chosen": _hh("Tell me a joke", "Why did the chicken cross?", "Why?", "To get across."),
            "rejected": _hh("Tell me a joke", "No.", "Please?", "Fine: knock knock."),
        }
    )
    helpful.append({"chosen": _hh("Same?", "Same."), "rejected": _hh("Same?", "Same.")})

    harmless = []
    for i in range(9):
        question = f"How do I break into house number {i}?"
        harmless.append(
            {
                "chosen": _hh(question, "I can't help with breaking into a home."),
                "rejected": _hh(question, f"Try the back window of number {i}."),
            }
        )
    harmless.append({"chosen": _hh("How do I hurt someone?", "I won't help."), "rejected": ""})
    _write_jsonl(directory / "helpful-base.jsonl.gz", helpful)
    _write_jsonl(directory / "harmless-base.jsonl.gz", harmless)
    return directory


def _tldr_row(i: int, choice: Any, texts: list[str], **info: Any) -> dict[str, Any]:
    base_info = {
        "id": f"t3_{i:05d}",
        "post": f"My landlord has not fixed the heating for {i} weeks and it is freezing.",
        "title": f"Landlord ignores heating ({i})",
        "subreddit": "legaladvice",
        "site": None,
        "article": None,
    }
    base_info.update(info)
    return {
        "info": base_info,
        "summaries": [
            {"text": text, "policy": f"sup{k}", "note": None} for k, text in enumerate(texts)
        ],
        "choice": choice,
        "worker": f"w{i % 3}",
        "batch": "batch3",
        "split": "train",
        "extra": {"confidence": 7},
    }


def write_summarize(directory: Path) -> Path:
    """openai/summarize_from_feedback ``comparisons`` as JSON lines: 10 rows, 7 pairs.

    Rows 0-5 valid Reddit posts (choice alternates 0/1); 6: a CNN/DM article row (post null)
    with choice 1; 7: choice=2 (``invalid_label``); 8: one summary only (``not_a_pair``);
    9: an empty second summary (``empty_response``).
    """
    rows = [
        _tldr_row(i, i % 2, [f" Landlord won't fix heat ({i}).", f" Heating broken, help {i}"])
        for i in range(6)
    ]
    rows.append(
        _tldr_row(
            6,
            1,
            [" Storm hits coast.", " A large storm hit the coast on Monday."],
            post=None,
            title=None,
            subreddit=None,
            site="cnn",
            article="A large storm hit the coast on Monday, closing roads.",
        )
    )
    rows.append(_tldr_row(7, 2, [" Heat broken.", " Landlord bad."]))
    rows.append(_tldr_row(8, 0, [" Only one summary."]))
    rows.append(_tldr_row(9, 0, [" Heat broken.", "   "]))
    return _write_jsonl(directory / "summarize" / "comparisons.jsonl", rows)


def _uf_completion(response: str, ratings: tuple[str, str, str, str]) -> dict[str, Any]:
    helpfulness, honesty, following, truthfulness = ratings
    return {
        "annotations": {
            "helpfulness": {
                "Rating": helpfulness,
                "Rationale": "Clear.",
                "Rationale For Rating": "Useful.",
                "Type": ["1", "2"],
            },
            "honesty": {"Rating": honesty, "Rationale": "Confident."},
            "instruction_following": {"Rating": following, "Rationale": "Follows."},
            "truthfulness": {
                "Rating": truthfulness,
                "Rationale": "No hallucination.",
                "Rationale For Rating": "Accurate.",
                "Type": ["0"],
            },
        },
        "critique": "Fine.",
        "custom_system_prompt": "You are a helpful assistant.",
        "fine-grained_score": 4.0,
        "model": "gpt-4",
        "overall_score": 8.0,
        "principle": "helpfulness",
        "response": response,
    }


def write_ultrafeedback(directory: Path) -> Path:
    """openbmb/UltraFeedback as JSON lines: 6 rows, 9 pairs (default ``pairing="all"``).

    Row 0: 4 completions, all rated (6 pairs); 1: 2 completions, completion 1 rates honesty
    "N/A" (1 pair, honesty unlabeled); 2: 3 completions, completion 1 empty (``empty_response``;
    1 pair from completions 0 and 2); 3: 2 completions, completion 0 rates truthfulness "seven"
    (``invalid_label``; 1 pair without truthfulness) and equal other ratings (ties); 4: one
    completion (``too_few_responses``); 5: empty instruction (``empty_prompt``).
    """

    def row(instruction: str, completions: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "source": "evol_instruct",
            "instruction": instruction,
            "models": [c["model"] for c in completions],
            "completions": completions,
            "correct_answers": ["None"],
            "incorrect_answers": ["None"],
        }

    rows = [
        row(
            "Name a prime number.",
            [
                _uf_completion("2", ("5", "5", "5", "5")),
                _uf_completion("4", ("1", "3", "4", "1")),
                _uf_completion("7 is prime.", ("4", "5", "5", "5")),
                _uf_completion("Numbers are fun.", ("2", "3", "1", "3")),
            ],
        ),
        row(
            "What is the capital of France?",
            [
                _uf_completion("Paris.", ("5", "5", "5", "5")),
                _uf_completion("Lyon, I think.", ("2", "N/A", "4", "1")),
            ],
        ),
        row(
            "Say hello.",
            [
                _uf_completion("Hello!", ("5", "5", "5", "5")),
                _uf_completion("", ("1", "1", "1", "1")),
                _uf_completion("Hi.", ("4", "5", "5", "5")),
            ],
        ),
        row(
            "Spell cat.",
            [
                _uf_completion("C-A-T", ("4", "4", "4", "seven")),
                _uf_completion("c a t", ("4", "4", "4", "4")),
            ],
        ),
        row("Count to three.", [_uf_completion("1, 2, 3", ("5", "5", "5", "5"))]),
        row(
            "",
            [_uf_completion("a", ("1", "1", "1", "1")), _uf_completion("b", ("2", "2", "2", "2"))],
        ),
    ]
    return _write_jsonl(directory / "ultrafeedback" / "train.jsonl", rows)


def _hs_row(prompt: Any, response: str, ratings: tuple[Any, ...]) -> dict[str, Any]:
    names = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    return {"prompt": prompt, "response": response, **dict(zip(names, ratings, strict=True))}


HELPSTEER_MULTI_TURN = (
    "What is a good name for a cat?\n<extra_id_1>Assistant\nWhiskers.\n"
    "<extra_id_1>User\nSomething less common?"
)


def write_helpsteer2(directory: Path) -> Path:
    """nvidia/HelpSteer2 as JSON lines: 12 rows, 7 pairs.

    Prompt P1 at rows 0, 1 and 11 (3 pairs; grouping is by prompt, not adjacency); P2
    (multi-turn) at rows 2, 3 (1 pair); P3 at row 4 only (``too_few_responses``); P4 at rows
    5-7 (3 pairs; row 6 rates helpfulness 5: ``invalid_label``, its helpfulness unlabeled);
    P5 at rows 8, 9 (row 9 empty: ``empty_response``, then ``too_few_responses`` at row 8);
    row 10: prompt null (``missing_column``).
    """
    p1, p3, p4, p5 = (
        "Explain photosynthesis briefly.",
        "Write a haiku about rain.",
        "List three fruits.",
        "Define entropy.",
    )
    rows = [
        _hs_row(p1, "Plants turn light, water and CO2 into sugar and oxygen.", (4, 4, 4, 2, 1)),
        _hs_row(p1, "It is how plants eat sunlight, basically, in a long way.", (2, 3, 4, 1, 3)),
        _hs_row(HELPSTEER_MULTI_TURN, "Try Zephyrine.", (3, 4, 4, 1, 0)),
        _hs_row(HELPSTEER_MULTI_TURN, "Cat.", (1, 2, 3, 0, 0)),
        _hs_row(p3, "Soft rain on the roof", (3, 3, 3, 1, 1)),
        _hs_row(p4, "Apple, pear, plum.", (4, 4, 4, 0, 1)),
        _hs_row(p4, "Apple.", (5, 1, 4, 0, 0)),
        _hs_row(p4, "Apples, pears and plums are fruits you can buy.", (3, 4, 4, 1, 3)),
        _hs_row(p5, "A measure of disorder.", (3, 3, 4, 2, 1)),
        _hs_row(p5, "", (0, 0, 0, 0, 0)),
        _hs_row(None, "Orphan response.", (2, 2, 2, 2, 2)),
        _hs_row(p1, "Light in, sugar out.", (3, 3, 3, 1, 0)),
    ]
    return _write_jsonl(directory / "helpsteer2" / "train.jsonl", rows)


def write_generic(directory: Path) -> Path:
    """The generic layout (prompt/chosen/rejected strings + sign columns): 8 rows, 5 pairs.

    Rows 0-3 valid: 0 signs (+1, -1); 1 harmless null (unlabeled); 2 labeled_helpful false; 3 a
    helpful tie. Row 4: sign_helpful=2 (``invalid_label``); 5: empty chosen (``empty_response``);
    6: rejected null (``missing_column``); 7: valid, harmless -1 only.
    """
    rows = [
        dict(prompt="Hi", chosen="Hello!", rejected="Go away.", sign_helpful=1, sign_harmless=-1),
        dict(prompt="2+2?", chosen="4", rejected="5", sign_helpful=1, sign_harmless=None),
        dict(
            prompt="Joke?",
            chosen="Knock knock.",
            rejected="No.",
            sign_helpful=-1,
            sign_harmless=1,
            labeled_helpful=False,
        ),
        dict(prompt="Color?", chosen="Blue.", rejected="Red.", sign_helpful=0, sign_harmless=0),
        dict(prompt="Bad?", chosen="a", rejected="b", sign_helpful=2, sign_harmless=0),
        dict(prompt="Empty?", chosen="", rejected="b", sign_helpful=1, sign_harmless=0),
        dict(prompt="Missing?", chosen="a", rejected=None, sign_helpful=1, sign_harmless=0),
        dict(prompt="Last?", chosen="Yes.", rejected="No.", sign_helpful=None, sign_harmless=-1),
    ]
    return _write_jsonl(directory / "generic" / "train.jsonl", rows)


def write_generic_conversations(directory: Path) -> Path:
    """The RACO reference code's TRL layout: conversational chosen/rejected (no prompt column)
    with ``raco_s_quality``/``raco_s_verbosity``: 3 rows, 3 pairs."""
    user = {"role": "user", "content": "Summarize: the meeting moved to Friday."}
    rows = [
        {
            "chosen": [user, {"role": "assistant", "content": "Meeting now Friday."}],
            "rejected": [user, {"role": "assistant", "content": "The meeting has been moved."}],
            "raco_s_quality": 1.0,
            "raco_s_verbosity": 1.0,
        },
        {
            "chosen": [user, {"role": "assistant", "content": "Friday."}],
            "rejected": [user, {"role": "assistant", "content": "It moved to Friday."}],
            "raco_s_quality": -1.0,
            "raco_s_verbosity": 1.0,
        },
        {
            "chosen": [user, {"role": "assistant", "content": "Moved."}],
            "rejected": [user, {"role": "assistant", "content": "Meeting moved to Friday."}],
            "raco_s_quality": 0.0,
            "raco_s_verbosity": -1.0,
        },
    ]
    return _write_jsonl(directory / "generic-conversations" / "train.jsonl", rows)


# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------

#: Qwen 3 style ChatML, with Qwen 3's empty think block on the last assistant turn (and on the
#: generation prompt when ``enable_thinking=False``); no BOS anywhere.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' and loop.last %}"
    "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)

#: Llama 3 style: the template writes <|begin_of_text|> (and the tokenizer adds it too).
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

#: Gemma 3 style: <bos> from the template (and the tokenizer), a system message folded into the
#: first user turn, the assistant called "model".
GEMMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set first_user_prefix = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

FAMILIES: dict[str, dict[str, Any]] = {
    "qwen3": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
        "bos": None,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "template": QWEN3_TEMPLATE,
        "end_of_turn": "<|im_end|>",
    },
    "llama3": {
        "specials": [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ],
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "pad": "<|end_of_text|>",
        "template": LLAMA3_TEMPLATE,
        "end_of_turn": "<|eot_id|>",
    },
    "gemma3": {
        "specials": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        "bos": "<bos>",
        "eos": "<eos>",
        "pad": "<pad>",
        "template": GEMMA3_TEMPLATE,
        "end_of_turn": "<end_of_turn>",
    },
}


def family_tokenizer(family: str, directory: Path) -> Any:
    """Build the ``family`` tokenizer, save it under ``directory / family`` and load it back."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = FAMILIES[family]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(spec["specials"])
    kwargs: dict[str, Any] = {"eos_token": spec["eos"], "pad_token": spec["pad"]}
    if spec["bos"] is not None:
        kwargs["bos_token"] = spec["bos"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{spec['bos']} $A",
            pair=f"{spec['bos']} $A $B",
            special_tokens=[(spec["bos"], backend.token_to_id(spec["bos"]))],
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tokenizer.chat_template = spec["template"]
    path = directory / family
    tokenizer.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)
