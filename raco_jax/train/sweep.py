"""Weight sweeps and their evaluation: one run per (method, weights), then the Pareto front.

:func:`run_sweep` trains one :func:`~raco_jax.train.align.align` run per method and weight
vector into ``<output_dir>/<method>/w_<w1>_<w2>[...]/``, resumably: a finished run (``final/``
and a ``summary.json`` saying ``completed``) is skipped, an unfinished one is resumed from its
last checkpoint. It then hands the runs to :func:`evaluate_runs`, which:

1. takes held-out prompts (:func:`held_out_prompts`: the run config's held-out split, or any
   preference data), and generates one greedy response per prompt with each run's exported
   model and with the base model (:func:`generate_responses`, :func:`raco_jax.models.generate`);
2. scores them with the judges named by specs (:func:`make_judges`): ``length[:objective]``,
   ``lexicon:FILE[:objective[:positive]]``, ``reward-model:DIR[:objective]`` and
   ``implicit[:objective]`` (the DPO implicit reward ``beta * (log pi - log pi_base)`` of the
   run's model against the base model);
3. writes the Pareto front with :func:`raco_jax.evaluate.report.write_front_report` into
   ``<output_dir>/evaluation/``: a plot (PNG), a table (CSV and Markdown), the hypervolume of
   each method's front with its reference point stated (the base model's mean scores, so a run
   counts only where it improves every objective over the model it started from), a JSON
   summary, and ``responses.json`` with every response and score.

Each run's scores are cached in ``<run_dir>/evaluation.json`` under a key of the judges, the
prompts, the generation settings and the base model, so a rerun evaluates only what changed.

Example (weights of a 3-point sweep on two objectives, and their directory names):
    >>> from raco_jax.train.sweep import simplex_grid, weights_label
    >>> [weights_label(w) for w in simplex_grid(2, 3)]
    ['w_0.25_0.75', 'w_0.5_0.5', 'w_0.75_0.25']
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SweepResult",
    "SweepRun",
    "add_evaluate_parser",
    "add_sweep_parser",
    "evaluate_runs",
    "generate_responses",
    "held_out_prompts",
    "load_run_model",
    "make_judges",
    "parse_weights_grid",
    "read_run_config",
    "run_is_finished",
    "run_sweep",
    "simplex_grid",
    "weights_label",
]

EVALUATION_DIR = "evaluation"
RUN_EVALUATION_FILE = "evaluation.json"


# -- the grid --------------------------------------------------------------------------------


def simplex_grid(num_objectives: int, points: int) -> list[tuple[float, ...]]:
    """Interior weight vectors on the simplex: ``points`` per edge direction.

    The vectors ``(m_1 + 1, ..., m_K + 1) / (points + K - 1)`` over all integers
    ``m_k >= 0`` summing to ``points - 1``: every weight is positive (MODPO and the clipped
    CAGrad anchor need it), ``points`` vectors for K = 2 and ``points (points + 1) / 2`` for
    K = 3, ordered by the first weight ascending.

    Example:
        >>> from raco_jax.train.sweep import simplex_grid
        >>> simplex_grid(2, 3)
        [(0.25, 0.75), (0.5, 0.5), (0.75, 0.25)]
        >>> len(simplex_grid(3, 3)), simplex_grid(3, 1)
        (6, [(0.3333333333333333, 0.3333333333333333, 0.3333333333333333)])
    """
    if num_objectives < 2:
        raise ValueError(f"a sweep needs at least 2 objectives, got {num_objectives}.")
    if points < 1:
        raise ValueError(f"--grid must be >= 1, got {points}.")
    total = points + num_objectives - 1
    grid = []
    for parts in itertools.product(range(points), repeat=num_objectives):
        if sum(parts) == points - 1:
            grid.append(tuple((m + 1) / total for m in parts))
    return sorted(grid)


def parse_weights_grid(text: str, num_objectives: int | None = None) -> list[tuple[float, ...]]:
    """Weight vectors from ``"0.2,0.8;0.5,0.5"`` (vectors separated by ``;``), each on the simplex.

    Example:
        >>> from raco_jax.train.sweep import parse_weights_grid
        >>> parse_weights_grid("0.2,0.8; 0.5,0.5")
        [(0.2, 0.8), (0.5, 0.5)]
        >>> parse_weights_grid("0.2,0.7")
        Traceback (most recent call last):
        ...
        ValueError: --weights-grid vector 1 (0.2, 0.7) must sum to 1 (within 1e-6).
    """
    vectors = []
    for index, chunk in enumerate(part for part in text.split(";") if part.strip()):
        try:
            vector = tuple(float(x) for x in chunk.split(",") if x.strip())
        except ValueError:
            raise ValueError(
                f"--weights-grid vector {index + 1} {chunk!r} is not numbers."
            ) from None
        if num_objectives is not None and len(vector) != num_objectives:
            raise ValueError(
                f"--weights-grid vector {index + 1} {vector} has {len(vector)} weights; the run "
                f"has {num_objectives} objectives."
            )
        if any(not math.isfinite(w) or w < 0 for w in vector) or abs(math.fsum(vector) - 1) > 1e-6:
            raise ValueError(
                f"--weights-grid vector {index + 1} {vector} must sum to 1 (within 1e-6)."
            )
        vectors.append(vector)
    if not vectors:
        raise ValueError("--weights-grid holds no weight vector.")
    return vectors


def weights_label(weights: Sequence[float]) -> str:
    """The directory name of a weight vector: ``w_`` and the weights (4 significant digits).

    Example:
        >>> from raco_jax.train.sweep import weights_label
        >>> weights_label((1 / 3, 2 / 3))
        'w_0.3333_0.6667'
    """
    return "w_" + "_".join(f"{w:.4g}" for w in weights)


def run_is_finished(run_dir: str | pathlib.Path) -> bool:
    """Whether a run directory holds a finished run: ``final/`` and a completed summary.

    Example:
        >>> import tempfile
        >>> from raco_jax.train.sweep import run_is_finished
        >>> run_is_finished(tempfile.mkdtemp())
        False
    """
    run_dir = pathlib.Path(run_dir)
    summary = run_dir / "summary.json"
    if not ((run_dir / "final").is_dir() and summary.is_file()):
        return False
    try:
        return json.loads(summary.read_text()).get("status") == "completed"
    except json.JSONDecodeError:
        return False


# -- judges ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _JudgeSpec:
    kind: str
    argument: str | None
    objective: str | None
    option: str | None


def _parse_judge(spec: str) -> _JudgeSpec:
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind == "length":
        return _JudgeSpec(kind, None, parts[0] if parts else None, None)
    if kind == "implicit":
        return _JudgeSpec(kind, None, parts[0] if parts else None, None)
    if kind in ("lexicon", "reward-model"):
        if not parts or not parts[0]:
            raise ValueError(f"judge {spec!r}: {kind} needs a path, e.g. {kind}:PATH.")
        option = parts[2] if len(parts) > 2 else None
        if kind == "lexicon" and option not in (None, "positive", "negative"):
            raise ValueError(f"judge {spec!r}: the polarity must be 'positive' or 'negative'.")
        return _JudgeSpec(kind, parts[0], parts[1] if len(parts) > 1 else None, option)
    raise ValueError(
        f"unknown judge {spec!r}; use length[:objective], lexicon:FILE[:objective[:positive]], "
        "reward-model:DIR[:objective] or implicit[:objective]."
    )


def make_judges(
    specs: Sequence[str],
    *,
    policy_logps: Callable[[list[str], list[str]], Any] | None = None,
    reference_logps: Callable[[list[str], list[str]], Any] | None = None,
    beta: float = 0.1,
) -> Any:
    """A :class:`~raco_jax.evaluate.CombinedJudge` from judge specs (higher is better):

    * ``length[:objective]``: :class:`~raco_jax.evaluate.LengthJudge`, minus the length in
      words (default objective ``conciseness``);
    * ``lexicon:FILE[:objective[:positive]]``: :class:`~raco_jax.evaluate.LexiconJudge` with
      the words of FILE (one per line; ``#`` comments), counted as bad (default objective
      ``harmlessness``) or, with ``positive``, as good;
    * ``reward-model:DIR[:objective]``: :class:`~raco_jax.evaluate.RewardModelJudge` (a
      sequence-classification model; default objective ``reward``);
    * ``implicit[:objective]``: :class:`~raco_jax.evaluate.ImplicitRewardJudge`
      ``beta * (policy_logps - reference_logps)`` (default objective ``implicit_reward``);
      needs the two log-prob functions.

    Example:
        >>> import pathlib, tempfile
        >>> from raco_jax.train.sweep import make_judges
        >>> lexicon = pathlib.Path(tempfile.mkdtemp()) / "bad.txt"
        >>> _ = lexicon.write_text("petrol\\nburn\\n")
        >>> judge = make_judges(["length", f"lexicon:{lexicon}"])
        >>> judge.objectives
        ('conciseness', 'harmlessness')
        >>> judge(["q"], ["Burn it with petrol."])["harmlessness"].tolist()
        [-0.5]
    """
    from raco_jax.evaluate import (
        CombinedJudge,
        ImplicitRewardJudge,
        LengthJudge,
        LexiconJudge,
        RewardModelJudge,
    )

    if not specs:
        raise ValueError("no judge: give at least one --judge (e.g. --judge length).")
    judges = []
    for spec in specs:
        parsed = _parse_judge(spec)
        if parsed.kind == "length":
            judges.append(LengthJudge(parsed.objective or "conciseness"))
        elif parsed.kind == "lexicon":
            path = pathlib.Path(str(parsed.argument))
            if not path.is_file():
                raise ValueError(f"judge {spec!r}: lexicon file {path} does not exist.")
            words = [
                line.strip()
                for line in path.read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")
            ]
            judges.append(
                LexiconJudge(
                    words,
                    parsed.objective or "harmlessness",
                    polarity="positive" if parsed.option == "positive" else "negative",
                )
            )
        elif parsed.kind == "reward-model":
            judges.append(
                RewardModelJudge(str(parsed.argument), objective=parsed.objective or "reward")
            )
        else:
            if policy_logps is None or reference_logps is None:
                raise ValueError(f"judge {spec!r} needs a policy and a reference model.")
            judges.append(
                ImplicitRewardJudge(
                    policy_logps,
                    reference_logps,
                    beta=beta,
                    objective=parsed.objective or "implicit_reward",
                )
            )
    return CombinedJudge(judges)


def _judge_objectives(specs: Sequence[str]) -> tuple[str, ...]:
    defaults = {
        "length": "conciseness",
        "lexicon": "harmlessness",
        "reward-model": "reward",
        "implicit": "implicit_reward",
    }
    names = tuple(parsed.objective or defaults[parsed.kind] for parsed in map(_parse_judge, specs))
    if len(set(names)) != len(names):
        raise ValueError(f"the judges score the same objective twice: {list(names)}.")
    return names


# -- prompts, generation, log-probs ----------------------------------------------------------


def held_out_prompts(
    dataset: str,
    schema: str,
    *,
    split: str = "train",
    objectives: Sequence[str] | None = None,
    eval_fraction: float = 0.0,
    seed: int = 0,
    num_prompts: int | None = None,
) -> list[Any]:
    """Distinct prompts of preference data, in reading order: all of ``split``, or the pairs
    :func:`~raco_jax.train.align.split_train_eval` holds out with ``eval_fraction`` and ``seed``
    (the same ones an :func:`~raco_jax.train.align.align` run with those settings never saw).

    Example:
        >>> import json, pathlib, tempfile
        >>> from raco_jax.train.sweep import held_out_prompts
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "pairs.jsonl"
        >>> rows = [{"prompt": p, "chosen": "a", "rejected": "b"} for p in ["x", "y", "x"]]
        >>> _ = path.write_text("".join(json.dumps(r) + "\\n" for r in rows))
        >>> held_out_prompts(str(path), "generic")
        ['x', 'y']
    """
    from raco_jax.data import load_preferences
    from raco_jax.train.align import _dataset_source, resolve_schema, split_train_eval

    pairs, _ = load_preferences(
        _dataset_source(dataset),
        resolve_schema(schema),
        objectives=None if objectives is None else tuple(objectives),
        split=split,
    )
    if eval_fraction > 0:
        _, pairs = split_train_eval(pairs, eval_fraction, seed)
    prompts: list[Any] = []
    seen: set[str] = set()
    for pair in pairs:
        key = json.dumps(pair.prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(pair.prompt)
        if num_prompts is not None and len(prompts) >= num_prompts:
            break
    if not prompts:
        raise ValueError(f"no prompts in {dataset!r} ({schema}, split {split}).")
    return prompts


def _prompt_text(prompt: Any) -> str:
    """A prompt as a judge reads it: the text, or a conversation's last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else prompt[-1]["content"]


