"""Training: the jitted RACO step (one forward, K backward), reference log-probs, optimizers,
the alignment run and weight sweeps.

The run itself is ``raco_jax.align(config)`` (also ``raco_jax.train.align.align``: the name
``raco_jax.train.align`` is its module); ``raco-jax align`` / ``sweep`` / ``evaluate`` run it
from the command line.

Example:
    >>> from raco_jax.train import METHODS
    >>> METHODS
    ('raco', 'cagrad', 'dpo-lw', 'mgda', 'pcgrad', 'dpo', 'amopo', 'modpo')
"""

from raco_jax.train.align import AlignResult, check_run, make_schedule, split_train_eval
from raco_jax.train.config import AlignConfig, config_from_args, validate_config
from raco_jax.train.step import (
    METHODS,
    SCALAR_METHODS,
    STACKED_METHODS,
    TrainState,
    TrainStep,
    compute_reference_logps,
    make_aggregator,
    make_optimizer,
    make_train_step,
    policy_logps,
    with_reference_logps,
)
from raco_jax.train.sweep import (
    SweepResult,
    SweepRun,
    evaluate_runs,
    run_sweep,
    simplex_grid,
)

__all__ = [
    "METHODS",
    "SCALAR_METHODS",
    "STACKED_METHODS",
    "AlignConfig",
    "AlignResult",
    "SweepResult",
    "SweepRun",
    "TrainState",
    "TrainStep",
    "check_run",
    "compute_reference_logps",
    "config_from_args",
    "evaluate_runs",
    "make_aggregator",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "policy_logps",
    "run_sweep",
    "simplex_grid",
    "split_train_eval",
    "validate_config",
    "with_reference_logps",
]
