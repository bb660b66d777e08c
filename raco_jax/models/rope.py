"""Rotary position embeddings (RoPE) as in Hugging Face transformers.

The inverse frequencies are computed on the host in float32 exactly as transformers does (so
logits match to float32 rounding), for the rope types ``"default"``, ``"linear"`` and
``"llama3"``. `apply_rope` uses the "rotate half" layout of the Hugging Face checkpoints: the
first and second halves of ``head_dim`` form the (real, imaginary) pairs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from raco_jax.models.config import RopeConfig

__all__ = ["apply_rope", "inverse_frequencies", "rope_cos_sin"]


@functools.lru_cache(maxsize=64)
def _inverse_frequencies(rope: RopeConfig, head_dim: int) -> np.ndarray:
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    # theta ** e correctly rounded to float32 (what torch's float32 pow returns), then 1 / x.
    powers = (np.float64(rope.theta) ** exponents.astype(np.float64)).astype(np.float32)
    inv_freq = (np.float32(1.0) / powers).astype(np.float32)
    if rope.rope_type == "linear":
        inv_freq = (inv_freq / np.float32(rope.factor)).astype(np.float32)
    elif rope.rope_type == "llama3":
        factor = np.float32(rope.factor)
        low, high = rope.low_freq_factor, rope.high_freq_factor
        old_context = float(rope.original_max_position_embeddings)
        low_freq_wavelen = old_context / low
        high_freq_wavelen = old_context / high
        wavelen = (np.float32(2 * math.pi) / inv_freq).astype(np.float32)
        scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq).astype(
            np.float32
        )
        smooth = (np.float32(old_context) / wavelen - np.float32(low)) / np.float32(high - low)
        smooth = smooth.astype(np.float32)
        smoothed = ((1 - smooth) * scaled / factor + smooth * scaled).astype(np.float32)
        is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        inv_freq = np.where(is_medium, smoothed, scaled).astype(np.float32)
    inv_freq.setflags(write=False)
    return inv_freq


def inverse_frequencies(rope: RopeConfig, head_dim: int) -> np.ndarray:
    """The ``head_dim // 2`` RoPE inverse frequencies (float32, numpy), after rope scaling.

    Args:
        rope: the rope parameters (theta, type, scaling factors).
        head_dim: the attention head size (even).

    Returns:
        A read-only float32 array of shape ``[head_dim // 2]``.

    Example:
        >>> from raco_jax.models import RopeConfig
        >>> from raco_jax.models.rope import inverse_frequencies
        >>> [round(float(f), 4) for f in inverse_frequencies(RopeConfig(theta=10000.0), 8)]
        [1.0, 0.1, 0.01, 0.001]
    """
    return _inverse_frequencies(rope, int(head_dim))


def rope_cos_sin(
    positions: jax.Array, inv_freq: np.ndarray | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Cosine and sine tables for integer ``positions`` ``[B, T]``: each ``[B, T, head_dim // 2]``.

    Computed in float32 whatever the model's compute dtype (cast later, as transformers does).

    Example:
        >>> import jax.numpy as jnp
        >>> from raco_jax.models import RopeConfig
        >>> from raco_jax.models.rope import inverse_frequencies, rope_cos_sin
        >>> cos, sin = rope_cos_sin(jnp.arange(4)[None], inverse_frequencies(RopeConfig(), 8))
        >>> cos.shape
        (1, 4, 4)
    """
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate ``x`` ``[B, T, heads, head_dim]`` by the angles whose tables are ``cos``/``sin``.

    Uses the Hugging Face "rotate half" convention: ``x * cos + rotate_half(x) * sin`` with
    ``rotate_half([x1, x2]) = [-x2, x1]``. The tables are cast to ``x.dtype`` first.

    Example:
        >>> import jax.numpy as jnp
        >>> from raco_jax.models import RopeConfig
        >>> from raco_jax.models.rope import apply_rope, inverse_frequencies, rope_cos_sin
        >>> cos, sin = rope_cos_sin(jnp.zeros((1, 1), jnp.int32), inverse_frequencies(RopeConfig(), 4))
        >>> apply_rope(jnp.ones((1, 1, 2, 4)), cos, sin).tolist()[0][0][0]  # position 0: identity
        [1.0, 1.0, 1.0, 1.0]
    """
    cos = cos.astype(x.dtype)[:, :, None, :]
    sin = sin.astype(x.dtype)[:, :, None, :]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