def _tokenized_prompts(prompts: Sequence[Any], tokenizer: Any, max_prompt_length: int) -> Any:
    """Prompt ids rendered like training prompts (chat template, one BOS, end kept)."""
    from raco_jax.data import PreferencePair, tokenize_pairs

    pairs = [PreferencePair(prompt, "-", "-", {"_": 0}) for prompt in prompts]
    data = tokenize_pairs(pairs, tokenizer, ["_"], max_prompt_length + 1, max_prompt_length)
    return [
        ids[:length] for ids, length in zip(data.input_ids_a, data.prompt_lengths_a, strict=True)
    ]


def _stop_ids(tokenizer: Any, model: Any) -> tuple[int, ...]:
    ids = []
    for value in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(model.config, "eos_token_id", None),
    ):
        if value is None:
            continue
        ids.extend(value if isinstance(value, (list, tuple)) else [value])
    vocab = model.config.vocab_size
    return tuple(dict.fromkeys(int(i) for i in ids if 0 <= int(i) < vocab))


def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int = 64,
    max_prompt_length: int = 512,
    batch_size: int = 8,
) -> list[str]:
    """Greedy responses of a :class:`~raco_jax.models.Decoder` to prompts (chat template applied).

    Prompts are left-padded into batches of ``batch_size`` (the last batch filled with copies,
    so every batch compiles to the same program for a given padded length) and decoded by
    :func:`raco_jax.models.generate` until the tokenizer's or the model's end token.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.data import byte_tokenizer
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.train.sweep import generate_responses
        >>> tokenizer = byte_tokenizer("chatml")
        >>> config = ModelConfig(model_type="qwen3", vocab_size=len(tokenizer), hidden_size=16,
        ...                      intermediate_size=32, num_layers=1, num_heads=2)
        >>> responses = generate_responses(Decoder(config, rngs=nnx.Rngs(0)), tokenizer,
        ...                                ["Hi", "Why?"], max_new_tokens=4)
        >>> len(responses), all(isinstance(r, str) for r in responses)
        (2, True)
    """
    from raco_jax.data import bucket_length
    from raco_jax.models import generate

    prompt_ids = _tokenized_prompts(prompts, tokenizer, max_prompt_length)
    stop = _stop_ids(tokenizer, model)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = int(pad if pad is not None else (stop[0] if stop else 0))
    responses: list[str] = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        rows = chunk + [chunk[i % len(chunk)] for i in range(batch_size - len(chunk))]
        width = bucket_length(max(len(r) for r in rows), "pow2")
        ids = np.full((batch_size, width), pad, np.int32)
        mask = np.zeros((batch_size, width), np.int32)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = row
            mask[i, width - len(row) :] = 1
        out = generate(
            model,
            ids,
            mask,
            max_new_tokens=max_new_tokens,
            stop_token_ids=stop or None,
            pad_token_id=pad,
        )
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        for i in range(len(chunk)):
            text = tokenizer.decode(tokens[i, : lengths[i]].tolist(), skip_special_tokens=True)
            responses.append(text.strip())
    return responses


