"""What a SmolLM2-135M train step, a validation pass and a greedy generation cost on this machine.

The measurement behind the size of ``benchmarks/conflict.py``'s default sweep: one process,
the same pairs (HH-RLHF ``helpful-base``, objectives helpful + concise, 8 pairs per step), one
``raco_jax.train.TrainStep`` (RACO, K = 2) per setting, steps interleaved across the settings
(so load from other work hits them alike) and the median of the repetitions after the first
(compiling) call. Settings:

* ``all layers, L192``: LoRA rank 8 on every layer's q/k/v/o/gate/up/down, max length 192
  (prompt 128): ``benchmarks/hh_rlhf.py``'s setting, the *before*;
* ``all layers, L128``: the same at max length 128 (prompt 64);
* ``top N, L128``: LoRA on the last N layers only (``lora_layers``): the backward pass stops at
  layer 30 - N;
* ``top N, L128, cached``: the same, with the frozen layers below computed once per pair
  (``cache_layer_inputs``): the forward pass starts at layer 30 - N;
* ``top N, L128, cached, C64``: and completions cut at 64 tokens (``max_completion_length``), so
  only the 65 positions that score them are projected onto the 49,152-token vocabulary.

It also times the validation forward pass (``pair_logps``, per 100 pairs) without and with the
cached layer inputs (and the completion window), computing those inputs, and greedy generation
(per 100 prompts).

Usage:
    python3 benchmarks/step_costs.py                    # 4 repetitions, top 2 layers
    python3 benchmarks/step_costs.py --repeats 6 --top-layers 2,4
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"


def median_after_first(times: Sequence[float]) -> float:
    """The median of the repetitions after the first (which compiles).

    Example:
        >>> from step_costs import median_after_first
        >>> median_after_first([30.0, 2.0, 4.0, 3.0])
        3.0
    """
    later = list(times[1:]) or list(times)
    return float(statistics.median(later))


def _pairs(path: pathlib.Path, count: int) -> list[Any]:
    from raco_jax.data import load_preferences

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][: 2 * count]
    pairs, _ = load_preferences(
        rows, "hh-rlhf", objectives=("helpful", "concise"), subset="helpful-base"
    )
    return pairs[:count]


def _setting(
    model_path: str,
    tokenizer: Any,
    pairs: Sequence[Any],
    length: int,
    top: int | None,
    cached: bool,
    window: int | None = None,
) -> tuple[Callable[[], Any], dict[str, Any]]:
    """A closure running one train step of this setting on the next of a fixed list of batches."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from raco_jax.data import PreferenceBatchIterator, tokenize_pairs
    from raco_jax.models import LoRAConfig, LoRAParam, apply_lora, from_pretrained
    from raco_jax.preference import PreferenceBatch
    from raco_jax.train import TrainStep, make_optimizer
    from raco_jax.train.pair_logps import pair_layer_inputs

    objectives, weights = ("helpful", "concise"), (0.5, 0.5)
    prompt = length // 2 if length == 128 else 128
    tokenized = tokenize_pairs(
        pairs, tokenizer, objectives, length, prompt, max_completion_length=window
    )
    model, config = from_pretrained(model_path, dtype=jnp.float32, param_dtype=jnp.float32)
    layers = None if top is None else tuple(range(config.num_layers - top, config.num_layers))
    first = min(layers) if (cached and layers) else 0
    stream = pair_layer_inputs(model, tokenized, first, 8) if first else None
    apply_lora(model, LoRAConfig(rank=8, alpha=16.0, layers=layers), rngs=nnx.Rngs(0))
    tx = make_optimizer("raco", weights, learning_rate=5e-4)
    step = TrainStep(
        model, tx, method="raco", objectives=objectives, weights=weights, wrt=LoRAParam,
        first_layer=first, max_completion_length=window,
    )  # fmt: skip
    state = [step.init(model)]
    iterator = PreferenceBatchIterator(tokenized, 8, seed=0, num_epochs=None)
    batches = []
    for _ in range(4):
        indices, fields = iterator.next_with_indices()
        extra = {"ref_logps": np.zeros(16, np.float32)}
        if stream is not None:
            extra["layer_inputs"] = stream.collate(indices, 8, fields["input_ids"].shape[1])
        batches.append(jax.tree.map(jnp.asarray, PreferenceBatch(**fields, **extra)))
    calls = [0]

    def run() -> Any:
        batch = batches[calls[0] % len(batches)]
        calls[0] += 1
        state[0], metrics = step(state[0], batch)
        return jax.block_until_ready(metrics)

    widths = sorted({int(b.input_ids.shape[1]) for b in batches})
    return run, {"widths": widths, "first_layer": first}


