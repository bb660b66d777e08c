"""The on-device dual solvers against exact float64 references, K = 2..8.

Random Jacobians with controlled structure (full rank, rank-deficient, colinear, zero rows,
0 inside the hull, mixed per-objective scales) at global scales from 1e-10 to 1e10. The dual value
must match the float64 support-enumeration reference to 1e-5 relative to the problem's scale
(max_k ||g_k||^2, the unit of the dual objective), and where p* is unique (full-rank Gram) the
direction to 1e-4 relative.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregation.reference import (
    cagrad_direction_reference,
    min_norm_reference,
    sample_cancelling,
    sample_jacobian,
    sample_weights,
)

import raco_jax
from raco_jax.aggregation import simplex
from raco_jax.aggregation.weightings import cagrad_coefficients, mgda_coefficients

KINDS = ("full_rank", "rank_deficient", "colinear", "zero_rows", "stationary", "mixed_scales")
SCALES = (1e-10, 1e-3, 1.0, 1e2, 1e10)
SEEDS_PER_CELL = 2


@functools.cache
def _batched_cagrad(clip: bool):
    def one(jac, w, c):
        gram = raco_jax.gram_matrix({"jac": jac})
        return cagrad_coefficients(gram, w, c, clip=clip)

    return jax.jit(jax.vmap(one))


def _cases(k: int):
    rng = np.random.default_rng(1000 + k)
    cases = []
    for kind in KINDS:
        for scale in SCALES:
            for _ in range(SEEDS_PER_CELL):
                jac = sample_jacobian(rng, k, kind, scale)
                cases.append(
                    (kind, scale, jac, sample_weights(rng, k), float(rng.uniform(0.05, 0.95)))
                )
    width = max(j.shape[1] for _, _, j, _, _ in cases)
    padded = np.stack([np.pad(j, ((0, 0), (0, width - j.shape[1]))) for _, _, j, _, _ in cases])
    return cases, padded


def _phi64(jac: np.ndarray, w: np.ndarray, c: float, p: np.ndarray) -> float:
    h = jac @ jac.T
    s = c * np.sqrt(max(w @ h @ w, 0.0))
    return float(p @ h @ w + s * np.sqrt(max(p @ h @ p, 0.0)))


@pytest.mark.parametrize("k", range(2, 9))
@pytest.mark.parametrize("clip", [False, True])
def test_cagrad_matches_float64_reference(k: int, clip: bool) -> None:
    cases, padded = _cases(k)
    weights = np.stack([w for *_, w, _ in cases]).astype(np.float32)
    cs = np.array([c for *_, c in cases], np.float32)
    coefficients, diagnostics = _batched_cagrad(clip)(
        jnp.asarray(padded, jnp.float32), jnp.asarray(weights), jnp.asarray(cs)
    )
    coefficients = np.asarray(coefficients, np.float64)
    duals = np.asarray(diagnostics.dual, np.float64)
    assert np.all(np.isfinite(coefficients)), "non-finite coefficients"
    checked_directions = 0
    for i, (kind, scale, jac, _, c) in enumerate(cases):
        jac32 = jac.astype(np.float32).astype(np.float64)  # the gradients the solver saw
        w = weights[i].astype(np.float64)
        ref = cagrad_direction_reference(jac32, w, c, clip=clip)
        unit = np.max(np.sum(jac32**2, axis=1))
        if unit == 0:
            continue
        ours = _phi64(jac32, w, c, duals[i])
        assert abs(ours - ref["value"]) <= 1e-5 * unit, (
            f"K={k} {kind} scale={scale}: dual value {ours!r} vs reference {ref['value']!r}"
        )
        assert ref["gap"] <= 1e-8 * unit or not ref["full_rank"], "reference not certified"
        if ref["full_rank"] and kind != "stationary":
            d_ours = coefficients[i] @ jac32
            err = np.linalg.norm(d_ours - ref["d"]) / np.linalg.norm(ref["d"])
            assert err <= 1e-4, f"K={k} {kind} scale={scale}: direction error {err:.2e}"
            checked_directions += 1
    assert checked_directions >= 10


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_min_norm_matches_float64_reference(k: int) -> None:
    cases, padded = _cases(k)
    coefficients, _ = jax.jit(
        jax.vmap(lambda j: mgda_coefficients(raco_jax.gram_matrix({"j": j})))
    )(jnp.asarray(padded, jnp.float32))
    for i, (kind, scale, jac, _, _) in enumerate(cases):
        jac32 = jac.astype(np.float32).astype(np.float64)
        h = jac32 @ jac32.T
        unit = np.max(np.diagonal(h))
        if unit == 0:
            continue
        _, ref_value = min_norm_reference(h)
        p = np.asarray(coefficients[i], np.float64)
        assert abs(p.sum() - 1) < 1e-5 and np.all(p >= 0)
        assert p @ h @ p - ref_value <= 2e-6 * unit, f"K={k} {kind} scale={scale}"


@jax.jit
def _normalized(gram):
    return simplex.normalize_gram(gram)[0]


def test_two_objective_closed_form_equals_enumeration() -> None:
    closed_form = jax.jit(simplex.cagrad_dual_two)
    enumerate_ = jax.jit(simplex.cagrad_dual_enumerate)
    rng = np.random.default_rng(7)
    for _ in range(50):
        jac = rng.standard_normal((2, 5)) * 10.0 ** rng.uniform(-3, 3)
        gram = _normalized(jnp.asarray(jac @ jac.T, jnp.float32))
        w = jnp.asarray(sample_weights(rng, 2), jnp.float32)
        s = float(rng.uniform(0, 0.9)) * jnp.sqrt(w @ gram @ w)
        p_closed, v_closed = closed_form(gram, w, s)
        p_enum, v_enum = enumerate_(gram, w, s)
        assert abs(float(v_closed) - float(v_enum)) <= 1e-6
        np.testing.assert_allclose(p_closed, p_enum, atol=2e-4)


def test_dual_cone_projection_is_the_nearest_feasible_direction() -> None:
    project = jax.jit(simplex.dual_cone_projection)
    rng = np.random.default_rng(3)
    for k in (2, 3, 4, 6):
        for _ in range(10):
            jac = rng.standard_normal((k, 3))
            w = sample_weights(rng, k)
            gram = _normalized(jnp.asarray(jac @ jac.T, jnp.float32))
            mu = np.asarray(project(gram, jnp.asarray(w, jnp.float32)))
            d = (w + mu) @ jac
            assert np.all(mu >= 0)
            assert np.all(jac @ d >= -1e-5 * np.linalg.norm(jac) ** 2)
            # KKT: complementary slackness mu_k <g_k, d> = 0
            np.testing.assert_allclose(mu * (jac @ d), 0.0, atol=1e-4)


# Near a weighted stationary point: ||g_0|| = ratio * sum_k w_k ||g_k|| (strong conflict). A
# float32 Gram matrix cannot resolve g_0 there; the transforms take g_0 and its products from the
# vectors (compensated precision) and form d around g_0.
CANCELLING_RATIOS = (5e-4, 1e-5)
CANCELLING_SEEDS = 3


@functools.cache
def _batched_transform(clip: bool):
    def one(jac, w, c):
        tx = raco_jax.clipped_cagrad(w, c) if clip else raco_jax.cagrad(c, weights=w)
        updates, state = tx.update({"jac": jac}, tx.init(None))
        return updates["jac"], state.diagnostics

    # vmap turns the transform's lax.cond into a select: both paths run, the anchored one is kept.
    return jax.jit(jax.vmap(one))


def _cancelling_cases(k: int):
    rng = np.random.default_rng(2000 + k)
    cases = [
        (ratio, *sample_cancelling(rng, k, ratio))
        for ratio in CANCELLING_RATIOS
        for _ in range(CANCELLING_SEEDS)
    ]
    width = max(jac.shape[1] for _, jac, _ in cases)
    padded = np.stack([np.pad(jac, ((0, 0), (0, width - jac.shape[1]))) for _, jac, _ in cases])
    return cases, padded


@pytest.mark.parametrize("k", range(2, 9))
@pytest.mark.parametrize("c", [0.4, 0.8])
@pytest.mark.parametrize("clip", [True, False])
def test_cancelling_anchor_matches_extended_precision_reference(k: int, c: float, clip: bool):
    """The update is exact near a weighted stationary point, and its certificate is honest."""
    cases, padded = _cancelling_cases(k)
    weights = np.stack([w for *_, w in cases]).astype(np.float32)
    updates, diagnostics = _batched_transform(clip)(
        jnp.asarray(padded, jnp.float32), jnp.asarray(weights), jnp.full(len(cases), c)
    )
    gram_only_coefficients, gram_only = _batched_cagrad(clip)(
        jnp.asarray(padded, jnp.float32), jnp.asarray(weights), jnp.full(len(cases), c)
    )
    for i, (ratio, jac, w) in enumerate(cases):
        ref = cagrad_direction_reference(jac, w, c, clip=clip, dtype=np.longdouble)
        scale = np.linalg.norm(w @ jac) * np.max(np.linalg.norm(jac, axis=1))
        assert abs(ref["gap"]) <= 1e-9 * scale, "reference not certified"
        d = np.asarray(updates[i], np.float64)[: jac.shape[1]]
        err = np.linalg.norm(d - ref["d"]) / np.linalg.norm(ref["d"])
        assert err <= 1e-5, f"K={k} c={c} ratio={ratio}: direction error {err:.2e}"
        gap = float(diagnostics.duality_gap[i])
        assert 0.0 <= gap <= 1e-5 * scale, f"K={k} ratio={ratio}: gap {gap / scale:.1e}"
        # From the Gram matrix alone g_0 is unresolvable here: the step falls back to d = g_0,
        # and the certificate must say it is not optimal (an upper bound of the true gap).
        if ratio**2 < 1e-6:
            np.testing.assert_allclose(np.asarray(gram_only_coefficients[i]), w, rtol=1e-6)
            g0 = w @ jac
            true_gap = ref["value"] - np.min(jac @ g0)
            assert float(gram_only.duality_gap[i]) >= 0.99 * true_gap > 0
