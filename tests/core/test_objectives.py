"""objective_grads / value_and_objective_grads: one forward, K backward passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import raco_jax


def _losses(params, x, y):
    hidden = jnp.tanh(x @ params["w1"])
    pred = hidden @ params["w2"]
    return jnp.stack(
        [jnp.mean((pred - y) ** 2), jnp.mean(jnp.abs(pred)), jnp.sum(params["w1"] ** 2)]
    )


def _setup():
    keys = jax.random.split(jax.random.key(0), 4)
    params = {"w1": jax.random.normal(keys[0], (4, 5)), "w2": jax.random.normal(keys[1], (5,))}
    return params, jax.random.normal(keys[2], (7, 4)), jax.random.normal(keys[3], (7,))


def test_equals_k_separate_grads() -> None:
    params, x, y = _setup()
    values, stacked = jax.jit(raco_jax.value_and_objective_grads(_losses))(params, x, y)
    np.testing.assert_allclose(values, _losses(params, x, y), rtol=1e-6)
    for k in range(3):
        single = jax.grad(lambda p, k=k: _losses(p, x, y)[k])(params)
        for name in params:
            np.testing.assert_allclose(stacked[name][k], single[name], rtol=1e-5, atol=1e-6)
            assert stacked[name].shape == (3, *params[name].shape)


def test_has_aux_and_argnums() -> None:
    params, x, y = _setup()

    def with_aux(p, xx, yy):
        return _losses(p, xx, yy), {"n": xx.shape[0]}

    grads, aux = raco_jax.objective_grads(with_aux, has_aux=True)(params, x, y)
    assert aux == {"n": 7} and grads["w1"].shape == (3, 4, 5)
    (_values, aux2), (_g_params, g_x) = raco_jax.value_and_objective_grads(
        with_aux, argnums=(0, 1), has_aux=True
    )(params, x, y)
    assert g_x.shape == (3, 7, 4) and aux2 == {"n": 7}
    expected_gx = jax.grad(lambda xx: _losses(params, xx, y)[0])(x)
    np.testing.assert_allclose(g_x[0], expected_gx, rtol=1e-5, atol=1e-6)
    # a list of scalar losses is accepted too
    listed = raco_jax.objective_grads(lambda p: [jnp.sum(p), jnp.sum(p**2)])(jnp.ones(3))
    np.testing.assert_allclose(listed, [[1, 1, 1], [2, 2, 2]])


def test_works_on_flax_nnx_state() -> None:
    from flax import nnx

    model = nnx.Sequential(
        nnx.Linear(4, 5, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(5, 1, rngs=nnx.Rngs(1))
    )
    graphdef, state = nnx.split(model)
    _, x, y = _setup()

    def losses(state):
        pred = nnx.merge(graphdef, state)(x)[:, 0]
        return jnp.stack([jnp.mean((pred - y) ** 2), jnp.mean(pred**2)])

    stacked = raco_jax.objective_grads(losses)(state)
    single = jax.grad(lambda s: losses(s)[1])(state)
    for a, b in zip(
        jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(single), strict=True
    ):
        np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)


def test_bad_losses_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"1-D array of shape \[K\]"):
        raco_jax.objective_grads(lambda p: jnp.sum(p))(jnp.ones(3))
    with pytest.raises(ValueError, match="argument"):
        raco_jax.objective_grads(lambda p: jnp.stack([p.sum()]), argnums=2)(jnp.ones(3))
    with pytest.raises(TypeError, match=r"\(losses, aux\)"):
        raco_jax.objective_grads(lambda p: jnp.stack([p.sum()]), has_aux=True)(jnp.ones(3))