def _logps_fn(
    model: Any,
    tokenizer: Any,
    max_length: int,
    max_prompt_length: int,
    batch_size: int,
    originals: dict[str, Any] | None = None,
) -> Callable[[list[Any], list[str]], np.ndarray]:
    """(prompts, responses) -> summed log-probs of the responses under ``model``; prompt texts
    found in ``originals`` are replaced by the prompts they were made from (conversations)."""
    originals = originals or {}
    from raco_jax.data import PreferencePair, tokenize_pairs
    from raco_jax.preference import make_batch
    from raco_jax.train.step import compute_reference_logps

    def logps(prompts: list[Any], responses: list[str]) -> np.ndarray:
        prompts = [originals.get(p, p) if isinstance(p, str) else p for p in prompts]
        pairs = [
            PreferencePair(p, r or " ", r or " ", {"_": 0})
            for p, r in zip(prompts, responses, strict=True)
        ]
        data = tokenize_pairs(pairs, tokenizer, ["_"], max_length, max_prompt_length)
        out = np.zeros(len(pairs), np.float32)
        for start in range(0, len(pairs), batch_size):
            indices = list(range(start, min(start + batch_size, len(pairs))))
            batch = make_batch(**data.collate(indices, batch_size=batch_size), validate=False)
            out[indices] = np.asarray(compute_reference_logps(model, batch))[: len(indices)]
        return out

    return logps


