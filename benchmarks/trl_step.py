"""One DPO / RACO train step: TRL's DPOTrainer against raco_jax, same model, same pairs.

What it measures, on a tiny Qwen 3 (tied embeddings, q/k norms) and a tiny Llama 3 (untied,
llama3 rope scaling) Hugging Face checkpoint (4 layers, hidden 256, 8 heads / 4 KV heads of 32,
intermediate 704, vocabulary 8192: 5.05M / 7.15M parameters; ``--quick``: 2 layers, hidden 64,
vocabulary 512), float32 on the CPU, one fixed batch of B = 8 pairs (prompts of 32-64 tokens,
responses of 64-191 + EOS; ``--quick``: 2 short pairs):

* agreement: TRL's sigmoid DPO loss (``DPOTrainer.training_step`` -> ``compute_loss``, TRL's fused
  LM head, reference log-probs precomputed by TRL itself) and the gradient of every policy
  tensor, against raco_jax's single-objective loss (``policy_logps`` -> ``pair_margins`` ->
  ``dpo_losses``, the loss the ``dpo`` method of :class:`raco_jax.train.TrainStep` optimises) and
  its ``jax.grad``, tensors matched through :func:`raco_jax.models.hf_param_map`; also the first
  ``TrainStep`` metrics (``loss``, ``grad_norm``) against TRL's loss and pre-clip gradient norm;
* timing: the full optimizer step (forward, backward, global-norm clip at 1.0, AdamW) of TRL
  (``training_step`` + ``clip_grad_norm_`` + ``optimizer.step`` + scheduler + ``zero_grad``, the
  body of ``Trainer``'s inner loop, on pre-collated inputs carrying the precomputed reference
  log-probs) and of raco_jax's ``dpo`` on TRL's pairs (one backward of the weighted loss; run
  as K = 2 with both sign rows = TRL's preference, because raco_jax's weights need K >= 2, so the
  weighted loss is TRL's loss), ``dpo-lw`` (K = 2: K backward passes, weighted sum) and ``raco``
  (K = 2, 3: clipped CAGrad);
  compiled and warmed up first, then interleaved within each repetition; medians; tokens/s =
  non-padding tokens of the 2B sequences / median seconds; ratios against TRL;
* the official RACO trainer (the TRL fork in github.com/PeterLauLukChen/RACO, ``trl`` 0.27.0.dev0),
  when ``--official-python`` points at an interpreter where it is installed: run in a
  subprocess on the same checkpoint, pairs and reference log-probs, it times its standard DPO step
  and its RACO step (``raco=True``, ``raco_clip_lambda=True``: clipped CAGrad, c = 0.4) for K = 2
  and 3, and hands back its losses and gradients, compared here with raco_jax's (the RACO
  direction against :func:`raco_jax.clipped_cagrad` of raco_jax's stacked gradients, and of K
  separate ``jax.grad`` calls);
* raco_jax's stacked gradients (:func:`raco_jax.value_and_objective_grads`: one ``jax.vjp``, the
  pullback vmapped over K cotangents, jitted) against K separate jitted ``jax.grad`` calls, row
  by row. On XLA:CPU (jax 0.10.2) rows k >= 1 come out wrong at these shapes: ``jax.jit`` of
  ``jax.vmap`` of the pullback through ``x * lax.rsqrt(mean(x * x))`` (the RMS norm) miscompiles
  once there are 2048 or more normalised rows; ``x / sqrt(...)`` does not.

Objective 0 prefers TRL's "chosen" response on every pair (TRL's DPO); objectives 1 and 2 carry
fixed random signs (seed 0). The policy and the reference are two differently seeded checkpoints
(HF's own init), so the margins are not zero and the loss is not log 2. Weights: (0.7, 0.3) for
K = 2, (0.5, 0.3, 0.2) for K = 3. beta = 0.1, learning rate 1e-6 (constant), no weight decay,
clip at 1.0, TRL with ``bf16=False`` and
``gradient_checkpointing=False`` (TRL's defaults are True; raco_jax does not rematerialise by
default either). Threads: the process is pinned to ``--threads`` cores
(``os.sched_setaffinity``); PyTorch gets ``torch.set_num_threads(threads)`` and one inter-op
thread; XLA's CPU client sizes its intra-op pool from that affinity (``XLA_FLAGS`` adds
``--xla_cpu_multi_thread_eigen=true``, its default).

The token ids go through TRL's own data path: each id is a word of a word-level tokenizer
(``t<id>``), TRL tokenizes the text pairs and appends EOS, and its collator's tensors are the
batch raco_jax sees (rows 0..B-1 chosen, B..2B-1 rejected, right padding).

Run (TRL is never a dependency of raco_jax; install it in a venv that sees the system packages,
keeping the installed torch and transformers)::

    python3 -m venv --system-site-packages /work/venvtrl
    /work/venvtrl/bin/pip install trl "torch==2.13.0" "transformers==5.25.0"
    PYTHONPATH=. /work/venvtrl/bin/python benchmarks/trl_step.py [--quick] [--repeats 5]
        [--official-python /work/venvraco/bin/python] [--out FILE.json]

The official RACO fork needs transformers 4.x (with transformers 5 its optional-import checks
all read as available, so ``import trl`` fails on ``import weave``); in a second venv::

    python3 -m venv --system-site-packages /work/venvraco
    /work/venvraco/bin/pip install <RACO checkout>/trl "torch==2.13.0"
    /work/venvraco/bin/pip install "transformers==4.57.3" "datasets==4.4.2" "torch==2.13.0"

Benchmarks are not tests: the figures go into benchmarks/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ARCHS = ("qwen3", "llama3")
OBJECTIVES = ("quality", "verbosity", "faithfulness")
WEIGHTS = {2: (0.7, 0.3), 3: (0.5, 0.3, 0.2)}
BETA = 0.1
CAGRAD_C = 0.4
LEARNING_RATE = 1e-6
MAX_GRAD_NORM = 1.0
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
FIRST_WORD_ID = 3


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The benchmark models and batch.

    Example:
        >>> Sizes.quick().num_layers
        2
    """

    num_layers: int = 4
    hidden_size: int = 256
    intermediate_size: int = 704
    num_heads: int = 8
    num_kv_heads: int = 4
    head_dim: int = 32
    vocab_size: int = 8192
    pairs: int = 8
    prompt_len: tuple[int, int] = (32, 64)
    response_len: tuple[int, int] = (64, 191)
    repeats: int = 5
    warmup: int = 1

    @classmethod
    def quick(cls) -> Sizes:
        """A tiny version for smoke runs."""
        return cls(
            num_layers=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            vocab_size=512,
            pairs=2,
            prompt_len=(6, 12),
            response_len=(6, 20),
            repeats=2,
            warmup=1,
        )