def measure_steps(
    model_path: str,
    data: pathlib.Path,
    repeats: int,
    tops: Sequence[int],
    log: Callable[[str], None],
    only: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Median seconds per RACO step (8 pairs, K = 2) of each setting, steps interleaved."""
    from raco_jax.models import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    pairs = _pairs(data, 32)
    specs = [
        ("all layers, L192", 192, None, False, None),
        ("all layers, L128", 128, None, False, None),
    ]
    for top in tops:
        specs += [
            (f"top {top}, L128", 128, top, False, None),
            (f"top {top}, L128, cached", 128, top, True, None),
            (f"top {top}, L128, cached, C64", 128, top, True, 64),
        ]
    if only:  # each setting holds its own model and programs: about 10 GB for all five
        specs = [spec for spec in specs if spec[0] in only]
    settings = []
    for name, length, top, cached, window in specs:
        run, info = _setting(model_path, tokenizer, pairs, length, top, cached, window)
        settings.append((name, run, info, []))
        log(f"built {name} {info}")
    for repeat in range(repeats):
        for name, run, _, times in settings:
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
            log(f"repeat {repeat}: {name} {times[-1]:.2f} s")
    return [
        {"setting": name, **info, "times": times, "median_s": median_after_first(times)}
        for name, _, info, times in settings
    ]


def measure_forward(
    model_path: str, data: pathlib.Path, top: int, log: Callable[[str], None]
) -> dict[str, float]:
    """Seconds per 100 validation pairs of the forward pass (full, and from cached layer inputs),
    of computing those inputs, and seconds per 100 greedy generations (48 new tokens)."""
    import jax.numpy as jnp

    from raco_jax.data import tokenize_pairs
    from raco_jax.evaluate import generate_responses
    from raco_jax.models import from_pretrained, load_tokenizer
    from raco_jax.train.pair_logps import pair_layer_inputs, pair_logps

    tokenizer = load_tokenizer(model_path)
    pairs = _pairs(data, 48)
    tokenized = tokenize_pairs(
        pairs, tokenizer, ("helpful", "concise"), 128, 64, max_completion_length=64
    )
    model, config = from_pretrained(model_path, dtype=jnp.float32, param_dtype=jnp.float32)
    layer = config.num_layers - top
    out: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any], count: int) -> Any:
        fn()  # compile
        start = time.perf_counter()
        value = fn()
        out[name] = (time.perf_counter() - start) * 100 / count
        log(f"{name}: {out[name]:.1f} s per 100")
        return value

    timed("forward_full_per_100_pairs", lambda: pair_logps(model, tokenized, 16), len(pairs))
    stream = timed(
        "layer_inputs_per_100_pairs",
        lambda: pair_layer_inputs(model, tokenized, layer, 16),
        len(pairs),
    )
    timed(
        "forward_cached_per_100_pairs",
        lambda: pair_logps(model, tokenized, 16, layer_inputs=stream),
        len(pairs),
    )
    timed(
        "forward_cached_c64_per_100_pairs",
        lambda: pair_logps(model, tokenized, 16, layer_inputs=stream, max_completion_length=64),
        len(pairs),
    )
    prompts = [pair.prompt for pair in pairs[:32]]
    timed(
        "generate_48_per_100_prompts",
        lambda: generate_responses(
            model, tokenizer, prompts, max_new_tokens=48, max_prompt_length=64, batch_size=32
        ),
        len(prompts),
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct (GGUF)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--top-layers", default="2", help="comma-separated N of 'top N' (2)")
    parser.add_argument(
        "--only",
        default="",
        help="';'-separated setting names to time (default: all), e.g. 'all layers, L192;top 2, "
        "L128, cached, C64'",
    )
    parser.add_argument(
        "--output", type=pathlib.Path, default=REPO / "benchmarks" / "out" / "step_costs.json"
    )
    args = parser.parse_args(argv)
    if args.model is None:
        from raco_jax.models.bundled import smollm2_135m_instruct_gguf

        args.model = str(smollm2_135m_instruct_gguf())
    tops = [int(x) for x in args.top_layers.split(",") if x.strip()]

    def log(message: str) -> None:
        print(message, flush=True)

    only = [name.strip() for name in args.only.split(";") if name.strip()]
    steps = measure_steps(args.model, args.data, args.repeats, tops, log, only)
    forward = measure_forward(args.model, args.data, tops[0], log)
    before = steps[0]["median_s"]
    print("\n| setting | widths T | median s/step | vs before |\n|---|---|---|---|")
    for row in steps:
        print(
            f"| {row['setting']} | {row['widths']} | {row['median_s']:.2f} | {before / row['median_s']:.2f}x |"
        )
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in forward.items()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"steps": steps, "forward": forward}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
