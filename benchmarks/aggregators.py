"""Timing of one aggregator update against the weighted-sum baseline, the solver, and a peer path.

Usage:
    python benchmarks/aggregators.py [--quick] [--dtype float32|bfloat16] [--ks 2,3,4,8]
                                     [--sizes 1e5,1e6,1e7] [--repeats 15] [--out FILE.json]

For every K and parameter count P (split over many leaves of mixed sizes), it times the jitted
``update`` of clipped_cagrad, cagrad and mgda and of the single-pass baseline
``weighted_sum(w, diagnostics=False)`` on the same stacked gradients, interleaving the methods
within each repetition, and reports medians and the ratio to the memory-traffic floor
(2K+1)/(K+1): the baseline reads the K x P stack once and writes P; the Gram-based aggregators
read it twice (Gram, then combine). It also times the dual solver alone under vmap over a batch of
Gram matrices (K = 2..8), and one update of the path PyTorch libraries take (stack to the host,
NumPy Gram, scipy SLSQP / minimize_scalar dual, NumPy combine, back to the device).

Prints a Markdown report; with --out also writes the raw numbers as JSON. Timings are never
asserted in tests; record them in benchmarks/RESULTS.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import raco_jax
from raco_jax.aggregation import simplex

LEAVES = 64


def stacked_tree(k: int, total: int, dtype, seed: int = 0) -> dict:
    """K stacked gradients with ``total`` parameters over LEAVES leaves of mixed sizes."""
    rng = np.random.default_rng(seed)
    sizes = np.maximum((rng.dirichlet(np.full(LEAVES, 0.5)) * total).astype(int), 1)
    keys = jax.random.split(jax.random.key(seed), LEAVES)
    tree = {}
    for i, (key, size) in enumerate(zip(keys, sizes, strict=True)):
        cols = 128 if size >= 4096 else 1
        shape = (k, int(size) // cols, cols) if cols > 1 else (k, int(size))
        tree[f"leaf{i:02d}"] = jax.random.normal(key, shape, jnp.float32).astype(dtype)
    return tree


def _median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each thunk, alternating the thunks within each repetition."""
    for fn in fns.values():  # warm-up (compile)
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: _median_ms(ts) for name, ts in times.items()}


def bench_updates(ks, sizes, dtype, repeats: int) -> list[dict]:
    rows = []
    for k in ks:
        w = tuple(np.full(k, 1.0 / k).tolist())
        w = tuple(np.asarray(w, np.float32) / np.float32(np.sum(np.asarray(w, np.float32))))
        transforms = {
            "weighted_sum (baseline)": raco_jax.weighted_sum(w, diagnostics=False),
            "clipped_cagrad": raco_jax.clipped_cagrad(weights=w, c=0.4),
            "cagrad": raco_jax.cagrad(c=0.4, weights=w),
            "mgda": raco_jax.mgda(num_objectives=k),
        }
        for total in sizes:
            tree = stacked_tree(k, int(total), dtype)
            fns = {
                name: functools.partial(jax.jit(tx.update), tree, tx.init(None))
                for name, tx in transforms.items()
            }
            fns["gram_matrix alone"] = functools.partial(jax.jit(raco_jax.gram_matrix), tree)
            medians = time_interleaved(fns, repeats)
            base = medians["weighted_sum (baseline)"]
            floor = (2 * k + 1) / (k + 1)
            for name, ms in medians.items():
                ratio = ms / base
                rows.append(
                    {
                        "K": k,
                        "P": int(total),
                        "method": name,
                        "median_ms": ms,
                        "ratio": ratio,
                        "floor": floor,
                        "ratio_to_floor": ratio / floor,
                    }
                )
    return rows


def _solve_dual(gram: jax.Array, weights: jax.Array) -> jax.Array:
    gram_n, _ = simplex.normalize_gram(gram)
    s = 0.4 * jnp.sqrt(weights @ gram_n @ weights)
    return simplex.cagrad_dual(gram_n, weights, s)[0]


def bench_solver(ks, batch: int, repeats: int) -> list[dict]:
    rows = []
    for k in ks:
        rng = np.random.default_rng(k)
        jac = rng.standard_normal((batch, k, 3 * k))
        grams = jnp.asarray(jac @ np.swapaxes(jac, 1, 2), jnp.float32)
        w = jnp.full((k,), 1.0 / k, jnp.float32)

        solve = functools.partial(_solve_dual, weights=w)
        med = time_interleaved(
            {
                "batch": functools.partial(jax.jit(jax.vmap(solve)), grams),
                "single": functools.partial(jax.jit(solve), grams[0]),
            },
            repeats,
        )
        rows.append(
            {
                "K": k,
                "batch": batch,
                "batch_ms": med["batch"],
                "us_per_matrix": 1e3 * med["batch"] / batch,
                "single_call_us": 1e3 * med["single"],
                "supports": 2**k - 1,
            }
        )
    return rows


