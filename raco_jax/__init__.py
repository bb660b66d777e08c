"""raco_jax: reward-free alignment for conflicting objectives, in JAX.

The package root re-exports the aggregation core (clipped CAGrad and its baselines as optax
transformations over stacked per-objective gradients) and the per-objective gradient helpers.
Importing it pulls in only jax, optax and numpy; the model, data and training parts
(``raco_jax.models``, ``raco_jax.preference``, ...) load lazily when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from raco_jax.aggregation import (
    AggregationDiagnostics,
    AggregatorState,
    PCGradState,
    StackedAccumulationState,
    accumulate_objectives,
    cagrad,
    cagrad_coefficients,
    clipped_cagrad,
    combine,
    gram_matrix,
    mgda,
    pcgrad,
    weighted_sum,
)
from raco_jax.objectives import objective_grads, value_and_objective_grads

__version__ = "0.1.0.dev0"

_LAZY_SUBMODULES = (
    "models",
    "preference",
    "data",
    "train",
    "evaluate",
    "sweep",
    "demo",
    "toy",
    "cli",
)

__all__ = [
    "AggregationDiagnostics",
    "AggregatorState",
    "PCGradState",
    "StackedAccumulationState",
    "accumulate_objectives",
    "align",
    "cagrad",
    "cagrad_coefficients",
    "clipped_cagrad",
    "combine",
    "gram_matrix",
    "mgda",
    "objective_grads",
    "pcgrad",
    "value_and_objective_grads",
    "weighted_sum",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"raco_jax.{name}")
    if name == "align":  # the alignment run; loads flax, transformers and datasets on first use
        return importlib.import_module("raco_jax.train.alignment").align
    raise AttributeError(f"module 'raco_jax' has no attribute {name!r}")
