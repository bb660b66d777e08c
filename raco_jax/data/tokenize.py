"""Tokenise preference pairs for a causal LM and batch them into fixed-shape arrays.

:func:`tokenize_pairs` turns :class:`~raco_jax.data.pairs.PreferencePair` objects into token ids
with the model's tokenizer and chat template; :meth:`TokenizedPairs.collate` and
:class:`PreferenceBatchIterator` pad them into batches of one agreed format (a plain dict of numpy
arrays; ``raco_jax.preference``'s ``PreferenceBatch`` is built from it)::

    input_ids       int32   [2B, T]  rows 0..B-1: prompt + response_a; rows B..2B-1: prompt + response_b
    attention_mask  int32   [2B, T]  1 on real tokens, 0 on padding (RIGHT padding)
    loss_mask       float32 [2B, T]  1 where the token AT that position is a completion token
                                     (the response tokens, end-of-turn tokens and the EOS), else 0
    signs           float32 [K, B]   s_k per pair in {+1, -1, 0} (0 also when unlabeled)
    labeled         float32 [K, B]   1 where the pair is labeled for objective k (ties included)

How a pair becomes tokens:

* Rendering. With ``use_chat_template=True`` and a tokenizer that has a chat template, the prompt
  (a conversation, or a plain string taken as one user turn) is rendered with
  ``add_generation_prompt=True``; prompt plus response (a plain string taken as one assistant
  turn) is rendered without; the completion is the difference (when a template does not render
  the prompt as a prefix, the split falls at the longest common prefix), trailing whitespace
  removed. Plain-string prompts and responses are stripped when wrapped into messages. Without a
  template (or ``use_chat_template=False``), plain strings are used raw (``prompt + response``,
  nothing inserted) and conversations are written in the HH-RLHF transcript format
  (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``).
* Special tokens. Texts are tokenised with ``add_special_tokens=False``; every sequence then
  starts with exactly one BOS when the template wrote one or the tokenizer adds one by default
  (``add_bos=None``; ``True``/``False`` force it), never two. An EOS (``tokenizer.eos_token_id``
  unless ``eos_token_id`` is given) ends every response unless the rendered completion already
  ends with it (Qwen's ``<|im_end|>``, Llama 3's ``<|eot_id|>``); Gemma 3 completions thus end
  ``<end_of_turn><eos>``.
* Truncation. A prompt longer than ``max_prompt_length`` keeps its END (and its BOS); a
  completion keeps its START, first to ``max_completion_length`` (if given), then to what
  ``max_length`` leaves after the prompt. A truncated completion loses its EOS (it did not end).
* Padding. ``T`` is the batch's longest sequence rounded up to a bucket (:func:`bucket_length`:
  powers of two by default, or multiples of an integer, or an explicit list), capped at
  ``max_length``, so that ``jax.jit`` compiles once per bucket rather than once per batch.

Example:

>>> from raco_jax.data import PreferencePair
>>> tokenizer = byte_tokenizer("chatml")
>>> pairs = [PreferencePair("2+2?", "4", "5", {"helpful": 1, "harmless": 0}),
...          PreferencePair("Hi", "Hello!", "Go away.", {"helpful": 1})]
>>> data = tokenize_pairs(pairs, tokenizer, ["helpful", "harmless"], max_length=64,
...                       max_prompt_length=48)
>>> batch = data.collate([0, 1])
>>> {name: (array.shape, array.dtype.name) for name, array in batch.items()}  # doctest: +NORMALIZE_WHITESPACE
{'input_ids': ((4, 32), 'int32'), 'attention_mask': ((4, 32), 'int32'),
 'loss_mask': ((4, 32), 'float32'), 'signs': ((2, 2), 'float32'), 'labeled': ((2, 2), 'float32')}
>>> tokenizer.decode(batch["input_ids"][3][batch["loss_mask"][3] == 1])
'Go away.<|im_end|>'
>>> batch["labeled"].tolist()
[[1.0, 1.0], [1.0, 0.0]]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from raco_jax.data.derived import derived_objectives, derived_sign
from raco_jax.data.pairs import (
    Conversation,
    PreferencePair,
    Text,
    is_conversation,
    objective_signs,
)

__all__ = [
    "BATCH_KEYS",
    "PreferenceBatchIterator",
    "TokenizedPairs",
    "bucket_length",
    "byte_tokenizer",
    "render_pair",
    "tokenize_pairs",
]

#: The keys of a batch, in order.
BATCH_KEYS = ("input_ids", "attention_mask", "loss_mask", "signs", "labeled")

Buckets = str | int | Sequence[int] | None

_HH_LABELS = {"user": "Human", "assistant": "Assistant", "system": "System"}


# ----------------------------------------------------------------------------------------------
# Bucketing
# ----------------------------------------------------------------------------------------------


def bucket_length(length: int, buckets: Buckets = "pow2", max_length: int | None = None) -> int:
    """The padded length for a batch whose longest sequence has ``length`` tokens.

    Args:
        length: the longest sequence, ``>= 1``.
        buckets: ``"pow2"`` (the next power of two), an int ``m`` (the next multiple of ``m``), a
            sorted sequence of allowed lengths (the smallest ``>= length``; ``max_length`` beyond
            the last), or ``None`` (no bucketing: ``length`` itself).
        max_length: the cap; a bucket above it becomes ``max_length``.

    Returns:
        the bucketed length, ``length <= result <= max_length``.

    >>> bucket_length(100), bucket_length(100, 64), bucket_length(100, [96, 128, 256])
    (128, 128, 128)
    >>> bucket_length(600, "pow2", max_length=1000), bucket_length(7, None)
    (1000, 7)
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    length = int(length)
    if max_length is not None and length > max_length:
        raise ValueError(f"length {length} exceeds max_length {max_length}")
    if buckets is None:
        padded = length
    elif buckets == "pow2":
        padded = 1 << (length - 1).bit_length()
    elif isinstance(buckets, (int, np.integer)) and not isinstance(buckets, bool):
        if buckets < 1:
            raise ValueError(f"buckets must be a positive multiple, got {buckets}")
        padded = -(-length // int(buckets)) * int(buckets)
    elif isinstance(buckets, Sequence) and not isinstance(buckets, str):
        fitting = [int(b) for b in buckets if int(b) >= length]
        if fitting:
            padded = min(fitting)
        elif max_length is not None:
            padded = max_length
        else:
            raise ValueError(f"length {length} exceeds every bucket in {list(buckets)}")
    else:
        raise ValueError(
            f"buckets must be 'pow2', a positive int, a sequence of lengths or None; got {buckets!r}"
        )
    return padded if max_length is None else min(padded, max_length)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _messages(text: Text, role: str) -> Conversation:
    if is_conversation(text):
        return [dict(message) for message in text]  # type: ignore[union-attr]
    return [{"role": role, "content": text.strip()}]  # type: ignore[union-attr]


def _hh_render(messages: Conversation, add_generation_prompt: bool) -> str:
    text = "".join(
        f"\n\n{_HH_LABELS.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages
    )
    return text + ("\n\nAssistant:" if add_generation_prompt else "")


def _common_prefix_length(a: str, b: str) -> int:
    n = 0
    for char_a, char_b in zip(a, b, strict=False):
        if char_a != char_b:
            break
        n += 1
    return n


def _split_rendered(prompt_text: str, full_text: str) -> tuple[str, str]:
    if full_text.startswith(prompt_text):
        return prompt_text, full_text[len(prompt_text) :]
    cut = _common_prefix_length(prompt_text, full_text)
    return full_text[:cut], full_text[cut:]


def render_pair(
    pair: PreferencePair,
    tokenizer: Any = None,
    *,
    use_chat_template: bool = True,
    system_prompt: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[str, str], tuple[str, str]]:
    """The texts a pair is tokenised from: ``((prompt_a, completion_a), (prompt_b, completion_b))``.

    The two prompts are equal except for templates that render a prompt differently depending on
    the answer (then each side is split at its own longest common prefix). See the module
    docstring for the rules; ``system_prompt`` adds a system message to templated or
    conversational prompts that have none.

    >>> pair = PreferencePair([{"role": "user", "content": "Hi"}], "Hello", "Bye", {"x": 1})
    >>> render_pair(pair)  # no tokenizer: HH-RLHF transcript format
    (('\\n\\nHuman: Hi\\n\\nAssistant:', ' Hello'), ('\\n\\nHuman: Hi\\n\\nAssistant:', ' Bye'))
    >>> render_pair(pair, byte_tokenizer("chatml"))[0]
    ('<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n', 'Hello<|im_end|>')
    """
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    templated = use_chat_template and bool(template)
    conversational = any(map(is_conversation, (pair.prompt, pair.response_a, pair.response_b)))
    if not templated and not conversational:
        prompt = pair.prompt
        assert isinstance(prompt, str)
        return (prompt, str(pair.response_a)), (prompt, str(pair.response_b))
    prompt_messages = _messages(pair.prompt, "user")
    if system_prompt is not None and prompt_messages[0]["role"] != "system":
        prompt_messages.insert(0, {"role": "system", "content": system_prompt})
    kwargs = dict(chat_template_kwargs or {})

    def render(messages: Conversation, add_generation_prompt: bool) -> str:
        if templated:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
            )
            if not isinstance(text, str):
                raise TypeError(f"apply_chat_template returned {type(text).__name__}, not str")
            return text
        return _hh_render(messages, add_generation_prompt)

    prompt_text = render(prompt_messages, True)
    sides = []
    for response in (pair.response_a, pair.response_b):
        full_text = render(prompt_messages + _messages(response, "assistant"), False)
        side_prompt, completion = _split_rendered(prompt_text, full_text)
        sides.append((side_prompt, completion.rstrip() if templated else completion))
    return sides[0], sides[1]