# -- data: pairs, tokenizer ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pairs:
    """B preference pairs as token ids (EOS not included) and [3, B] objective signs."""

    prompts: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]
    signs: np.ndarray

    def signs_for(self, k: int) -> np.ndarray:
        """The first K sign rows, float32 [K, B]."""
        return np.asarray(self.signs[:k], np.float32)


def make_pairs(sizes: Sizes, seed: int = 0) -> Pairs:
    """Random word ids (never pad/eos/unk); objective 0 prefers "chosen", 1 and 2 random signs.

    Example:
        >>> pairs = make_pairs(Sizes.quick())
        >>> len(pairs.prompts), pairs.signs.shape, bool((pairs.signs[0] == 1).all())
        (2, (3, 2), True)
    """
    rng = np.random.default_rng(seed)

    def draw(bounds: tuple[int, int]) -> list[int]:
        n = int(rng.integers(bounds[0], bounds[1] + 1))
        return rng.integers(FIRST_WORD_ID, sizes.vocab_size, size=n).tolist()

    prompts = [draw(sizes.prompt_len) for _ in range(sizes.pairs)]
    chosen = [draw(sizes.response_len) for _ in range(sizes.pairs)]
    rejected = [draw(sizes.response_len) for _ in range(sizes.pairs)]
    signs = np.ones((3, sizes.pairs), np.float32)
    signs[1:] = rng.choice([-1.0, 1.0], size=(2, sizes.pairs))
    return Pairs(prompts, chosen, rejected, signs)


def words(ids: Sequence[int]) -> str:
    """Token ids as the words of :func:`make_tokenizer`: ``t<id>`` separated by spaces."""
    return " ".join(f"t{i}" for i in ids)


def make_tokenizer(vocab_size: int) -> Any:
    """A word-level fast tokenizer: id 0 ``<pad>``, 1 ``<eos>``, 2 ``<unk>``, id i ``t<i>``."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD_ID, "<eos>": EOS_ID, "<unk>": UNK_ID}
    vocab.update({f"t{i}": i for i in range(FIRST_WORD_ID, vocab_size)})
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


# -- checkpoints ---------------------------------------------------------------------------------


def hf_config_kwargs(arch: str, sizes: Sizes) -> dict[str, Any]:
    """transformers 5 config arguments of the tiny Qwen 3 / Llama 3."""
    common = dict(
        vocab_size=sizes.vocab_size,
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_layers,
        num_attention_heads=sizes.num_heads,
        num_key_value_heads=sizes.num_kv_heads,
        head_dim=sizes.head_dim,
        rms_norm_eps=1e-6,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=None,
    )
    if arch == "qwen3":
        return dict(
            common,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        )
    if arch == "llama3":
        return dict(
            common,
            max_position_embeddings=131072,
            tie_word_embeddings=False,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500_000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        )
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}.")


def build_checkpoint(arch: str, sizes: Sizes, path: pathlib.Path, seed: int) -> pathlib.Path:
    """A seeded float32 transformers model (HF's own init) saved as safetensors at ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_cls, model_cls = {
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "llama3": (LlamaConfig, LlamaForCausalLM),
    }[arch]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**hf_config_kwargs(arch, sizes)))
    model.save_pretrained(path, safe_serialization=True)
    return path


