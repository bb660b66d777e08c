"""Summed completion log-probs against a float64 NumPy log-softmax; chunking never builds
full float32 logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from raco_jax.preference import sequence_logps, sequence_logps_from_hidden, token_logps


def _np_sequence_logps(logits, tokens, loss_mask, average=False):
    """float64 reference: sum_{t>=1} mask[t] * log_softmax(logits[t-1])[tokens[t]]."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logsm = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    n, t = tokens.shape
    out = np.zeros(n)
    counts = np.zeros(n)
    for i in range(n):
        for j in range(1, t):
            if loss_mask[i, j]:
                out[i] += loss_mask[i, j] * logsm[i, j - 1, tokens[i, j]]
                counts[i] += loss_mask[i, j]
    if average:
        out = out / np.maximum(counts, 1)
    return out, counts


def _random_case(seed, n=3, t=7, v=37, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=(n, t, v))).astype(np.float32)
    tokens = rng.integers(0, v, size=(n, t)).astype(np.int32)
    mask = (rng.random((n, t)) < 0.6).astype(np.float32)
    mask[:, 0] = 0.0
    mask[0, :] = 0.0  # a row with no counted token
    mask[0, 0] = 1.0  # column 0 is ignored
    return logits, tokens, mask


@pytest.mark.parametrize("chunk_size", [None, 5, 8, 37, 64])
@pytest.mark.parametrize("average", [False, True])
def test_sequence_logps_matches_float64_numpy(chunk_size, average):
    logits, tokens, mask = _random_case(0)
    logps, counts = jax.jit(sequence_logps, static_argnums=(3, 4))(
        logits, tokens, mask, average, chunk_size
    )
    ref, ref_counts = _np_sequence_logps(logits, tokens, mask, average)
    np.testing.assert_allclose(np.asarray(logps), ref, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(counts), ref_counts)
    assert logps.dtype == jnp.float32


def test_bfloat16_logits_are_scored_in_float32():
    logits, tokens, mask = _random_case(1, v=50)
    bf16 = jnp.asarray(logits, jnp.bfloat16)
    logps, _ = sequence_logps(bf16, tokens, mask, chunk_size=16)
    ref, _ = _np_sequence_logps(np.asarray(bf16.astype(jnp.float32)), tokens, mask)
    assert logps.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(logps), ref, rtol=1e-6, atol=1e-5)
    grad = jax.grad(lambda x: sequence_logps(x, tokens, mask, chunk_size=16)[0].sum())(bf16)
    assert grad.dtype == jnp.bfloat16


def test_gradient_matches_plain_log_softmax():
    logits, tokens, mask = _random_case(2)

    def plain(x):
        logsm = jax.nn.log_softmax(x[:, :-1], axis=-1)
        picked = jnp.take_along_axis(logsm, tokens[:, 1:, None], axis=-1)[..., 0]
        return jnp.sum(picked * mask[:, 1:], axis=-1)

    weights = jnp.array([0.3, -1.2, 2.0])
    for chunk in (None, 6):
        ours = jax.grad(
            lambda x, c=chunk: weights @ sequence_logps(x, tokens, mask, chunk_size=c)[0]
        )(logits)
        ref = jax.grad(lambda x: weights @ plain(x))(logits)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-6)


def test_masked_positions_may_hold_any_token_and_minus_inf():
    logits, tokens, mask = _random_case(3)
    logits[:, :, 0] = -np.inf  # a banned vocabulary entry
    tokens = np.where(tokens == 0, 1, tokens)
    bad = tokens.copy()
    bad[mask == 0] = -100  # TRL's label pad id at ignored positions
    logps, _ = sequence_logps(logits, bad, mask, chunk_size=4)
    ref, _ = _np_sequence_logps(np.where(np.isinf(logits), -1e30, logits), tokens, mask)
    assert np.all(np.isfinite(np.asarray(logps)))
    np.testing.assert_allclose(np.asarray(logps), ref, rtol=1e-6, atol=1e-5)
    grad = jax.grad(lambda x: sequence_logps(x, bad, mask, chunk_size=4)[0].sum())(logits)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_a_chunk_of_minus_inf_logits_is_handled():
    logits = np.random.default_rng(6).normal(size=(2, 3, 9)).astype(np.float32)
    logits[..., :4] = -np.inf  # the whole first vocabulary chunk
    targets = np.array([[4, 5, 8], [6, 7, 4]])
    out = token_logps(logits, targets, chunk_size=4)
    finite = logits[..., 4:].astype(np.float64)
    ref = np.take_along_axis(finite, targets[..., None] - 4, -1)[..., 0] - np.log(
        np.exp(finite).sum(-1)
    )
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-6)


def _f32_arrays_with_vocab(jaxpr, n, t, v):
    """All float32 [.., n, t, v]-sized values produced anywhere in a jaxpr (sub-jaxprs included)."""
    found = []

    def visit(jp):
        for eqn in jp.eqns:
            for var in eqn.outvars:
                aval = var.aval
                if getattr(aval, "dtype", None) == jnp.float32 and aval.shape[-1:] == (v,):
                    if int(np.prod(aval.shape)) >= n * t * v:
                        found.append((eqn.primitive.name, aval.shape))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    if hasattr(sub, "jaxpr"):
                        visit(sub.jaxpr if hasattr(sub.jaxpr, "eqns") else sub.jaxpr.jaxpr)
                    elif hasattr(sub, "eqns"):
                        visit(sub)

    visit(jaxpr.jaxpr)
    return found