# -- evaluation ------------------------------------------------------------------------------


def read_run_config(run_dir: str | pathlib.Path) -> dict[str, Any]:
    """A run directory's ``config.json`` as a dict.

    Raises:
      FileNotFoundError: the directory has no ``config.json``.

    Example:
        >>> import tempfile
        >>> from raco_jax.train.sweep import read_run_config
        >>> read_run_config(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ... is not a run directory: it has no config.json.
    """
    path = pathlib.Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no config.json.")
    return json.loads(path.read_text())


def load_run_model(
    run_dir: str | pathlib.Path, config: Mapping[str, Any] | None = None, dtype: Any = None
) -> tuple[Any, Any]:
    """A finished run's final model and tokenizer: ``final/`` as a full checkpoint, or the base
    model (the run's ``model``) plus the LoRA adapters saved in ``final/`` (PEFT layout).

    Args:
      run_dir: the run directory (``config.json`` + ``final/``).
      config: its config (default: read from ``run_dir``).
      dtype: compute dtype (default: float32); parameters load in float32.

    Returns:
      ``(model, tokenizer)``: the tokenizer saved in ``final/``, else the run's tokenizer.

    Raises:
      ValueError: the run has no ``final/`` (not finished).

    Example:
        >>> import tempfile
        >>> from raco_jax.train.sweep import load_run_model
        >>> load_run_model(tempfile.mkdtemp(), config={"model": "m"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: run ... is not finished: it has no final/ directory.
    """
    import jax.numpy as jnp

    from raco_jax.models import from_pretrained, load_tokenizer
    from raco_jax.models.lora import ADAPTER_CONFIG_FILE, load_lora_adapters

    run_dir = pathlib.Path(run_dir)
    config = read_run_config(run_dir) if config is None else config
    final = run_dir / "final"
    if not final.is_dir():
        raise ValueError(f"run {run_dir} is not finished: it has no final/ directory.")
    dtype = jnp.float32 if dtype is None else dtype
    if (final / ADAPTER_CONFIG_FILE).is_file():
        model, _ = from_pretrained(config["model"], dtype=dtype, param_dtype=jnp.float32)
        model = load_lora_adapters(model, final)
    else:
        model, _ = from_pretrained(final, dtype=dtype, param_dtype=jnp.float32)
    if (final / "tokenizer_config.json").is_file():
        return model, load_tokenizer(final)
    return model, load_tokenizer(config.get("tokenizer") or config["model"])


