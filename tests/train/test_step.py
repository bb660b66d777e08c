"""The jitted RACO train step on a tiny Qwen 3 decoder: per-objective gradients, every method,
gradient accumulation, reference handling, parameter filters, no retracing."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import raco_jax
from raco_jax.models import Decoder, ModelConfig
from raco_jax.preference import (
    PreferenceBatch,
    dpo_losses,
    make_batch,
    pair_margins,
    split_pairs,
)
from raco_jax.train import (
    METHODS,
    TrainStep,
    compute_reference_logps,
    make_optimizer,
    make_train_step,
    policy_logps,
)

CONFIG = ModelConfig(
    model_type="qwen3",
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
)
OBJECTIVES = ("helpful", "harmless")
T = 16


def _model() -> Decoder:
    return Decoder(CONFIG, rngs=nnx.Rngs(0))


def _batch(seed: int, pairs: int = 4, all_labeled: bool = False) -> PreferenceBatch:
    """Random pairs: a shared prompt, then different responses; half the rows left-padded."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((2 * pairs, T), np.int32)
    attention = np.zeros((2 * pairs, T), np.int32)
    loss_mask = np.zeros((2 * pairs, T), np.float32)
    for i in range(pairs):
        prompt = rng.integers(1, 64, size=rng.integers(3, 6))
        for row in (i, pairs + i):
            response = rng.integers(1, 64, size=rng.integers(2, T - len(prompt) + 1))
            tokens = np.concatenate([prompt, response])
            start = T - len(tokens) if row % 2 else 0  # left padding on odd rows
            ids[row, start : start + len(tokens)] = tokens
            attention[row, start : start + len(tokens)] = 1
            loss_mask[row, start + len(prompt) : start + len(tokens)] = 1
    signs = rng.choice([-1.0, 1.0, 0.0], size=(2, pairs), p=[0.45, 0.45, 0.1])
    labeled = np.ones((2, pairs)) if all_labeled else (rng.random((2, pairs)) < 0.8) * 1.0
    labeled[:, 0] = 1.0
    return make_batch(
        ids, attention, loss_mask, signs, labeled, reward_margins=rng.normal(size=(1, pairs))
    )


@functools.cache
def _reference_batch(seed: int, pairs: int = 4, all_labeled: bool = False) -> PreferenceBatch:
    batch = _batch(seed, pairs, all_labeled)
    return batch._replace(ref_logps=compute_reference_logps(_model(), batch))


@functools.cache
def _step(method: str, optimizer: str = "adam", weights=(0.5, 0.5), **kwargs) -> TrainStep:
    """Steps are cached so tests sharing a configuration share its compilation."""
    if optimizer == "adam":
        tx = make_optimizer(method, weights, learning_rate=1e-2)
    else:  # plain SGD after the aggregator: the update is -d
        head = {
            "raco": [raco_jax.clipped_cagrad(weights, 0.4)],
            "dpo-lw": [raco_jax.weighted_sum(weights)],
        }.get(method, [])
        tx = optax.chain(*head, optax.sgd(1.0))
        if "accumulate" in kwargs:
            every_k = kwargs.pop("accumulate")
            tx = raco_jax.accumulate_objectives(tx, every_k=every_k, num_objectives=2)
    return TrainStep(_model(), tx, method=method, objectives=OBJECTIVES, weights=weights, **kwargs)


def _flat(state_or_tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(state_or_tree)])


def _update(step: TrainStep, batches) -> np.ndarray:
    """Parameter change after running the step on the batches from a fresh model."""
    model = _model()
    before = _flat(nnx.state(model, nnx.Param))
    state = step.init(model)
    for batch in batches:
        state, _ = step(state, batch)
    return _flat(state.params) - before