def test_no_float32_copy_of_bfloat16_logits_in_forward():
    n, t, v = 4, 8, 1024
    logits = jnp.zeros((n, t, v), jnp.bfloat16)
    tokens = jnp.zeros((n, t), jnp.int32)
    mask = jnp.ones((n, t))
    jaxpr = jax.make_jaxpr(lambda x: sequence_logps(x, tokens, mask, chunk_size=128)[0])(logits)
    assert _f32_arrays_with_vocab(jaxpr, n, t, v) == []


@pytest.mark.parametrize("chunk_size", [None, 4, 5])
def test_from_hidden_kernel_matches_numpy_and_gradients(chunk_size):
    rng = np.random.default_rng(4)
    n, t, d, v = 3, 6, 8, 11
    hidden = rng.normal(size=(n, t, d)).astype(np.float32)
    kernel = rng.normal(size=(d, v)).astype(np.float32)
    tokens = rng.integers(0, v, size=(n, t)).astype(np.int32)
    mask = (rng.random((n, t)) < 0.7).astype(np.float32)
    mask[:, 0] = 0
    ours, counts = sequence_logps_from_hidden(hidden, kernel, tokens, mask, chunk_size=chunk_size)
    ref, ref_counts = _np_sequence_logps(
        np.einsum("ntd,dv->ntv", hidden.astype(np.float64), kernel), tokens, mask
    )
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(counts), ref_counts)

    w = jnp.array([1.0, -0.5, 2.0])
    grads = jax.grad(
        lambda h, k: w @ sequence_logps_from_hidden(h, k, tokens, mask, chunk_size=chunk_size)[0],
        argnums=(0, 1),
    )(hidden, kernel)
    ref_grads = jax.grad(
        lambda h, k: w @ sequence_logps(h @ k, tokens, mask, chunk_size=None)[0], argnums=(0, 1)
    )(hidden, kernel)
    for a, b in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.parametrize("chunk_size", [4, 64])
def test_from_hidden_head_function_chunks_over_time(chunk_size):
    rng = np.random.default_rng(5)
    n, t, d, v = 2, 9, 8, 13
    hidden = rng.normal(size=(n, t, d)).astype(np.float32)
    kernel = rng.normal(size=(d, v)).astype(np.float32)
    tokens = rng.integers(0, v, size=(n, t)).astype(np.int32)
    mask = (rng.random((n, t)) < 0.7).astype(np.float32)
    mask[:, 0] = 0

    def head(h, k=kernel):
        return 30.0 * jnp.tanh((h @ k) / 30.0)  # soft-capped, as Gemma 3

    ours, _ = sequence_logps_from_hidden(
        hidden, head, tokens, mask, chunk_size=chunk_size, average=True
    )
    capped = 30.0 * np.tanh(np.einsum("ntd,dv->ntv", hidden.astype(np.float64), kernel) / 30.0)
    ref, _ = _np_sequence_logps(capped, tokens, mask, average=True)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5)
    via_kernel, _ = sequence_logps_from_hidden(
        hidden, kernel, tokens, mask, chunk_size=4, average=True, softcap=30.0
    )
    np.testing.assert_allclose(np.asarray(via_kernel), ref, rtol=1e-5, atol=1e-5)

    g = jax.grad(
        lambda h, k: sequence_logps_from_hidden(
            h, lambda x: x @ k, tokens, mask, chunk_size=chunk_size
        )[0].sum(),
        argnums=(0, 1),
    )(hidden, kernel)
    g_ref = jax.grad(lambda h, k: sequence_logps(h @ k, tokens, mask)[0].sum(), argnums=(0, 1))(
        hidden, kernel
    )
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_from_hidden_never_builds_full_logits_even_in_backward():
    n, t, d, v = 2, 16, 8, 512
    hidden = jnp.ones((n, t, d))
    kernel = jnp.ones((d, v))
    tokens = jnp.zeros((n, t), jnp.int32)
    mask = jnp.ones((n, t))

    def with_kernel(h, k):
        return sequence_logps_from_hidden(h, k, tokens, mask, chunk_size=64)[0].sum()

    def with_head(h, k):
        return sequence_logps_from_hidden(h, lambda x: x @ k, tokens, mask, chunk_size=4)[0].sum()

    for loss in (with_kernel, with_head):
        jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(hidden, kernel)
        assert _f32_arrays_with_vocab(jaxpr, n, t, v) == []


def test_errors_name_the_argument():
    logits = jnp.zeros((2, 3, 5))
    with pytest.raises(ValueError, match="tokens"):
        sequence_logps(logits, jnp.zeros((2, 4), jnp.int32), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="loss_mask"):
        sequence_logps(logits, jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 4)))
    with pytest.raises(TypeError, match="tokens"):
        sequence_logps(logits, jnp.zeros((2, 3)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="chunk_size"):
        sequence_logps(logits, jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3)), chunk_size=0)
    with pytest.raises(ValueError, match="head"):
        sequence_logps_from_hidden(
            jnp.zeros((2, 3, 4)), jnp.zeros((5, 6)), jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3))
        )