# ----------------------------------------------------------------------------------------------
# Tokenisation
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TokenizedPairs:
    """Token ids of preference pairs, ready to be collated into batches.

    Attributes:
        input_ids_a: per pair, the ids of prompt + response_a (int32, unpadded).
        prompt_lengths_a: int32 ``[N]``, how many leading ids of ``input_ids_a`` are prompt.
        input_ids_b, prompt_lengths_b: the same for response_b.
        signs: float32 ``[K, N]``; labeled: float32 ``[K, N]`` (see
            :func:`~raco_jax.data.pairs.objective_signs`).
        objectives: the K objective names, in row order of ``signs``.
        pad_token_id: the id written into padding positions.
        max_length: the longest allowed sequence (the largest bucket).
        num_truncated_prompts: pairs whose prompt was cut to ``max_prompt_length``.
        num_truncated_completions: responses (a and b counted separately) that were cut.
    """

    input_ids_a: list[np.ndarray]
    prompt_lengths_a: np.ndarray
    input_ids_b: list[np.ndarray]
    prompt_lengths_b: np.ndarray
    signs: np.ndarray
    labeled: np.ndarray
    objectives: tuple[str, ...]
    pad_token_id: int
    max_length: int
    num_truncated_prompts: int = 0
    num_truncated_completions: int = 0

    def __len__(self) -> int:
        return len(self.input_ids_a)

    def lengths(self) -> np.ndarray:
        """int32 ``[N]``: the longer of the two sequences of each pair."""
        return np.array(
            [max(len(a), len(b)) for a, b in zip(self.input_ids_a, self.input_ids_b, strict=True)],
            np.int32,
        )

    def collate(
        self,
        indices: Sequence[int],
        *,
        batch_size: int | None = None,
        buckets: Buckets = "pow2",
    ) -> dict[str, np.ndarray]:
        """Pad the pairs at ``indices`` into one batch (format in the module docstring).

        Args:
            indices: which pairs, in batch order (``1 <= len(indices) <= batch_size``).
            batch_size: ``B``; when larger than ``len(indices)`` the batch is filled with copies
                of its own pairs whose ``labeled``, ``signs`` and ``loss_mask`` are all 0, so
                they count in no objective's loss (their attention mask stays real, so no row
                is fully masked). Default: ``len(indices)``.
            buckets: the padding rule for ``T`` (see :func:`bucket_length`).

        Returns:
            ``{"input_ids", "attention_mask", "loss_mask", "signs", "labeled"}``.
        """
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("indices must not be empty")
        bad = [i for i in indices if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"indices {bad[:5]} out of range for {len(self)} pairs")
        size = len(indices) if batch_size is None else int(batch_size)
        if size < len(indices):
            raise ValueError(f"batch_size {size} is smaller than len(indices) = {len(indices)}")
        rows = indices + [indices[k % len(indices)] for k in range(size - len(indices))]
        real = np.zeros(size, np.float32)
        real[: len(indices)] = 1.0
        longest = max(max(len(self.input_ids_a[i]), len(self.input_ids_b[i])) for i in set(rows))
        width = bucket_length(longest, buckets, self.max_length)
        input_ids = np.full((2 * size, width), self.pad_token_id, np.int32)
        attention_mask = np.zeros((2 * size, width), np.int32)
        loss_mask = np.zeros((2 * size, width), np.float32)
        for r, i in enumerate(rows):
            for offset, ids, prompt_length in (
                (0, self.input_ids_a[i], self.prompt_lengths_a[i]),
                (size, self.input_ids_b[i], self.prompt_lengths_b[i]),
            ):
                n = len(ids)
                input_ids[offset + r, :n] = ids
                attention_mask[offset + r, :n] = 1
                # The first token has no prediction: it is never scored, even with an empty
                # prompt and no BOS.
                loss_mask[offset + r, max(prompt_length, 1) : n] = real[r]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "loss_mask": loss_mask,
            "signs": self.signs[:, rows] * real,
            "labeled": self.labeled[:, rows] * real,
        }


