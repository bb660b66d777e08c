"""Weight sweeps: one alignment run per (method, weights), then the evaluation of the front.

:func:`run_sweep` (``raco-jax sweep``) trains one :func:`raco_jax.align` run per method and
weight vector into ``<output_dir>/<method>/w_<w1>_<w2>[...]/``, resumably: a finished run
(``final/`` and a ``summary.json`` saying ``completed``) is skipped, an unfinished one is resumed
from its last checkpoint. It then hands the runs to :func:`raco_jax.evaluate.evaluate_runs`,
which generates responses to held-out prompts, scores them with the judges and writes the Pareto
front into ``<output_dir>/evaluation/``.

The module sits above :mod:`raco_jax.train` (the runs) and :mod:`raco_jax.evaluate` (their
scores): it is the one place that calls both.

Example (weights of a 3-point sweep on two objectives, and their directory names):
    >>> from raco_jax.sweep import simplex_grid, weights_label
    >>> [weights_label(w) for w in simplex_grid(2, 3)]
    ['w_0.25_0.75', 'w_0.5_0.5', 'w_0.75_0.25']
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import pathlib
from collections.abc import Sequence
from typing import Any

from raco_jax.evaluate import evaluate_runs, held_out_prompts, judge_objectives
from raco_jax.train import AlignConfig, align, check_run, run_is_finished
from raco_jax.train.runs import has_checkpoints

__all__ = [
    "EVALUATION_DIR",
    "SweepResult",
    "SweepRun",
    "parse_weights_grid",
    "run_sweep",
    "simplex_grid",
    "weights_label",
]

#: Where a sweep's evaluation goes, under its output directory.
EVALUATION_DIR = "evaluation"


def simplex_grid(num_objectives: int, points: int) -> list[tuple[float, ...]]:
    """Interior weight vectors on the simplex: ``points`` per edge direction.

    The vectors ``(m_1 + 1, ..., m_K + 1) / (points + K - 1)`` over all integers
    ``m_k >= 0`` summing to ``points - 1``: every weight is positive (MODPO and the clipped
    CAGrad anchor need it), ``points`` vectors for K = 2 and ``points (points + 1) / 2`` for
    K = 3, ordered by the first weight ascending.

    Example:
        >>> from raco_jax.sweep import simplex_grid
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
        >>> from raco_jax.sweep import parse_weights_grid
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
        >>> from raco_jax.sweep import weights_label
        >>> weights_label((1 / 3, 2 / 3))
        'w_0.3333_0.6667'
    """
    return "w_" + "_".join(f"{w:.4g}" for w in weights)


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
    config: AlignConfig,
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
      judges: judge specs (:func:`raco_jax.evaluate.make_judges`); empty: no evaluation.
      prompts: held-out prompts (default: :func:`raco_jax.evaluate.held_out_prompts` of the
        config's held-out split: ``eval_split``, or the ``eval_fraction`` of the pairs the runs
        did not train on).
      num_prompts: how many held-out prompts at most.
      max_new_tokens: response length limit.
      mesh: the mesh for every run (default: ``config.mesh``).
      progress: progress bars and summaries.

    Returns:
      A :class:`SweepResult`.

    Raises:
      ValueError: a run's config is invalid (checked for every run before any is trained).
    """
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
        judge_objectives(judges)
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
        resumed = has_checkpoints(run_dir)
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
