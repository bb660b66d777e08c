"""Training: the jitted RACO step (one forward, K backward), reference log-probs, optimizers.

Example:
    >>> from raco_jax.train import METHODS
    >>> METHODS
    ('raco', 'cagrad', 'dpo-lw', 'mgda', 'pcgrad', 'dpo', 'amopo', 'modpo')
"""

from raco_jax.train.step import (
    METHODS,
    SCALAR_METHODS,
    STACKED_METHODS,
    TrainState,
    TrainStep,
    compute_reference_logps,
    make_optimizer,
    make_train_step,
    policy_logps,
    with_reference_logps,
)

__all__ = [
    "METHODS",
    "SCALAR_METHODS",
    "STACKED_METHODS",
    "TrainState",
    "TrainStep",
    "compute_reference_logps",
    "make_optimizer",
    "make_train_step",
    "policy_logps",
    "with_reference_logps",
]
