"""The certified active-set path of the CAGrad dual against float64 references, K = 3..8.

``cagrad_dual_anchored(solver="auto")`` runs a primal active-set method and falls back to the
support enumeration when it cannot certify its answer. On well-conditioned problems the fast path
must be taken (its certificate holds) and match the float64 reference to the tolerances of
test_solvers.py (dual value 1e-5 of max_k ||g_k||^2, direction 1e-4 relative); on degenerate
inputs the answer must be the enumeration's.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregation.reference import cagrad_dual_reference, sample_cancelling

from raco_jax.aggregation import simplex

SEEDS = 40


@functools.cache
def _solvers():
    def fast(gram, w, s):
        return simplex.cagrad_dual_active_set(gram, w, s)

    def auto(gram, w, s):
        return simplex.cagrad_dual_anchored(gram, w, s)

    def enumerate_(gram, w, s):
        return simplex.cagrad_dual_anchored(gram, w, s, solver="enumerate")

    return tuple(jax.jit(jax.vmap(f)) for f in (fast, auto, enumerate_))


def _well_conditioned(k: int, c: float):
    """Random full-rank Jacobians with non-uniform weights: interior, edge and vertex optima."""
    rng = np.random.default_rng(100 * k + int(10 * c))
    jacs, weights = [], []
    for i in range(SEEDS):
        if i % 4 == 0:  # near-orthogonal gradients, near-uniform weights: an interior optimum
            jac = np.eye(k, 2 * k) + 0.05 * rng.standard_normal((k, 2 * k))
            w = rng.dirichlet(200.0 * np.ones(k))
        elif i % 4 == 1:  # general position, some gradients scaled: faces of any size
            jac = rng.standard_normal((k, 2 * k)) * 10.0 ** rng.uniform(-1, 1, size=(k, 1))
            w = rng.dirichlet(np.ones(k))
        elif i % 4 == 2:  # nearly aligned gradients, one shorter: a vertex
            direction = rng.standard_normal(2 * k)
            jac = rng.uniform(1.0, 2.0, size=(k, 1)) * direction + 0.1 * rng.standard_normal(
                (k, 2 * k)
            )
            jac[0] *= 0.3
            w = rng.dirichlet(np.ones(k))
        else:  # nearly aligned gradients, two shorter ones apart: an edge
            direction = rng.standard_normal(2 * k)
            jac = rng.uniform(1.0, 2.0, size=(k, 1)) * direction + 0.1 * rng.standard_normal(
                (k, 2 * k)
            )
            jac[:2] = 0.3 * jac[:2] + 0.3 * rng.standard_normal((2, 2 * k))
            w = rng.dirichlet(np.ones(k))
        jacs.append(jac)
        weights.append(w)
    return _problems(np.stack(jacs), np.stack(weights), c)


def _problems(jacs: np.ndarray, weights: np.ndarray, c: float):
    """Trace-normalised float32 Gram matrices, float32 weights summing to 1, radii."""
    grams = np.einsum("bkn,bjn->bkj", jacs, jacs)
    grams = grams / np.trace(grams, axis1=1, axis2=2)[:, None, None]
    grams = grams.astype(np.float32).astype(np.float64)
    weights = weights.astype(np.float32).astype(np.float64)
    weights = weights / weights.sum(axis=1, keepdims=True)
    s = c * np.sqrt(np.einsum("bi,bij,bj->b", weights, grams, weights))
    return grams, weights, s


def _direction_error(gram, w, s, p, p_ref) -> float:
    """Relative error of d = g_0 + s G_p / ||G_p|| in the Gram metric."""

    def coefficients(q):
        return w + s * q / np.sqrt(q @ gram @ q)

    diff = coefficients(p) - coefficients(p_ref)
    ref = coefficients(p_ref)
    return float(np.sqrt(max(diff @ gram @ diff, 0.0)) / np.sqrt(ref @ gram @ ref))


def _run(solver, grams, weights, s):
    return solver(
        jnp.asarray(grams, jnp.float32),
        jnp.asarray(weights, jnp.float32),
        jnp.asarray(s, jnp.float32),
    )


@pytest.mark.parametrize("k", range(3, 9))
@pytest.mark.parametrize("c", [0.4, 0.8])
def test_active_set_is_certified_and_exact_on_well_conditioned_problems(k: int, c: float):
    grams, weights, s = _well_conditioned(k, c)
    fast, auto, enumerate_ = _solvers()
    (sol, certified), sol_auto, sol_enum = (
        _run(f, grams, weights, s) for f in (fast, auto, enumerate_)
    )
    certified = np.asarray(certified)
    assert certified.all(), f"K={k} c={c}: not certified for cases {np.flatnonzero(~certified)}"
    # "auto" keeps the certified answer bit for bit (K >= 4; below, it enumerates).
    expected = sol if k >= 4 else sol_enum
    np.testing.assert_array_equal(np.asarray(sol_auto.p), np.asarray(expected.p))
    np.testing.assert_array_equal(np.asarray(sol_auto.offset), np.asarray(expected.offset))
    supports = []
    for i in range(len(grams)):
        ref = cagrad_dual_reference(grams[i], weights[i], c)
        p = np.asarray(sol.p[i], np.float64)
        unit = np.max(np.diagonal(grams[i]))
        assert np.all(p >= 0) and abs(p.sum() - 1) <= 1e-6
        phi = p @ ref["b"] + ref["s"] * np.sqrt(p @ grams[i] @ p)
        assert abs(phi - ref["value"]) <= 1e-5 * unit, f"K={k} case {i}: value"
        assert abs(float(sol.value[i]) - ref["value"]) <= 1e-5 * unit
        err = _direction_error(grams[i], weights[i], ref["s"], p, ref["p"])
        assert err <= 1e-4, f"K={k} c={c} case {i}: direction error {err:.1e}"
        np.testing.assert_allclose(np.asarray(sol.offset[i]), p - weights[i], atol=1e-6)
        # the enumeration finds the same point
        np.testing.assert_allclose(p, np.asarray(sol_enum.p[i]), atol=2e-4)
        supports.append(int(np.sum(ref["p"] > 1e-6)))
    supports = np.array(supports)
    # the optimum is interior, on an edge and at a vertex among the cases
    assert (supports == k).any() and (supports == 2).any() and (supports == 1).any(), supports


def test_certificate_fails_when_the_method_has_not_converged():
    """Stopped before the optimal support is reached, the answer must not be certified."""
    grams, weights, s = _well_conditioned(6, 0.4)
    ref_support = [
        int(np.sum(cagrad_dual_reference(g, w, 0.4)["p"] > 1e-6))
        for g, w in zip(grams, weights, strict=True)
    ]
    short = jax.jit(
        jax.vmap(lambda g, w, s: simplex.cagrad_dual_active_set(g, w, s, max_iterations=1))
    )
    _, certified = _run(short, grams, weights, s)
    certified = np.asarray(certified)
    multi = np.array(ref_support) >= 2
    assert multi.sum() >= 10
    assert not certified[multi].any()


def _degenerate(k: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    jac = rng.standard_normal((k, 2 * k))
    if kind == "duplicate":
        jac[1] = jac[0]
    elif kind == "zero":
        jac[rng.integers(k)] = 0.0
    elif kind == "colinear":
        jac = rng.standard_normal(k)[:, None] * rng.standard_normal(2 * k)[None, :]
    elif kind == "zero_sum":  # 0 in the hull, and a positive combination vanishes
        jac[-1] = -(rng.uniform(0.2, 1.0, size=k - 1) @ jac[:-1])
    return jac


@pytest.mark.parametrize("k", [3, 5, 8])
@pytest.mark.parametrize("kind", ["duplicate", "zero", "colinear", "zero_sum", "s_zero"])
def test_degenerate_inputs_give_the_enumerations_answer(k: int, kind: str):
    rng = np.random.default_rng(k)
    jacs = np.stack([_degenerate(k, kind, rng) for _ in range(16)])
    weights = rng.dirichlet(np.ones(k), size=len(jacs))
    grams, weights, s = _problems(jacs, weights, 0.0 if kind == "s_zero" else 0.5)
    fast, auto, enumerate_ = _solvers()
    (_, certified), sol_auto, sol_enum = (
        _run(f, grams, weights, s) for f in (fast, auto, enumerate_)
    )
    certified = np.asarray(certified)
    if kind == "s_zero":
        assert not certified.any()
    # Otherwise the active set may certify legitimately (it never needs both of two duplicates,
    # a zero gradient or a singular face when the optimum avoids them); the answer must agree.
    # Uncertified: the enumeration's answer (compiled inside lax.cond: equal to rounding).
    np.testing.assert_allclose(
        np.asarray(sol_auto.p)[~certified], np.asarray(sol_enum.p)[~certified], atol=1e-6
    )
    for i in np.flatnonzero(certified):
        unit = np.max(np.diagonal(grams[i]))
        assert abs(float(sol_auto.value[i]) - float(sol_enum.value[i])) <= 1e-5 * unit
        if kind == "zero":  # Phi* = 0 = Phi(e_k) of the zero gradient: ties
            continue
        err = _direction_error(
            grams[i],
            weights[i],
            s[i],
            np.asarray(sol_auto.p[i], np.float64),
            np.asarray(sol_enum.p[i], np.float64),
        )
        assert err <= 1e-4, f"{kind} case {i}: direction error {err:.1e}"
    assert np.all(np.isfinite(np.asarray(sol_auto.p)))


@functools.cache
def _anchored_solvers():
    """The three solvers with anchor products, jitted once (one program per K, not op by op)."""
    return (
        jax.jit(simplex.cagrad_dual_active_set),
        jax.jit(simplex.cagrad_dual_anchored),
        jax.jit(functools.partial(simplex.cagrad_dual_anchored, solver="enumerate")),
    )


def test_cancelling_anchor_gives_the_enumerations_answer():
    """Near a weighted stationary point (g_0 cancels) with exact anchor products."""
    active_set, anchored, enumerated = _anchored_solvers()
    near_anchor = 0
    for k, ratio in itertools.product((3, 5, 8), (1e-3, 1e-5)):
        rng = np.random.default_rng(30 + k)
        for _ in range(4):
            jac, w = sample_cancelling(rng, k, ratio)
            gram = jac @ jac.T
            trace = np.trace(gram)
            g0 = w @ jac
            inner = jnp.asarray(jac @ g0 / trace, jnp.float32)
            norm2 = jnp.asarray(g0 @ g0 / trace, jnp.float32)
            gram32 = jnp.asarray(gram / trace, jnp.float32)
            w32 = jnp.asarray(w, jnp.float32)
            s = 0.4 * jnp.sqrt(norm2)
            _, certified = active_set(gram32, w32, s, inner, norm2)
            auto = anchored(gram32, w32, s, inner, norm2)
            enum = enumerated(gram32, w32, s, inner, norm2)
            tol = 1e-5 if bool(certified) else 1e-6  # the same candidate, to rounding
            scale = np.max(np.abs(np.asarray(enum.offset)))
            np.testing.assert_allclose(
                np.asarray(auto.offset), np.asarray(enum.offset), rtol=tol, atol=tol * scale
            )
            if np.max(np.abs(np.asarray(enum.offset))) < 1e-2:
                # p* ~ w: G_p cancels, so the active set must hand over to the enumeration.
                assert not bool(certified)
                near_anchor += 1
    assert near_anchor >= 2
