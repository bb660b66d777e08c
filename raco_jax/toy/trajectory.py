"""The trajectory runner: many starts optimised at once by any raco_jax chain (:func:`run`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from raco_jax.objectives import objective_grads
from raco_jax.toy.problems import Problem

__all__ = ["Trajectory", "run"]


class Trajectory(NamedTuple):
    """What :func:`run` returns (S starts, T + 1 records: the start, then every ``record_every``
    steps).

    Attributes:
      steps: ``[T + 1]`` step counts of the records (0, record_every, ..., steps).
      params: ``[S, T + 1, dim]`` parameters.
      losses: ``[S, T + 1, K]`` losses.
      coefficients: ``[S, T + 1, K]`` the aggregator's effective coefficients ``a`` of its last
        update (``d = sum_k a_k g_k``); NaN at record 0 and when the state has no
        ``coefficients`` field of size K.
      cos_update_anchor: ``[S, T + 1]`` cosine between the aggregated update and the weighted
        anchor ``g_0`` at the last step (NaN when unavailable).
      num_conflicts: ``[S, T + 1]`` number of conflicting gradient pairs at the last step (float,
        NaN when unavailable).
      final_state: the optimizer state after the last step (leaves with a leading S axis).

    Example:
      >>> import optax, raco_jax
      >>> from raco_jax import toy
      >>> tx = optax.chain(raco_jax.weighted_sum((0.5, 0.5)), optax.sgd(0.1))
      >>> problem = toy.quadratic_bowls(num_objectives=2, dim=4)
      >>> traj = toy.run(problem, tx, [[3.0, 0.0, 0.0, 0.0]], steps=100)
      >>> traj.final_params.shape, traj.final_losses.shape, traj.steps.tolist()
      ((1, 4), (1, 2), [0, 100])
    """

    steps: np.ndarray
    params: jax.Array
    losses: jax.Array
    coefficients: jax.Array
    cos_update_anchor: jax.Array
    num_conflicts: jax.Array
    final_state: Any

    @property
    def final_params(self) -> jax.Array:
        """``[S, dim]`` parameters after the last step."""
        return self.params[:, -1]

    @property
    def final_losses(self) -> jax.Array:
        """``[S, K]`` losses after the last step."""
        return self.losses[:, -1]


def _state_field(state: Any, name: str) -> Any:
    try:
        return optax.tree.get(state, name)
    except KeyError:  # several fields of that name (two aggregators in one chain)
        return None


def _diagnostics(state: Any, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    nan = jnp.float32(jnp.nan)
    coefficients = _state_field(state, "coefficients")
    if coefficients is None or jnp.shape(coefficients) != (k,):
        coefficients = jnp.full((k,), nan)
    cos = _state_field(state, "cos_update_anchor")
    cos = nan if cos is None or jnp.shape(cos) != () else cos
    conflicts = _state_field(state, "num_conflicts")
    conflicts = nan if conflicts is None or jnp.shape(conflicts) != () else conflicts
    return (
        jnp.asarray(coefficients, jnp.float32),
        jnp.asarray(cos, jnp.float32),
        jnp.asarray(conflicts, jnp.float32),
    )


def run(
    problem: Problem,
    tx: optax.GradientTransformation,
    x0s: Any,
    steps: int,
    record_every: int = 100,
) -> Trajectory:
    """Optimises a problem from several starting points at once with an optax chain.

    One ``jax.jit`` of a ``jax.lax.scan`` over ``steps`` updates, ``jax.vmap``-ed over the starts.
    Each step computes the stacked per-objective gradients with
    :func:`raco_jax.objective_grads` (leaves ``[K, dim]``), applies ``tx`` (a chain headed by a
    raco_jax aggregator, e.g. ``optax.chain(raco_jax.clipped_cagrad((0.8, 0.2), 0.4),
    optax.adam(1e-3))``) and ``optax.apply_updates``. The parameters, the losses and the
    aggregator's diagnostics are recorded every ``record_every`` steps.

    Args:
      problem: the :class:`Problem`.
      tx: the optax transformation taking stacked gradients.
      x0s: ``[S, dim]`` starting points (or one ``[dim]`` start).
      steps: the number of optimizer steps, a multiple of ``record_every``.
      record_every: the recording interval (a recording costs one loss evaluation).

    Returns:
      A :class:`Trajectory`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import raco_jax
      >>> from raco_jax import toy
      >>> tx = optax.chain(raco_jax.clipped_cagrad(weights=(0.8, 0.2), c=0.4), optax.adam(0.1))
      >>> traj = toy.run(toy.cagrad_toy(), tx, toy.CAGRAD_TOY_STARTS, steps=200, record_every=50)
      >>> traj.params.shape, traj.losses.shape, traj.coefficients.shape, traj.steps.tolist()
      ((3, 5, 2), (3, 5, 2), (3, 5, 2), [0, 50, 100, 150, 200])
    """
    if not isinstance(steps, int) or not isinstance(record_every, int):
        raise TypeError("steps and record_every must be ints.")
    if record_every < 1 or steps < record_every or steps % record_every:
        raise ValueError(
            f"steps ({steps}) must be a positive multiple of record_every ({record_every})."
        )
    x0s = jnp.asarray(x0s, jnp.float32)
    if x0s.ndim == 1:
        x0s = x0s[None]
    if x0s.ndim != 2 or x0s.shape[1] != problem.dim:
        raise ValueError(f"x0s must be [S, {problem.dim}], got shape {x0s.shape}.")
    k = problem.num_objectives
    grads_fn = objective_grads(problem.losses)
    num_records = steps // record_every

    def single(x0: jax.Array) -> tuple[Any, ...]:
        def step(carry: tuple[jax.Array, Any], _: None) -> tuple[tuple[jax.Array, Any], None]:
            x, state = carry
            updates, state = tx.update(grads_fn(x), state, x)
            return (optax.apply_updates(x, updates), state), None

        def block(carry: tuple[jax.Array, Any], _: None) -> tuple[tuple[jax.Array, Any], Any]:
            carry, _ = jax.lax.scan(step, carry, None, length=record_every)
            x, state = carry
            return carry, (x, problem.losses(x), *_diagnostics(state, k))

        init = (x0, tx.init(x0))
        (_, state), (xs, ls, coef, cos, conf) = jax.lax.scan(block, init, None, length=num_records)
        nan = jnp.float32(jnp.nan)
        return (
            jnp.concatenate([x0[None], xs]),
            jnp.concatenate([problem.losses(x0)[None], ls]),
            jnp.concatenate([jnp.full((1, k), nan), coef]),
            jnp.concatenate([nan[None], cos]),
            jnp.concatenate([nan[None], conf]),
            state,
        )

    params, losses, coef, cos, conf, state = jax.jit(jax.vmap(single))(x0s)
    return Trajectory(
        steps=np.arange(num_records + 1) * record_every,
        params=params,
        losses=losses,
        coefficients=coef,
        cos_update_anchor=cos,
        num_conflicts=conf,
        final_state=state,
    )
