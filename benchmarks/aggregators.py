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
NumPy Gram, scipy SLSQP / minimize_scalar dual, NumPy combine, back to the device). Then one big
leaf [K, --big-leaf] (an embedding table): the Gram pass against XLA's dot and NumPy's BLAS, and
whole updates against TorchJD's CAGrad; and TorchJD's CAGrad against our 64-leaf updates at every
K (--peer-ks) and P. With --crossover-sizes (alone with --crossover-only), gram_matrix against
XLA's dot per leaf of those sizes, inside programs over up to 64 such leaves (which path it
takes, read from the compiled HLO): the check of its CPU thresholds. The update table also gives
the bytes each method must stream per second. TorchJD runs only where it imports (a separate
environment with ``pip install "torchjd[cagrad]"`` and --system-site-packages): never a
dependency of raco_jax.

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


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warm: bool = False
) -> dict[str, float]:
    """Median wall time (ms) of each thunk, alternating the thunks within each repetition.

    With ``warm``, every timed call follows an untimed call of the same thunk, so that each one
    finds its own inputs where its last pass left them (otherwise a thunk that runs after one
    reading other data, or writing large temporaries, finds its inputs evicted from the cache
    and the order of the thunks biases the comparison)."""
    for fn in fns.values():  # warm-up (compile)
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if warm:
                jax.block_until_ready(fn())
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
            entries = sum(int(np.prod(leaf.shape[1:])) for leaf in tree.values())
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
                        "gb_per_s": _streamed_bytes(name, k, entries, dtype) / ms / 1e6,
                    }
                )
    return rows


def _streamed_bytes(method: str, k: int, entries: int, dtype) -> int:
    """The bytes a method must move at least: the Gram pass reads the K x P stack; every update
    reads it once per pass (two for the Gram-based ones) and writes P."""
    size = jnp.dtype(dtype).itemsize
    if method == "gram_matrix alone":
        return k * entries * size
    passes = 1 if method.startswith("weighted_sum") else 2
    return (passes * k + 1) * entries * size


def gram_path(k: int, size: int) -> str:
    """Which reduction :func:`raco_jax.gram_matrix` compiles to for one [k, size] float32 leaf on
    this backend: ``"dot"`` (XLA's dot) or ``"chunked"`` (the chunked sums of products), read
    from the optimized HLO."""
    leaf = jax.ShapeDtypeStruct((k, size), jnp.float32)
    hlo = jax.jit(raco_jax.gram_matrix).lower({"leaf": leaf}).compile().as_text()
    return "dot" if " dot(" in hlo or "__onednn$matmul" in hlo else "chunked"


