r"""TRL-style preference metrics, per objective.

For objective k the chosen response of pair i is a when :math:`s_{k,i} = +1` and b when
:math:`s_{k,i} = -1`; ties and unlabeled pairs have no chosen response and are left out of every
``rewards/*`` and ``logps/*`` metric of that objective (they still count in its loss). The implicit
reward of a response is :math:`\beta(\log\pi - \log\pi_{ref})` (TRL's ``rewards/chosen``), or
:math:`\beta\log\pi` (divided by the length when ``lengths`` is given) without a reference.

Names (``<objective>`` is the objective's name):

* ``rewards/<objective>/chosen``, ``.../rejected``: mean implicit rewards;
* ``rewards/<objective>/margins``: mean chosen-minus-rejected reward;
* ``rewards/<objective>/accuracies``: fraction of pairs whose chosen reward is strictly larger;
* ``logps/<objective>/chosen``, ``.../rejected``: mean policy summed log-probs;
* ``pairs/<objective>/decisive``: number of labeled, non-tie pairs (the denominators above);
* the same names without ``<objective>`` (``rewards/chosen``, ``logps/chosen``, ...) pool every
  (objective, pair) item, so single-objective dashboards keep working.

Every value is a float32 scalar; a mean over no item is 0. Imports jax only.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = ["preference_metrics"]


def _masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    total = jnp.sum(jnp.where(weights != 0, weights * values, 0.0))
    count = jnp.sum(weights)
    return total / jnp.where(count > 0, count, 1.0)


def preference_metrics(
    logps: jax.Array,
    signs: jax.Array,
    labeled: jax.Array | None = None,
    ref_logps: jax.Array | None = None,
    beta: float = 0.1,
    objectives: Sequence[str] | None = None,
    lengths: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """TRL's reward and log-prob metrics for each objective (see the module docstring).

    Args:
      logps: ``[2B]`` policy summed log-probs (rows a then b).
      signs: ``[K, B]`` signs; labeled: ``[K, B]`` label mask (default all).
      ref_logps: ``[2B]`` reference summed log-probs, or None (reference-free rewards).
      beta: the temperature scaling the rewards.
      objectives: K names (default ``"0"``, ``"1"``, ...).
      lengths: ``[2B]`` response lengths: rewards use length-normalised log-ratios (for
        ``sigmoid_norm``/AMoPO); the ``logps/*`` metrics stay summed.

    Returns:
      A dict of float32 scalars.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.preference import preference_metrics
      >>> m = preference_metrics(jnp.array([-1.0, -3.0]), jnp.array([[1.0], [-1.0]]),
      ...                        ref_logps=jnp.array([-2.0, -2.0]), beta=1.0,
      ...                        objectives=("helpful", "harmless"))
      >>> float(m["rewards/helpful/margins"]), float(m["rewards/harmless/accuracies"])
      (2.0, 0.0)
      >>> float(m["rewards/accuracies"])
      0.5
    """
    logps = jnp.asarray(logps, jnp.float32)
    signs = jnp.asarray(signs, jnp.float32)
    if signs.ndim != 2:
        raise ValueError(f"signs must be [K, B], got shape {signs.shape}.")
    num_objectives, num_pairs = signs.shape
    if logps.shape != (2 * num_pairs,):
        raise ValueError(f"logps must be [2B] = ({2 * num_pairs},), got shape {logps.shape}.")
    labeled = jnp.ones_like(signs) if labeled is None else jnp.asarray(labeled, jnp.float32)
    if labeled.shape != signs.shape:
        raise ValueError(
            f"labeled must have the shape of signs {signs.shape}, got {labeled.shape}."
        )
    if objectives is None:
        objectives = [str(k) for k in range(num_objectives)]
    objectives = list(objectives)
    if len(objectives) != num_objectives:
        raise ValueError(
            f"objectives names {len(objectives)} objectives but signs has {num_objectives} rows."
        )

    ratios = logps if ref_logps is None else logps - jnp.asarray(ref_logps, jnp.float32)
    if lengths is not None:
        ratios = ratios / jnp.maximum(jnp.asarray(lengths, jnp.float32), 1.0)
    rewards = beta * ratios
    reward_a, reward_b = rewards[:num_pairs], rewards[num_pairs:]
    logp_a, logp_b = logps[:num_pairs], logps[num_pairs:]

    a_wins = (signs > 0).astype(jnp.float32)
    decisive = labeled * jnp.abs(jnp.sign(signs))  # [K, B]
    chosen_reward = a_wins * reward_a + (1.0 - a_wins) * reward_b
    rejected_reward = a_wins * reward_b + (1.0 - a_wins) * reward_a
    chosen_logp = a_wins * logp_a + (1.0 - a_wins) * logp_b
    rejected_logp = a_wins * logp_b + (1.0 - a_wins) * logp_a
    fields = {
        "rewards/{}chosen": chosen_reward,
        "rewards/{}rejected": rejected_reward,
        "rewards/{}margins": chosen_reward - rejected_reward,
        "rewards/{}accuracies": (chosen_reward > rejected_reward).astype(jnp.float32),
        "logps/{}chosen": chosen_logp,
        "logps/{}rejected": rejected_logp,
    }
    metrics: dict[str, jax.Array] = {}
    for k, name in enumerate(objectives):
        for template, values in fields.items():
            metrics[template.format(f"{name}/")] = _masked_mean(values[k], decisive[k])
        metrics[f"pairs/{name}/decisive"] = jnp.sum(decisive[k])
    for template, values in fields.items():
        metrics[template.format("")] = _masked_mean(values, decisive)
    return metrics
