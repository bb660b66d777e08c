"""Decoder speed against transformers' PyTorch Llama: training step and KV-cache decoding.

Usage:
    python benchmarks/models.py [--quick] [--repeats 9] [--out FILE.json]

Both implementations run the same weights (a seeded ``LlamaForCausalLM`` saved with
``save_pretrained`` and loaded with `raco_jax.models.from_pretrained`), in float32 on the CPU:

* training: tokens/s of one forward + backward of the mean next-token cross-entropy
  (``jax.jit`` of ``jax.value_and_grad`` over the model state, the loss written as
  ``logsumexp(logits) - logits[target]`` via ``optax.softmax_cross_entropy_with_integer_labels``;
  against ``F.cross_entropy`` + ``loss.backward()`` with ``zero_grad(set_to_none=True)``;
  PyTorch uses its default ``sdpa`` attention). On XLA:CPU, ``take_along_axis(log_softmax(
  logits))`` is markedly slower: its backward scatters into a transposed copy of the logits;
* decoding: new tokens/s of greedy generation with the KV cache from a batch of prompts
  (`raco_jax.models.generate` against ``model.generate(do_sample=False)`` with its default
  dynamic cache), a fixed number of new tokens (no stop token).

Warm-up calls (compilation) come first; then the implementations alternate within each
repetition and the medians are reported. PyTorch's intra-op threads are set to the core count
and, as a second entry, to 1 (OpenMP pools degrade sharply when other processes share the
cores; the ratio is taken against the faster entry); XLA's CPU client uses its default thread
pool (one thread per core). The load average is printed: rerun on an idle machine.

Prints a Markdown report (machine, library versions, date); with --out also writes the raw
numbers as JSON. Timings are never asserted in tests; record them in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from raco_jax.models import Decoder, from_pretrained, generate


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The benchmark model and workloads.

    Example:
        >>> Sizes.quick().num_layers
        2
    """

    num_layers: int = 4
    hidden_size: int = 256
    intermediate_size: int = 704
    num_heads: int = 8
    num_kv_heads: int = 4
    vocab_size: int = 8192
    seq_len: int = 256
    batch: int = 8
    decode_batch: int = 8
    prompt_len: int = 32
    new_tokens: int = 64

    @classmethod
    def quick(cls) -> Sizes:
        """A tiny version for smoke runs."""
        return cls(
            num_layers=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            num_kv_heads=2,
            vocab_size=512,
            seq_len=32,
            batch=2,
            decode_batch=2,
            prompt_len=8,
            new_tokens=8,
        )


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else `platform.processor`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_models(sizes: Sizes, directory: str) -> tuple[Any, Decoder]:
    """A seeded transformers Llama and the same weights as a raco_jax `Decoder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=sizes.vocab_size,
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_layers,
        num_attention_heads=sizes.num_heads,
        num_key_value_heads=sizes.num_kv_heads,
        max_position_embeddings=max(sizes.seq_len, sizes.prompt_len + sizes.new_tokens),
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    torch_model = LlamaForCausalLM(config).float()
    torch_model.save_pretrained(directory, safe_serialization=True)
    jax_model, _ = from_pretrained(directory, dtype=jnp.float32)
    return torch_model, jax_model


def timed_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each thunk per repetition, alternating the thunks (after one warm-up)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def training_thunks(
    sizes: Sizes, torch_model: Any, jax_model: Decoder
) -> tuple[dict[str, Callable[[], Any]], float]:
    """Forward + backward thunks for both implementations and the initial loss difference."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    ids = rng.integers(1, sizes.vocab_size, size=(sizes.batch, sizes.seq_len)).astype(np.int64)
    graphdef, state = nnx.split(jax_model)

    def loss_fn(state: nnx.State, ids: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        logits = model(ids[:, :-1])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]))

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    jax_ids = jnp.asarray(ids, jnp.int32)

    def jax_step() -> float:
        loss, grads = value_and_grad(state, jax_ids)
        jax.block_until_ready(grads)
        return float(loss)

    torch_ids = torch.from_numpy(ids)
    torch_model.train()

    def torch_step() -> float:
        torch_model.zero_grad(set_to_none=True)
        logits = torch_model(input_ids=torch_ids[:, :-1]).logits
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), torch_ids[:, 1:].reshape(-1)
        )
        loss.backward()
        return float(loss.detach())

    diff = abs(jax_step() - torch_step())
    return {"raco_jax": jax_step, "transformers": torch_step}, diff


def decoding_thunks(
    sizes: Sizes, torch_model: Any, jax_model: Decoder
) -> tuple[dict[str, Callable[[], Any]], float]:
    """Greedy-generation thunks for both implementations and the fraction of equal tokens."""
    import torch
    from transformers import GenerationConfig as HFGenerationConfig

    rng = np.random.default_rng(1)
    shape = (sizes.decode_batch, sizes.prompt_len)
    ids = rng.integers(1, sizes.vocab_size, size=shape).astype(np.int64)
    mask = np.ones_like(ids)
    jax_ids, jax_mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool)

    def jax_decode() -> np.ndarray:
        out = generate(jax_model, jax_ids, jax_mask, max_new_tokens=sizes.new_tokens)
        return np.asarray(out.tokens)

    config = HFGenerationConfig(
        do_sample=False,
        max_new_tokens=sizes.new_tokens,
        min_new_tokens=sizes.new_tokens,
        eos_token_id=None,
        pad_token_id=0,
    )
    torch_ids, torch_mask = torch.from_numpy(ids), torch.from_numpy(mask)
    torch_model.eval()

    def torch_decode() -> np.ndarray:
        with torch.inference_mode():
            out = torch_model.generate(
                torch_ids, attention_mask=torch_mask, generation_config=config
            )
        return out[:, sizes.prompt_len :].numpy()

    same = float(np.mean(jax_decode() == torch_decode()))
    return {"raco_jax": jax_decode, "transformers": torch_decode}, same