def test_objective_grads_from_one_forward_match_separate_grads():
    batch = _reference_batch(0)
    graphdef, params, rest = nnx.split(_model(), nnx.Param, ...)

    def losses(p):
        logps, _ = policy_logps(nnx.merge(graphdef, p, rest), batch)
        return dpo_losses(pair_margins(logps, batch.ref_logps), batch.signs, batch.labeled)

    # a nonzero margin makes the two gradients differ: move the parameters a little first
    params = jax.tree.map(lambda x: x * 1.5, params)
    stacked = jax.jit(raco_jax.objective_grads(losses))(params)
    single = jax.jit(jax.grad(lambda p, k: losses(p)[k]))
    for k in range(2):
        expected = single(params, k)
        for got, want in zip(jax.tree.leaves(stacked), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want), atol=1e-5, rtol=1e-5)
    g0, g1 = (_flat(jax.tree.map(lambda x, k=k: x[k], stacked)) for k in range(2))
    assert np.linalg.norm(g0 - g1) > 1e-3 * np.linalg.norm(g0)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_decreases_its_loss(method):
    kwargs = {"reference": "online"} if method == "cagrad" else {}
    step = _step(method, **kwargs)
    batch = _reference_batch(1)
    state = step.init(_model())
    losses = []
    for _ in range(4):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 1e-3, losses
    assert all(np.isfinite(float(v)) for v in metrics.values())
    for name in OBJECTIVES:
        assert f"loss/{name}" in metrics and f"rewards/{name}/accuracies" in metrics
    assert {"loss", "grad_norm", "update_norm", "learning_rate", "rewards/chosen"} <= set(metrics)
    np.testing.assert_allclose(float(metrics["learning_rate"]), 1e-2)
    if method == "modpo":
        return
    expected = 0.5 * (float(metrics["loss/helpful"]) + float(metrics["loss/harmless"]))
    np.testing.assert_allclose(losses[-1], expected, rtol=1e-6)
    # a second batch of the same shape (different tokens, signs, labels) does not retrace
    state, _ = step(state, _reference_batch(2))
    assert step.num_traces == 1


def test_stacked_methods_report_aggregation_diagnostics():
    step = _step("raco")
    state = step.init(_model())
    state, metrics = step(state, _reference_batch(1))
    for key in (
        "aggregation/cos/helpful/harmless",
        "aggregation/coefficients/helpful",
        "aggregation/dual/harmless",
        "aggregation/num_clipped",
        "aggregation/duality_gap",
        "aggregation/num_conflicts",
        "aggregation/cos_update_anchor",
        "grad_norm/helpful",
        "grad_norm/anchor",
    ):
        assert key in metrics, key
    assert -1.0 <= float(metrics["aggregation/cos/helpful/harmless"]) <= 1.0
    # RACO's coefficients are a non-negative re-weighting with a_k >= w_k
    for name in OBJECTIVES:
        assert float(metrics[f"aggregation/coefficients/{name}"]) >= 0.5 - 1e-6
    assert float(metrics["aggregation/num_clipped"]) in (0.0, 1.0)


def test_raco_with_one_hot_weights_follows_single_objective_dpo():
    batch = _reference_batch(3)
    raco = _update(_step("raco", "sgd", weights=(1.0, 0.0)), [batch])
    dpo = _update(_step("dpo", "sgd", weights=(1.0, 0.0)), [batch])
    cosine = raco @ dpo / (np.linalg.norm(raco) * np.linalg.norm(dpo))
    assert cosine > 0.9999, cosine
    assert np.linalg.norm(raco) >= np.linalg.norm(dpo) * (1 - 1e-4)  # d = (1 + c') g_1


def test_micro_batch_accumulation_matches_one_big_batch():
    batch = _reference_batch(4, pairs=8)  # some pairs unlabeled, some ties
    whole = _update(_step("raco", "sgd"), [batch])
    inside = _update(_step("raco", "sgd", micro_batches=4), [batch])
    np.testing.assert_allclose(inside, whole, atol=1e-6, rtol=1e-5)
    assert np.linalg.norm(whole) > 0

    # raco_jax.accumulate_objectives around the chain, one step call per micro-batch of 2 pairs
    # (per-micro-batch means average to the batch mean when every pair is labeled)
    labeled = _reference_batch(5, pairs=8, all_labeled=True)
    whole = _update(_step("raco", "sgd"), [labeled])
    micro = split_pairs(labeled, 4)
    parts = [jax.tree.map(lambda x, j=j: x[j], micro) for j in range(4)]
    outside = _update(_step("raco", "sgd", accumulate=4), parts)
    np.testing.assert_allclose(outside, whole, atol=1e-6, rtol=1e-5)


