"""Golden values: raco-algorithm.md section 5 and the degenerate cases of anchors.md section 3."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import raco_jax

G1_G2 = np.array([[1.0, -4.0], [-1.0, 1.0]])


def _direction(tx, jac: np.ndarray):
    stacked = {"x": jnp.asarray(jac, jnp.float32)}
    state = tx.init({"x": jnp.zeros(jac.shape[1])})
    updates, state = tx.update(stacked, state)
    return np.asarray(updates["x"], np.float64), state


def test_worked_example_unclipped() -> None:
    d, state = _direction(raco_jax.cagrad(c=0.5, weights=(0.2, 0.8)), G1_G2)
    np.testing.assert_allclose(d, [-0.703735, -0.281494], atol=1e-6)
    np.testing.assert_allclose(state.diagnostics.dual, [0.356145, 0.643855], atol=1e-6)
    improvements = G1_G2 @ d
    np.testing.assert_allclose(improvements, [0.422241, 0.422241], atol=1e-6)


def test_worked_example_clipped() -> None:
    d, state = _direction(raco_jax.clipped_cagrad(weights=(0.2, 0.8), c=0.5), G1_G2)
    np.testing.assert_allclose(d, [-0.882999, -0.099557], atol=1e-6)
    np.testing.assert_allclose(state.diagnostics.dual, [0.356145, 0.643855], atol=1e-6)
    np.testing.assert_allclose(state.diagnostics.clipped_dual, [0.2, 0.643855], atol=1e-6)
    np.testing.assert_allclose(G1_G2 @ d, [-0.484771, 0.783442], atol=1e-6)
    # the correction has length exactly c * ||g_0||
    g0 = np.array([0.2, 0.8]) @ G1_G2
    np.testing.assert_allclose(np.linalg.norm(d - g0), 0.5 * np.linalg.norm(g0), rtol=1e-6)
    assert state.diagnostics.num_conflicts == 1
    assert float(state.diagnostics.duality_gap) < 1e-6


def test_theorem_3_2_cosines() -> None:
    """rho = cos(g_0, correction) rises from 0.345785 to 0.943330 when clipping."""
    g0 = np.array([0.2, 0.8]) @ G1_G2
    for tx, rho in (
        (raco_jax.cagrad(c=0.5, weights=(0.2, 0.8)), 0.345785),
        (raco_jax.clipped_cagrad(weights=(0.2, 0.8), c=0.5), 0.943330),
    ):
        d, _ = _direction(tx, G1_G2)
        corr = d - g0
        np.testing.assert_allclose(
            corr @ g0 / np.linalg.norm(corr) / np.linalg.norm(g0), rho, atol=1e-6
        )


def test_uniform_weight_cagrad() -> None:
    jac = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    d, state = _direction(raco_jax.cagrad(c=0.5, num_objectives=2), jac)
    np.testing.assert_allclose(d, [0.183503, 1.204124, 1.204124], atol=1e-6)
    np.testing.assert_allclose(state.diagnostics.dual, [1.0, 0.0], atol=1e-7)


@pytest.mark.parametrize(
    ("jac", "c", "expected"),
    [
        ([[2.0, 0.0], [-1.0, 0.0]], 0.5, [0.25, 0.0]),  # (1 - c) g_0
        ([[1.0, 1.0], [-1.0, -1.0], [0.0, 1.0]], 0.8, [-1 / 6, 1 / 6]),  # dual-cone projection
        ([[1.0, 0.0], [0.0, 0.0]], 0.5, [0.5, 0.0]),  # a dead objective: g_0
    ],
)
def test_degenerate_cases_mean_anchor(jac, c, expected) -> None:
    d, _ = _direction(raco_jax.cagrad(c=c), np.array(jac))
    np.testing.assert_allclose(d, expected, atol=1e-6)


@pytest.mark.parametrize("tx_factory", [raco_jax.cagrad, raco_jax.clipped_cagrad])
def test_zero_and_cancelling_gradients_stay_finite(tx_factory) -> None:
    w = (0.5, 0.5)
    for jac in (np.zeros((2, 3)), np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])):
        d, state = _direction(tx_factory(c=0.4, weights=w), jac)
        assert np.all(np.isfinite(d))
        assert np.all(np.isfinite(np.asarray(state.diagnostics.coefficients)))
        # g_0 = 0 here, so the update is g_0 = 0
        np.testing.assert_allclose(d, 0.0, atol=1e-6)


def test_clipped_dead_weight_vertex_falls_back_to_anchor() -> None:
    """p* = e_2 with w_2 = 0: the clipped combination is 0, so d = g_0 (the paper's rule)."""
    jac = np.array([[1.0, 0.0], [-1.0, 0.5]])
    d, state = _direction(raco_jax.clipped_cagrad(weights=(1.0, 0.0), c=0.5), jac)
    np.testing.assert_allclose(state.diagnostics.dual, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(d, jac[0], atol=1e-6)


@pytest.mark.parametrize("clip", [False, True])
def test_nearly_vanishing_anchor_is_solved_exactly(clip) -> None:
    """||g_0|| below float32 Gram resolution (near the weighted optimum, ratio about 1e-6).

    The transformations take g_0 from the vectors (compensated) and solve around it: d is the
    exact direction, not g_0. From the Gram matrix alone g_0 cannot be resolved, so
    cagrad_coefficients steps along g_0 there, and its certificate says that is not optimal.
    """
    from aggregation.reference import cagrad_direction_reference

    g1 = np.array([2.0, 1.0, -0.5])
    jac = np.stack([g1, -g1 + np.array([2e-6, -1e-6, 3e-6])])
    jac32 = jac.astype(np.float32).astype(np.float64)
    w = (0.5, 0.5)
    tx = raco_jax.clipped_cagrad(weights=w, c=0.4) if clip else raco_jax.cagrad(c=0.4, weights=w)
    d, state = _direction(tx, jac)
    ref = cagrad_direction_reference(jac32, np.array(w), 0.4, clip=clip, dtype=np.longdouble)
    np.testing.assert_allclose(d, ref["d"], rtol=1e-5, atol=1e-5 * np.linalg.norm(ref["d"]))
    g0 = np.array(w) @ jac32
    assert float(state.diagnostics.duality_gap) <= 1e-5 * np.linalg.norm(g0) * np.linalg.norm(g1)
    a, diag = raco_jax.cagrad_coefficients(
        raco_jax.gram_matrix({"x": jnp.asarray(jac, jnp.float32)}), w, 0.4, clip=clip
    )
    np.testing.assert_allclose(np.asarray(a), w)
    assert float(diag.cos_update_anchor) == 1.0
    assert float(diag.duality_gap) >= ref["value"] - np.min(jac32 @ g0) > 0
