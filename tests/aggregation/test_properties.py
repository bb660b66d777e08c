"""Properties of the aggregators (hypothesis), checked in float64 on the float32 results."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import raco_jax
from raco_jax.aggregation.weightings import cagrad_coefficients

N = 6  # gradient dimension; fixed so that each K compiles once


@functools.cache
def _coefficients(clip: bool):
    return jax.jit(
        lambda jac, w, c: cagrad_coefficients(raco_jax.gram_matrix({"j": jac}), w, c, clip=clip)
    )


def _direction(jac: np.ndarray, w: np.ndarray, c: float, clip: bool) -> tuple[np.ndarray, object]:
    a, diag = _coefficients(clip)(
        jnp.asarray(jac, jnp.float32), jnp.asarray(w, jnp.float32), jnp.float32(c)
    )
    return np.asarray(a, np.float64) @ jac.astype(np.float32).astype(np.float64), diag


@st.composite
def problems(draw):
    k = draw(st.integers(2, 4))
    # Entries are 0 or of magnitude >= 1e-6: squared norms below float32's normal range (about
    # 1e-38, i.e. gradients of size 1e-19) underflow in the Gram matrix and read as 0 (documented
    # in gram_matrix); scales down to 1e-10 are covered by test_solvers.py.
    magnitude = st.floats(2**-20, 10, width=32)
    element = st.one_of(st.just(0.0), magnitude, magnitude.map(lambda x: -x))
    jac = draw(hnp.arrays(np.float64, (k, N), elements=element))
    raw = draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.05, 1.0)))
    w = (raw / raw.sum()).astype(np.float32).astype(np.float64)
    w = w / w.sum()
    c = draw(st.floats(0.05, 0.95))
    return jac, w, c


def _scale(jac: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(jac, axis=1))) + 1e-30


@settings(max_examples=60, deadline=None)
@given(problems(), st.booleans(), st.randoms(use_true_random=False))
def test_permutation_of_objectives_with_weights(problem, clip, rnd) -> None:
    jac, w, c = problem
    perm = np.array(rnd.sample(range(jac.shape[0]), jac.shape[0]))
    d, _ = _direction(jac, w, c, clip)
    d_perm, _ = _direction(jac[perm], w[perm], c, clip)
    np.testing.assert_allclose(d_perm, d, atol=2e-4 * _scale(jac))


@settings(max_examples=60, deadline=None)
@given(problems(), st.booleans(), st.sampled_from([1e-6, 1e-2, 3.0, 1e5]))
def test_positive_homogeneity(problem, clip, alpha) -> None:
    jac, w, c = problem
    d, _ = _direction(jac, w, c, clip)
    d_scaled, _ = _direction(jac * alpha, w, c, clip)
    np.testing.assert_allclose(d_scaled / alpha, d, atol=2e-4 * _scale(jac))


@settings(max_examples=40, deadline=None)
@given(problems(), st.booleans())
def test_c_zero_is_the_weighted_sum(problem, clip) -> None:
    jac, w, _ = problem
    d, diag = _direction(jac, w, 0.0, clip)
    np.testing.assert_allclose(np.asarray(diag.coefficients), w, atol=1e-7)
    np.testing.assert_allclose(d, w @ jac.astype(np.float32), atol=1e-5 * _scale(jac))


@settings(max_examples=80, deadline=None)
@given(problems())
def test_clipped_coefficients_dominate_weights_and_correction_has_length_c_g0(problem) -> None:
    jac, w, c = problem
    d, diag = _direction(jac, w, c, clip=True)
    a = np.asarray(diag.coefficients, np.float64)
    assert np.all(a >= w - 1e-6)
    jac32 = jac.astype(np.float32).astype(np.float64)
    g0 = w @ jac32
    g_tilde = np.asarray(diag.clipped_dual, np.float64) @ jac32
    if np.linalg.norm(g_tilde) > 1e-3 * _scale(jac) and np.linalg.norm(g0) > 1e-3 * _scale(jac):
        np.testing.assert_allclose(np.linalg.norm(d - g0), c * np.linalg.norm(g0), rtol=1e-3)
    else:  # the paper's fallback, or g_0 = 0
        assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-3) + 1e-5 * _scale(jac)


def test_clipped_equals_cagrad_when_dual_is_a_weighted_vertex() -> None:
    rng = np.random.default_rng(11)
    vertex_cases = 0
    for _ in range(300):
        k = int(rng.integers(2, 5))
        jac = rng.standard_normal((k, N))
        w = rng.dirichlet(np.ones(k)).astype(np.float32).astype(np.float64)
        w = w / w.sum()
        c = float(rng.uniform(0.1, 0.9))
        d_unclipped, diag = _direction(jac, w, c, clip=False)
        p = np.asarray(diag.dual)
        if np.max(p) < 1 - 1e-6:
            continue
        vertex_cases += 1
        d_clipped, _ = _direction(jac, w, c, clip=True)
        np.testing.assert_allclose(d_clipped, d_unclipped, atol=1e-5 * _scale(jac))
    assert vertex_cases >= 20


def test_vmap_matches_loop() -> None:
    rng = np.random.default_rng(5)
    jacs = rng.standard_normal((16, 3, N)).astype(np.float32)
    w = np.array([0.5, 0.25, 0.25], np.float32)

    def one(jac):
        return cagrad_coefficients(raco_jax.gram_matrix({"j": jac}), w, 0.4)[0]

    batched = jax.jit(jax.vmap(one))(jnp.asarray(jacs))
    looped = np.stack([np.asarray(one(jnp.asarray(j))) for j in jacs])
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-6)
