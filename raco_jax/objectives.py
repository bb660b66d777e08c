"""Per-objective gradients: one forward pass, K backward passes.

``objective_grads(fn)`` is to a function returning K losses what ``jax.grad`` is to a scalar loss:
it returns the gradient of every loss, stacked on a new leading axis of size K, ready for the
aggregators of :mod:`raco_jax.aggregation`. It runs ``fn`` forward once (``jax.vjp``) and maps the
pullback over the K one-hot cotangents with ``jax.vmap``, so the forward activations are shared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["objective_grads", "value_and_objective_grads"]


def _as_loss_vector(losses: Any) -> jax.Array:
    if isinstance(losses, (list, tuple)):
        losses = jnp.stack([jnp.asarray(x) for x in losses])
    losses = jnp.asarray(losses)
    if losses.ndim != 1 or losses.shape[0] < 1:
        raise ValueError(
            "the function must return K losses as a 1-D array of shape [K] (or a list/tuple of "
            f"scalars), got an array of shape {losses.shape}."
        )
    if not jnp.issubdtype(losses.dtype, jnp.floating):
        raise TypeError(f"the losses must be floating point, got dtype {losses.dtype}.")
    return losses


def value_and_objective_grads(
    fun: Callable[..., Any],
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
) -> Callable[..., tuple[Any, Any]]:
    """Like ``jax.value_and_grad`` for a function returning K losses.

    Args:
      fun: a function returning a ``[K]`` array of losses (or a list/tuple of K scalars), or
        ``(losses, aux)`` when ``has_aux``.
      argnums: which positional argument(s) to differentiate (int or sequence of ints).
      has_aux: whether ``fun`` returns ``(losses, aux)``.

    Returns:
      A function with ``fun``'s signature returning ``(losses, stacked_grads)`` (or
      ``((losses, aux), stacked_grads)``). Each leaf of ``stacked_grads`` has shape
      ``[K, *leaf_shape]``; with a sequence ``argnums`` it is a tuple of such trees.

    Example (plain pytree):
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> def losses(params, x):
      ...     pred = x @ params["w"]
      ...     return jnp.stack([jnp.mean((pred - 1.0) ** 2), jnp.mean((pred + 1.0) ** 2)])
      >>> params = {"w": jnp.ones(3)}
      >>> values, stacked = raco_jax.value_and_objective_grads(losses)(params, jnp.eye(3))
      >>> values.shape, stacked["w"].shape
      ((2,), (2, 3))

    Example (Flax NNX module: differentiate its parameter state):
      >>> from flax import nnx
      >>> model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
      >>> graphdef, state = nnx.split(model)
      >>> def nnx_losses(state, x):
      ...     y = nnx.merge(graphdef, state)(x)[:, 0]
      ...     return jnp.stack([jnp.mean(y**2), jnp.mean((y - 1.0) ** 2)])
      >>> values, stacked = raco_jax.value_and_objective_grads(nnx_losses)(state, jnp.eye(3))
      >>> stacked["kernel"].shape
      (2, 3, 1)
    """
    single = isinstance(argnums, int)
    argnums_tuple = (argnums,) if single else tuple(argnums)
    if not argnums_tuple:
        raise ValueError("argnums must name at least one positional argument.")

    def wrapped(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        for i in argnums_tuple:
            if not -len(args) <= i < len(args):
                raise ValueError(
                    f"argnums={argnums!r} names positional argument {i}, but only {len(args)} "
                    "were given."
                )
        positions = [i % len(args) for i in argnums_tuple]
        diff_args = [args[i] for i in positions]

        def restricted(*diff: Any) -> Any:
            full = list(args)
            for i, value in zip(positions, diff, strict=True):
                full[i] = value
            out = fun(*full, **kwargs)
            if has_aux:
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise TypeError("with has_aux=True the function must return (losses, aux).")
                return _as_loss_vector(out[0]), out[1]
            return _as_loss_vector(out)

        if has_aux:
            losses, pullback, aux = jax.vjp(restricted, *diff_args, has_aux=True)
        else:
            losses, pullback = jax.vjp(restricted, *diff_args)
        cotangents = jnp.eye(losses.shape[0], dtype=losses.dtype)
        grads = jax.vmap(pullback)(cotangents)
        grads = grads[0] if single else tuple(grads)
        return ((losses, aux) if has_aux else losses), grads

    return wrapped


def objective_grads(
    fun: Callable[..., Any],
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
) -> Callable[..., Any]:
    """Like ``jax.grad`` for a function returning K losses: gradients stacked on a leading K axis.

    Args:
      fun: a function returning K losses (see :func:`value_and_objective_grads`).
      argnums: which positional argument(s) to differentiate.
      has_aux: whether ``fun`` returns ``(losses, aux)``; then ``(stacked_grads, aux)`` is
        returned.

    Returns:
      A function returning the stacked gradients (leaves ``[K, *leaf_shape]``).

    Example:
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> grads = raco_jax.objective_grads(lambda x: jnp.stack([x @ x, jnp.sum(x)]))(jnp.ones(2))
      >>> grads
      Array([[2., 2.],
             [1., 1.]], dtype=float32)
    """
    value_and_grads = value_and_objective_grads(fun, argnums=argnums, has_aux=has_aux)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        values, grads = value_and_grads(*args, **kwargs)
        if has_aux:
            return grads, values[1]
        return grads

    return wrapped