def test_online_reference_matches_precomputed_and_logps_ignore_padding_side():
    batch = _reference_batch(6)
    online = _step("dpo", "sgd", reference="online")
    precomputed = _step("dpo", "sgd")
    m_online = online(online.init(_model()), batch._replace(ref_logps=None))[1]
    m_pre = precomputed(precomputed.init(_model()), batch)[1]
    # The two programs compute the same log-probs (|log p| up to ~50 here) in a different order:
    # they agree to a few float32 ulps of |log p|, so a margin (beta times a difference of four
    # log-probs, exactly 0 online) is 0 up to beta * 4 ulp(max |log p|) (1.5e-6 here), not 1e-7.
    logp_ulp = float(np.spacing(np.float32(np.max(np.abs(np.asarray(batch.ref_logps))))))
    margin_resolution = online.beta * 4 * logp_ulp
    for key in ("loss", "loss/helpful", "rewards/margins", "grad_norm"):
        atol = margin_resolution if key == "rewards/margins" else 1e-7
        np.testing.assert_allclose(float(m_online[key]), float(m_pre[key]), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(float(m_pre["loss/helpful"]), np.log(2.0), rtol=1e-6)
    # an explicit reference model (here a different one) is used as given
    explicit = TrainStep(
        _model(),
        optax.sgd(1.0),
        method="dpo",
        objectives=OBJECTIVES,
        weights=(0.5, 0.5),
        reference="online",
    )
    other = Decoder(CONFIG, rngs=nnx.Rngs(1))
    state = explicit.init(_model(), reference_model=other)
    m_other = explicit(state, batch._replace(ref_logps=None))[1]
    other_logps = compute_reference_logps(other, batch)
    expected = dpo_losses(pair_margins(batch.ref_logps, other_logps), batch.signs, batch.labeled)
    np.testing.assert_allclose(float(m_other["loss/helpful"]), float(expected[0]), rtol=1e-5)
    assert abs(float(expected[0]) - np.log(2.0)) > 1e-4
    with pytest.raises(ValueError, match="reference setup"):
        explicit.init(_model())

    # the same pairs with every row right-padded give the same reference log-probs
    right = _batch(6)
    ids, attn, lm = (np.array(x) for x in (right.input_ids, right.attention_mask, right.loss_mask))
    for row in range(ids.shape[0]):
        n = int(attn[row].sum())
        start = int(np.argmax(attn[row]))
        for x in (ids, attn, lm):
            x[row] = np.concatenate([x[row, start : start + n], np.zeros(T - n, x.dtype)])
    shifted = right._replace(input_ids=ids, attention_mask=attn, loss_mask=lm)
    np.testing.assert_allclose(
        np.asarray(compute_reference_logps(_model(), shifted)),
        np.asarray(batch.ref_logps),
        rtol=1e-5,
        atol=1e-4,
    )


def test_time_chunked_head_gives_the_same_update():
    batch = _reference_batch(7)
    full = _update(_step("dpo", "sgd"), [batch])
    chunked = _update(_step("dpo", "sgd", time_chunk_size=4), [batch])
    np.testing.assert_allclose(chunked, full, atol=1e-6, rtol=1e-5)


def _named_params(model) -> dict[tuple, np.ndarray]:
    return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_parameter_filter_trains_only_the_subset():
    wrt = nnx.All(nnx.Param, nnx.PathContains("lm_head"))
    step = _step("raco", "sgd", wrt=wrt)
    model = _model()
    before = _named_params(model)
    state = step.init(model)
    assert len(jax.tree.leaves(state.params)) == 1
    state, _ = step(state, _reference_batch(1))
    after = _named_params(step.merge(state))
    changed = {path for path, value in after.items() if np.any(value != before[path])}
    assert changed == {("lm_head", "kernel")}


def test_make_train_step_and_argument_errors():
    batch = _reference_batch(1)
    step, state = make_train_step(
        _model(), make_optimizer("raco", (0.5, 0.5)), objectives=OBJECTIVES, weights=(0.5, 0.5)
    )
    assert int(state.step) == 0 and step.method == "raco"
    with pytest.raises(ValueError, match="ref_logps"):
        step(state, batch._replace(ref_logps=None))
    with pytest.raises(ValueError, match="objectives"):
        step(state, batch._replace(signs=jnp.ones((3, 4)), labeled=jnp.ones((3, 4))))
    modpo = _step("modpo")
    with pytest.raises(ValueError, match="reward_margins"):
        modpo(modpo.init(_model()), batch._replace(reward_margins=None))
    with pytest.raises(ValueError, match="method"):
        TrainStep(_model(), optax.sgd(1.0), method="kto", objectives=OBJECTIVES, weights=(1, 0))
    with pytest.raises(ValueError, match="weights"):
        TrainStep(_model(), optax.sgd(1.0), objectives=OBJECTIVES, weights=(0.5, 0.6))
    with pytest.raises(ValueError, match="reference"):
        TrainStep(
            _model(),
            optax.sgd(1.0),
            method="amopo",
            objectives=OBJECTIVES,
            weights=(1, 0),
            reference="online",
        )


def test_per_objective_gradients_are_exact_at_2048_token_rows() -> None:
    """jax 0.10.2's XLA:CPU miscompiled the vmapped backward pass of RMSNorm's x * rsqrt(.)
    from 2048 rows on: objective 1's gradient came out 40% wrong while objective 0's was
    right. The step's stacked gradients must equal K separate jax.grad calls at that size."""
    config = ModelConfig(
        model_type="qwen3", vocab_size=32, hidden_size=16, intermediate_size=32, num_layers=1,
        num_heads=2,
    )  # fmt: skip
    model = Decoder(config, rngs=nnx.Rngs(3))
    rng = np.random.default_rng(0)
    pairs, length = 4, 256  # 2 x 4 sequences x 256 positions = 2048 token rows
    ids = rng.integers(1, 32, size=(2 * pairs, length)).astype(np.int32)
    loss_mask = np.zeros((2 * pairs, length), np.float32)
    loss_mask[:, 100:] = 1.0
    signs = [[1, -1, 1, -1], [-1, -1, 1, 1], [1, 1, -1, 0]]
    batch = make_batch(ids, np.ones_like(ids), loss_mask, signs)
    batch = batch._replace(ref_logps=jnp.asarray(rng.normal(-300.0, 5.0, 2 * pairs), jnp.float32))
    objectives = ("a", "b", "c")
    step = TrainStep(
        model, optax.chain(raco_jax.weighted_sum((0.2, 0.3, 0.5)), optax.sgd(0.1)),
        method="dpo-lw", objectives=objectives, weights=(0.2, 0.3, 0.5),
    )  # fmt: skip
    state = step.init(model)
    normalizer = jnp.asarray([4.0, 4.0, 3.0])

    def losses(params):
        return step.loss(params, state.rest, state.ref_state, batch, normalizer)[0]

    stacked = jax.jit(raco_jax.objective_grads(losses))(state.params)
    for k in range(len(objectives)):
        single = jax.jit(jax.grad(lambda p, k=k: losses(p)[k]))(state.params)
        for (path, got), want in zip(
            jax.tree_util.tree_leaves_with_path(stacked),
            jax.tree_util.tree_leaves(single),
            strict=True,
        ):
            scale = float(np.abs(np.asarray(want)).max()) or 1.0
            error = float(np.abs(np.asarray(got[k]) - np.asarray(want)).max()) / scale
            assert error < 1e-4, (k, jax.tree_util.keystr(path), error)
