"""Float64 NumPy references for the aggregation solvers (tests only).

Written independently of raco_jax.aggregation.simplex: supports are enumerated with
``itertools.combinations``, faces are solved with ``numpy.linalg`` in float64 on the raw Gram
matrix (no normalisation tricks), null spaces come from an SVD, and every answer is certified by
its own duality gap. Scipy's SLSQP, which the original CAGrad code uses, is NOT a usable reference
(anchors.md section 3).
"""

from __future__ import annotations

import itertools

import numpy as np


def _faces(k: int):
    for size in range(1, k + 1):
        yield from itertools.combinations(range(k), size)


def _null_points(h_s: np.ndarray, tol: float) -> list[np.ndarray]:
    _u, sing, vt = np.linalg.svd(h_s)
    points = []
    for vec, sv in zip(vt, sing, strict=True):
        if sv <= tol and abs(vec.sum()) > 1e-9:
            points.append(vec / vec.sum())
    return points


def _inverse(a: np.ndarray) -> np.ndarray:
    """Gauss-Jordan inverse with partial pivoting in a's own dtype (numpy.linalg is float64 only)."""
    n = a.shape[0]
    aug = np.concatenate([a.copy(), np.eye(n, dtype=a.dtype)], axis=1)
    for col in range(n):
        pivot = col + int(np.argmax(np.abs(aug[col:, col])))
        aug[[col, pivot]] = aug[[pivot, col]]
        aug[col] = aug[col] / aug[col, col]
        for row in range(n):
            if row != col:
                aug[row] = aug[row] - aug[row, col] * aug[col]
    return aug[:, n:]


def cagrad_dual_reference(
    gram: np.ndarray, w: np.ndarray, c: float, dtype: type = np.float64
) -> dict:
    """Exact p* of min_{p in simplex} p.H w + s sqrt(p.H p), s = c ||g0||, in float64.

    With ``dtype=np.longdouble`` (x87 extended precision, 64-bit mantissa) the regular faces are
    solved in that precision: near a weighted stationary point (||g_0|| = rho sum_k w_k ||g_k||)
    the full face has condition number about 1/rho^2, beyond float64 for rho below about 1e-5.
    """
    h = np.asarray(gram, dtype)
    w = np.asarray(w, dtype)
    k = h.shape[0]
    b = h @ w
    s = c * np.sqrt(max(w @ h @ w, 0.0))
    # Extended precision resolves nearly singular faces (near-cancelling g_0) 1000x further.
    tol = (1e-12 if dtype == np.float64 else 1e-15) * max(np.trace(h), 1e-300)

    def phi(p):
        return p @ b + s * np.sqrt(max(p @ h @ p, 0.0))

    candidates = [np.eye(k)[i] for i in range(k)]
    for face in _faces(k):
        idx = np.array(face)
        h_s = h[np.ix_(idx, idx)]
        if np.linalg.matrix_rank(np.asarray(h_s, np.float64), tol=float(tol)) == len(idx):
            if s > 0:
                inv = np.linalg.inv(h_s) if dtype == np.float64 else _inverse(h_s)
                ones = np.ones(len(idx), dtype)
                alpha, beta, gamma = ones @ inv @ ones, ones @ inv @ b[idx], b[idx] @ inv @ b[idx]
                disc = beta**2 - alpha * (gamma - s**2)
                if disc > 0:
                    lam = (beta + np.sqrt(disc)) / alpha
                    p_s = inv @ (lam * ones - b[idx]) / np.sqrt(disc)
                    p = np.zeros(k, dtype)
                    p[idx] = p_s
                    candidates.append(p)
        else:
            for p_s in _null_points(np.asarray(h_s, np.float64), float(tol)):
                p = np.zeros(k, dtype)
                p[idx] = p_s
                candidates.append(p)
    candidates = [np.eye(k, dtype=dtype)[i] for i in range(k)] + candidates[k:]
    feasible = [p for p in candidates if np.all(p >= -1e-10)]
    feasible = [np.maximum(p, 0) / np.maximum(p, 0).sum() for p in feasible]
    values = [phi(p) for p in feasible]
    best = int(np.argmin(values))
    p = feasible[best]
    return {"p": p, "value": values[best], "s": s, "b": b}


