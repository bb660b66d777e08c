"""Held-out prompts and the responses a model gives to them.

:func:`held_out_prompts` takes the distinct prompts of preference data (or the pairs a run held
out), :func:`generate_responses` decodes greedy responses with a
:class:`~raco_jax.models.Decoder` (prompts rendered with the chat template as in training), and
:func:`prompt_text` gives the text a judge reads.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from raco_jax.data import (
    PreferencePair,
    bucket_length,
    load_preferences,
    parse_dataset_source,
    tokenize_pairs,
)
from raco_jax.models import generate
from raco_jax.train import resolve_schema, split_train_eval

__all__ = [
    "GeneratedResponses",
    "generate_responses",
    "greedy_responses",
    "held_out_prompts",
    "prompt_text",
]


def held_out_prompts(
    dataset: str,
    schema: str,
    *,
    split: str = "train",
    objectives: Sequence[str] | None = None,
    eval_fraction: float = 0.0,
    seed: int = 0,
    num_prompts: int | None = None,
) -> list[Any]:
    """Distinct prompts of preference data, in reading order: all of ``split``, or the pairs
    :func:`~raco_jax.train.split_train_eval` holds out with ``eval_fraction`` and ``seed``
    (the same ones an :func:`~raco_jax.train.align` run with those settings never saw).

    Example:
        >>> import json, pathlib, tempfile
        >>> from raco_jax.evaluate import held_out_prompts
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "pairs.jsonl"
        >>> rows = [{"prompt": p, "chosen": "a", "rejected": "b"} for p in ["x", "y", "x"]]
        >>> _ = path.write_text("".join(json.dumps(r) + "\\n" for r in rows))
        >>> held_out_prompts(str(path), "generic")
        ['x', 'y']
    """
    pairs, _ = load_preferences(
        parse_dataset_source(dataset),
        resolve_schema(schema),
        objectives=None if objectives is None else tuple(objectives),
        split=split,
    )
    if eval_fraction > 0:
        _, pairs = split_train_eval(pairs, eval_fraction, seed)
    prompts: list[Any] = []
    seen: set[str] = set()
    for pair in pairs:
        key = json.dumps(pair.prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(pair.prompt)
        if num_prompts is not None and len(prompts) >= num_prompts:
            break
    if not prompts:
        raise ValueError(f"no prompts in {dataset!r} ({schema}, split {split}).")
    return prompts


def prompt_text(prompt: Any) -> str:
    """A prompt as a judge reads it: the text, or a conversation's last user message.

    Example:
        >>> from raco_jax.evaluate.responses import prompt_text
        >>> prompt_text([{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."},
        ...              {"role": "user", "content": "Why?"}])
        'Why?'
    """
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else prompt[-1]["content"]


def _tokenized_prompts(prompts: Sequence[Any], tokenizer: Any, max_prompt_length: int) -> Any:
    """Prompt ids rendered like training prompts (chat template, one BOS, end kept)."""
    pairs = [PreferencePair(prompt, "-", "-", {"_": 0}) for prompt in prompts]
    data = tokenize_pairs(pairs, tokenizer, ["_"], max_prompt_length + 1, max_prompt_length)
    return [
        ids[:length] for ids, length in zip(data.input_ids_a, data.prompt_lengths_a, strict=True)
    ]


def _stop_ids(tokenizer: Any, model: Any) -> tuple[int, ...]:
    ids = []
    for value in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(model.config, "eos_token_id", None),
    ):
        if value is None:
            continue
        ids.extend(value if isinstance(value, (list, tuple)) else [value])
    vocab = model.config.vocab_size
    return tuple(dict.fromkeys(int(i) for i in ids if 0 <= int(i) < vocab))


@dataclasses.dataclass(frozen=True)
class GeneratedResponses:
    """Greedy responses with their token counts (:func:`greedy_responses`).

    Attributes:
      texts: the decoded responses (special tokens skipped, stripped).
      lengths: int ``[N]``, generated tokens per response, the end token included.
      finished: bool ``[N]``, whether the response ended with an end token (False: it was cut
        at ``max_new_tokens``).
    """

    texts: list[str]
    lengths: np.ndarray
    finished: np.ndarray


def greedy_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int = 64,
    max_prompt_length: int = 512,
    batch_size: int = 8,
) -> GeneratedResponses:
    """Greedy responses of a :class:`~raco_jax.models.Decoder` to prompts (chat template
    applied), with how many tokens each took and whether it ended on its own.

    Prompts are left-padded into batches of ``batch_size`` (at most the number of prompts; the
    last batch filled with copies, so every batch compiles to the same program for a given
    padded length) and decoded by
    :func:`raco_jax.models.generate` until the tokenizer's or the model's end token.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.data import byte_tokenizer
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.evaluate import greedy_responses
        >>> tokenizer = byte_tokenizer("chatml")
        >>> config = ModelConfig(model_type="qwen3", vocab_size=len(tokenizer), hidden_size=16,
        ...                      intermediate_size=32, num_layers=1, num_heads=2)
        >>> out = greedy_responses(Decoder(config, rngs=nnx.Rngs(0)), tokenizer, ["Hi"],
        ...                        max_new_tokens=4)
        >>> out.lengths.shape, bool(out.lengths[0] <= 4)
        ((1,), True)
    """
    prompt_ids = _tokenized_prompts(prompts, tokenizer, max_prompt_length)
    batch_size = max(1, min(batch_size, len(prompt_ids)))  # fewer prompts: no padding rows
    stop = _stop_ids(tokenizer, model)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = int(pad if pad is not None else (stop[0] if stop else 0))
    texts: list[str] = []
    lengths: list[int] = []
    finished: list[bool] = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        rows = chunk + [chunk[i % len(chunk)] for i in range(batch_size - len(chunk))]
        width = bucket_length(max(len(r) for r in rows), "pow2")
        ids = np.full((batch_size, width), pad, np.int32)
        mask = np.zeros((batch_size, width), np.int32)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = row
            mask[i, width - len(row) :] = 1
        out = generate(
            model,
            ids,
            mask,
            max_new_tokens=max_new_tokens,
            stop_token_ids=stop or None,
            pad_token_id=pad,
        )
        tokens, counts, done = (np.asarray(x) for x in (out.tokens, out.lengths, out.done))
        for i in range(len(chunk)):
            text = tokenizer.decode(tokens[i, : counts[i]].tolist(), skip_special_tokens=True)
            texts.append(text.strip())
            lengths.append(int(counts[i]))
            finished.append(bool(done[i]))
    return GeneratedResponses(texts, np.asarray(lengths, np.int64), np.asarray(finished, bool))


def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int = 64,
    max_prompt_length: int = 512,
    batch_size: int = 8,
) -> list[str]:
    """Greedy responses of a :class:`~raco_jax.models.Decoder` to prompts (chat template applied):
    the texts of :func:`greedy_responses`.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.data import byte_tokenizer
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.evaluate import generate_responses
        >>> tokenizer = byte_tokenizer("chatml")
        >>> config = ModelConfig(model_type="qwen3", vocab_size=len(tokenizer), hidden_size=16,
        ...                      intermediate_size=32, num_layers=1, num_heads=2)
        >>> responses = generate_responses(Decoder(config, rngs=nnx.Rngs(0)), tokenizer,
        ...                                ["Hi", "Why?"], max_new_tokens=4)
        >>> len(responses), all(isinstance(r, str) for r in responses)
        (2, True)
    """
    return greedy_responses(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        max_prompt_length=max_prompt_length,
        batch_size=batch_size,
    ).texts
