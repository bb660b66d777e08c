"""The built-in demo: a synthetic multi-objective alignment task solved end to end, offline.

``raco-jax demo`` (:func:`raco_jax.demo.run.run_demo`) pretrains a tiny decoder on a synthetic
prompt -> response language (:mod:`raco_jax.demo.task`), samples preference pairs from it,
labels them with exact judges (informativeness vs brevity, and safety with ``--objectives 3``),
aligns it with RACO (clipped CAGrad), DPO-LW (weighted sum) and unclipped CAGrad over a grid of
weight vectors, and writes a Pareto-front report. Importing this package is cheap: the task and
the pipeline load on first use.

Example:
  >>> from raco_jax import demo
  >>> demo.task.OBJECTIVES
  ('informativeness', 'brevity', 'safety')
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["run", "run_demo", "task"]


def __getattr__(name: str) -> Any:
    if name in ("task", "run"):
        return importlib.import_module(f"raco_jax.demo.{name}")
    if name == "run_demo":
        return importlib.import_module("raco_jax.demo.run").run_demo
    raise AttributeError(f"module 'raco_jax.demo' has no attribute {name!r}")
