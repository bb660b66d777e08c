"""The built-in demo: a synthetic multi-objective alignment task solved end to end, offline.

``raco-jax demo`` (:func:`run_demo`) pretrains a tiny decoder on a synthetic prompt -> response
language (:mod:`raco_jax.demo.task`), samples preference pairs from it, labels them with exact
judges (informativeness vs brevity, and safety with ``--objectives 3``), aligns it with RACO
(clipped CAGrad), DPO-LW (weighted sum) and unclipped CAGrad over a grid of weight vectors
(:mod:`raco_jax.demo.stages`), and writes a Pareto-front report (:mod:`raco_jax.demo.run`).

Example:
  >>> from raco_jax import demo
  >>> demo.task.OBJECTIVES
  ('informativeness', 'brevity', 'safety')
"""

from __future__ import annotations

from raco_jax.demo import task
from raco_jax.demo.run import DEFAULT_OUTPUT_DIR, format_summary, run_demo
from raco_jax.demo.stages import (
    DEMO_METHODS,
    Aligner,
    DemoConfig,
    DemoSetup,
    alignment_batches,
    demo_config,
    demo_optimizer,
    evaluate_model,
    prepare,
    weight_grid,
)

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "DEMO_METHODS",
    "Aligner",
    "DemoConfig",
    "DemoSetup",
    "alignment_batches",
    "demo_config",
    "demo_optimizer",
    "evaluate_model",
    "format_summary",
    "prepare",
    "run_demo",
    "task",
    "weight_grid",
]