def bench_gram_crossover(ks, sizes, repeats: int, entries: int = 1 << 22) -> list[dict]:
    """``raco_jax.gram_matrix`` against XLA's dot around the leaf sizes where it switches from the
    dot to the chunked reduction on CPU, so that the thresholds in
    ``raco_jax/aggregation/gram.py`` can be checked on any machine. Each program takes a tree of
    ``entries // size`` (1 to 64) distinct [K, size] leaves, as a model's gradient does, so that
    the per-leaf cost is measured inside one program rather than the ~60 us dispatch of a call;
    times are per leaf, interleaved, each call after an untimed one of the same program
    (``warm``), medians."""
    hi = jax.lax.Precision.HIGHEST

    def total(leaf_fn: Callable[[jax.Array], jax.Array]) -> Callable[[dict], jax.Array]:
        return jax.jit(lambda tree: sum(leaf_fn(x) for x in jax.tree_util.tree_leaves(tree)))

    gram = jax.jit(raco_jax.gram_matrix)
    dot = total(lambda x: jnp.einsum("kp,lp->kl", x, x, precision=hi))
    per_pair = total(_per_pair_sums)
    rows = []
    for k in ks:
        for size in sizes:
            copies = max(1, min(64, entries // size))
            stack = jax.random.normal(jax.random.key(size), (copies, k, size), jnp.float32)
            tree = {f"leaf{c:02d}": stack[c] for c in range(copies)}
            del stack
            fns = {"gram_matrix": lambda t=tree: gram(t), "dot": lambda t=tree: dot(t)}
            if size % 256 == 0:
                fns["per_pair"] = lambda t=tree: per_pair(t)
            timed = time_interleaved(fns, repeats, warm=True)
            medians = {n: ms / copies for n, ms in timed.items()}
            rows.append(
                {
                    "K": k,
                    "size": size,
                    "leaves": copies,
                    "path": gram_path(k, size),
                    "gram_matrix_ms": medians["gram_matrix"],
                    "dot_ms": medians["dot"],
                    "ratio": medians["gram_matrix"] / medians["dot"],
                    "per_pair_ms": medians.get("per_pair", float("nan")),
                }
            )
    return rows


def _per_pair_sums(leaf: jax.Array) -> jax.Array:
    """The alternative gram_matrix does not take: one plain ``sum(x_i * x_j)`` per pair over
    chunks of 256 (XLA:CPU hands such reductions to its vectorized YNNPACK kernels, but each
    pair reads its two rows again, from copies of the row slices), then the chunk sums."""
    k = leaf.shape[0]
    rows = jnp.reshape(leaf, (k, -1, 256))
    sums = [jnp.sum(rows[i] * rows[j], axis=-1) for i in range(k) for j in range(i, k)]
    return jnp.stack([jnp.sum(s) for s in sums])


def _solve_dual(gram: jax.Array, weights: jax.Array, solver: str = "auto") -> jax.Array:
    gram_n, _ = simplex.normalize_gram(gram)
    s = 0.4 * jnp.sqrt(weights @ gram_n @ weights)
    if gram.shape[-1] == 2:
        return simplex.cagrad_dual(gram_n, weights, s)[0]
    return simplex.cagrad_dual_anchored(gram_n, weights, s, solver=solver).p


def _call_latency_ms(fn: Callable[[jax.Array], object], inputs: jax.Array, calls: int) -> float:
    """Median wall time of ``calls`` consecutive blocking calls, each on the next input."""
    times = []
    for i in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(inputs[i % inputs.shape[0]]))
        times.append(time.perf_counter() - start)
    return _median_ms(times)


def bench_solver(ks, batch: int, repeats: int, calls: int = 20) -> list[dict]:
    """The dual alone on ``batch`` random Gram matrices per K, three ways.

    ``in_program_us``: per solve inside one jitted ``lax.map`` over the batch (sequential, as in an
    optimizer step: no dispatch; the number that adds to a train step). ``single_call_us``: one
    jitted call per matrix, the median of ``calls`` consecutive blocking calls (includes the
    dispatch of a jitted call, ``dispatch_floor_us``: the same for ``gram @ w``).
    ``us_per_matrix``: under ``vmap`` (``lax.cond`` becomes a select: every path runs).
    """
    rows = []
    for k in ks:
        rng = np.random.default_rng(k)
        jac = rng.standard_normal((batch, k, 3 * k))
        grams = jnp.asarray(jac @ np.swapaxes(jac, 1, 2), jnp.float32)
        w = jnp.full((k,), 1.0 / k, jnp.float32)
        solvers = {
            "auto": functools.partial(_solve_dual, weights=w),
            "enumeration": functools.partial(_solve_dual, weights=w, solver="enumerate"),
            "floor": lambda gram, w=w: gram @ w,
        }
        single = {name: jax.jit(f) for name, f in solvers.items()}
        mapped = {name: jax.jit(functools.partial(jax.lax.map, f)) for name, f in solvers.items()}
        fns = {"batch": functools.partial(jax.jit(jax.vmap(solvers["auto"])), grams)}
        fns |= {f"map_{name}": functools.partial(f, grams) for name, f in mapped.items()}
        med = time_interleaved(fns, repeats)
        for f in single.values():
            jax.block_until_ready(f(grams[0]))
        latency = {name: [] for name in single}
        for _ in range(repeats):
            for name, f in single.items():
                latency[name].append(_call_latency_ms(f, grams, calls))
        lat = {name: statistics.median(v) for name, v in latency.items()}
        rows.append(
            {
                "K": k,
                "batch": batch,
                "batch_ms": med["batch"],
                "us_per_matrix": 1e3 * med["batch"] / batch,
                "in_program_us": 1e3 * med["map_auto"] / batch,
                "in_program_enumeration_us": 1e3 * med["map_enumeration"] / batch,
                "single_call_us": 1e3 * lat["auto"],
                "single_enumeration_us": 1e3 * lat["enumeration"],
                "dispatch_floor_us": 1e3 * lat["floor"],
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


def torchjd_cagrad(c: float):
    """TorchJD's CAGrad aggregator (uniform weights, not clipped) or None when not installed.

    TorchJD is a peer, installed for this benchmark only (``pip install "torchjd[cagrad]"`` in a
    separate environment; it needs torch and cvxpy): never a dependency of raco_jax.
    """
    try:
        from torchjd.aggregation import CAGrad
    except ImportError:
        return None
    return CAGrad(c=c)


def bench_big_leaf(ks, size: int, repeats: int) -> list[dict]:
    """One [K, size] leaf (an LLM's embedding table is one leaf of 28M-600M parameters): the Gram
    pass (raco_jax, XLA's dot, NumPy's BLAS) and whole updates (ours, TorchJD's CAGrad), timed
    interleaved in this process on the same float32 numbers."""
    import torch

    rows = []
    for k in ks:
        leaf = jax.random.normal(jax.random.key(k), (k, size), jnp.float32)
        host = np.asarray(leaf)
        tree = {"embedding": leaf}
        w = tuple(np.full(k, 1.0 / k, np.float32))
        hi = jax.lax.Precision.HIGHEST
        transforms = {
            "weighted_sum (baseline)": raco_jax.weighted_sum(w, diagnostics=False),
            "clipped_cagrad": raco_jax.clipped_cagrad(weights=w, c=0.4),
            "cagrad": raco_jax.cagrad(c=0.4, weights=w),
        }
        fns = {
            "Gram: raco_jax.gram_matrix": functools.partial(jax.jit(raco_jax.gram_matrix), tree),
            "Gram: jnp.einsum (XLA dot)": functools.partial(
                jax.jit(lambda x, hi=hi: jnp.einsum("kp,lp->kl", x, x, precision=hi)), leaf
            ),
            "Gram: NumPy x @ x.T (BLAS)": lambda host=host: host @ host.T,
        }
        fns |= {
            f"update: {name}": functools.partial(jax.jit(tx.update), tree, tx.init(None))
            for name, tx in transforms.items()
        }
        peer = torchjd_cagrad(0.4)
        if peer is not None:
            matrix = torch.from_numpy(host)
            fns["update: TorchJD CAGrad (torch, cvxpy)"] = lambda peer=peer, m=matrix: peer(m)
        medians = time_interleaved(fns, repeats)
        rows += [{"K": k, "P": size, "what": n, "median_ms": ms} for n, ms in medians.items()]
    return rows


def bench_torchjd(ks, sizes, repeats: int) -> list[dict]:
    """clipped_cagrad and cagrad (jit, 64 leaves) against TorchJD's CAGrad on the same numbers as
    one [K, P] matrix (its native input; the concatenation is not timed)."""
    import torch

    peer = torchjd_cagrad(0.4)
    if peer is None:
        return []
    rows = []
    for k in ks:
        w = tuple(np.full(k, 1.0 / k, np.float32))
        for total in sizes:
            tree = stacked_tree(k, int(total), jnp.float32)
            matrix = torch.from_numpy(
                np.concatenate([np.asarray(x).reshape(k, -1) for x in tree.values()], axis=1)
            )
            fns = {}
            for name, tx in (
                ("clipped_cagrad", raco_jax.clipped_cagrad(weights=w, c=0.4)),
                ("cagrad", raco_jax.cagrad(c=0.4, weights=w)),
            ):
                fns[name] = functools.partial(jax.jit(tx.update), tree, tx.init(None))
            fns["TorchJD CAGrad"] = lambda m=matrix: peer(m)
            medians = time_interleaved(fns, repeats)
            rows.append({"K": k, "P": int(total), **medians})
    return rows


def _fmt_p(p: int) -> str:
    exponent = int(np.floor(np.log10(p)))
    return f"{round(p / 10**exponent, 2):g}e{exponent}"


def report(
    update_rows, solver_rows, peer_row, meta, big_rows=(), torchjd_rows=(), crossover_rows=()
) -> str:
    lines = [
        f"Machine: {meta['machine']}; JAX {meta['jax']} ({meta['backend']}, {meta['devices']}); "
        f"dtype {meta['dtype']}; {meta['repeats']} repetitions, medians; {meta['date']}.",
        "",
        "| K | P | method | median ms | ratio to weighted_sum | floor (2K+1)/(K+1) | ratio / floor "
        "| GB/s streamed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in update_rows:
        lines.append(
            f"| {r['K']} | {_fmt_p(r['P'])} | {r['method']} | {r['median_ms']:.3f} | "
            f"{r['ratio']:.2f} | {r['floor']:.2f} | {r['ratio_to_floor']:.2f} | "
            f"{r['gb_per_s']:.1f} |"
        )
    lines += [
        "",
        "Dual solver alone (exact; closed form for K = 2, support enumeration for K = 3, the "
        "certified active set with the enumeration as fallback for K >= 4): per solve inside one "
        "jitted lax.map over the batch (what a train step pays), one jitted call per matrix "
        "(median of consecutive blocking calls; the dispatch floor is a jitted gram @ w), and "
        f"under vmap over {solver_rows[0]['batch'] if solver_rows else 0} matrices (every branch "
        "runs):",
        "",
        "| K | supports | in a jitted program, us per solve | the same, enumeration forced | "
        "one jitted call us | the same, enumeration forced | dispatch floor us | "
        "vmap, us per matrix |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in solver_rows:
        lines.append(
            f"| {r['K']} | {r['supports']} | {r['in_program_us']:.1f} | "
            f"{r['in_program_enumeration_us']:.1f} | {r['single_call_us']:.1f} | "
            f"{r['single_enumeration_us']:.1f} | {r['dispatch_floor_us']:.1f} | "
            f"{r['us_per_matrix']:.2f} |"
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
    if big_rows:
        lines += [
            "",
            "One big leaf [K, P] (float32): the Gram pass and whole updates, ms (ratio to NumPy's "
            "BLAS Gram for the Gram rows, to TorchJD's CAGrad for the update rows):",
            "",
            "| K | P | what | median ms | ratio |",
            "|---|---|---|---|---|",
        ]
        for (k, p), group in _groups(big_rows):
            blas = group.get("Gram: NumPy x @ x.T (BLAS)")
            peer = group.get("update: TorchJD CAGrad (torch, cvxpy)")
            for what, ms in group.items():
                ref = blas if what.startswith("Gram") else peer
                ratio = f"{ms / ref:.2f}" if ref else "-"
                lines.append(f"| {k} | {_fmt_p(p)} | {what} | {ms:.2f} | {ratio} |")
    if torchjd_rows:
        lines += [
            "",
            "Against TorchJD's CAGrad (64 leaves for raco_jax; one [K, P] matrix for TorchJD), ms:",
            "",
            "| K | P | clipped_cagrad | cagrad | TorchJD CAGrad | TorchJD / clipped |",
            "|---|---|---|---|---|---|",
        ]
        for r in torchjd_rows:
            lines.append(
                f"| {r['K']} | {_fmt_p(r['P'])} | {r['clipped_cagrad']:.2f} | {r['cagrad']:.2f} | "
                f"{r['TorchJD CAGrad']:.2f} | {r['TorchJD CAGrad'] / r['clipped_cagrad']:.2f}x |"
            )
    if crossover_rows:
        lines += [
            "",
            "gram_matrix against XLA's dot per [K, size] leaf, in programs over several such "
            "leaves (the path gram_matrix takes, read from its compiled HLO), ms per leaf:",
            "",
            "| K | entries per objective | leaves per program | path | gram_matrix | XLA dot | "
            "gram_matrix / dot | per-pair sums (YNNPACK) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in crossover_rows:
            lines.append(
                f"| {r['K']} | {r['size']} | {r['leaves']} | {r['path']} | "
                f"{r['gram_matrix_ms']:.3f} | "
                f"{r['dot_ms']:.3f} | {r['ratio']:.2f} | {r['per_pair_ms']:.3f} |"
            )
    return "\n".join(lines)


def _groups(rows) -> list[tuple[tuple[int, int], dict[str, float]]]:
    groups: dict[tuple[int, int], dict[str, float]] = {}
    for r in rows:
        groups.setdefault((r["K"], r["P"]), {})[r["what"]] = r["median_ms"]
    return list(groups.items())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--ks", default="2,3,4,8")
    parser.add_argument("--sizes", default="1e5,1e6,1e7")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--solver-batch", type=int, default=1024)
    parser.add_argument("--big-leaf", default="1e7", help="size of the single-leaf case (0: skip)")
    parser.add_argument(
        "--peer-ks",
        default="2,4,8",
        help="K of the big leaf and of the TorchJD comparison (when torchjd imports)",
    )
    parser.add_argument(
        "--crossover-sizes",
        default="",
        help="entries per objective of the leaves timed against XLA's dot, e.g. "
        "16384,32768,65536,262144,1048576 (default: skip)",
    )
    parser.add_argument(
        "--crossover-only", action="store_true", help="run the --crossover-sizes phase alone"
    )
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
    results: dict = {"meta": meta}

    def phase(name: str, rows):  # keep what is measured even if a later phase is interrupted
        results[name] = rows
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
        print(f"[{time.strftime('%H:%M:%S')}] {name} done", flush=True)
        return rows

    crossover_sizes = [int(float(x)) for x in args.crossover_sizes.split(",") if x.strip()]
    update_rows, solver_rows, peer_row, big_rows, torchjd_rows = [], [], {}, [], []
    if not args.crossover_only:
        update_rows = phase("updates", bench_updates(ks, sizes, dtype, repeats))
        solver_rows = phase(
            "solver",
            bench_solver(
                range(2, 9) if not args.quick else [2, 3],
                args.solver_batch if not args.quick else 16,
                repeats,
            ),
        )
        peer_row = phase("peer", bench_peer(4, sizes[min(1, len(sizes) - 1)], max(3, repeats // 3)))
        peer_ks = [int(x) for x in args.peer_ks.split(",")] if not args.quick else [2]
        big_size = int(float(args.big_leaf)) if not args.quick else 10**6
        big_rows = phase("big_leaf", bench_big_leaf(peer_ks, big_size, repeats) if big_size else [])
        torchjd_rows = phase("torchjd", bench_torchjd(peer_ks, sizes, max(3, repeats // 2)))
    crossover_rows = phase(
        "crossover", bench_gram_crossover(ks, crossover_sizes, repeats) if crossover_sizes else []
    )
    text = report(update_rows, solver_rows, peer_row, meta, big_rows, torchjd_rows, crossover_rows)
    print(text)
    return results


if __name__ == "__main__":
    main()
