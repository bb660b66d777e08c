"""One configurable Flax NNX decoder for the Llama 3, Qwen 3 and Gemma 3 (text) families.

The module tree mirrors the Hugging Face parameter names so that checkpoint keys map one to one
(``model.layers.3.self_attn.q_proj.weight`` is ``decoder.layers[3].self_attn.q_proj.kernel``):

```
Decoder
  embed_tokens: Embedding           embedding [vocab, embed]
  layers: nnx.List[DecoderLayer]
    input_layernorm: RMSNorm        weight [embed]
    self_attn: Attention
      q_proj: Linear                kernel [embed, heads, head_dim]
      k_proj, v_proj: Linear        kernel [embed, kv_heads, head_dim]
      o_proj: Linear                kernel [heads, head_dim, embed]
      q_norm, k_norm: RMSNorm       weight [head_dim]            (Qwen 3, Gemma 3)
    post_attention_layernorm        (Llama/Qwen: the pre-MLP norm; Gemma: norm of the attn output)
    pre_feedforward_layernorm       (Gemma 3 only)
    post_feedforward_layernorm      (Gemma 3 only)
    mlp: MLP
      gate_proj, up_proj: Linear    kernel [embed, mlp]
      down_proj: Linear             kernel [mlp, embed]
  norm: RMSNorm
  lm_head: Linear | None            kernel [embed, vocab] (None when embeddings are tied)
```

Every parameter is an `nnx.Param` whose ``out_sharding`` metadata holds logical axis names from
the vocabulary ``vocab, embed, heads, kv_heads, head_dim, mlp, norm``; `raco_jax.models.sharding`
maps them to mesh axes. Metadata is stored with ``eager_sharding=False``: the names are logical,
never applied by Flax itself.

KV cache (`KVCache`), for prefill and one-token decode with static shapes:

* ``keys[i]``, ``values[i]``: layer ``i``'s keys/values, ``[B, max_len, kv_heads, head_dim]``
  (RoPE already applied to the keys), in the cache dtype (default: the compute dtype).
* ``key_positions``: ``[B, max_len]`` int32, the RoPE position of the token in each slot.
* ``key_valid``: ``[B, max_len]`` bool, whether a slot holds a real (non-pad) token.
* ``length``: int32 scalar, the number of slots written so far (the same for every row).

A call with ``cache=`` writes its ``T`` new tokens into slots ``[length, length + T)`` of every
row (their ``attention_mask`` marks which are real) and returns ``(logits, new_cache)`` with
``length + T``. Slots are causal by index; padding is excluded through ``key_valid``; sliding
windows compare RoPE positions. Default positions continue each row from
``cache.next_positions()`` (one past its last real token), so a left-padded prompt (as
``transformers`` generation uses) or a right-padded one both work. The caller must keep
``length + T <= max_len``: under `jax.jit` an overflowing write cannot raise and would clamp.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from raco_jax.models.config import FULL_ATTENTION, SLIDING_ATTENTION, ModelConfig
from raco_jax.models.rope import apply_rope, inverse_frequencies, rope_cos_sin

__all__ = [
    "MLP",
    "Attention",
    "Decoder",
    "DecoderLayer",
    "Embedding",
    "KVCache",
    "Linear",
    "RMSNorm",
    "default_positions",
]

DTypeLike = Any
_INIT_STD = 0.02


def _param(
    rngs: nnx.Rngs | None,
    shape: Sequence[int],
    axes: tuple[str | None, ...],
    param_dtype: DTypeLike,
    *,
    fill: float | None = None,
) -> nnx.Param:
    """An nnx.Param with logical axis names (``out_sharding``), random normal or constant."""
    shape = tuple(int(s) for s in shape)
    if fill is not None:
        value = jnp.full(shape, fill, param_dtype)
    else:
        if rngs is None:
            raise ValueError("rngs is required to initialise random parameters")
        value = (_INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(
            param_dtype
        )
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


class Linear(nnx.Module):
    """A bias-free linear map contracting the last ``len(in_features)`` axes of its input.

    ``kernel`` has shape ``in_features + out_features`` (e.g. ``[embed, heads, head_dim]`` for
    a query projection), so heads never need a reshape.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models.decoder import Linear
        >>> proj = Linear((8,), (2, 4), axes=("embed", "heads", "head_dim"), rngs=nnx.Rngs(0))
        >>> proj(jnp.ones((3, 5, 8))).shape
        (3, 5, 2, 4)
    """

    def __init__(
        self,
        in_features: Sequence[int],
        out_features: Sequence[int],
        *,
        axes: tuple[str | None, ...],
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        self.in_ndim = len(in_features)
        self.dtype = dtype
        self.kernel = _param(rngs, (*in_features, *out_features), axes, param_dtype)

    def __call__(self, x: jax.Array, *, out_dtype: DTypeLike | None = None) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        return jnp.tensordot(
            x.astype(self.dtype), kernel, axes=self.in_ndim, preferred_element_type=out_dtype
        )


class Embedding(nnx.Module):
    """Token embedding table ``[vocab, embed]``; `attend` is the tied output projection.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models.decoder import Embedding
        >>> emb = Embedding(16, 8, rngs=nnx.Rngs(0))
        >>> emb(jnp.array([[1, 2]])).shape, emb.attend(jnp.ones((1, 2, 8))).shape
        ((1, 2, 8), (1, 2, 16))
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        self.dtype = dtype
        self.embedding = _param(rngs, (num_embeddings, features), ("vocab", "embed"), param_dtype)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], input_ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array, *, out_dtype: DTypeLike | None = jnp.float32) -> jax.Array:
        table = self.embedding[...].astype(self.dtype)
        return jnp.einsum(
            "...d,vd->...v", x.astype(self.dtype), table, preferred_element_type=out_dtype
        )