def _with_threads(fn: Callable[[], Any], threads: int) -> Callable[[], Any]:
    import torch

    def thunk() -> Any:
        torch.set_num_threads(threads)
        return fn()

    return thunk


def run(sizes: Sizes, repeats: int) -> dict[str, Any]:
    """Run both benchmarks; returns metadata and medians.

    PyTorch runs with ``torch.set_num_threads(cores)`` and, as a second entry, with one
    thread (OpenMP thread pools degrade sharply when other processes share the cores).
    """
    import torch
    import transformers

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as directory:
        torch_model, jax_model = build_models(sizes, directory)

    def variants(fns: dict[str, Callable[[], Any]]) -> dict[str, Callable[[], Any]]:
        out = {"raco_jax": fns["raco_jax"]}
        out["transformers"] = _with_threads(fns["transformers"], threads)
        if threads > 1:
            out["transformers_1_thread"] = _with_threads(fns["transformers"], 1)
        return out

    train_fns, loss_diff = training_thunks(sizes, torch_model, jax_model)
    train_times = timed_interleaved(variants(train_fns), repeats)
    decode_fns, same_tokens = decoding_thunks(sizes, torch_model, jax_model)
    decode_times = timed_interleaved(variants(decode_fns), repeats)
    torch.set_num_threads(threads)

    train_tokens = sizes.batch * (sizes.seq_len - 1)
    decode_tokens = sizes.decode_batch * sizes.new_tokens
    results: dict[str, Any] = {
        "meta": {
            "machine": f"{cpu_name()}, {os.cpu_count()} cores ({platform.machine()})",
            "date": datetime.date.today().isoformat(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "flax": _version("flax"),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "torch_threads": threads,
            "xla_threads": f"XLA CPU default thread pool ({os.cpu_count()} cores)",
            "torch_attention": getattr(torch_model.config, "_attn_implementation", "default"),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "sizes": dataclasses.asdict(sizes),
            "repeats": repeats,
            "initial_loss_abs_diff": loss_diff,
            "decode_equal_token_fraction": same_tokens,
        },
    }
    for kind, times, tokens in (
        ("train", train_times, train_tokens),
        ("decode", decode_times, decode_tokens),
    ):
        for name, samples in times.items():
            median = statistics.median(samples)
            results[f"{kind}/{name}"] = {
                "median_s": median,
                "tokens_per_s": tokens / median,
                "samples_s": samples,
            }
    return results


def _version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def report(results: dict[str, Any]) -> str:
    """The Markdown report of `run`'s results."""
    meta, sizes = results["meta"], results["meta"]["sizes"]
    model = (
        f"Llama, {sizes['num_layers']} layers, hidden {sizes['hidden_size']}, intermediate "
        f"{sizes['intermediate_size']}, {sizes['num_heads']} heads / {sizes['num_kv_heads']} KV "
        f"heads, vocab {sizes['vocab_size']}, float32"
    )
    load = meta.get("load_average")
    load_text = f" Load average at the end: {load[0]:.1f}." if load else ""
    threads = meta["torch_threads"]
    one_thread = "train/transformers_1_thread" in results
    lines = [
        f"Machine: {meta['machine']}; {meta['date']}; Python {meta['python']}, JAX {meta['jax']}, "
        f"Flax {meta['flax']}, PyTorch {meta['torch']}, transformers {meta['transformers']}, "
        f"NumPy {meta['numpy']}.{load_text}",
        f"Threads: PyTorch torch.set_num_threads({threads})"
        + (" and, as a second entry, 1" if one_thread else "")
        + f"; {meta['xla_threads']}. PyTorch attention: {meta['torch_attention']}.",
        f"Model: {model}. Medians of {meta['repeats']} interleaved repetitions after warm-up.",
        "",
    ]
    header = f"| workload | raco_jax tokens/s | transformers ({threads} threads) tokens/s |"
    rule = "|---|---|---|"
    if one_thread:
        header += " transformers (1 thread) tokens/s |"
        rule += "---|"
    header += " raco_jax / best transformers |"
    rule += "---|"
    lines += [header, rule]
    workloads = {
        "train": f"forward + backward, batch {sizes['batch']} x {sizes['seq_len']}",
        "decode": (
            f"greedy decode (KV cache), batch {sizes['decode_batch']}, prompt "
            f"{sizes['prompt_len']}, {sizes['new_tokens']} new tokens"
        ),
    }
    for kind, label in workloads.items():
        ours = results[f"{kind}/raco_jax"]
        names = ["transformers"] + (["transformers_1_thread"] if one_thread else [])
        theirs = [results[f"{kind}/{name}"] for name in names]
        best = max(entry["tokens_per_s"] for entry in theirs)
        cells = [f"{ours['tokens_per_s']:,.0f} ({1e3 * ours['median_s']:.0f} ms)"]
        cells += [f"{e['tokens_per_s']:,.0f} ({1e3 * e['median_s']:.0f} ms)" for e in theirs]
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {ours['tokens_per_s'] / best:.2f} |"
        )
    lines += [
        "",
        f"Checks: |initial loss difference| = {meta['initial_loss_abs_diff']:.2e}; greedy "
        f"tokens equal in {100 * meta['decode_equal_token_fraction']:.0f}% of positions "
        "(random weights: near-tied logits may differ by float rounding).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point: run, print the Markdown report, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few repetitions")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default=None, help="write raw numbers to this JSON file")
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    repeats = 3 if args.quick else args.repeats
    results = run(sizes, repeats)
    print(report(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