# -- timing and comparison helpers -----------------------------------------------------------------


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Wall times (s) of each thunk (which must block until done), alternating within each
    repetition after ``warmup`` untimed calls of each.

    Example:
        >>> times = time_interleaved({"a": lambda: None}, repeats=3, warmup=1)
        >>> len(times["a"])
        3
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def compare_tensors(
    reference: dict[str, np.ndarray], other: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Per-tensor and global differences of two name -> array maps with the same keys.

    ``max_abs``: the largest elementwise difference over all tensors; ``max_rel``: the largest
    per-tensor ``max|a - b| / max|a|``; ``global_rel``: ``||a - b|| / ||a||`` over all tensors;
    ``worst``: the tensor with the largest relative difference.

    Example:
        >>> r = compare_tensors({"w": np.array([1.0, -2.0])}, {"w": np.array([1.0, -2.002])})
        >>> round(r["max_abs"], 6), round(r["max_rel"], 6)
        (0.002, 0.001)
    """
    if set(reference) != set(other):
        raise ValueError(
            f"tensor names differ: only in reference {sorted(set(reference) - set(other))[:4]}, "
            f"only in other {sorted(set(other) - set(reference))[:4]}."
        )
    max_abs, max_rel, worst = 0.0, 0.0, ""
    diff_sq, ref_sq = 0.0, 0.0
    for name, a in reference.items():
        a = np.asarray(a, np.float64)
        b = np.asarray(other[name], np.float64)
        if a.shape != b.shape:
            raise ValueError(f"tensor {name!r}: shapes {a.shape} and {b.shape} differ.")
        d = np.abs(a - b)
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        rel = float(np.max(d)) / scale if scale > 0 else float(np.max(d, initial=0.0))
        max_abs = max(max_abs, float(np.max(d, initial=0.0)))
        if rel >= max_rel:
            max_rel, worst = rel, name
        diff_sq += float(np.sum(d * d))
        ref_sq += float(np.sum(a * a))
    return {
        "tensors": len(reference),
        "max_abs": max_abs,
        "max_rel": max_rel,
        "global_rel": math.sqrt(diff_sq / ref_sq) if ref_sq > 0 else math.sqrt(diff_sq),
        "worst": worst,
        "norm": math.sqrt(ref_sq),
    }


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


def pin_threads(threads: int) -> list[int]:
    """Pins this process to ``threads`` cores and sets the XLA/PyTorch thread settings.

    Must run before jax and torch are imported (XLA reads its flags and core count at start).
    """
    available = sorted(os.sched_getaffinity(0))
    if threads > len(available):
        raise ValueError(f"--threads {threads} > the {len(available)} cores available to us.")
    cores = available[:threads]
    os.sched_setaffinity(0, cores)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=true").strip()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return cores


def load_average() -> str:
    """The 1/5/15-minute load averages."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# -- raco_jax side -------------------------------------------------------------------------------


def hf_named(config: Any, flat_state: Any) -> dict[str, np.ndarray]:
    """raco_jax parameter (or gradient) state -> HF-named arrays in HF layout.

    Uses :func:`raco_jax.models.hf_param_map`: kernels with ``in_ndim`` input axes are reshaped
    to ``[in, out]`` and transposed to HF's ``[out, in]``.
    """
    from flax import nnx

    from raco_jax.models import hf_param_map

    key_by_path = {path: (key, in_ndim) for key, (path, in_ndim) in hf_param_map(config).items()}
    out = {}
    for path, variable in nnx.to_flat_state(flat_state):
        key, in_ndim = key_by_path[tuple(path)]
        value = variable.get_value() if hasattr(variable, "get_value") else variable
        array = np.asarray(value, np.float32)
        if in_ndim:
            array = array.reshape(math.prod(array.shape[:in_ndim]), -1).T
        out[key] = np.ascontiguousarray(array)
    return out


class JaxStepper:
    """A raco_jax TrainStep and its evolving state on one batch (the step donates its state)."""

    def __init__(self, checkpoint: pathlib.Path, method: str, batch: Any) -> None:
        import jax

        from raco_jax.models import from_pretrained
        from raco_jax.train import TrainStep, make_optimizer

        k = batch.num_objectives
        weights = WEIGHTS[k]
        model, self.config = from_pretrained(checkpoint)
        tx = make_optimizer(
            method,
            weights,
            learning_rate=LEARNING_RATE,
            c=CAGRAD_C,
            max_grad_norm=MAX_GRAD_NORM,
        )
        self.step = TrainStep(
            model, tx, method=method, objectives=OBJECTIVES[:k], weights=weights, beta=BETA
        )
        self.state = self.step.init(model)
        self.batch = jax.device_put(batch)
        self.first_metrics: dict[str, float] | None = None

    def __call__(self) -> None:
        import jax

        self.state, metrics = self.step(self.state, self.batch)
        jax.block_until_ready(metrics["loss"])
        if self.first_metrics is None:
            self.first_metrics = {name: float(v) for name, v in metrics.items()}


def jax_losses_and_grads(
    checkpoint: pathlib.Path, batch: Any, stacked: bool, per_objective: bool = False
) -> tuple[np.ndarray, Any, Any]:
    """raco_jax's K objective losses and their gradients at the checkpoint's weights.

    ``stacked=False``: the gradient of the weighted loss (what the ``dpo`` method differentiates);
    ``stacked=True``: the stacked ``[K, ...]`` gradients (``value_and_objective_grads``, what the
    stacked methods hand to their aggregator); with ``per_objective`` as well, the same stack
    built from K separate jitted ``jax.grad`` calls, one per loss (the reference for the
    vmapped pullback). Returns ``(losses, grads, config)``.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import raco_jax
    from raco_jax.models import from_pretrained
    from raco_jax.preference import dpo_losses, pair_margins
    from raco_jax.train import policy_logps

    model, config = from_pretrained(checkpoint)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    weights = jnp.asarray(WEIGHTS[batch.num_objectives], jnp.float32)

    def losses(p: Any) -> jax.Array:
        logps, _ = policy_logps(nnx.merge(graphdef, p, rest), batch)
        margins = pair_margins(logps, jnp.asarray(batch.ref_logps))
        return dpo_losses(margins, batch.signs, batch.labeled, beta=BETA)

    if stacked and per_objective:
        values = jax.jit(losses)(params)
        rows = [
            jax.jit(jax.grad(lambda p, k=k: losses(p)[k]))(params)
            for k in range(batch.num_objectives)
        ]
        grads = jax.tree.map(lambda *xs: jnp.stack(xs), *rows)
    elif stacked:
        values, grads = jax.jit(raco_jax.value_and_objective_grads(losses))(params)
    else:
        (_, values), grads = jax.jit(
            jax.value_and_grad(lambda p: (weights @ losses(p), losses(p)), has_aux=True)
        )(params)
    return np.asarray(values), grads, config


def clipped_cagrad_direction(stacked_grads: Any, k: int) -> tuple[Any, np.ndarray]:
    """raco_jax's clipped CAGrad direction d (before the global-norm clip) and its coefficients."""
    import optax

    import raco_jax

    tx = raco_jax.clipped_cagrad(WEIGHTS[k], c=CAGRAD_C)
    direction, state = tx.update(stacked_grads, tx.init(None))
    return direction, np.asarray(optax.tree.get(state, "coefficients"))


# -- TRL side --------------------------------------------------------------------------------------


class TrlStepper:
    """TRL's DPOTrainer (this venv's trl) on one pre-collated batch: the Trainer loop's body."""

    def __init__(
        self, checkpoint: pathlib.Path, reference: pathlib.Path, pairs: Pairs, sizes: Sizes
    ) -> None:
        import datasets
        import torch
        from transformers import AutoModelForCausalLM
        from trl import DPOConfig, DPOTrainer

        datasets.disable_progress_bars()
        self.tmp = tempfile.mkdtemp(prefix="trl_step_")
        tokenizer = make_tokenizer(sizes.vocab_size)
        dataset = datasets.Dataset.from_dict(
            {
                "prompt": [words(p) for p in pairs.prompts],
                "chosen": [" " + words(c) for c in pairs.chosen],
                "rejected": [" " + words(r) for r in pairs.rejected],
            }
        )
        args = DPOConfig(
            output_dir=self.tmp,
            beta=BETA,
            loss_type=["sigmoid"],
            learning_rate=LEARNING_RATE,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            max_grad_norm=MAX_GRAD_NORM,
            per_device_train_batch_size=sizes.pairs,
            gradient_accumulation_steps=1,
            precompute_ref_log_probs=True,
            max_length=None,
            bf16=False,
            gradient_checkpointing=False,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            seed=0,
        )

        def load(path: pathlib.Path) -> Any:
            return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

        self.trainer = DPOTrainer(
            model=load(checkpoint),
            ref_model=load(reference),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        rows = [self.trainer.train_dataset[i] for i in range(sizes.pairs)]
        for i, row in enumerate(rows):  # TRL's tokenization must give our ids (+ EOS)
            expected = (pairs.prompts[i], pairs.chosen[i] + [EOS_ID], pairs.rejected[i] + [EOS_ID])
            got = (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])
            if tuple(map(list, got)) != expected:
                raise RuntimeError(f"TRL tokenized pair {i} differently from the ids we built.")
        self.inputs = self.trainer.data_collator(rows)
        self.model = self.trainer.model
        self.trainer.create_optimizer_and_scheduler(num_training_steps=1_000_000)
        self.trainer.current_gradient_accumulation_steps = 1
        self.optimizer_name = type(self.trainer.optimizer).__name__

    def gradients(self) -> tuple[float, float, dict[str, np.ndarray]]:
        """TRL's loss, pre-clip gradient norm and per-tensor gradients at the current weights."""
        self.model.zero_grad(set_to_none=True)
        loss = float(self.trainer.training_step(self.model, self.inputs))
        grads = {
            name: p.grad.detach().numpy().copy()
            for name, p in self.model.named_parameters()
            if p.grad is not None
        }
        norm = float(self.trainer.accelerator.clip_grad_norm_(self.model.parameters(), math.inf))
        self.model.zero_grad(set_to_none=True)
        return loss, norm, grads

    def __call__(self) -> None:
        trainer = self.trainer
        trainer.training_step(self.model, self.inputs)
        trainer.accelerator.clip_grad_norm_(self.model.parameters(), trainer.args.max_grad_norm)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        self.model.zero_grad()


def preference_batch(inputs: dict[str, Any], signs: np.ndarray) -> Any:
    """The raco_jax batch of TRL's collated tensors with ``[K, B]`` signs and TRL's reference
    log-probs."""
    from raco_jax.preference import make_batch

    ref = np.concatenate(
        [inputs["ref_chosen_logps"].numpy(), inputs["ref_rejected_logps"].numpy()]
    ).astype(np.float32)
    return make_batch(
        inputs["input_ids"].numpy(),
        inputs["attention_mask"].numpy(),
        inputs["completion_mask"].numpy().astype(np.float32),
        signs,
        ref_logps=ref,
    )


# -- the official RACO trainer (worker, run under the fork's interpreter) --------------------------


def transformers4_config(config_dict: dict[str, Any]) -> dict[str, Any]:
    """A transformers 5 ``config.json`` dict restated for transformers 4.x.

    transformers 4 ignores transformers 5's ``rope_parameters`` and would silently fall back to
    ``rope_theta = 1e4`` without scaling; the rope settings move to ``rope_theta`` and
    ``rope_scaling``.
    """
    out = dict(config_dict)
    rope = dict(out.pop("rope_parameters", None) or {})
    if "rope_theta" in rope:
        out["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        out["rope_scaling"] = rope
    return out


def official_worker(workdir: pathlib.Path, arch: str, repeats: int, warmup: int) -> None:
    """Runs under the RACO fork's interpreter: grads and timings of its DPO and RACO steps.

    Reads ``<workdir>/<arch>/pairs.json`` (ids, signs, TRL's reference log-probs, threads) and
    the checkpoint; writes ``official.npz`` (losses, gradients) and ``official.json`` (timings).
    """
    spec = json.loads((workdir / arch / "pairs.json").read_text())
    pin_threads(spec["threads"])
    import datasets
    import torch
    import transformers
    import trl
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.dpo_trainer import DPOTrainer

    checkpoint = workdir / arch / "policy"
    config_dict = json.loads((checkpoint / "config.json").read_text())
    config = AutoConfig.for_model(**transformers4_config(config_dict))
    datasets.disable_progress_bars()
    tokenizer = make_tokenizer(config.vocab_size)
    pairs = spec["pairs"]
    n = len(pairs["prompts"])
    dataset = datasets.Dataset.from_dict(
        {
            "prompt": [words(p) for p in pairs["prompts"]],
            "chosen": [" " + words(c) for c in pairs["chosen"]],
            "rejected": [" " + words(r) for r in pairs["rejected"]],
        }
    )

    def examples_for(trainer: Any, k: int) -> list[dict[str, Any]]:
        """The fork's tokenized rows (checked against our ids), reference log-probs, K signs."""
        examples = []
        for i in range(n):
            row = trainer.train_dataset[i]
            got = (row["prompt_input_ids"], row["chosen_input_ids"], row["rejected_input_ids"])
            expected = (
                pairs["prompts"][i],
                pairs["chosen"][i] + [EOS_ID],
                pairs["rejected"][i] + [EOS_ID],
            )
            if tuple(map(list, got)) != expected:
                raise RuntimeError(f"the fork tokenized pair {i} differently from our ids.")
            example = {
                "prompt_input_ids": got[0],
                "chosen_input_ids": got[1],
                "rejected_input_ids": got[2],
                "ref_chosen_logps": spec["ref_logps"][i],
                "ref_rejected_logps": spec["ref_logps"][n + i],
            }
            for name, row_signs in zip(OBJECTIVES[: max(k, 2)], pairs["signs"], strict=False):
                example[f"raco_s_{name}"] = row_signs[i]
            examples.append(example)
        return examples

    def trainer_for(k: int) -> tuple[Any, dict[str, Any]]:
        model = AutoModelForCausalLM.from_pretrained(checkpoint, config=config, dtype=torch.float32)
        raco = k > 1
        args = DPOConfig(
            output_dir=tempfile.mkdtemp(prefix="raco_fork_"),
            beta=BETA,
            loss_type="sigmoid",
            learning_rate=LEARNING_RATE,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            max_grad_norm=MAX_GRAD_NORM,
            per_device_train_batch_size=n,
            precompute_ref_log_probs=True,
            max_length=None,
            max_prompt_length=None,
            max_completion_length=None,
            bf16=False,
            gradient_checkpointing=False,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            seed=0,
            raco=raco,
            raco_weights=list(WEIGHTS[k]) if raco else [0.5, 0.5],
            raco_c=CAGRAD_C,
            raco_use_cagrad=True,
            raco_clip_lambda=True,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        inputs = trainer.data_collator(examples_for(trainer, k))
        trainer.create_optimizer_and_scheduler(num_training_steps=1_000_000)
        trainer.current_gradient_accumulation_steps = 1
        return trainer, inputs

    steppers = {}
    arrays: dict[str, np.ndarray] = {}
    losses: dict[str, float] = {}
    stored: dict[str, dict[str, float]] = {}
    for k, name in ((1, "dpo"), (2, "raco2"), (3, "raco3")):
        trainer, inputs = trainer_for(k)
        model = trainer.model
        model.zero_grad(set_to_none=True)
        losses[name] = float(trainer.training_step(model, inputs))
        # The fork's own record of its first step (RACO: p, ||g0||, ||G_p||, s, coefficients).
        stored[name] = {key: float(v[0]) for key, v in trainer._stored_metrics["train"].items()}
        for pname, p in model.named_parameters():
            if p.grad is not None:
                arrays[f"{name}/{pname}"] = p.grad.detach().numpy().copy()
        model.zero_grad(set_to_none=True)
        if name == "dpo":
            out = trainer.concatenated_forward(model, inputs)
            logps = torch.cat([out["chosen_logps"], out["rejected_logps"]]).detach().numpy()
            arrays["policy_logps"] = logps.astype(np.float32)

        def step(trainer: Any = trainer, inputs: dict[str, Any] = inputs) -> None:
            trainer.training_step(trainer.model, inputs)
            trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), MAX_GRAD_NORM)
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            trainer.model.zero_grad()

        steppers[name] = step
    times = time_interleaved(steppers, repeats, warmup)
    np.savez(workdir / arch / "official.npz", **arrays)
    (workdir / arch / "official.json").write_text(
        json.dumps(
            {
                "times_s": times,
                "losses": losses,
                "metrics": stored,
                "versions": (
                    f"trl {trl.__version__} (RACO fork), transformers {transformers.__version__}, "
                    f"torch {torch.__version__}"
                ),
                "optimizer": type(trainer.optimizer).__name__,
                "load_average": load_average(),
            }
        )
    )


def run_official(
    python: str, workdir: pathlib.Path, arch: str, repeats: int, warmup: int
) -> dict[str, Any]:
    """Runs :func:`official_worker` under ``python``; its results, or the reason it failed."""
    command = [
        python,
        os.path.abspath(__file__),
        "--worker",
        str(workdir),
        "--arch",
        arch,
        "--repeats",
        str(repeats),
        "--warmup",
        str(warmup),
    ]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the fork's interpreter needs none of raco_jax
    proc = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    result = json.loads((workdir / arch / "official.json").read_text())
    with np.load(workdir / arch / "official.npz") as data:
        result["arrays"] = {name: data[name] for name in data.files}
    return result


# -- one architecture ------------------------------------------------------------------------------


def run_arch(
    arch: str,
    sizes: Sizes,
    workdir: pathlib.Path,
    threads: int,
    official_python: str | None,
) -> dict[str, Any]:
    """Agreement figures and timings for one architecture."""
    from raco_jax.models import from_pretrained
    from raco_jax.train import compute_reference_logps

    root = workdir / arch
    policy_dir = build_checkpoint(arch, sizes, root / "policy", seed=0)
    reference_dir = build_checkpoint(arch, sizes, root / "reference", seed=1)
    pairs = make_pairs(sizes, seed=0)

    trl_step = TrlStepper(policy_dir, reference_dir, pairs, sizes)
    inputs = trl_step.inputs
    tokens = int(inputs["attention_mask"].sum())
    # raco_jax refuses K = 1 (weights need K >= 2): TRL's single objective is run as K = 2 with
    # both sign rows = TRL's preference, so the weighted loss IS TRL's loss.
    batches = {
        "trl": preference_batch(inputs, np.ones((2, sizes.pairs), np.float32)),
        2: preference_batch(inputs, pairs.signs_for(2)),
        3: preference_batch(inputs, pairs.signs_for(3)),
    }
    out: dict[str, Any] = {
        "tokens_per_step": tokens,
        "sequence_length": int(inputs["input_ids"].shape[1]),
        "trl_optimizer": trl_step.optimizer_name,
    }

    # Agreement, at the starting weights.
    ref_model, _ = from_pretrained(reference_dir)
    our_ref = np.asarray(compute_reference_logps(ref_model, batches["trl"]))
    trl_ref = np.asarray(batches["trl"].ref_logps)
    out["ref_logps"] = {
        "max_abs": float(np.max(np.abs(our_ref - trl_ref))),
        "max_rel": float(np.max(np.abs(our_ref - trl_ref) / np.abs(trl_ref))),
        "mean_abs_value": float(np.mean(np.abs(trl_ref))),
    }
    trl_loss, trl_norm, trl_grads = trl_step.gradients()
    our_losses, our_grads, config = jax_losses_and_grads(policy_dir, batches["trl"], stacked=False)
    our_named = hf_named(config, our_grads)
    out["loss"] = {"trl": trl_loss, "raco_jax": float(our_losses[0])}
    out["grads"] = compare_tensors(trl_grads, our_named)
    out["grad_norm"] = {"trl": trl_norm, "raco_jax": out["grads"]["norm"]}

    # Timing: TRL and raco_jax steps interleaved.
    steppers: dict[str, Callable[[], None]] = {"TRL DPOTrainer": trl_step}
    jax_steps = {
        "raco_jax dpo (TRL's pairs)": ("dpo", "trl"),
        "raco_jax dpo-lw (K=2)": ("dpo-lw", 2),
        "raco_jax raco (K=2)": ("raco", 2),
        "raco_jax raco (K=3)": ("raco", 3),
    }
    jax_steppers = {
        name: JaxStepper(policy_dir, method, batches[k]) for name, (method, k) in jax_steps.items()
    }
    steppers.update(jax_steppers)
    load_before = load_average()
    times = time_interleaved(steppers, sizes.repeats, sizes.warmup)
    out["load_average"] = f"{load_before} before, {load_average()} after"
    out["times_s"] = times
    first = jax_steppers["raco_jax dpo (TRL's pairs)"].first_metrics or {}
    out["trainstep_first"] = {"loss": first.get("loss"), "grad_norm": first.get("grad_norm")}

    # raco_jax's stacked gradients (one vjp, vmapped pullback) against K separate jax.grad calls,
    # objective by objective, on the K = 3 batch (whose first two rows are the K = 2 batch).
    _, stacked3, config = jax_losses_and_grads(policy_dir, batches[3], stacked=True)
    _, separate3, _ = jax_losses_and_grads(policy_dir, batches[3], stacked=True, per_objective=True)
    out["stacked_vs_separate"] = [
        compare_tensors(hf_named(config, _row(separate3, k)), hf_named(config, _row(stacked3, k)))
        for k in range(3)
    ]
    del trl_step, jax_steppers, steppers

    if official_python:
        spec = {
            "threads": threads,
            "pairs": {
                "prompts": pairs.prompts,
                "chosen": pairs.chosen,
                "rejected": pairs.rejected,
                "signs": pairs.signs.tolist(),
            },
            "ref_logps": trl_ref.tolist(),
        }
        (root / "pairs.json").write_text(json.dumps(spec))
        official = run_official(official_python, workdir, arch, sizes.repeats, sizes.warmup)
        if "arrays" in official:
            arrays = official.pop("arrays")
            agreement = {}
            fork_logps = arrays["policy_logps"]
            policy_model, _ = from_pretrained(policy_dir)
            ours = np.asarray(compute_reference_logps(policy_model, batches["trl"]))
            agreement["policy_logps_max_abs"] = float(np.max(np.abs(fork_logps - ours)))
            agreement["dpo_loss"] = {
                "fork": official["losses"]["dpo"],
                "raco_jax": out["loss"]["raco_jax"],
            }
            agreement["dpo_grads"] = compare_tensors(_prefixed(arrays, "dpo/"), our_named)
            for k in (2, 3):
                stacked_losses, _, _ = jax_losses_and_grads(policy_dir, batches[k], stacked=True)
                fork_direction = _prefixed(arrays, f"raco{k}/")
                entry: dict[str, Any] = {
                    "weighted_loss": {
                        "fork": official["losses"][f"raco{k}"],
                        "raco_jax": float(np.asarray(WEIGHTS[k]) @ stacked_losses),
                    },
                    "fork_metrics": official["metrics"][f"raco{k}"],
                }
                for label, grads in (
                    ("vmapped", _first_rows(stacked3, k)),
                    ("separate", _first_rows(separate3, k)),
                ):
                    direction, coefficients = clipped_cagrad_direction(grads, k)
                    entry[label] = {
                        "coefficients": coefficients.tolist(),
                        "direction": compare_tensors(fork_direction, hf_named(config, direction)),
                    }
                agreement[f"raco{k}"] = entry
            official["agreement"] = agreement
        out["official"] = official
    return out


def _row(stacked: Any, k: int) -> Any:
    import jax

    return jax.tree.map(lambda x: x[k], stacked)


def _first_rows(stacked: Any, k: int) -> Any:
    import jax

    return jax.tree.map(lambda x: x[:k], stacked)


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {name[len(prefix) :]: a for name, a in arrays.items() if name.startswith(prefix)}


# -- report ------------------------------------------------------------------------------------------

BACKWARDS = {
    "TRL DPOTrainer": 1,
    "raco_jax dpo (TRL's pairs)": 1,
    "raco_jax dpo-lw (K=2)": 2,
    "raco_jax raco (K=2)": 2,
    "raco_jax raco (K=3)": 3,
}
OFFICIAL_ROWS = {
    "dpo": ("official RACO fork: DPO (K=1)", 1),
    "raco2": ("official RACO fork: RACO (K=2)", 2),
    "raco3": ("official RACO fork: RACO (K=3)", 3),
}


def fork_coefficients(metrics: dict[str, float], k: int) -> list[float]:
    """The fork's update coefficients a_k (d = sum_k a_k g_k) from its logged first-step metrics.

    K = 3 logs them (``raco/a_*``); K = 2 logs p, s and ||G_p||: a = w + (s / ||G_p||) p.
    """
    names = OBJECTIVES[:k]
    if k == 3:
        return [metrics[f"raco/a_{name}"] for name in names]
    scale = metrics["raco/s"] / metrics["raco/gp_norm"] if metrics.get("raco/gp_norm") else 0.0
    return [metrics[f"raco/w_{n}"] + scale * metrics[f"raco/p_mix_{n}"] for n in names]


def _fmt(x: float) -> str:
    return f"{x:.2e}"


def timing_rows(arch: str, result: dict[str, Any]) -> list[str]:
    """Markdown rows: step, backward passes, median/min seconds, tokens/s, ratio to TRL."""
    tokens = result["tokens_per_step"]
    times = result["times_s"]
    trl = statistics.median(times["TRL DPOTrainer"])
    rows = []
    for name, passes in BACKWARDS.items():
        med = statistics.median(times[name])
        rows.append(
            f"| {arch} | {name} | {passes} | {med:.3f} | {min(times[name]):.3f} | "
            f"{tokens / med:,.0f} | {trl / med:.2f} | |"
        )
    official = result.get("official")
    if official and "times_s" in official:
        fork_dpo = statistics.median(official["times_s"]["dpo"])
        for key, (name, passes) in OFFICIAL_ROWS.items():
            med = statistics.median(official["times_s"][key])
            rows.append(
                f"| {arch} | {name} | {passes} | {med:.3f} | {min(official['times_s'][key]):.3f} "
                f"| {tokens / med:,.0f} | {trl / med:.2f}* | {fork_dpo / med:.2f} |"
            )
    return rows


def agreement_rows(arch: str, result: dict[str, Any]) -> list[str]:
    """Markdown rows of the loss / gradient agreement."""
    ref = result["ref_logps"]
    loss = result["loss"]
    grads = result["grads"]
    norm = result["grad_norm"]
    first = result["trainstep_first"]
    loss_diff = abs(loss["trl"] - loss["raco_jax"])
    rows = [
        f"| {arch} | reference log-probs (2B rows, TRL precompute vs compute_reference_logps) | "
        f"mean abs {ref['mean_abs_value']:.2f}"
        f" | {_fmt(ref['max_abs'])} | {_fmt(ref['max_rel'])} |",
        f"| {arch} | DPO loss | {loss['trl']:.7f} vs {loss['raco_jax']:.7f} | {_fmt(loss_diff)} | "
        f"{_fmt(loss_diff / abs(loss['trl']))} |",
        f"| {arch} | gradients, {grads['tensors']} tensors (worst: {grads['worst']}) | "
        f"global rel {_fmt(grads['global_rel'])} | {_fmt(grads['max_abs'])} | "
        f"{_fmt(grads['max_rel'])} |",
        f"| {arch} | grad norm (TRL clip_grad_norm_ vs raco_jax) | {norm['trl']:.6e} vs "
        f"{norm['raco_jax']:.6e} | {_fmt(abs(norm['trl'] - norm['raco_jax']))} | "
        f"{_fmt(abs(norm['trl'] - norm['raco_jax']) / norm['trl'])} |",
    ]
    if first.get("loss") is not None:
        rows.append(
            f"| {arch} | TrainStep dpo first step: loss, grad_norm | {first['loss']:.7f}, "
            f"{first['grad_norm']:.6e} | {_fmt(abs(first['loss'] - loss['trl']))}, "
            f"{_fmt(abs(first['grad_norm'] - norm['trl']))} | "
            f"{_fmt(abs(first['loss'] - loss['trl']) / loss['trl'])}, "
            f"{_fmt(abs(first['grad_norm'] - norm['trl']) / norm['trl'])} |"
        )
    for k, c in enumerate(result.get("stacked_vs_separate", [])):
        rows.append(
            f"| {arch} | raco_jax stacked gradient row {k} (value_and_objective_grads) vs "
            f"jax.grad of loss {k} | global rel {_fmt(c['global_rel'])} (worst: {c['worst']}) | "
            f"{_fmt(c['max_abs'])} | {_fmt(c['max_rel'])} |"
        )
    agreement = (result.get("official") or {}).get("agreement")
    if agreement:
        dpo_loss = agreement["dpo_loss"]
        d = abs(dpo_loss["fork"] - dpo_loss["raco_jax"])
        g = agreement["dpo_grads"]
        rows += [
            f"| {arch} | fork: policy log-probs (concatenated_forward vs raco_jax) | | "
            f"{_fmt(agreement['policy_logps_max_abs'])} | |",
            f"| {arch} | fork: DPO loss | {dpo_loss['fork']:.7f} | {_fmt(d)} | "
            f"{_fmt(d / abs(dpo_loss['fork']))} |",
            f"| {arch} | fork: DPO gradients | global rel {_fmt(g['global_rel'])} | "
            f"{_fmt(g['max_abs'])} | {_fmt(g['max_rel'])} |",
        ]
        for k in (2, 3):
            a = agreement[f"raco{k}"]
            wl = a["weighted_loss"]
            d = abs(wl["fork"] - wl["raco_jax"])
            fork_coeffs = ", ".join(f"{c:.4f}" for c in fork_coefficients(a["fork_metrics"], k))
            rows.append(
                f"| {arch} | fork: RACO K={k} weighted loss | {wl['fork']:.7f} | {_fmt(d)} | "
                f"{_fmt(d / abs(wl['fork']))} |"
            )
            for label, text in (
                ("vmapped", "raco_jax stacked gradients (value_and_objective_grads)"),
                ("separate", "K separate jax.grad"),
            ):
                dirn = a[label]["direction"]
                coeffs = ", ".join(f"{c:.4f}" for c in a[label]["coefficients"])
                rows.append(
                    f"| {arch} | fork: RACO K={k} update direction vs clipped_cagrad of {text} "
                    f"(a = {coeffs}; fork a = {fork_coeffs}) | global rel "
                    f"{_fmt(dirn['global_rel'])} | {_fmt(dirn['max_abs'])} | "
                    f"{_fmt(dirn['max_rel'])} |"
                )
    return rows


def versions() -> str:
    import flax
    import jax
    import optax
    import torch
    import transformers
    import trl

    return (
        f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"trl {trl.__version__}, python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, 2 pairs, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls of each step (1)")
    parser.add_argument("--pairs", type=int, default=None, help="B, preference pairs (8)")
    parser.add_argument("--threads", type=int, default=2, help="cores for torch and XLA (2)")
    parser.add_argument("--arch", choices=ARCHS, action="append", help="default: both")
    parser.add_argument(
        "--official-python",
        default=None,
        help="interpreter with the official RACO fork installed (skipped when not given)",
    )
    parser.add_argument("--out", default=None, help="write the raw numbers to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # inside the official fork's interpreter
        official_worker(pathlib.Path(args.worker), args.arch[0], args.repeats, args.warmup)
        return {}

    sizes = Sizes.quick() if args.quick else Sizes()
    overrides = {
        k: v
        for k, v in {"repeats": args.repeats, "warmup": args.warmup, "pairs": args.pairs}.items()
        if v is not None
    }
    sizes = dataclasses.replace(sizes, **overrides)
    cores = pin_threads(args.threads)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    import jax

    archs = args.arch or list(ARCHS)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="trl_step_bench_"))
    results = {
        arch: run_arch(arch, sizes, workdir, args.threads, args.official_python) for arch in archs
    }
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs, pinned to cores {cores}, "
        f"{jax.devices()[0].platform}",
        "threads": f"torch.set_num_threads({args.threads}), set_num_interop_threads(1); XLA CPU "
        f"client on the same {len(cores)} cores (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})",
        "versions": versions(),
        "command": "python "
        + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "sizes": dataclasses.asdict(sizes),
    }
    print("# Train step vs TRL (benchmarks/trl_step.py)\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    for arch, result in results.items():
        print(
            f"- {arch}: {result['tokens_per_step']} non-padding tokens per step "
            f"({2 * sizes.pairs} sequences, padded length {result['sequence_length']}); "
            f"TRL optimizer {result['trl_optimizer']}; load average {result['load_average']}"
        )
        official = result.get("official")
        if official:
            if "error" in official:
                print(f"- {arch}: official RACO fork failed: {official['error']}")
            else:
                print(
                    f"- {arch}: official RACO fork: {official['versions']}, optimizer "
                    f"{official['optimizer']}, load average {official['load_average']}"
                )
    print(
        "\n| model | step | backward passes | median s | min s | tokens/s | TRL time / this "
        "| fork DPO time / this |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for arch, result in results.items():
        print("\n".join(timing_rows(arch, result)))
    print(
        "\n(*: the fork runs in its own process after the others, so its ratio to TRL is across "
        "processes; its ratio to its own DPO step is within one process.)"
    )
    print("\n| model | quantity | values | max abs diff | max rel diff |")
    print("|---|---|---|---:|---:|")
    for arch, result in results.items():
        print("\n".join(agreement_rows(arch, result)))
    payload = {"info": info, "results": results}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(payload, handle, indent=2, default=float)
    return payload


if __name__ == "__main__":
    main()
