"""DPO-family losses for K objectives on shared preference pairs. Imports jax and numpy only.

* :mod:`~raco_jax.preference.batch`: the :class:`PreferenceBatch` contract (2B token rows,
  K sign rows) and its helpers.
* :mod:`~raco_jax.preference.logps`: float32 summed completion log-probs, chunked over the
  vocabulary (or over time from hidden states) so full float32 logits are never built.
* :mod:`~raco_jax.preference.losses`: ``dpo_losses`` (sigmoid, hinge, ipo, robust,
  sigmoid_norm) vmapped over the K sign rows, and the AMoPO and MODPO baselines.
* :mod:`~raco_jax.preference.metrics`: TRL's ``rewards/*`` and ``logps/*`` metrics per objective.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import raco_jax
    >>> from raco_jax.preference import dpo_losses
    >>> signs = jnp.array([[1.0, -1.0], [-1.0, -1.0]])  # two objectives, two pairs
    >>> def losses(margins):
    ...     return dpo_losses(margins, signs, beta=0.1)
    >>> raco_jax.objective_grads(losses)(jnp.zeros(2))  # one row per objective
    Array([[-0.025,  0.025],
           [ 0.025,  0.025]], dtype=float32)
"""

from raco_jax.preference.batch import (
    PreferenceBatch,
    make_batch,
    split_pairs,
    swap_responses,
    validate_batch,
)
from raco_jax.preference.logps import sequence_logps, sequence_logps_from_hidden, token_logps
from raco_jax.preference.losses import (
    LENGTH_NORMALISED_LOSS_TYPES,
    LOSS_TYPES,
    amopo_losses,
    dpo_losses,
    modpo_loss,
    objective_counts,
    pair_margins,
)
from raco_jax.preference.metrics import preference_metrics

__all__ = [
    "LENGTH_NORMALISED_LOSS_TYPES",
    "LOSS_TYPES",
    "PreferenceBatch",
    "amopo_losses",
    "dpo_losses",
    "make_batch",
    "modpo_loss",
    "objective_counts",
    "pair_margins",
    "preference_metrics",
    "sequence_logps",
    "sequence_logps_from_hidden",
    "split_pairs",
    "swap_responses",
    "token_logps",
    "validate_batch",
]
