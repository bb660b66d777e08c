"""Training: the method vocabulary and optimizer chains, the jitted RACO step (one forward, K
backward), reference log-probs, the device mesh, checkpoints, logs and the alignment run.

The run itself is ``raco_jax.align(config)`` (the same function as ``raco_jax.train.align``, in
:mod:`raco_jax.train.alignment`); weight sweeps are :mod:`raco_jax.sweep` and ``raco-jax
align`` / ``sweep`` / ``evaluate`` run them from the command line.

Modules: :mod:`~raco_jax.train.methods` (METHODS, REFERENCES, make_optimizer),
:mod:`~raco_jax.train.config` (AlignConfig), :mod:`~raco_jax.train.step` (TrainStep),
:mod:`~raco_jax.train.mesh`, :mod:`~raco_jax.train.pair_logps`,
:mod:`~raco_jax.train.checkpoint`, :mod:`~raco_jax.train.logs`,
:mod:`~raco_jax.train.failures`, :mod:`~raco_jax.train.runs` (the run directory) and
:mod:`~raco_jax.train.alignment` (align).

Example:
    >>> from raco_jax.train import METHODS
    >>> METHODS
    ('raco', 'cagrad', 'dpo-lw', 'mgda', 'pcgrad', 'dpo', 'amopo', 'modpo')
"""

from raco_jax.train.alignment import (
    AlignResult,
    align,
    check_run,
    make_schedule,
    resolve_schema,
    split_train_eval,
)
from raco_jax.train.config import AlignConfig, config_from_args, validate_config
from raco_jax.train.methods import (
    METHODS,
    REFERENCES,
    SCALAR_METHODS,
    STACKED_METHODS,
    make_aggregator,
    make_optimizer,
)
from raco_jax.train.runs import load_run_model, read_run_config, run_is_finished
from raco_jax.train.step import (
    TrainState,
    TrainStep,
    compute_reference_logps,
    make_train_step,
    policy_logps,
    with_reference_logps,
)

__all__ = [
    "METHODS",
    "REFERENCES",
    "SCALAR_METHODS",
    "STACKED_METHODS",
    "AlignConfig",
    "AlignResult",
    "TrainState",
    "TrainStep",
    "align",
    "check_run",
    "compute_reference_logps",
    "config_from_args",
    "load_run_model",
    "make_aggregator",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "policy_logps",
    "read_run_config",
    "resolve_schema",
    "run_is_finished",
    "split_train_eval",
    "validate_config",
    "with_reference_logps",
]