def peer_update(tree: dict, w: np.ndarray, c: float) -> dict:
    """The PyTorch-library path: host Gram, scipy dual (SLSQP for K > 2), host combine."""
    from scipy.optimize import minimize, minimize_scalar

    host = {name: np.asarray(leaf, np.float32) for name, leaf in tree.items()}
    k = len(w)
    gram = sum(x.reshape(k, -1) @ x.reshape(k, -1).T for x in host.values()).astype(np.float64)
    b = gram @ w
    s = c * np.sqrt(w @ gram @ w)

    def phi(p):
        return p @ b + s * np.sqrt(max(p @ gram @ p, 0.0))

    if k == 2:
        lam = minimize_scalar(
            lambda t: phi(np.array([t, 1 - t])), bounds=(0, 1), method="bounded"
        ).x
        p = np.array([lam, 1 - lam])
    else:
        cons = ({"type": "eq", "fun": lambda p: np.sum(p) - 1},)
        p = minimize(phi, np.full(k, 1.0 / k), bounds=[(0, 1)] * k, constraints=cons).x
    p_tilde = np.minimum(p, w)
    norm = np.sqrt(max(p_tilde @ gram @ p_tilde, 0.0))
    a = w + (s / norm) * p_tilde if norm > 0 else w
    out = {name: np.tensordot(a.astype(np.float32), x, axes=1) for name, x in host.items()}
    return jax.device_put(out)


def bench_peer(k: int, total: int, repeats: int) -> dict:
    tree = stacked_tree(k, total, jnp.float32)
    w = np.full(k, 1.0 / k)
    ours = raco_jax.clipped_cagrad(weights=tuple(w.astype(np.float32)), c=0.4)
    step = jax.jit(ours.update)
    state = ours.init(None)
    med = time_interleaved(
        {
            "raco_jax clipped_cagrad (jit)": lambda: step(tree, state)[0],
            "host Gram + scipy + combine": lambda: peer_update(tree, w, 0.4),
        },
        repeats,
    )
    return {"K": k, "P": total, **med}


def _fmt_p(p: int) -> str:
    return f"1e{round(np.log10(p))}"


def report(update_rows, solver_rows, peer_row, meta) -> str:
    lines = [
        f"Machine: {meta['machine']}; JAX {meta['jax']} ({meta['backend']}, {meta['devices']}); "
        f"dtype {meta['dtype']}; {meta['repeats']} repetitions, medians; {meta['date']}.",
        "",
        "| K | P | method | median ms | ratio to weighted_sum | floor (2K+1)/(K+1) | ratio / floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in update_rows:
        lines.append(
            f"| {r['K']} | {_fmt_p(r['P'])} | {r['method']} | {r['median_ms']:.3f} | "
            f"{r['ratio']:.2f} | {r['floor']:.2f} | {r['ratio_to_floor']:.2f} |"
        )
    lines += [
        "",
        "Dual solver alone (exact; closed form for K = 2, support enumeration otherwise):",
        "",
        "| K | supports | vmap batch | batch ms | us per matrix | one jitted call us |",
        "|---|---|---|---|---|---|",
    ]
    for r in solver_rows:
        lines.append(
            f"| {r['K']} | {r['supports']} | {r['batch']} | {r['batch_ms']:.3f} | "
            f"{r['us_per_matrix']:.2f} | {r['single_call_us']:.1f} |"
        )
    if peer_row:
        names = [n for n in peer_row if n not in ("K", "P")]
        lines += [
            "",
            f"One clipped update, K = {peer_row['K']}, P = {_fmt_p(peer_row['P'])}, against the "
            "PyTorch libraries' path (host Gram + scipy + combine):",
            "",
            "| path | median ms |",
            "|---|---|",
        ]
        lines += [f"| {n} | {peer_row[n]:.3f} |" for n in names]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--ks", default="2,3,4,8")
    parser.add_argument("--sizes", default="1e5,1e6,1e7")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--solver-batch", type=int, default=1024)
    parser.add_argument("--out", default=None, help="write raw numbers to this JSON file")
    args = parser.parse_args(argv)
    ks = [int(x) for x in args.ks.split(",")]
    sizes = [int(float(x)) for x in args.sizes.split(",")]
    repeats = args.repeats
    if args.quick:
        ks, sizes, repeats = [2, 4], [10**5], 3
    dtype = jnp.dtype(args.dtype)
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} device(s)",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": str(jax.devices()[0].device_kind),
        "dtype": args.dtype,
        "repeats": repeats,
        "date": time.strftime("%Y-%m-%d"),
    }
    update_rows = bench_updates(ks, sizes, dtype, repeats)
    solver_rows = bench_solver(
        range(2, 9) if not args.quick else [2, 3], args.solver_batch, repeats
    )
    peer_row = bench_peer(4, sizes[min(1, len(sizes) - 1)], max(3, repeats // 3))
    text = report(update_rows, solver_rows, peer_row, meta)
    print(text)
    results = {"meta": meta, "updates": update_rows, "solver": solver_rows, "peer": peer_row}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
