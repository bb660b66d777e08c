"""The optax contract of the aggregators, their validation, state and accumulation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import raco_jax

W = (0.7, 0.3)

AGGREGATORS = {
    "clipped_cagrad": lambda: raco_jax.clipped_cagrad(weights=W, c=0.4),
    "cagrad": lambda: raco_jax.cagrad(c=0.4, weights=W),
    "cagrad_uniform_rescaled": lambda: raco_jax.cagrad(c=0.5, rescale="1+c", num_objectives=2),
    "weighted_sum": lambda: raco_jax.weighted_sum(W),
    "weighted_sum_single_pass": lambda: raco_jax.weighted_sum(W, diagnostics=False),
    "mgda": lambda: raco_jax.mgda(num_objectives=2),
    "pcgrad": lambda: raco_jax.pcgrad(seed=1, num_objectives=2),
}


def _params():
    return {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}, "scale": jnp.ones(())}


def _stacked(seed: int = 0, dtype=jnp.float32, k: int = 2):
    params = _params()
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    stacked = [
        jax.random.normal(kk, (k, *p.shape)).astype(dtype)
        for kk, p in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, stacked)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_first_in_chain_under_jit(name: str) -> None:
    tx = optax.chain(AGGREGATORS[name](), optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    params = _params()
    state = tx.init(params)
    step = jax.jit(tx.update)
    updates, state = step(_stacked(), state, params)
    assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(params)
    for u, p in zip(
        jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(params), strict=True
    ):
        assert u.shape == p.shape and u.dtype == p.dtype
        assert np.all(np.isfinite(u))
    # a second step reuses the compiled function (stable state structure and dtypes)
    _updates2, state2 = step(_stacked(1), state, params)
    assert jax.tree_util.tree_structure(state2) == jax.tree_util.tree_structure(state)
    for a, b in zip(
        jax.tree_util.tree_leaves(state2), jax.tree_util.tree_leaves(state), strict=True
    ):
        assert a.dtype == b.dtype and a.shape == b.shape


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_extra_args_accepted_and_ignored(name: str) -> None:
    tx = AGGREGATORS[name]()
    state = tx.init(_params())
    plain, _ = tx.update(_stacked(), state, _params())
    extra, _ = tx.update(_stacked(), state, _params(), loss=jnp.ones(()), anything="x")
    jax.tree_util.tree_map(np.testing.assert_array_equal, plain, extra)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_bf16_in_bf16_out(name: str) -> None:
    tx = AGGREGATORS[name]()
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), _params())
    updates, state = jax.jit(tx.update)(_stacked(dtype=jnp.bfloat16), tx.init(params), params)
    for u in jax.tree_util.tree_leaves(updates):
        assert u.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(u, np.float32)))
    # the Gram matrix is float32 even for bf16 gradients
    assert state.diagnostics.gram.dtype == jnp.float32


def test_gram_is_float32_highest_precision_for_bf16() -> None:
    x = jax.random.normal(jax.random.key(0), (3, 4096)).astype(jnp.bfloat16)
    gram = raco_jax.gram_matrix({"x": x})
    exact = np.asarray(x, np.float64) @ np.asarray(x, np.float64).T
    np.testing.assert_allclose(np.asarray(gram), exact, rtol=1e-5)


def test_state_exposes_diagnostics_by_name() -> None:
    tx = optax.chain(raco_jax.clipped_cagrad(weights=W, c=0.4), optax.sgd(0.1))
    _, state = tx.update(_stacked(), tx.init(_params()), _params())
    for field in (
        "coefficients",
        "dual",
        "clipped_dual",
        "gram",
        "duality_gap",
        "num_conflicts",
        "cos_update_anchor",
        "finite",
    ):
        value = optax.tree.get(state, field)
        assert np.all(np.isfinite(np.asarray(value)))
    a = optax.tree.get(state, "coefficients")
    assert np.all(np.asarray(a) >= np.asarray(W) - 1e-6)
    assert -1.0 <= float(optax.tree.get(state, "cos_update_anchor")) <= 1.0


def test_inject_hyperparams_with_schedule_for_c() -> None:
    base = raco_jax.clipped_cagrad(weights=jnp.asarray(W), c=0.25)
    injected = optax.inject_hyperparams(raco_jax.clipped_cagrad)(
        weights=jnp.asarray(W), c=optax.linear_schedule(0.25, 0.75, 10)
    )
    params = _params()
    inj_state = injected.init(params)
    ref, _ = base.update(_stacked(), base.init(params))
    got, inj_state = jax.jit(injected.update)(_stacked(), inj_state)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, ref
    )
    assert float(inj_state.hyperparams["c"]) == pytest.approx(0.25)
    # weights and c injected as traced values: same results as the plain transformation
    for factory, kwargs in (
        (raco_jax.cagrad, {"c": 0.3, "weights": jnp.asarray(W)}),
        (raco_jax.weighted_sum, {"weights": jnp.asarray(W)}),
    ):
        plain = factory(**kwargs)
        inj = optax.inject_hyperparams(factory)(**kwargs)
        a, _ = plain.update(_stacked(2), plain.init(params))
        b, _ = jax.jit(inj.update)(_stacked(2), inj.init(params))
        jax.tree_util.tree_map(
            lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b
        )


def test_inside_nnx_optimizer() -> None:
    from flax import nnx

    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    tx = optax.chain(raco_jax.clipped_cagrad(weights=W, c=0.4), optax.sgd(0.01))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.arange(6.0).reshape(2, 3)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def losses(params):
        y = nnx.merge(graphdef, params, rest)(x)
        return jnp.stack([jnp.mean((y - 1.0) ** 2), jnp.mean((y + 1.0) ** 2)])

    before = losses(params)
    stacked = raco_jax.objective_grads(losses)(params)
    optimizer.update(model, stacked)
    after = losses(nnx.state(model, nnx.Param))
    expected_weighted = float(np.dot(W, before))
    assert float(np.dot(W, after)) < expected_weighted


def test_leaf_split_invariance() -> None:
    """The update does not depend on how parameters are split into leaves."""
    jac = np.asarray(jax.random.normal(jax.random.key(3), (3, 10)))
    w = (0.5, 0.3, 0.2)
    tx = raco_jax.clipped_cagrad(weights=w, c=0.6)
    whole, _ = tx.update({"x": jnp.asarray(jac)}, tx.init(None))
    split = {
        "a": jnp.asarray(jac[:, :3]),
        "b": {"c": jnp.asarray(jac[:, 3:7].reshape(3, 2, 2)), "d": jnp.asarray(jac[:, 7:])},
    }
    parts, _ = tx.update(split, tx.init(None))
    rebuilt = np.concatenate([parts["a"], parts["b"]["c"].reshape(-1), parts["b"]["d"]])
    np.testing.assert_allclose(rebuilt, whole["x"], rtol=1e-6, atol=1e-7)


def test_validation_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        raco_jax.clipped_cagrad(weights=(0.5, 0.6))
    with pytest.raises(ValueError, match="non-negative"):
        raco_jax.weighted_sum((1.5, -0.5))
    with pytest.raises(ValueError, match="c must be >= 0"):
        raco_jax.cagrad(c=-0.1)
    with pytest.raises(ValueError, match="c must be < 1"):
        raco_jax.clipped_cagrad(weights=W, c=1.0)
    raco_jax.cagrad(c=1.5)  # allowed for unclipped CAGrad
    with pytest.raises(ValueError, match="rescale"):
        raco_jax.cagrad(rescale="2c")
    tx = raco_jax.clipped_cagrad(weights=(0.2, 0.3, 0.5))
    with pytest.raises(ValueError, match="built for 3"):
        tx.update(_stacked(k=2), tx.init(_params()))
    bad = {"a": jnp.zeros((2, 3)), "b": {"c": jnp.zeros((3, 3))}}
    with pytest.raises(ValueError, match=r"\['b'\]\['c'\]"):
        raco_jax.weighted_sum(W).update(bad, raco_jax.weighted_sum(W).init(None))
    with pytest.raises(ValueError, match="scalar"):
        raco_jax.weighted_sum(W).update({"a": jnp.zeros(())}, raco_jax.weighted_sum(W).init(None))
    with pytest.raises(ValueError, match="every_k"):
        raco_jax.accumulate_objectives(optax.sgd(1.0), every_k=0, num_objectives=2)


def test_non_finite_gradients_are_guarded_by_apply_if_finite() -> None:
    """apply_if_finite goes AFTER the aggregator (it zeroes parameter-shaped updates)."""
    tx = optax.chain(
        raco_jax.clipped_cagrad(weights=W, c=0.4),
        optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=3),
    )
    params = _params()
    state = tx.init(params)
    stacked = _stacked()
    stacked["scale"] = stacked["scale"].at[0].set(jnp.nan)
    updates, state = jax.jit(tx.update)(stacked, state, params)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree_util.tree_leaves(updates))
    assert int(state[1].notfinite_count) == 1
    # without the guard, a NaN gradient gives a NaN update (never a silently finite one)
    raw, _ = (lambda t: t.update(stacked, t.init(params)))(
        raco_jax.clipped_cagrad(weights=W, c=0.4)
    )
    assert np.isnan(np.asarray(raw["scale"]))
    # wrapping the aggregator itself cannot work: the rejected branch keeps [K, ...] shapes
    wrapped = optax.apply_if_finite(raco_jax.clipped_cagrad(weights=W, c=0.4), 3)
    with pytest.raises(TypeError):
        wrapped.update(stacked, wrapped.init(params), params)


def _tiny_problem():
    """Per-example gradients of a linear model with two objectives."""
    x = jax.random.normal(jax.random.key(0), (8, 5))
    y = jax.random.normal(jax.random.key(1), (8,))

    def losses(params, xb, yb):
        pred = xb @ params["w"] + params["b"]
        return jnp.stack([jnp.mean((pred - yb) ** 2), jnp.mean(jnp.abs(pred + yb))])

    params = {"w": jnp.linspace(-1, 1, 5), "b": jnp.ones(())}
    return losses, params, x, y


def test_accumulation_equals_one_large_batch() -> None:
    losses, params, x, y = _tiny_problem()
    grads = raco_jax.objective_grads(losses)
    inner = lambda: optax.chain(raco_jax.clipped_cagrad(weights=W, c=0.4), optax.adam(1e-2))  # noqa: E731
    big = inner()
    big_updates, _ = big.update(grads(params, x, y), big.init(params), params)
    acc = raco_jax.accumulate_objectives(inner(), every_k=4, num_objectives=2)
    state = acc.init(params)
    step = jax.jit(acc.update)
    for i in range(4):
        micro = grads(params, x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2])
        updates, state = step(micro, state, params)
        if i < 3:
            assert all(np.all(np.asarray(u) == 0) for u in jax.tree_util.tree_leaves(updates))
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), updates, big_updates
    )
    assert int(state.mini_step) == 0


def test_multisteps_must_not_wrap_or_follow_the_aggregator() -> None:
    losses, params, x, y = _tiny_problem()
    grads = raco_jax.objective_grads(losses)
    micro = [grads(params, x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2]) for i in range(4)]
    # wrapping: MultiSteps' accumulator is shaped like the parameters and cannot take [K, ...]
    wrapped = optax.MultiSteps(
        optax.chain(raco_jax.clipped_cagrad(weights=W, c=0.4), optax.sgd(1.0)), 4
    )
    with pytest.raises((ValueError, TypeError)):
        state = wrapped.init(params)
        for m in micro:
            _, state = jax.jit(wrapped.update)(m, state, params)
    # following: averages aggregated directions, which is not Algorithm 1
    after = optax.chain(
        raco_jax.clipped_cagrad(weights=W, c=0.4), optax.MultiSteps(optax.sgd(1.0), 4)
    )
    state = after.init(params)
    for m in micro:
        averaged_directions, state = after.update(m, state, params)
    ours = raco_jax.accumulate_objectives(
        optax.chain(raco_jax.clipped_cagrad(weights=W, c=0.4), optax.sgd(1.0)), 4, num_objectives=2
    )
    state = ours.init(params)
    for m in micro:
        aggregated_mean, state = ours.update(m, state, params)
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree_util.tree_leaves(averaged_directions),
            jax.tree_util.tree_leaves(aggregated_mean),
            strict=True,
        )
    )
    assert diff > 1e-3


def test_pcgrad_order_comes_from_the_state_key() -> None:
    jac = jax.random.normal(jax.random.key(5), (4, 6))
    tx = raco_jax.pcgrad(seed=3, num_objectives=4)
    s0 = tx.init(None)
    a1, s1 = tx.update({"x": jac}, s0)
    a1_again, _ = tx.update({"x": jac}, s0)
    np.testing.assert_array_equal(a1["x"], a1_again["x"])  # reproducible from the seed
    assert not np.array_equal(jax.random.key_data(s1.key), jax.random.key_data(s0.key))
    mean = raco_jax.pcgrad(seed=3, reduction="mean", num_objectives=4)
    a_mean, _ = mean.update({"x": jac}, mean.init(None))
    np.testing.assert_allclose(a_mean["x"] * 4, a1["x"], rtol=1e-5)


def test_mgda_without_num_objectives_records_scalar_diagnostics() -> None:
    tx = raco_jax.mgda()
    state = tx.init(_params())
    assert state.diagnostics.coefficients.shape == (0,)
    updates, state = jax.jit(tx.update)(_stacked(), state)
    assert (
        state.diagnostics.coefficients.shape == (0,) and state.diagnostics.num_conflicts.shape == ()
    )
    assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(_params())


def test_weighted_sum_single_pass_gives_the_same_update() -> None:
    full, lean = raco_jax.weighted_sum(W), raco_jax.weighted_sum(W, diagnostics=False)
    a, state_full = full.update(_stacked(), full.init(None))
    b, state_lean = lean.update(_stacked(), lean.init(None))
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    np.testing.assert_allclose(state_lean.diagnostics.coefficients, W)
    assert (
        float(jnp.abs(state_lean.diagnostics.gram).sum()) == 0.0
        and float(jnp.abs(state_full.diagnostics.gram).sum()) > 0
    )


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_state_types_stable_under_lax_cond(name: str) -> None:
    tx = AGGREGATORS[name]()
    state = tx.init(_params())

    @jax.jit
    def maybe_update(flag, stacked, state):
        return jax.lax.cond(flag, lambda s: tx.update(stacked, s)[1], lambda s: s, state)

    new_state = maybe_update(True, _stacked(), state)
    kept = maybe_update(False, _stacked(), state)
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(kept)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_integer_gradients_are_refused(name: str) -> None:
    tx = AGGREGATORS[name]()
    stacked = jax.tree_util.tree_map(lambda g: (10 * g).astype(jnp.int32), _stacked())
    with pytest.raises(TypeError, match=r"updates leaf \['dense'\]\['bias'\] has dtype int32"):
        tx.update(stacked, tx.init(_params()))


@pytest.mark.parametrize("name", sorted(set(AGGREGATORS) - {"weighted_sum_single_pass"}))
def test_a_nan_anywhere_makes_the_whole_update_and_the_diagnostics_nan(name: str) -> None:
    tx = AGGREGATORS[name]()
    stacked = _stacked()
    stacked["scale"] = stacked["scale"].at[1].set(jnp.nan)  # one entry of one leaf
    updates, state = jax.jit(tx.update)(stacked, tx.init(_params()))
    for leaf in jax.tree_util.tree_leaves(updates):
        assert np.all(np.isnan(np.asarray(leaf)))  # the finite leaves too
    assert not bool(optax.tree.get(state, "finite"))
    assert np.all(np.isnan(np.asarray(optax.tree.get(state, "coefficients"))))
    # the README's guard skips such a step: apply_if_finite after the aggregator
    guarded = optax.chain(AGGREGATORS[name](), optax.apply_if_finite(optax.sgd(1.0), 3))
    guarded_updates, guarded_state = guarded.update(stacked, guarded.init(_params()), _params())
    assert all(float(jnp.abs(u).sum()) == 0.0 for u in jax.tree_util.tree_leaves(guarded_updates))
    assert int(guarded_state[1].notfinite_count) == 1


def test_finite_gradients_are_flagged_finite() -> None:
    tx = raco_jax.clipped_cagrad(weights=W, c=0.4)
    _, state = tx.update(_stacked(), tx.init(_params()))
    assert bool(state.diagnostics.finite) and bool(tx.init(_params()).diagnostics.finite)