def cagrad_direction_reference(
    jac: np.ndarray, w: np.ndarray, c: float, clip: bool, dtype: type = np.float64
) -> dict:
    """RACO (clip=True) or weighted-anchor CAGrad direction from the Jacobian, in float64.

    ``dtype=np.longdouble`` does every step in extended precision (see cagrad_dual_reference);
    the returned direction is then rounded to float64.
    """
    jac = np.asarray(jac, dtype)
    w = np.asarray(w, dtype)
    h = jac @ jac.T
    sol = cagrad_dual_reference(h, w, c, dtype)
    p = sol["p"]
    g0 = w @ jac
    p_used = np.minimum(p, w) if clip else p
    g_tilde = p_used @ jac
    norm = np.linalg.norm(g_tilde)
    d = g0 + sol["s"] * g_tilde / norm if norm > 0 and sol["s"] > 0 else g0
    # certificate of the dual solve (unclipped direction)
    g_p = p @ jac
    d_unclipped = g0 + sol["s"] * g_p / np.linalg.norm(g_p) if np.linalg.norm(g_p) > 0 else g0
    gap = sol["value"] - np.min(jac @ d_unclipped)
    full_rank = np.linalg.matrix_rank(np.asarray(h, np.float64)) == h.shape[0]
    return {
        **{key: np.asarray(value, np.float64) for key, value in sol.items()},
        "d": np.asarray(d, np.float64),
        "gap": float(gap),
        "full_rank": full_rank,
    }


def min_norm_reference(gram: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact min_{p in simplex} p.H p in float64."""
    h = np.asarray(gram, np.float64)
    k = h.shape[0]
    tol = 1e-12 * max(np.trace(h), 1e-300)
    candidates = [np.eye(k)[i] for i in range(k)]
    for face in _faces(k):
        idx = np.array(face)
        h_s = h[np.ix_(idx, idx)]
        if np.linalg.matrix_rank(h_s, tol=tol) == len(idx):
            p_s = np.linalg.solve(h_s, np.ones(len(idx)))
            if p_s.sum() > 0:
                p = np.zeros(k)
                p[idx] = p_s / p_s.sum()
                candidates.append(p)
        else:
            for p_s in _null_points(h_s, tol):
                p = np.zeros(k)
                p[idx] = p_s
                candidates.append(p)
    feasible = [
        np.maximum(p, 0) / np.maximum(p, 0).sum() for p in candidates if np.all(p >= -1e-10)
    ]
    values = [p @ h @ p for p in feasible]
    best = int(np.argmin(values))
    return feasible[best], values[best]


def sample_jacobian(rng: np.random.Generator, k: int, kind: str, scale: float) -> np.ndarray:
    """Random K x n Jacobians with controlled structure (ideas from TorchJD's samplers)."""
    n = int(rng.integers(k + 1, 3 * k + 4))
    if kind == "full_rank":
        jac = rng.standard_normal((k, n))
    elif kind == "rank_deficient":
        r = int(rng.integers(1, k))
        jac = rng.standard_normal((k, r)) @ rng.standard_normal((r, n))
    elif kind == "colinear":
        jac = rng.standard_normal(k)[:, None] * rng.standard_normal(n)[None, :]
    elif kind == "zero_rows":
        jac = rng.standard_normal((k, n))
        jac[rng.choice(k, size=int(rng.integers(1, k)), replace=False)] = 0.0
    elif kind == "stationary":  # a positive combination of the rows is 0
        jac = rng.standard_normal((k, n))
        coef = rng.uniform(0.2, 1.0, size=k - 1)
        jac[-1] = -(coef @ jac[:-1]) / rng.uniform(0.5, 2.0)
    elif kind == "mixed_scales":
        jac = rng.standard_normal((k, n)) * (10.0 ** rng.uniform(-2, 2, size=k))[:, None]
    else:
        raise ValueError(kind)
    return jac * scale


def sample_weights(rng: np.random.Generator, k: int) -> np.ndarray:
    w = rng.dirichlet(np.ones(k))
    w = w.astype(np.float32).astype(np.float64)
    return w / w.sum()


def sample_cancelling(
    rng: np.random.Generator, k: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """A float32 Jacobian and float32 weights near a weighted stationary point.

    ||sum_k w_k g_k|| is about ``ratio`` times sum_k w_k ||g_k|| (strong conflict: the weighted
    gradients nearly cancel), with the residual g_0 in a random direction. Both are returned as
    float64 arrays holding float32 values (what the solver sees); the weights sum to 1 exactly.
    """
    n = int(rng.integers(k + 1, 3 * k + 4))
    # Dyadic weights: exact in float32 AND exactly on the simplex. Near a stationary point the
    # clip min(p*, w) resolves w to about 1e-7 / ratio, so float32 weights that sum to 1 only
    # within rounding would define a measurably different problem than the float64 reference's.
    units = np.maximum(np.round(rng.dirichlet(np.ones(k)) * 2**20), 1)
    units[np.argmax(units)] += 2**20 - units.sum()
    w = units / 2**20
    jac = rng.standard_normal((k, n))
    last = int(np.argmax(w))
    jac[last] -= (w @ jac) / w[last]
    z = rng.standard_normal(n)
    jac[last] += ratio * (w @ np.linalg.norm(jac, axis=1)) * z / np.linalg.norm(z) / w[last]
    return jac.astype(np.float32).astype(np.float64), w