def _resolve_bos(tokenizer: Any, add_bos: bool | None) -> tuple[int | None, bool]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        if add_bos:
            raise ValueError("add_bos=True but the tokenizer has no bos_token_id")
        return None, False
    if add_bos is None:
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        add_bos = bool(probe) and probe[0] == bos
    return int(bos), bool(add_bos)


def _with_one_bos(ids: list[int], bos: int | None, add_bos: bool) -> list[int]:
    if bos is None:
        return ids
    leading = 0
    while leading < len(ids) and ids[leading] == bos:
        leading += 1
    if leading or add_bos:
        return [bos, *ids[leading:]]
    return ids


def _truncate_prompt(ids: list[int], limit: int, bos: int | None) -> list[int]:
    if len(ids) <= limit:
        return ids
    if bos is not None and ids and ids[0] == bos:
        keep = limit - 1
        return [bos, *ids[len(ids) - keep :]] if keep > 0 else [bos]
    return ids[len(ids) - limit :]


def _check_length(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def tokenize_pairs(
    pairs: Sequence[PreferencePair],
    tokenizer: Any,
    objectives: Sequence[str],
    max_length: int = 1024,
    max_prompt_length: int = 512,
    *,
    max_completion_length: int | None = None,
    use_chat_template: bool = True,
    system_prompt: str | None = None,
    add_bos: bool | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> TokenizedPairs:
    """Tokenise preference pairs with a Hugging Face tokenizer (and its chat template).

    Args:
        pairs: the pairs (from :func:`~raco_jax.data.schemas.load_preferences` or built by hand).
        tokenizer: a ``transformers`` tokenizer (``__call__``, ``apply_chat_template``,
            ``bos_token_id``, ``eos_token_id``, ``pad_token_id``, ``chat_template``).
        objectives: the K objectives, in the order of the batch's ``signs``/``labeled`` rows.
            Derived objectives (``concise``, :mod:`raco_jax.data.derived`) are labeled for
            every pair from the token ids of its two completions (as rendered, before
            truncation); the pairs' own signs give the others.
        max_length: the longest sequence (prompt + completion) in tokens; also the largest
            bucket.
        max_prompt_length: the longest prompt (its end is kept); ``< max_length``, so every
            completion keeps at least one token.
        max_completion_length: optional cap on each completion (its start is kept).
        use_chat_template: render with the tokenizer's chat template when it has one.
        system_prompt: a system message for prompts that have none (templated/conversational).
        add_bos: ``None``: BOS when the template writes one or the tokenizer adds one by default;
            ``True``: always one BOS; ``False``: only one the template wrote. Never two.
        eos_token_id: the id that ends a response (default ``tokenizer.eos_token_id``).
        pad_token_id: the padding id (default ``tokenizer.pad_token_id``, else the EOS id).
        chat_template_kwargs: extra variables for the template (e.g. ``enable_thinking=False``).

    Returns:
        a :class:`TokenizedPairs`.

    >>> from raco_jax.data import PreferencePair
    >>> tokenizer = byte_tokenizer("llama3")
    >>> data = tokenize_pairs([PreferencePair("Hi", "Hello", "Bye", {"helpful": -1})],
    ...                       tokenizer, ["helpful"], max_length=64, max_prompt_length=32)
    >>> ids = data.input_ids_a[0]
    >>> tokenizer.decode(ids[: data.prompt_lengths_a[0]])
    '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n'
    >>> tokenizer.decode(ids[data.prompt_lengths_a[0]:]), data.signs.tolist()
    ('Hello<|eot_id|>', [[-1.0]])
    """
    objectives = tuple(objectives) if not isinstance(objectives, str) else (objectives,)
    if not objectives or len(set(objectives)) != len(objectives):
        raise ValueError(f"objectives must be distinct objective names, got {list(objectives)}")
    max_length = _check_length("max_length", max_length, 2)
    max_prompt_length = _check_length("max_prompt_length", max_prompt_length, 1)
    if max_prompt_length >= max_length:
        raise ValueError(
            f"max_prompt_length ({max_prompt_length}) must be < max_length ({max_length}) so "
            "that every completion keeps at least one token"
        )
    if max_completion_length is not None:
        max_completion_length = _check_length("max_completion_length", max_completion_length, 1)
    for i, pair in enumerate(pairs):
        if not isinstance(pair, PreferencePair):
            raise TypeError(f"pairs[{i}] must be a PreferencePair, got {type(pair).__name__}")
    eos = eos_token_id if eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; pass eos_token_id=")
    pad = pad_token_id if pad_token_id is not None else getattr(tokenizer, "pad_token_id", None)
    pad = int(eos if pad is None else pad)
    bos, bos_by_default = _resolve_bos(tokenizer, add_bos)

    texts: list[str] = []
    for i, pair in enumerate(pairs):
        try:
            (prompt_a, completion_a), (prompt_b, completion_b) = render_pair(
                pair,
                tokenizer,
                use_chat_template=use_chat_template,
                system_prompt=system_prompt,
                chat_template_kwargs=chat_template_kwargs,
            )
        except Exception as err:
            raise ValueError(f"pairs[{i}] (row {pair.row} of {pair.source}): {err}") from err
        texts.extend((prompt_a, completion_a, prompt_b, completion_b))
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    derived = [(k, name) for k, name in enumerate(objectives) if name in derived_objectives()]
    derived_signs: list[list[int]] = [[] for _ in derived]
    sequences: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    prompt_lengths: tuple[list[int], list[int]] = ([], [])
    truncated_prompts = truncated_completions = 0
    for i in range(len(pairs)):
        prompt_cut = False
        for side in (0, 1):
            prompt_ids = _with_one_bos(list(encoded[4 * i + 2 * side]), bos, bos_by_default)
            if not prompt_ids:
                pair = pairs[i]
                raise ValueError(
                    f"pairs[{i}] (row {pair.row} of {pair.source}): the prompt has no tokens; the "
                    "first token of a sequence has no prediction, so a response cannot start it"
                )
            completion = list(encoded[4 * i + 2 * side + 1])
            if not completion or completion[-1] != eos:
                completion.append(int(eos))
            kept = _truncate_prompt(prompt_ids, max_prompt_length, bos)
            prompt_cut |= len(kept) < len(prompt_ids)
            room = max_length - len(kept)
            if max_completion_length is not None:
                room = min(room, max_completion_length)
            if len(completion) > room:
                completion = completion[:room]
                truncated_completions += 1
            sequences[side].append(np.asarray(kept + completion, np.int32))
            prompt_lengths[side].append(len(kept))
        truncated_prompts += prompt_cut
        for row, (_, name) in enumerate(derived):  # from the untruncated completions
            ids_a, ids_b = encoded[4 * i + 1], encoded[4 * i + 3]
            derived_signs[row].append(derived_sign(name, ids_a, ids_b))
    signs, labeled = objective_signs(pairs, objectives)
    for row, (k, _) in enumerate(derived):
        signs[k] = np.asarray(derived_signs[row], np.float32).reshape(-1)
        labeled[k] = 1.0
    return TokenizedPairs(
        input_ids_a=sequences[0],
        prompt_lengths_a=np.asarray(prompt_lengths[0], np.int32),
        input_ids_b=sequences[1],
        prompt_lengths_b=np.asarray(prompt_lengths[1], np.int32),
        signs=signs,
        labeled=labeled,
        objectives=objectives,
        pad_token_id=pad,
        max_length=max_length,
        num_truncated_prompts=truncated_prompts,
        num_truncated_completions=truncated_completions,
    )


# ----------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------


class PreferenceBatchIterator:
    """Deterministically shuffled, resumable batches of :class:`TokenizedPairs`.

    Epoch ``e`` visits the pairs in the order ``numpy.random.default_rng([seed, e]).permutation``
    (or in order with ``shuffle=False``), ``batch_size`` pairs at a time. The last, partial batch
    of an epoch is dropped (``drop_last=True``), padded to ``batch_size`` with rows that count in
    no loss (``pad_last=True``, the default; see :meth:`TokenizedPairs.collate`), or yielded
    short (both ``False``; one more compiled shape). :meth:`state_dict` saves the position (epoch,
    batch) as a JSON-ready dict; :meth:`load_state_dict` on a fresh iterator over the same data
    continues with exactly the batches that would have come next.

    Args:
        tokenized: the tokenised pairs.
        batch_size: pairs per batch (``B``; a batch has ``2B`` sequences).
        shuffle, seed: the order.
        drop_last, pad_last: the last-batch policy.
        buckets: the padding rule for ``T`` (:func:`bucket_length`).
        num_epochs: stop after this many epochs; ``None``: never stop.

    >>> from raco_jax.data import PreferencePair
    >>> pairs = [PreferencePair(f"q{i}", "yes", "no", {"helpful": 1}) for i in range(5)]
    >>> data = tokenize_pairs(pairs, byte_tokenizer(None), ["helpful"], 32, 16)
    >>> batches = PreferenceBatchIterator(data, batch_size=2, seed=0)
    >>> first = next(batches)
    >>> state = batches.state_dict()
    >>> rest = [b["labeled"].tolist() for b in batches]
    >>> rest  # the last batch holds one real pair and one padding row
    [[[1.0, 1.0]], [[1.0, 0.0]]]
    >>> resumed = PreferenceBatchIterator(data, batch_size=2, seed=0)
    >>> resumed.load_state_dict(state)
    >>> [b["labeled"].tolist() for b in resumed] == rest
    True
    """

    def __init__(
        self,
        tokenized: TokenizedPairs,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        pad_last: bool = True,
        buckets: Buckets = "pow2",
        num_epochs: int | None = 1,
    ) -> None:
        if not isinstance(tokenized, TokenizedPairs):
            raise TypeError(f"tokenized must be TokenizedPairs, got {type(tokenized).__name__}")
        self.tokenized = tokenized
        self.batch_size = _check_length("batch_size", batch_size, 1)
        self.shuffle = bool(shuffle)
        self.seed = _check_length("seed", seed, 0)
        self.drop_last = bool(drop_last)
        self.pad_last = bool(pad_last)
        self.buckets = buckets
        if num_epochs is not None:
            num_epochs = _check_length("num_epochs", num_epochs, 1)
        self.num_epochs = num_epochs
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"no batch: {len(tokenized)} pairs, batch_size {self.batch_size}, drop_last=True"
            )
        self.epoch = 0
        self.batch_index = 0
        self._order_epoch = -1
        self._order = np.arange(0)

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one epoch under the last-batch policy."""
        n = len(self.tokenized)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        if self.num_epochs is None:
            raise TypeError("an iterator with num_epochs=None has no length")
        return self.batches_per_epoch * self.num_epochs

    def order(self, epoch: int) -> np.ndarray:
        """The pair indices of ``epoch``, in visiting order."""
        if epoch != self._order_epoch:
            n = len(self.tokenized)
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(n)
            else:
                self._order = np.arange(n)
            self._order_epoch = epoch
        return self._order

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return self.next_with_indices()[1]

    def next_with_indices(self) -> tuple[list[int], dict[str, np.ndarray]]:
        """The next batch together with the indices of its real pairs (in batch order), for
        gathering per-pair values (cached reference log-probs, ...) into batch layout.

        Raises:
            StopIteration: after ``num_epochs`` epochs.

        >>> from raco_jax.data import PreferencePair
        >>> pairs = [PreferencePair(f"q{i}", "yes", "no", {"helpful": 1}) for i in range(3)]
        >>> data = tokenize_pairs(pairs, byte_tokenizer(None), ["helpful"], 32, 16)
        >>> batches = PreferenceBatchIterator(data, batch_size=2, shuffle=False)
        >>> [batches.next_with_indices()[0] for _ in range(2)]
        [[0, 1], [2]]
        """
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        order = self.order(self.epoch)
        start = self.batch_index * self.batch_size
        indices = order[start : start + self.batch_size].tolist()
        self.batch_index += 1
        if self.batch_index >= self.batches_per_epoch:
            self.epoch += 1
            self.batch_index = 0
        batch_size = self.batch_size if self.pad_last else None
        return indices, self.tokenized.collate(indices, batch_size=batch_size, buckets=self.buckets)

    def state_dict(self) -> dict[str, Any]:
        """The position and the settings it is only valid for (a JSON-ready dict)."""
        return {
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_pairs": len(self.tokenized),
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`; the data and settings must match."""
        current = self.state_dict()
        for key in ("seed", "shuffle", "num_pairs", "batch_size", "drop_last"):
            if key not in state:
                raise ValueError(f"state lacks {key!r}; expected a PreferenceBatchIterator state")
            if state[key] != current[key]:
                raise ValueError(
                    f"state[{key!r}] = {state[key]!r} does not match this iterator's {current[key]!r}"
                )
        epoch, batch_index = int(state["epoch"]), int(state["batch_index"])
        if epoch < 0 or not 0 <= batch_index < self.batches_per_epoch:
            raise ValueError(f"state position epoch={epoch}, batch_index={batch_index} is invalid")
        self.epoch, self.batch_index = epoch, batch_index


# ----------------------------------------------------------------------------------------------
# A tiny offline tokenizer for examples and tests
# ----------------------------------------------------------------------------------------------

_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
_GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

_STYLES: dict[str | None, dict[str, Any]] = {
    "chatml": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": None,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "template": _CHATML_TEMPLATE,
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
        "template": _LLAMA3_TEMPLATE,
    },
    "gemma3": {
        "specials": ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "bos": "<bos>",
        "eos": "<eos>",
        "pad": "<pad>",
        "template": _GEMMA3_TEMPLATE,
    },
    None: {
        "specials": ["<pad>", "<s>", "</s>"],
        "bos": "<s>",
        "eos": "</s>",
        "pad": "<pad>",
        "template": None,
    },
}