class RMSNorm(nnx.Module):
    """RMS normalisation over the last axis, computed in float32.

    ``offset=False`` (Llama, Qwen): ``w * cast(x_hat)``, weights initialised to 1.
    ``offset=True`` (Gemma): ``cast(x_hat * (1 + w))``, weights initialised to 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from raco_jax.models.decoder import RMSNorm
        >>> RMSNorm(4)(jnp.full((1, 4), 3.0)).round(3).tolist()
        [[1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(
        self,
        features: int,
        *,
        eps: float = 1e-6,
        offset: bool = False,
        param_dtype: DTypeLike = jnp.float32,
    ) -> None:
        self.eps = float(eps)
        self.offset = bool(offset)
        self.weight = _param(None, (features,), ("norm",), param_dtype, fill=0.0 if offset else 1.0)

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        xf = x.astype(jnp.float32)
        # x / sqrt, not x * rsqrt: jax 0.10.2's XLA:CPU miscompiles the vmapped backward pass
        # of the rsqrt form from 2048 rows on (the per-objective gradients of objectives 2..K
        # came out 40% wrong; tests/core/test_objectives.py checks it at 2048 rows).
        xf = xf / jnp.sqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        weight = self.weight[...]
        if self.offset:
            return (xf * (1.0 + weight.astype(jnp.float32))).astype(dtype)
        return weight.astype(dtype) * xf.astype(dtype)


class MLP(nnx.Module):
    """Gated MLP: ``down(act(gate(x)) * up(x))`` with SiLU (Llama, Qwen) or tanh-GELU (Gemma).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models.decoder import MLP
        >>> MLP(8, 16, activation="silu", rngs=nnx.Rngs(0))(jnp.ones((2, 8))).shape
        (2, 8)
    """

    def __init__(
        self,
        features: int,
        hidden: int,
        *,
        activation: str,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        if activation not in ("silu", "gelu_tanh"):
            raise ValueError(f"activation must be 'silu' or 'gelu_tanh', got {activation!r}")
        self.activation = activation
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.gate_proj = Linear((features,), (hidden,), axes=("embed", "mlp"), **kw)
        self.up_proj = Linear((features,), (hidden,), axes=("embed", "mlp"), **kw)
        self.down_proj = Linear((hidden,), (features,), axes=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        gate = self.gate_proj(x)
        if self.activation == "silu":
            gate = jax.nn.silu(gate)
        else:
            gate = jax.nn.gelu(gate, approximate=True)
        return self.down_proj(gate * self.up_proj(x))


class Attention(nnx.Module):
    """Grouped-query self-attention with RoPE, optional q/k norms and a KV cache.

    No attention-logit soft-capping: transformers' Gemma 3 ignores ``attn_logit_softcapping``
    (only Gemma 2 used it), and so does this module, to keep logit parity.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models import ModelConfig
        >>> from raco_jax.models.decoder import Attention
        >>> c = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
        >>> attn = Attention(c, rngs=nnx.Rngs(0))
        >>> cos, sin = jnp.ones((1, 3, 4)), jnp.zeros((1, 3, 4))
        >>> out, _ = attn(jnp.ones((1, 3, 16)), cos, sin, jnp.tril(jnp.ones((1, 3, 3), bool)))
        >>> out.shape
        (1, 3, 16)
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        d, h, kv, hd = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        self.num_kv_heads, self.num_groups, self.head_dim = kv, config.num_groups, hd
        self.scale = config.attention_scale
        self.dtype = dtype
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.q_proj = Linear((d,), (h, hd), axes=("embed", "heads", "head_dim"), **kw)
        self.k_proj = Linear((d,), (kv, hd), axes=("embed", "kv_heads", "head_dim"), **kw)
        self.v_proj = Linear((d,), (kv, hd), axes=("embed", "kv_heads", "head_dim"), **kw)
        self.o_proj = Linear((h, hd), (d,), axes=("heads", "head_dim", "embed"), **kw)
        if config.qk_norm:
            nkw = {"eps": config.rms_norm_eps, "offset": config.is_gemma}
            self.q_norm = RMSNorm(hd, param_dtype=param_dtype, **nkw)
            self.k_norm = RMSNorm(hd, param_dtype=param_dtype, **nkw)
        else:
            self.q_norm = None
            self.k_norm = None

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        mask: jax.Array,
        cache_kv: tuple[jax.Array, jax.Array] | None = None,
        cache_start: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """Attend ``x`` ``[B, T, embed]`` under ``mask`` ``[B, T, S]`` (True = may attend).

        Without a cache, ``S == T``. With ``cache_kv`` (keys, values ``[B, S, kv, head_dim]``)
        the new keys/values are written at slot ``cache_start`` and the updated pair returned.
        """
        batch, length = x.shape[:2]
        q = self.q_proj(x)
        k = self.k_proj(x)
        v = self.v_proj(x)
        if self.q_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        new_kv = None
        if cache_kv is not None:
            cache_k, cache_v = cache_kv
            zero = jnp.zeros((), jnp.int32)
            start = (zero, jnp.asarray(cache_start, jnp.int32), zero, zero)
            cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), start)
            cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), start)
            new_kv = (cache_k, cache_v)
            k, v = cache_k.astype(self.dtype), cache_v.astype(self.dtype)
        q = q.reshape(batch, length, self.num_kv_heads, self.num_groups, self.head_dim)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k) * jnp.asarray(self.scale, q.dtype)
        scores = scores.astype(jnp.float32)
        scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
        out = out.reshape(batch, length, self.num_kv_heads * self.num_groups, self.head_dim)
        return self.o_proj(out), new_kv


