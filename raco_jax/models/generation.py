"""Batched autoregressive generation with the KV cache: greedy, temperature, top-k and top-p.

`generate` runs one jitted program per static shape: a prefill of the whole (padded) prompt
into a `KVCache`, then a `jax.lax.while_loop` of one-token decode steps that stops as soon as
every row has emitted a stop token (or after ``max_new_tokens``). Only the last position of
each step is projected onto the vocabulary (``Decoder.hidden_states`` +
``Decoder.logits_from_hidden``). The compiled program is cached on the model's structure
(`nnx.graphdef`), the batch and prompt sizes, ``max_new_tokens`` and the discrete options
(greedy or sampling, top-k, whether top-p is on, stop tokens, pad id), so a second call with
the same shapes reuses it; ``temperature`` and ``top_p`` are traced values and can change
without recompiling.

Token selection at each step, from float32 logits ``z`` of the last position:

* greedy (``temperature == 0``): ``argmax z``;
* sampling: ``z / temperature``, then (``top_k > 0``) only the ``top_k`` largest logits kept,
  then (``top_p < 1``) only the smallest set of most likely tokens whose probability reaches
  ``top_p`` (nucleus sampling; the most likely token is always kept), then a categorical draw
  with ``jax.random.fold_in(key, step)``: the same key gives the same tokens.

Prompts may be left-padded (as transformers' generation expects) or right-padded: padding is
excluded from attention through the cache's ``key_valid`` and RoPE positions count only real
tokens. Once a row emits a stop token, its later tokens are ``pad_token_id``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from raco_jax.models.decoder import Decoder

__all__ = ["GenerationConfig", "GenerationOutput", "generate"]

DTypeLike = Any

# Incremented each time the generation program is traced (tests check it stays put).
_TRACE_COUNT = 0


def _stop_ids(value: int | Sequence[int] | None, name: str = "stop_token_ids") -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),)
    try:
        ids = tuple(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an int, a sequence of ints or None, got {type(value).__name__}"
        ) from None
    for token in ids:
        if not isinstance(token, (int, np.integer)) or isinstance(token, bool) or token < 0:
            raise ValueError(f"{name} must hold non-negative ints, got {value!r}")
    return tuple(int(token) for token in ids)


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Settings of `generate` (each can also be given, or overridden, as a keyword of it).

    Attributes:
        max_new_tokens: number of tokens to generate per row (the output width).
        temperature: 0 for greedy decoding, > 0 to sample from ``softmax(logits / temperature)``.
        top_p: nucleus sampling mass in ``(0, 1]``; 1 disables it (sampling only).
        top_k: keep only the ``top_k`` most likely tokens when sampling; 0 disables it.
        stop_token_ids: token ids that end a row (it is kept in the output; ``pad_token_id``
            follows). An int, a sequence, or None (never stop early); a model's
            ``config.eos_token_id`` can be passed as is.
        pad_token_id: the id written after a row's stop token.

    Example:
        >>> from raco_jax.models import GenerationConfig
        >>> GenerationConfig(max_new_tokens=8, stop_token_ids=2).stop_token_ids
        (2,)
    """

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        n = self.max_new_tokens
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"max_new_tokens must be a positive int, got {n!r}")
        object.__setattr__(self, "max_new_tokens", int(n))
        try:
            temperature = float(self.temperature)
        except (TypeError, ValueError):
            raise TypeError(
                f"temperature must be a float, got {type(self.temperature).__name__}"
            ) from None
        if not (np.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature!r}")
        object.__setattr__(self, "temperature", temperature)
        try:
            top_p = float(self.top_p)
        except (TypeError, ValueError):
            raise TypeError(f"top_p must be a float, got {type(self.top_p).__name__}") from None
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        object.__setattr__(self, "top_p", top_p)
        k = self.top_k
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0: disabled), got {k!r}")
        object.__setattr__(self, "top_k", int(k))
        object.__setattr__(self, "stop_token_ids", _stop_ids(self.stop_token_ids))
        pad = self.pad_token_id
        if not isinstance(pad, (int, np.integer)) or isinstance(pad, bool) or pad < 0:
            raise ValueError(f"pad_token_id must be an int >= 0, got {pad!r}")
        object.__setattr__(self, "pad_token_id", int(pad))

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (``temperature == 0``)."""
        return self.temperature == 0.0


class GenerationOutput(NamedTuple):
    """What `generate` returns.

    Attributes:
        tokens: ``[B, max_new_tokens]`` int32 generated ids; after a row's stop token (which is
            included) the row holds ``pad_token_id``.
        lengths: ``[B]`` int32, the number of generated tokens of each row, stop token included.
        done: ``[B]`` bool, whether the row emitted a stop token.

    Example:
        >>> import jax.numpy as jnp
        >>> from raco_jax.models.generation import GenerationOutput
        >>> out = GenerationOutput(jnp.array([[5, 2, 0]]), jnp.array([2]), jnp.array([True]))
        >>> tokens, lengths, done = out                      # unpacks like a tuple
        >>> tokens[0, : int(lengths[0])].tolist()
        [5, 2]
    """

    tokens: jax.Array
    lengths: jax.Array
    done: jax.Array


def _select_tokens(
    logits: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    sample: bool,
    top_k: int,
    use_top_p: bool,
) -> jax.Array:
    """Next tokens ``[B]`` from float32 logits ``[B, V]`` (see the module docstring)."""
    if not sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    neg_inf = jnp.asarray(-jnp.inf, logits.dtype)
    if 0 < top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, neg_inf)
    if use_top_p:
        descending = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(descending, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        num_kept = jnp.maximum(jnp.sum(mass_before < top_p, axis=-1, keepdims=True), 1)
        threshold = jnp.take_along_axis(descending, num_kept - 1, axis=-1)
        logits = jnp.where(logits >= threshold, logits, neg_inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "max_new_tokens",
        "sample",
        "top_k",
        "use_top_p",
        "stop_token_ids",
        "pad_token_id",
        "cache_dtype",
    ),
)
def _generate_program(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    max_new_tokens: int,
    sample: bool,
    top_k: int,
    use_top_p: bool,
    stop_token_ids: tuple[int, ...],
    pad_token_id: int,
    cache_dtype: DTypeLike,
) -> GenerationOutput:
    global _TRACE_COUNT
    _TRACE_COUNT += 1

    def model_view() -> Decoder:
        # A fresh module per traced scope (NNX forbids using Variables across trace levels);
        # eval() makes any dropout (e.g. LoRA dropout) deterministic in this local copy only.
        model = nnx.merge(graphdef, state)
        model.eval()
        return model

    select = functools.partial(
        _select_tokens,
        temperature=temperature,
        top_p=top_p,
        sample=sample,
        top_k=top_k,
        use_top_p=use_top_p,
    )
    stops = jnp.asarray(stop_token_ids, jnp.int32)

    def is_stop(tokens: jax.Array) -> jax.Array:
        if not stop_token_ids:
            return jnp.zeros(tokens.shape, bool)
        return jnp.any(tokens[:, None] == stops[None, :], axis=-1)

    batch, prompt_len = input_ids.shape
    model = model_view()
    cache = model.init_cache(batch, prompt_len + max_new_tokens, dtype=cache_dtype)
    hidden, cache = model.hidden_states(input_ids, attention_mask, cache=cache)
    # The last real token of each row (the last column when left-padded).
    slots = jnp.arange(prompt_len, dtype=jnp.int32)
    last = jnp.max(jnp.where(attention_mask, slots[None, :], 0), axis=1)
    last_hidden = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    first = select(model.logits_from_hidden(last_hidden), jax.random.fold_in(key, 0))

    tokens = jnp.full((batch, max_new_tokens), pad_token_id, jnp.int32)
    tokens = tokens.at[:, 0].set(first)
    done = is_stop(first)
    lengths = jnp.ones((batch,), jnp.int32)

    def cond(carry: tuple[Any, ...]) -> jax.Array:
        step, _, _, _, done, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        step, tokens, cache, previous, done, lengths = carry
        model = model_view()
        ones = jnp.ones((batch, 1), bool)
        hidden, cache = model.hidden_states(previous[:, None], ones, cache=cache)
        logits = model.logits_from_hidden(hidden[:, 0])
        token = select(logits, jax.random.fold_in(key, step))
        token = jnp.where(done, jnp.int32(pad_token_id), token)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (jnp.int32(0), step))
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | is_stop(token)
        return step + 1, tokens, cache, token, done, lengths

    carry = (jnp.int32(1), tokens, cache, first, done, lengths)
    _, tokens, _, _, done, lengths = jax.lax.while_loop(cond, body, carry)
    return GenerationOutput(tokens=tokens, lengths=lengths, done=done)


def generate(
    model: Decoder,
    input_ids: jax.Array | np.ndarray,
    attention_mask: jax.Array | np.ndarray | None = None,
    *,
    max_new_tokens: int | None = None,
    key: jax.Array | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    stop_token_ids: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    config: GenerationConfig | None = None,
    cache_dtype: DTypeLike | None = None,
) -> GenerationOutput:
    """Generate ``max_new_tokens`` tokens per row with the KV cache (one jitted program).

    The prompt is prefilled once into a cache of ``prompt_len + max_new_tokens`` slots; a
    `jax.lax.while_loop` then decodes one token per step until every row has emitted a stop
    token or ``max_new_tokens`` are out. Each keyword left as None comes from ``config``
    (default ``GenerationConfig``); a keyword given overrides ``config``. The model is not
    modified; dropout (e.g. of LoRA adapters) is off during generation.

    Args:
        model: a `Decoder` (or one with LoRA adapters, `raco_jax.models.apply_lora`).
        input_ids: ``[B, P]`` prompt ids, left- (as in transformers) or right-padded.
        attention_mask: ``[B, P]`` 1 for real prompt tokens, 0 for padding (default: all 1).
        max_new_tokens: output width (required, here or in ``config``).
        key: a PRNG key (``jax.random.key`` or ``PRNGKey``); required when sampling.
        temperature: 0 (default) for greedy decoding, > 0 for sampling.
        top_p: nucleus mass in ``(0, 1]`` (default 1: off); sampling only.
        top_k: keep the ``top_k`` most likely tokens (default 0: off); sampling only.
        stop_token_ids: id(s) that end a row (kept in the output), e.g.
            ``model.config.eos_token_id``; default none.
        pad_token_id: id written after a row's stop token (default 0).
        config: a `GenerationConfig` holding the settings above.
        cache_dtype: KV-cache dtype (default: the model's compute dtype).

    Returns:
        `GenerationOutput` ``(tokens [B, max_new_tokens] int32, lengths [B] int32, done [B]
        bool)``.

    Raises:
        ValueError / TypeError: naming the argument, for bad shapes or settings, or sampling
            without a key.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig, generate
        >>> c = ModelConfig(model_type="llama", vocab_size=64, hidden_size=32,
        ...                 intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
        >>> model = Decoder(c, rngs=nnx.Rngs(0))
        >>> ids = jnp.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])     # row 0 left-padded
        >>> mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
        >>> out = generate(model, ids, mask, max_new_tokens=4)      # greedy
        >>> out.tokens.shape, out.lengths.tolist()
        ((2, 4), [4, 4])
        >>> sampled = generate(model, ids, mask, max_new_tokens=4, temperature=0.8, top_p=0.9,
        ...                    key=jax.random.key(0))
        >>> bool((sampled.tokens == generate(model, ids, mask, max_new_tokens=4,
        ...     temperature=0.8, top_p=0.9, key=jax.random.key(0)).tokens).all())
        True
    """
    if not isinstance(model, nnx.Module) or not hasattr(model, "hidden_states"):
        raise TypeError(f"model must be a raco_jax Decoder, got {type(model).__name__}")
    if config is None:
        if max_new_tokens is None:
            raise TypeError("generate() needs max_new_tokens (or a GenerationConfig as config=)")
        config = GenerationConfig(max_new_tokens=max_new_tokens)
    elif not isinstance(config, GenerationConfig):
        raise TypeError(f"config must be a GenerationConfig, got {type(config).__name__}")
    overrides = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "stop_token_ids": stop_token_ids,
        "pad_token_id": pad_token_id,
    }
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if overrides:
        config = dataclasses.replace(config, **overrides)

    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be [batch, prompt_len > 0], got shape {input_ids.shape}")
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise TypeError(f"input_ids must hold integers, got dtype {input_ids.dtype}")
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, bool)
    else:
        attention_mask = jnp.asarray(attention_mask)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids {input_ids.shape}, "
                f"got {attention_mask.shape}"
            )
        attention_mask = attention_mask.astype(bool)
    vocab = model.config.vocab_size
    if config.pad_token_id >= vocab or any(t >= vocab for t in config.stop_token_ids):
        raise ValueError(
            f"pad_token_id={config.pad_token_id} and stop_token_ids={config.stop_token_ids} "
            f"must be < vocab_size={vocab}"
        )
    sample = not config.greedy
    if key is None:
        if sample:
            raise ValueError(
                f"temperature={config.temperature} > 0 samples tokens: pass key= (a PRNG key)"
            )
        key = jax.random.key(0)  # unused by greedy decoding
    elif not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax PRNG key, got {type(key).__name__}")

    graphdef, state = nnx.split(model)
    cache_dtype = jnp.dtype(cache_dtype if cache_dtype is not None else model.dtype)
    return _generate_program(
        graphdef,
        state,
        input_ids.astype(jnp.int32),
        attention_mask,
        key,
        jnp.float32(config.temperature if sample else 1.0),
        jnp.float32(config.top_p),
        max_new_tokens=config.max_new_tokens,
        sample=sample,
        top_k=config.top_k if sample else 0,
        use_top_p=sample and config.top_p < 1.0,
        stop_token_ids=config.stop_token_ids,
        pad_token_id=config.pad_token_id,
        cache_dtype=cache_dtype,
    )
