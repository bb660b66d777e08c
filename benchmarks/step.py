"""Step time of RACO (K = 2, 3) against the weighted-loss DPO baseline and the F + K*B floor.

Usage:
    python benchmarks/step.py [--quick] [--repeats 9] [--pairs 8] [--seq 256] [--out FILE.json]

On a small decoder (Qwen 3 layout: 4 layers, hidden 256, 8 heads, 4 KV heads, intermediate 704,
vocabulary 8192; float32) and a batch of ``--pairs`` preference pairs of ``--seq`` tokens with
precomputed reference log-probs, it times, interleaved within each repetition (medians, and
minima as the least disturbed samples on a shared machine):

* ``F``: the policy forward and the K losses (no gradient);
* ``F+B``: ``jax.value_and_grad`` of the weighted loss (one backward);
* ``F+KB (K=2, 3)``: :func:`raco_jax.value_and_objective_grads` alone (one forward, K backward);
* ``DPO-LW``: a full train step of the weighted loss with one backward (method ``dpo``: the
  paper's weighted-loss baseline), clip + AdamW;
* ``DPO-LW stacked``: the same update through stacked gradients and ``weighted_sum`` (K = 2);
* ``RACO (K=2, 3)``: full train steps with ``clipped_cagrad``, clip + AdamW.

With B = (F+B) - F, the floor for K objectives is (F + K*B) / (F + B): RACO cannot beat it
with K backward passes. The report gives RACO / DPO-LW against that floor (target: at most 1.15x)
and, per function, the compiled peak memory estimate from ``memory_analysis()`` (arguments +
outputs - aliased + temporaries) and the process's peak RSS. Benchmarks are not tests: record
the figures in benchmarks/RESULTS.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import raco_jax
from raco_jax.models import Decoder, ModelConfig
from raco_jax.preference import PreferenceBatch, dpo_losses, make_batch, pair_margins
from raco_jax.train import TrainStep, compute_reference_logps, make_optimizer, policy_logps

FULL = dict(num_layers=4, hidden_size=256, num_heads=8, num_kv_heads=4, intermediate_size=704)
QUICK = dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128)
OBJECTIVE_NAMES = ("quality", "conciseness", "faithfulness")


def make_config(quick: bool, vocab: int) -> ModelConfig:
    sizes = QUICK if quick else FULL
    return ModelConfig(model_type="qwen3", vocab_size=vocab, **sizes)


def make_preference_batch(
    pairs: int, length: int, vocab: int, k: int, seed: int = 0
) -> PreferenceBatch:
    """Random pairs: a prompt of length/4 tokens, responses filling 50-100% of the rest."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(2 * pairs, length)).astype(np.int32)
    attention = np.zeros((2 * pairs, length), np.int32)
    loss_mask = np.zeros((2 * pairs, length), np.float32)
    prompt = length // 4
    for row in range(2 * pairs):
        end = prompt + int(rng.integers((length - prompt) // 2, length - prompt + 1))
        attention[row, :end] = 1
        loss_mask[row, prompt:end] = 1
    signs = rng.choice([-1.0, 1.0], size=(k, pairs))
    return make_batch(ids, attention, loss_mask, signs)


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall times (s) of each thunk, alternating the thunks within each repetition."""
    for fn in fns.values():  # warm-up: compile and run once
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return times


def peak_bytes(compiled: Any) -> int | None:
    """Compiled peak estimate: arguments + outputs - aliased + temporaries (None if unknown)."""
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )
    except Exception:  # backends without memory_analysis
        return None


class _Stepper:
    """Holds a TrainStep and its evolving state (the step donates its input state)."""

    def __init__(self, step: TrainStep, model: nnx.Module, batch: PreferenceBatch) -> None:
        self.step = step
        self.batch = jax.device_put(batch)
        self.state = step.init(model)
        self.compiled = step.lower(self.state, self.batch).compile()

    def __call__(self) -> Any:
        self.state, metrics = self.step(self.state, self.batch)
        return metrics["loss"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, short sequences")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--out", default=None, help="write raw numbers to this JSON file")
    args = parser.parse_args(argv)
    pairs = args.pairs or (2 if args.quick else 8)
    length = args.seq or (64 if args.quick else 256)
    vocab = args.vocab or (512 if args.quick else 8192)
    repeats = 2 if args.quick and args.repeats == 9 else args.repeats
    config = make_config(args.quick, vocab)

    model = Decoder(config, rngs=nnx.Rngs(0))
    num_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    batches = {}
    for k in (2, 3):
        batch = make_preference_batch(pairs, length, vocab, k)
        batches[k] = batch._replace(ref_logps=compute_reference_logps(model, batch))

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)

    def objective_losses(p: Any, batch: PreferenceBatch) -> jax.Array:
        logps, _ = policy_logps(nnx.merge(graphdef, p, rest), batch)
        return dpo_losses(pair_margins(logps, batch.ref_logps), batch.signs, batch.labeled)

    def weighted(p: Any, batch: PreferenceBatch) -> jax.Array:
        losses = objective_losses(p, batch)
        return jnp.mean(losses)

    b2 = jax.device_put(batches[2])
    b3 = jax.device_put(batches[3])
    forward = jax.jit(weighted).lower(params, b2).compile()
    one_backward = jax.jit(jax.value_and_grad(weighted)).lower(params, b2).compile()
    stacked = jax.jit(raco_jax.value_and_objective_grads(objective_losses))
    stacked2 = stacked.lower(params, b2).compile()
    stacked3 = stacked.lower(params, b3).compile()

    def stepper(method: str, k: int) -> _Stepper:
        weights = tuple(np.full(k, 1.0 / k))
        tx = make_optimizer(method, weights, learning_rate=1e-6)
        step = TrainStep(
            Decoder(config, rngs=nnx.Rngs(0)),
            tx,
            method=method,
            objectives=OBJECTIVE_NAMES[:k],
            weights=weights,
        )
        return _Stepper(step, Decoder(config, rngs=nnx.Rngs(0)), batches[k])

    steppers = {
        "DPO-LW": stepper("dpo", 2),
        "DPO-LW stacked (K=2)": stepper("dpo-lw", 2),
        "RACO (K=2)": stepper("raco", 2),
        "RACO (K=3)": stepper("raco", 3),
    }
    fns: dict[str, Callable[[], Any]] = {
        "F": lambda: forward(params, b2),
        "F+B": lambda: one_backward(params, b2),
        "F+KB (K=2)": lambda: stacked2(params, b2),
        "F+KB (K=3)": lambda: stacked3(params, b3),
        **steppers,
    }
    compiled = {
        "F": forward,
        "F+B": one_backward,
        "F+KB (K=2)": stacked2,
        "F+KB (K=3)": stacked3,
        **{name: s.compiled for name, s in steppers.items()},
    }
    times = time_interleaved(fns, repeats)
    med = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    rows = [(name, 1e3 * med[name], 1e3 * best[name], peak_bytes(compiled[name])) for name in fns]

    def ratio_table(stat: dict[str, float]) -> dict[int, dict[str, float]]:
        f, fb = stat["F"], stat["F+B"]
        backward = max(fb - f, 1e-9)
        table = {}
        for k in (2, 3):
            table[k] = dict(
                backward_over_forward=backward / f,
                floor=(f + k * backward) / (f + backward),
                grads_over_fb=stat[f"F+KB (K={k})"] / fb,
                raco_over_dpo=stat[f"RACO (K={k})"] / stat["DPO-LW"],
            )
        return table

    ratios = {"median": ratio_table(med), "min": ratio_table(best)}

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{jax.devices()[0].platform}"
        ),
        "versions": f"jax {jax.__version__}, flax {flax.__version__}, "
        f"optax {optax.__version__}, python {platform.python_version()}",
        "model": (
            f"qwen3 {config.num_layers} layers, hidden {config.hidden_size}, "
            f"{config.num_heads} heads / {config.num_kv_heads} KV, intermediate "
            f"{config.intermediate_size}, vocab {config.vocab_size}, {num_params / 1e6:.2f}M params, "
            "float32"
        ),
        "batch": f"{pairs} pairs = {2 * pairs} sequences of {length} tokens, precomputed reference",
        "repeats": repeats,
    }
    print("# Train-step benchmark (benchmarks/step.py)\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print("\n| function | median ms | min ms | compiled peak MiB |")
    print("|---|---:|---:|---:|")
    for name, ms, min_ms, peak in rows:
        peak_text = "n/a" if peak is None else f"{peak / 2**20:.1f}"
        print(f"| {name} | {ms:.1f} | {min_ms:.1f} | {peak_text} |")
    print(
        "\nB = (F+B) - F; floor = (F + K*B) / (F + B), from the same statistic (median or min); "
        "min is the least disturbed sample on a shared machine.\n"
    )
    print(
        "| stat | K | B/F | floor (F+KB)/(F+B) | measured (F+KB)/(F+B) | RACO / DPO-LW "
        "| RACO / DPO-LW / floor |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for stat, table in ratios.items():
        for k, r in table.items():
            print(
                f"| {stat} | {k} | {r['backward_over_forward']:.2f} | {r['floor']:.3f} | "
                f"{r['grads_over_fb']:.3f} | {r['raco_over_dpo']:.3f} | "
                f"{r['raco_over_dpo'] / r['floor']:.3f} |"
            )
    print(f"\nprocess peak RSS: {rss_mib:.0f} MiB (target: RACO / floor <= 1.15)")
    result = {
        "info": info,
        "median_ms": {n: 1e3 * v for n, v in med.items()},
        "times_s": times,
        "min_ms": {n: 1e3 * v for n, v in best.items()},
        "peak_bytes": {name: peak for name, _, _, peak in rows},
        "ratios": ratios,
        "peak_rss_mib": rss_mib,
    }
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