class DecoderLayer(nnx.Module):
    """One pre-norm transformer block (Gemma 3: with post-attention and post-MLP norms too).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models import ModelConfig
        >>> from raco_jax.models.decoder import DecoderLayer
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> layer = DecoderLayer(c, 0, rngs=nnx.Rngs(0))
        >>> cos, sin = jnp.ones((1, 3, 4)), jnp.zeros((1, 3, 4))
        >>> layer(jnp.ones((1, 3, 16)), cos, sin, jnp.ones((1, 3, 3), bool))[0].shape
        (1, 3, 16)
    """

    def __init__(
        self,
        config: ModelConfig,
        layer_index: int,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        self.layer_type = config.layer_types[layer_index]
        self.gemma = config.is_gemma
        d = config.hidden_size
        nkw = {"eps": config.rms_norm_eps, "offset": config.is_gemma, "param_dtype": param_dtype}
        self.input_layernorm = RMSNorm(d, **nkw)
        self.self_attn = Attention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(d, **nkw)
        if config.is_gemma:
            self.pre_feedforward_layernorm = RMSNorm(d, **nkw)
            self.post_feedforward_layernorm = RMSNorm(d, **nkw)
        else:
            self.pre_feedforward_layernorm = None
            self.post_feedforward_layernorm = None
        self.mlp = MLP(
            d,
            config.intermediate_size,
            activation="gelu_tanh" if config.is_gemma else "silu",
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        mask: jax.Array,
        cache_kv: tuple[jax.Array, jax.Array] | None = None,
        cache_start: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        attn, new_kv = self.self_attn(
            self.input_layernorm(x), cos, sin, mask, cache_kv, cache_start
        )
        if self.gemma:
            x = x + self.post_attention_layernorm(attn)
            x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        else:
            x = x + attn
            x = x + self.mlp(self.post_attention_layernorm(x))
        return x, new_kv


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Static-shape key/value cache for prefill and one-token decode (see the module docstring).

    Fields: ``keys``/``values`` (tuples over layers of ``[B, max_len, kv_heads, head_dim]``),
    ``key_positions`` ``[B, max_len]`` int32, ``key_valid`` ``[B, max_len]`` bool and
    ``length`` (int32 scalar: slots written). It is a pytree, so it passes through `jax.jit`.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, KVCache, ModelConfig
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> model = Decoder(c, rngs=nnx.Rngs(0))
        >>> cache = KVCache.create(c, batch_size=1, max_len=8)
        >>> logits, cache = model(jnp.array([[3, 4, 5]]), cache=cache)     # prefill
        >>> logits, cache = model(jnp.array([[6]]), cache=cache)           # decode one token
        >>> int(cache.length), cache.next_positions().tolist()
        (4, [4])
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    key_positions: jax.Array
    key_valid: jax.Array
    length: jax.Array

    @classmethod
    def create(
        cls,
        config: ModelConfig,
        batch_size: int,
        max_len: int,
        dtype: DTypeLike = jnp.float32,
    ) -> KVCache:
        """An empty cache for ``batch_size`` rows of at most ``max_len`` tokens."""
        shape = (batch_size, max_len, config.num_kv_heads, config.head_dim)
        zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
        return cls(
            keys=zeros,
            values=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
            key_positions=jnp.zeros((batch_size, max_len), jnp.int32),
            key_valid=jnp.zeros((batch_size, max_len), bool),
            length=jnp.zeros((), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        """The number of slots per row."""
        return self.key_valid.shape[1]

    @property
    def batch_size(self) -> int:
        """The number of rows."""
        return self.key_valid.shape[0]

    def next_positions(self) -> jax.Array:
        """``[B]`` int32: one past the RoPE position of each row's last real token (0 if none)."""
        last = jnp.max(jnp.where(self.key_valid, self.key_positions, -1), axis=1)
        return (last + 1).astype(jnp.int32)


def default_positions(attention_mask: jax.Array, start: jax.Array | int = 0) -> jax.Array:
    """RoPE positions ``start + cumsum(mask) - 1`` clipped at ``start`` (pads get a dummy value).

    Works for left- and right-padded rows alike: real tokens are numbered 0, 1, 2, ... in order.

    Example:
        >>> import jax.numpy as jnp
        >>> from raco_jax.models.decoder import default_positions
        >>> default_positions(jnp.array([[0, 0, 1, 1], [1, 1, 1, 0]])).tolist()
        [[0, 0, 0, 1], [0, 1, 2, 2]]
    """
    mask = attention_mask.astype(jnp.int32)
    start = jnp.asarray(start, jnp.int32)
    if start.ndim == 1:
        start = start[:, None]
    return start + jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)


class Decoder(nnx.Module):
    """A causal language model: Llama 3, Qwen 3 or Gemma 3 (text), chosen by ``config``.

    ``model(input_ids, attention_mask=None, positions=None, cache=None)`` returns float32
    logits ``[B, T, vocab]``, or ``(logits, new_cache)`` when a `KVCache` is given.
    ``attention_mask`` is a ``[B, T]`` 1/0 padding mask; ``positions`` default to
    `default_positions` of the mask (continuing from the cache when there is one).

    Args:
        config: the architecture.
        dtype: compute dtype (activations, matmuls); softmax, norms and logits are float32.
        param_dtype: storage dtype of the parameters.
        remat: rematerialise each layer in the backward pass (`nnx.remat`) to save memory.
        rngs: random streams for the initial parameters (``params``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> c = ModelConfig(model_type="gemma3_text", vocab_size=64, hidden_size=32,
        ...                 intermediate_size=64, num_layers=2, num_heads=2, head_dim=16,
        ...                 layer_types=("sliding_attention", "full_attention"), sliding_window=4)
        >>> model = Decoder(c, rngs=nnx.Rngs(0))
        >>> model(jnp.array([[1, 2, 3, 0]]), attention_mask=jnp.array([[1, 1, 1, 0]])).shape
        (1, 4, 64)
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        remat: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.remat = bool(remat)
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, **kw)
        self.layers = nnx.List([DecoderLayer(config, i, **kw) for i in range(config.num_layers)])
        self.norm = RMSNorm(
            config.hidden_size,
            eps=config.rms_norm_eps,
            offset=config.is_gemma,
            param_dtype=param_dtype,
        )
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = Linear(
                (config.hidden_size,), (config.vocab_size,), axes=("embed", "vocab"), **kw
            )

    def init_cache(self, batch_size: int, max_len: int, dtype: DTypeLike | None = None) -> KVCache:
        """An empty `KVCache` for this model (cache dtype defaults to the compute dtype).

        Example:
            >>> from flax import nnx
            >>> from raco_jax.models import Decoder, ModelConfig
            >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
            ...                 intermediate_size=32, num_layers=1, num_heads=2)
            >>> Decoder(c, rngs=nnx.Rngs(0)).init_cache(2, 8).keys[0].shape
            (2, 8, 2, 8)
        """
        return KVCache.create(self.config, batch_size, max_len, dtype or self.dtype)

    def hidden_states(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        cache: KVCache | None = None,
        *,
        layer_inputs: jax.Array | None = None,
        first_layer: int = 0,
    ) -> tuple[jax.Array, KVCache | None]:
        """Final-norm hidden states ``[B, T, embed]`` (compute dtype) and the updated cache.

        `__call__` is ``logits_from_hidden(hidden_states(...))``; use this to project only some
        positions onto the vocabulary (e.g. the last one while decoding).

        With ``layer_inputs`` (the residual stream entering layer ``first_layer``, as
        :meth:`layer_inputs` returns it) the embedding and the layers below ``first_layer`` are
        skipped: the rest of the forward pass is the same computation, so where those layers
        are frozen their output can be computed once and reused (``input_ids`` then only gives
        the shape; the mask and positions come from ``attention_mask`` and ``positions`` as
        usual). Not with a ``cache``.

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from raco_jax.models import Decoder, ModelConfig
            >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
            ...                 intermediate_size=32, num_layers=2, num_heads=2)
            >>> model = Decoder(c, rngs=nnx.Rngs(0))
            >>> ids = jnp.array([[1, 2]])
            >>> h, _ = model.hidden_states(ids)
            >>> h.shape
            (1, 2, 16)
            >>> x1 = model.layer_inputs(ids, layer=1)    # the stream entering layer 1
            >>> h1, _ = model.hidden_states(ids, layer_inputs=x1, first_layer=1)
            >>> bool(jnp.allclose(h1, h, atol=1e-6))
            True
        """
        x, new_cache = self._run(
            input_ids, attention_mask, positions, cache, layer_inputs, first_layer, None
        )
        return self.norm(x), new_cache

    def layer_inputs(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        *,
        layer: int,
    ) -> jax.Array:
        """The residual stream entering decoder layer ``layer``: ``[B, T, embed]``, compute dtype
        (``layer=0``: the scaled token embeddings; ``layer=num_layers``: the last layer's output
        before the final norm). Feed it back with ``hidden_states(..., layer_inputs=x,
        first_layer=layer)``.

        Example: see :meth:`hidden_states`.
        """
        x, _ = self._run(input_ids, attention_mask, positions, None, None, 0, layer)
        return x

    def _run(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None,
        positions: jax.Array | None,
        cache: KVCache | None,
        layer_inputs: jax.Array | None,
        first_layer: int,
        stop_layer: int | None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Layers ``[first_layer, stop_layer)`` (None: to the end) before the final norm."""
        config = self.config
        stop_layer = config.num_layers if stop_layer is None else int(stop_layer)
        first_layer = int(first_layer)
        if not 0 <= first_layer <= stop_layer <= config.num_layers:
            raise ValueError(
                f"layers [{first_layer}, {stop_layer}) are outside the model's "
                f"{config.num_layers} layers"
            )
        if (layer_inputs is None) != (first_layer == 0):
            raise ValueError(
                "layer_inputs and first_layer go together: pass the stream entering "
                f"first_layer (> 0), got first_layer={first_layer} and "
                f"layer_inputs={'None' if layer_inputs is None else 'an array'}"
            )
        if cache is not None and (first_layer > 0 or stop_layer < config.num_layers):
            raise ValueError("a KV cache needs every layer: no layer_inputs or stop layer with it")
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
        batch, length = input_ids.shape
        if attention_mask is None:
            mask = jnp.ones((batch, length), bool)
        else:
            mask = jnp.asarray(attention_mask)
            if mask.shape != (batch, length):
                raise ValueError(
                    f"attention_mask must have the shape of input_ids {(batch, length)}, "
                    f"got {mask.shape}"
                )
            mask = mask.astype(bool)
        if positions is not None:
            positions = jnp.asarray(positions)
            if positions.shape != (batch, length):
                raise ValueError(
                    f"positions must have the shape of input_ids {(batch, length)}, "
                    f"got {positions.shape}"
                )
            positions = positions.astype(jnp.int32)

        if cache is None:
            if positions is None:
                positions = default_positions(mask)
            start = None
            query_slots = jnp.arange(length, dtype=jnp.int32)
            key_valid, key_positions = mask, positions
        else:
            if cache.batch_size != batch:
                raise ValueError(
                    f"cache has batch size {cache.batch_size} but input_ids has {batch} rows"
                )
            if length > cache.max_len:
                raise ValueError(
                    f"input_ids has {length} tokens but the cache holds only {cache.max_len}"
                )
            _check_cache_room(cache, length)
            if positions is None:
                positions = default_positions(mask, cache.next_positions())
            start = cache.length
            query_slots = start + jnp.arange(length, dtype=jnp.int32)
            key_valid = jax.lax.dynamic_update_slice(cache.key_valid, mask, (jnp.int32(0), start))
            key_positions = jax.lax.dynamic_update_slice(
                cache.key_positions, positions, (jnp.int32(0), start)
            )

        num_keys = key_valid.shape[1]
        causal = jnp.arange(num_keys, dtype=jnp.int32)[None, :] <= query_slots[:, None]
        full_mask = causal[None] & key_valid[:, None, :]
        masks = {FULL_ATTENTION: full_mask}
        if SLIDING_ATTENTION in config.layer_types:
            distance = positions[:, :, None] - key_positions[:, None, :]
            masks[SLIDING_ATTENTION] = full_mask & (distance < config.sliding_window)
        tables = {}
        for layer_type in sorted(set(config.layer_types)):
            inv_freq = inverse_frequencies(config.rope_for(layer_type), config.head_dim)
            tables[layer_type] = rope_cos_sin(positions, inv_freq)

        if layer_inputs is None:
            x = self.embed_tokens(input_ids)
            if config.embed_scale is not None:
                x = x * jnp.asarray(config.embed_scale, self.dtype)
        else:
            x = jnp.asarray(layer_inputs, self.dtype)
            if x.shape != (batch, length, config.hidden_size):
                raise ValueError(
                    f"layer_inputs must be [batch, length, embed] = "
                    f"{(batch, length, config.hidden_size)}, got {x.shape}"
                )

        new_keys, new_values = [], []
        for i in range(first_layer, stop_layer):
            layer = self.layers[i]
            layer_type = config.layer_types[i]
            cos, sin = tables[layer_type]
            cache_kv = None if cache is None else (cache.keys[i], cache.values[i])
            x, new_kv = _run_layer(
                layer, x, cos, sin, masks[layer_type], cache_kv, start, remat=self.remat
            )
            if new_kv is not None:
                new_keys.append(new_kv[0])
                new_values.append(new_kv[1])

        new_cache = None
        if cache is not None:
            new_cache = KVCache(
                keys=tuple(new_keys),
                values=tuple(new_values),
                key_positions=key_positions,
                key_valid=key_valid,
                length=(cache.length + length).astype(jnp.int32),
            )
        return x, new_cache

    def logits_from_hidden(self, hidden: jax.Array) -> jax.Array:
        """Project final hidden states onto the vocabulary: float32 logits (soft-capped for Gemma
        when ``final_logit_softcapping`` is set).

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from raco_jax.models import Decoder, ModelConfig
            >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
            ...                 intermediate_size=32, num_layers=1, num_heads=2)
            >>> Decoder(c, rngs=nnx.Rngs(0)).logits_from_hidden(jnp.ones((1, 16))).dtype
            dtype('float32')
        """
        if self.lm_head is None:
            logits = self.embed_tokens.attend(hidden, out_dtype=jnp.float32)
        else:
            logits = self.lm_head(hidden, out_dtype=jnp.float32)
        logits = logits.astype(jnp.float32)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = jnp.tanh(logits / cap) * cap
        return logits

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        cache: KVCache | None = None,
    ) -> jax.Array | tuple[jax.Array, KVCache]:
        hidden, new_cache = self.hidden_states(input_ids, attention_mask, positions, cache)
        logits = self.logits_from_hidden(hidden)
        if cache is None:
            return logits
        return logits, new_cache


def _check_cache_room(cache: KVCache, length: int) -> None:
    """Raise when a concrete cache cannot take ``length`` more tokens (no-op under tracing)."""
    try:
        used = int(cache.length)
    except (jax.errors.ConcretizationTypeError, TypeError):
        return
    if used + length > cache.max_len:
        raise ValueError(
            f"cache overflow: {used} slots used + {length} new tokens > max_len={cache.max_len}"
        )


def _layer_forward(
    layer: DecoderLayer,
    x: jax.Array,
    cos: jax.Array,
    sin: jax.Array,
    mask: jax.Array,
    cache_kv: tuple[jax.Array, jax.Array] | None,
    start: jax.Array | None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    return layer(x, cos, sin, mask, cache_kv, start)


_remat_layer_forward: Callable[..., Any] = nnx.remat(_layer_forward)


def _run_layer(layer, x, cos, sin, mask, cache_kv, start, *, remat: bool):
    if remat:
        return _remat_layer_forward(layer, x, cos, sin, mask, cache_kv, start)
    return _layer_forward(layer, x, cos, sin, mask, cache_kv, start)