def _cache_key(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_runs(
    run_dirs: Sequence[str | pathlib.Path],
    prompts: Sequence[Any],
    judges: Sequence[str],
    output_dir: str | pathlib.Path,
    *,
    base_model: str | None = None,
    max_new_tokens: int = 64,
    max_prompt_length: int | None = None,
    batch_size: int = 8,
    title: str | None = None,
    log: Callable[[str], None] | None = print,
) -> Any:
    """Scores saved runs on prompts and writes their Pareto front (see the module docstring).

    Args:
      run_dirs: run directories (each with ``config.json`` and ``final/``).
      prompts: the held-out prompts (strings or conversations).
      judges: judge specs (:func:`make_judges`); together they must score at least 2
        objectives.
      output_dir: where the front report goes.
      base_model: the model the runs started from (default: the first run's ``model``): its
        scores are the hypervolume's reference point, and it is the implicit judge's reference.
      max_new_tokens: response length limit.
      max_prompt_length: prompt length limit in tokens (default: the first run's).
      batch_size: prompts per generation batch.
      title: the report's title.
      log: where progress lines go (None: silent).

    Returns:
      The :class:`~raco_jax.evaluate.FrontReport`; ``<output_dir>/responses.json`` holds the
      responses and per-prompt scores, ``<output_dir>/front.*`` the front.
    """
    import jax.numpy as jnp

    from raco_jax.evaluate import summarize_scores, write_front_report
    from raco_jax.models import from_pretrained, load_tokenizer

    say = log or (lambda message: None)
    run_dirs = [pathlib.Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("no runs to evaluate: give at least one run directory.")
    objectives = _judge_objectives(judges)
    if len(objectives) < 2:
        raise ValueError(
            f"a Pareto front needs at least 2 objectives; the judges score {list(objectives)}: "
            "add a --judge."
        )
    configs = [read_run_config(d) for d in run_dirs]
    for run_dir in run_dirs:
        if not run_is_finished(run_dir):
            raise ValueError(f"run {run_dir} is not finished (no final/ or no completed summary).")
    base_path = base_model or configs[0]["model"]
    if max_prompt_length is None:
        max_prompt_length = int(configs[0]["max_prompt_length"])
    max_length = max_prompt_length + max_new_tokens + 8
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompt_texts = [_prompt_text(p) for p in prompts]
    originals = dict(zip(prompt_texts, prompts, strict=True))
    settings = {
        "judges": list(judges),
        "prompts": list(prompts),
        "max_new_tokens": max_new_tokens,
        "max_prompt_length": max_prompt_length,
        "base_model": str(base_path),
    }

    loaded: dict[str, Any] = {}

    def base() -> tuple[Any, Any]:
        if "base" not in loaded:
            model, _ = from_pretrained(base_path, dtype=jnp.float32)
            tokenizer = load_tokenizer(configs[0].get("tokenizer") or base_path)
            loaded["base"] = (model, tokenizer)
        return loaded["base"]

    def score(model: Any, tokenizer: Any, beta: float) -> dict[str, Any]:
        responses = generate_responses(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            max_prompt_length=max_prompt_length,
            batch_size=batch_size,
        )
        base_model_, base_tokenizer = base()
        judge = make_judges(
            judges,
            policy_logps=_logps_fn(
                model, tokenizer, max_length, max_prompt_length, batch_size, originals
            ),
            reference_logps=_logps_fn(
                base_model_, base_tokenizer, max_length, max_prompt_length, batch_size, originals
            ),
            beta=beta,
        )
        scores = judge(prompt_texts, responses)
        return {
            "responses": responses,
            "scores": {name: np.asarray(v).tolist() for name, v in scores.items()},
        }

    base_model_obj, base_tokenizer = base()
    say(f"evaluating the base model {base_path} on {len(prompts)} prompts")
    base_eval = score(base_model_obj, base_tokenizer, float(configs[0].get("beta", 0.1)))
    reference = [float(np.mean(base_eval["scores"][name])) for name in objectives]

    results = []
    details = []
    for run_dir, config in zip(run_dirs, configs, strict=True):
        key = _cache_key({**settings, "run": str(run_dir.resolve())})
        cache_file = run_dir / RUN_EVALUATION_FILE
        cached = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
        if cached.get("key") == key:
            evaluation = cached["evaluation"]
            say(f"{run_dir}: cached evaluation")
        else:
            say(f"{run_dir}: generating and scoring")
            model, tokenizer = load_run_model(run_dir, config)
            evaluation = score(model, tokenizer, float(config.get("beta", 0.1)))
            cache_file.write_text(json.dumps({"key": key, "evaluation": evaluation}) + "\n")
        summary = summarize_scores(evaluation["scores"])
        results.append(
            {
                "method": config["method"],
                "weights": tuple(config["weights"]),
                "scores": {name: summary["scores"][name] for name in objectives},
                "stderr": {name: summary["stderr"][name] for name in objectives},
            }
        )
        details.append({"run_dir": str(run_dir), **results[-1], **evaluation})
    report = write_front_report(
        results,
        out,
        reference=reference,
        objectives=objectives,
        title=title or "Pareto fronts (reference point: the base model's mean scores)",
    )
    (out / "responses.json").write_text(
        json.dumps(
            {
                "prompts": prompt_texts,
                "base_model": str(base_path),
                "reference": dict(zip(objectives, reference, strict=True)),
                "base": base_eval,
                "runs": details,
            },
            indent=2,
            default=list,
        )
        + "\n"
    )
    say(f"front: {report.paths['markdown']} (hypervolume per method: {report.hypervolumes})")
    return report


# -- the sweep -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One run of a sweep.

    Attributes:
      method: the method.
      weights: the weight vector.
      run_dir: its directory.
      status: ``"trained"`` (run from the start), ``"resumed"`` (continued from a checkpoint)
        or ``"skipped"`` (already finished).
    """

    method: str
    weights: tuple[float, ...]
    run_dir: pathlib.Path
    status: str


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` did: the runs, and the front report (None without judges)."""

    runs: list[SweepRun]
    report: Any


def run_sweep(
    config: Any,
    weights_grid: Sequence[Sequence[float]],
    methods: Sequence[str],
    *,
    judges: Sequence[str] = (),
    prompts: Sequence[Any] | None = None,
    num_prompts: int = 32,
    max_new_tokens: int = 64,
    mesh: Any = None,
    progress: bool = True,
) -> SweepResult:
    """Trains one run per (method, weights) under ``config.output_dir``, resumably, then
    evaluates them (when ``judges`` are given) and writes the Pareto front.

    Args:
      config: the base :class:`~raco_jax.train.config.AlignConfig`; ``output_dir`` is the
        sweep's root, ``method`` and ``weights`` are replaced per run.
      weights_grid: the weight vectors (:func:`simplex_grid`, :func:`parse_weights_grid`).
      methods: the methods to compare.
      judges: judge specs (:func:`make_judges`); empty: no evaluation.
      prompts: held-out prompts (default: :func:`held_out_prompts` of the config's held-out
        split: ``eval_split``, or the ``eval_fraction`` of the pairs the runs did not train on).
      num_prompts: how many held-out prompts at most.
      max_new_tokens: response length limit.
      mesh: the mesh for every run (default: ``config.mesh``).
      progress: progress bars and summaries.

    Returns:
      A :class:`SweepResult`.

    Raises:
      ValueError: a run's config is invalid (checked for every run before any is trained).
    """
    from raco_jax.train.align import align, check_run

    root = pathlib.Path(config.output_dir)
    if not methods:
        raise ValueError("no method: give --methods (e.g. raco,dpo-lw).")
    mesh_shape = None if mesh is None else (mesh.shape["data"], mesh.shape["fsdp"], 1)
    plan = []
    for method in methods:
        for weights in weights_grid:
            run_dir = root / method / weights_label(weights)
            run_config = config.replace(
                method=method, weights=tuple(weights), output_dir=str(run_dir), resume=True
            )
            if not run_is_finished(run_dir):
                check_run(run_config, mesh_shape=mesh_shape)
            plan.append((method, tuple(weights), run_dir, run_config))
    if judges:
        _judge_objectives(judges)
        if prompts is None and not config.eval_split and config.eval_fraction == 0:
            raise ValueError(
                "the sweep's evaluation needs held-out prompts: set --eval-fraction or "
                "--eval-split for the runs, or pass --eval-data."
            )
    runs = []
    for method, weights, run_dir, run_config in plan:
        if run_is_finished(run_dir):
            runs.append(SweepRun(method, weights, run_dir, "skipped"))
            if progress:
                print(f"{run_dir}: finished, skipped")
            continue
        resumed = (run_dir / "checkpoints").is_dir() and any(
            p.name.isdigit() for p in (run_dir / "checkpoints").iterdir()
        )
        if progress:
            print(f"{run_dir}: {'resuming' if resumed else 'training'} {method} {weights}")
        align(run_config, mesh=mesh, progress=progress)
        runs.append(SweepRun(method, weights, run_dir, "resumed" if resumed else "trained"))
    report = None
    if judges:
        if prompts is None:
            prompts = held_out_prompts(
                config.dataset,
                config.schema,
                split=config.eval_split or config.train_split,
                objectives=config.objectives,
                eval_fraction=0.0 if config.eval_split else config.eval_fraction,
                seed=config.seed,
                num_prompts=num_prompts,
            )
        report = evaluate_runs(
            [run.run_dir for run in runs],
            prompts,
            judges,
            root / EVALUATION_DIR,
            base_model=config.model,
            max_new_tokens=max_new_tokens,
            max_prompt_length=config.max_prompt_length,
            log=print if progress else None,
        )
    return SweepResult(runs=runs, report=report)


# -- command line ----------------------------------------------------------------------------


def _add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--judge",
        action="append",
        default=[],
        metavar="SPEC",
        help=(
            "a judge (repeatable): length[:objective], lexicon:FILE[:objective[:positive]], "
            "reward-model:DIR[:objective], implicit[:objective]"
        ),
    )
    parser.add_argument("--num-prompts", type=int, default=32, help="held-out prompts (32)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="response length (64)")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from raco_jax.train.config import config_from_args

    try:
        config = config_from_args(args)
        if args.weights_grid:
            grid = parse_weights_grid(args.weights_grid, len(config.objectives))
        elif args.grid:
            grid = simplex_grid(len(config.objectives), args.grid)
        elif config.weights:
            grid = [config.weights]
        else:
            raise ValueError("give --grid N, --weights-grid 'w;w;...' or --weights.")
        if not config.weights:
            config = config.replace(weights=grid[0])
        methods = [m.strip() for m in (args.methods or config.method).split(",") if m.strip()]
        prompts = None
        if args.eval_data:
            prompts = held_out_prompts(
                args.eval_data,
                args.eval_schema or config.schema,
                split=args.eval_data_split,
                num_prompts=args.num_prompts,
            )
        result = run_sweep(
            config,
            grid,
            methods,
            judges=args.judge,
            prompts=prompts,
            num_prompts=args.num_prompts,
            max_new_tokens=args.max_new_tokens,
            progress=not args.quiet,
        )
    except (ValueError, MemoryError, FileNotFoundError) as err:
        from raco_jax.cli import _run_failure

        return _run_failure(err)
    for run in result.runs:
        print(f"{run.status:8s} {run.method:8s} {run.weights} {run.run_dir}")
    if result.report is not None:
        print(f"front: {result.report.paths['markdown']}")
    return 0


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``raco-jax sweep``: the align flags plus the grid, methods and judges."""
    from raco_jax.train.config import add_config_flags

    parser = subparsers.add_parser(
        "sweep",
        help="align for a grid of weight vectors and methods, then evaluate the Pareto front",
        description=(
            "Runs `raco-jax align` for every method and weight vector into "
            "<output-dir>/<method>/w_<weights>/ (finished runs are skipped, unfinished ones "
            "resumed), then generates responses to held-out prompts with every run and the "
            "base model, scores them with the judges and writes the Pareto front (plot, "
            "tables, hypervolume with the base model's scores as reference point) into "
            "<output-dir>/evaluation/."
        ),
    )
    add_config_flags(parser)
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument(
        "--grid", type=int, default=None, help="N interior simplex points per edge direction"
    )
    grid.add_argument(
        "--weights-grid", default=None, help="explicit weight vectors: '0.2,0.8;0.5,0.5;0.8,0.2'"
    )
    parser.add_argument(
        "--methods", default=None, help="comma-separated methods (default: --method)"
    )
    parser.add_argument("--eval-data", default=None, help="prompts from these preference data")
    parser.add_argument("--eval-schema", default=None, help="schema of --eval-data")
    parser.add_argument("--eval-data-split", default="train", help="split of --eval-data")
    _add_evaluation_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    parser.set_defaults(handler=_cmd_sweep)
    return parser


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if (args.data is None) == (args.data_dir is None):
        from raco_jax.cli import _run_failure

        return _run_failure(
            ValueError(
                "give --data-dir (preference metrics of the runs on its pairs) or --data "
                "(generate and judge responses to its prompts), not both."
            )
        )
    try:
        if args.data_dir is not None:
            from raco_jax.evaluate.preferences import evaluate_preference_runs

            evaluation = evaluate_preference_runs(
                args.runs,
                args.data_dir,
                args.output_dir,
                schema=None if args.schema == "auto" else args.schema,
                split=args.split,
                batch_size=args.batch_size,
                max_pairs=args.max_pairs,
                log=None if args.quiet else print,
            )
            paths = evaluation.paths
        else:
            prompts = held_out_prompts(
                args.data,
                "generic" if args.schema == "auto" else args.schema,
                split=args.split,
                num_prompts=args.num_prompts,
            )
            paths = evaluate_runs(
                args.runs,
                prompts,
                args.judge,
                args.output_dir,
                base_model=args.base_model,
                max_new_tokens=args.max_new_tokens,
                log=None if args.quiet else print,
            ).paths
    except (ValueError, FileNotFoundError) as err:
        from raco_jax.cli import _run_failure

        return _run_failure(err)
    for kind, path in paths.items():
        print(f"{kind:14s} {path}")
    return 0


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``raco-jax evaluate``: the evaluation part of a sweep, for any saved runs."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score saved runs on preference pairs or held-out prompts; write their front",
        description=(
            "With --data-dir: recomputes every run's preference metrics (implicit-reward "
            "accuracy, mean margin, DPO loss per objective) on the pairs of that directory "
            "against the base model, and writes the tables and the accuracy front. With --data: "
            "generates responses to its prompts with every run's final model and the base "
            "model, scores them with the judges, and writes the Pareto front (plot, CSV/Markdown "
            "table, hypervolume with the base model's scores as reference point)."
        ),
    )
    parser.add_argument("--runs", nargs="+", required=True, help="run directories")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="preference pairs in the runs' schema (a directory or file), e.g. held-out pairs",
    )
    parser.add_argument("--data", default=None, help="preference data whose prompts are used")
    parser.add_argument(
        "--schema",
        default="auto",
        help="schema of the data (default: the runs' for --data-dir, generic for --data)",
    )
    parser.add_argument("--split", default="train", help="split of the data (train)")
    parser.add_argument(
        "--max-pairs", type=int, default=None, help="--data-dir: only the first N pairs"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="--data-dir: pairs per pass")
    parser.add_argument(
        "--base-model", default=None, help="the model the runs started from (default: theirs)"
    )
    parser.add_argument("--output-dir", default="evaluation", help="where the front goes")
    _add_evaluation_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="print only the written files")
    parser.set_defaults(handler=_cmd_evaluate)
    return parser