def byte_tokenizer(style: str | None = "chatml") -> Any:
    """A tiny offline byte-level tokenizer (one token per UTF-8 byte) with a family-style template.

    For examples, tests and toy tasks: no download, exact decoding, and token counts equal to
    byte counts. ``style``:

    * ``"chatml"`` (Qwen 3 style): ``<|im_start|>role\\n...<|im_end|>``, no BOS, EOS
      ``<|im_end|>``, pad ``<|endoftext|>``;
    * ``"llama3"``: ``<|begin_of_text|>`` (BOS, written by the template and added by the
      tokenizer), ``<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>``, EOS
      ``<|eot_id|>``;
    * ``"gemma3"``: ``<bos>`` (template and tokenizer), ``<start_of_turn>user\\n...<end_of_turn>``
      with the assistant as ``model``, EOS ``<eos>``;
    * ``None``: no chat template; ``<s>`` added as BOS, EOS ``</s>``.

    Needs ``tokenizers`` and ``transformers``.

    >>> tokenizer = byte_tokenizer("gemma3")
    >>> tokenizer("hé")["input_ids"][0] == tokenizer.bos_token_id, len(tokenizer("hé")["input_ids"])
    (True, 4)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if style not in _STYLES:
        raise ValueError(f"style must be one of {list(_STYLES)}, got {style!r}")
    spec = _STYLES[style]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    model = models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[])
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(spec["specials"])
    if spec["bos"] is not None:
        bos_id = backend.token_to_id(spec["bos"])
        backend.post_processor = processors.TemplateProcessing(
            single=f"{spec['bos']} $A",
            pair=f"{spec['bos']} $A $B",
            special_tokens=[(spec["bos"], bos_id)],
        )
    kwargs = {"eos_token": spec["eos"], "pad_token": spec["pad"]}
    if spec["bos"] is not None:
        kwargs["bos_token"] = spec["bos"]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    if spec["template"] is not None:
        tokenizer.chat_template = spec["template"]
    return tokenizer
