"""Stacked per-objective gradients -> one update. Imports jax, optax and numpy only."""

from raco_jax.aggregation.gram import combine, gram_matrix
from raco_jax.aggregation.transforms import (
    AggregatorState,
    PCGradState,
    StackedAccumulationState,
    accumulate_objectives,
    cagrad,
    clipped_cagrad,
    mgda,
    pcgrad,
    weighted_sum,
)
from raco_jax.aggregation.weightings import (
    AggregationDiagnostics,
    cagrad_coefficients,
    mgda_coefficients,
    pcgrad_coefficients,
    weighted_sum_coefficients,
)

__all__ = [
    "AggregationDiagnostics",
    "AggregatorState",
    "PCGradState",
    "StackedAccumulationState",
    "accumulate_objectives",
    "cagrad",
    "cagrad_coefficients",
    "clipped_cagrad",
    "combine",
    "gram_matrix",
    "mgda",
    "mgda_coefficients",
    "pcgrad",
    "pcgrad_coefficients",
    "weighted_sum",
    "weighted_sum_coefficients",
]
