"""The vocabulary of an alignment run (methods, references) and each method's optimizer chain.

One place for every name a run can be given, used by the config (:mod:`raco_jax.train.config`),
the train step (:mod:`raco_jax.train.step`) and the command line:

* :data:`METHODS`: the *stacked* methods take one backward pass per objective and hand the K
  gradients to a raco_jax aggregator (:data:`STACKED_METHODS`: ``raco`` = clipped CAGrad,
  ``cagrad``, ``dpo-lw`` = weighted sum, ``mgda``, ``pcgrad``); the *scalar* methods take one
  backward pass of one loss (:data:`SCALAR_METHODS`: ``dpo`` = the weighted DPO loss, ``amopo``,
  ``modpo``). ``dpo`` and ``dpo-lw`` give the same update; ``dpo-lw`` also measures the
  per-objective gradients (cosines, norms) at the cost of K backward passes.
* :data:`REFERENCES`: where the DPO reference log-probs come from (:func:`resolve_reference`).
* :func:`make_aggregator` and :func:`make_optimizer`: the paper's chain per method.

Example:
    >>> from raco_jax.train.methods import METHODS, resolve_reference
    >>> METHODS
    ('raco', 'cagrad', 'dpo-lw', 'mgda', 'pcgrad', 'dpo', 'amopo', 'modpo')
    >>> resolve_reference("raco", None), resolve_reference("amopo", None)
    ('precomputed', 'none')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import jax
import optax

from raco_jax.aggregation import cagrad, clipped_cagrad, mgda, pcgrad, weighted_sum
from raco_jax.aggregation.weightings import validate_weights

__all__ = [
    "AGGREGATE_AT",
    "METHODS",
    "REFERENCES",
    "SCALAR_METHODS",
    "STACKED_METHODS",
    "check_method",
    "make_aggregator",
    "make_optimizer",
    "resolve_reference",
]

#: Methods whose K per-objective gradients are combined by a raco_jax aggregator.
STACKED_METHODS: tuple[str, ...] = ("raco", "cagrad", "dpo-lw", "mgda", "pcgrad")
#: Methods that differentiate one scalar loss.
SCALAR_METHODS: tuple[str, ...] = ("dpo", "amopo", "modpo")
#: Every method of an alignment run.
METHODS: tuple[str, ...] = STACKED_METHODS + SCALAR_METHODS

#: Where the reference log-probs come from: ``precomputed`` (once per pair, before training,
#: from the starting policy), ``online`` (a frozen copy of the starting trainable state, run
#: in every step), ``lora_base`` (online, where the trainable state is LoRA adapters that start
#: as a zero update, so the reference is the base model at the cost of the adapters only),
#: ``none`` (reference-free: AMoPO).
Reference = Literal["precomputed", "online", "lora_base", "none"]
REFERENCES: tuple[str, ...] = get_args(Reference)

#: Where stacked gradients are aggregated: once per optimizer step on the micro-batches'
#: accumulated gradients (``batch``, Algorithm 1), or on each micro-batch with the directions
#: averaged (``micro_batch``, as the RACO authors' code does).
AGGREGATE_AT: tuple[str, ...] = ("batch", "micro_batch")


def check_method(method: str) -> str:
    """Returns ``method`` if it is one of :data:`METHODS`; raises ValueError naming them otherwise.

    Example:
        >>> from raco_jax.train.methods import check_method
        >>> check_method("raco")
        'raco'
        >>> check_method("ppo")
        Traceback (most recent call last):
        ...
        ValueError: unknown method 'ppo'; choose one of raco, cagrad, dpo-lw, mgda, pcgrad, dpo, amopo, modpo.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    return method


def resolve_reference(method: str, reference: str | None) -> str:
    """The reference a method runs with: ``reference``, or the method's default when None.

    The default is ``"none"`` for AMoPO (reference-free) and ``"precomputed"`` otherwise.

    Raises:
        ValueError: an unknown reference, a reference for AMoPO, or no reference for a DPO
            method.

    Example:
        >>> from raco_jax.train.methods import resolve_reference
        >>> resolve_reference("dpo-lw", "lora_base")
        'lora_base'
        >>> resolve_reference("amopo", "online")
        Traceback (most recent call last):
        ...
        ValueError: method 'amopo' is reference-free: leave reference unset (or 'none'), got 'online'.
    """
    check_method(method)
    if reference is None:
        return "none" if method == "amopo" else "precomputed"
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}.")
    if method == "amopo" and reference != "none":
        raise ValueError(
            f"method 'amopo' is reference-free: leave reference unset (or 'none'), got "
            f"{reference!r}."
        )
    if method != "amopo" and reference == "none":
        raise ValueError(
            f"method {method!r} needs a reference: 'precomputed', 'online' or 'lora_base'."
        )
    return reference


def make_aggregator(
    method: str,
    weights: Sequence[float] | jax.Array,
    c: float = 0.4,
    seed: int = 0,
    injectable_weights: bool = False,
) -> optax.GradientTransformation | None:
    """The raco_jax aggregator that heads a stacked method's chain (None for scalar methods).

    ``raco``: ``clipped_cagrad(weights, c)``; ``cagrad``: ``cagrad(c, weights)``; ``dpo-lw``:
    ``weighted_sum(weights)``; ``mgda``: ``mgda(K)``; ``pcgrad``: ``pcgrad(seed, K)``; ``dpo``,
    ``amopo`` and ``modpo`` have none. With ``injectable_weights`` the weighted aggregators are
    built through ``optax.inject_hyperparams``, so the weights (and c) live in the optimizer
    state and one compiled step serves every weight vector.

    Example:
      >>> from raco_jax.train import make_aggregator
      >>> tx = make_aggregator("raco", (0.7, 0.3), injectable_weights=True)
      >>> [round(w, 4) for w in tx.init(None).hyperparams["weights"].tolist()]
      [0.7, 0.3]
    """
    check_method(method)
    weights = validate_weights(weights)
    k = int(weights.shape[0])
    if method in ("raco", "cagrad", "dpo-lw"):
        factory, kwargs = {
            "raco": (clipped_cagrad, {"weights": weights, "c": c}),
            "cagrad": (cagrad, {"weights": weights, "c": c}),
            "dpo-lw": (weighted_sum, {"weights": weights}),
        }[method]
        if injectable_weights:
            factory = optax.inject_hyperparams(factory)
        return factory(**kwargs)
    if method == "mgda":
        return mgda(num_objectives=k)
    if method == "pcgrad":
        return pcgrad(seed, num_objectives=k)
    return None


def make_optimizer(
    method: str,
    weights: Sequence[float] | jax.Array,
    learning_rate: float | optax.Schedule = 1e-6,
    c: float = 0.4,
    max_grad_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    injectable_weights: bool = False,
    *,
    aggregate_at: str = "batch",
    micro_batches: int = 1,
) -> optax.GradientTransformation:
    """The paper's optimizer chain for a method: aggregator, global-norm clip at 1.0, AdamW.

    The aggregator comes from :func:`make_aggregator` (none for the scalar methods ``dpo``,
    ``amopo``, ``modpo``). AdamW is wrapped in ``optax.inject_hyperparams`` so the step can
    report ``learning_rate``. With ``aggregate_at="micro_batch"`` (stacked methods, M =
    ``micro_batches`` > 1) the chain is meant to be called once per micro-batch: each
    micro-batch's gradients are aggregated on their own and ``optax.MultiSteps`` averages the M
    directions before one clipped AdamW update (the RACO authors' code); the default aggregates
    the accumulated gradients once (Algorithm 1; the train step accumulates them).

    Args:
      method: one of :data:`METHODS`.
      weights: ``[K]`` objective weights on the simplex.
      learning_rate: a float or an optax schedule.
      c: CAGrad radius (``raco``, ``cagrad``).
      max_grad_norm: global-norm clip after aggregation (None: no clip).
      weight_decay: AdamW's decoupled weight decay.
      seed: PCGrad's projection-order seed.
      injectable_weights: keep the weights in the optimizer state (see :func:`make_aggregator`).
      aggregate_at: ``"batch"`` or ``"micro_batch"`` (see above).
      micro_batches: M, micro-batches per optimizer step (``aggregate_at="micro_batch"``).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> from raco_jax.train import make_optimizer
      >>> tx = make_optimizer("raco", (0.7, 0.3), learning_rate=1e-5)
      >>> type(tx).__name__
      'GradientTransformationExtraArgs'
    """
    if aggregate_at not in AGGREGATE_AT:
        raise ValueError(f"aggregate_at must be one of {AGGREGATE_AT}, got {aggregate_at!r}.")
    aggregator = make_aggregator(method, weights, c, seed, injectable_weights)
    tail: list[optax.GradientTransformation] = []
    if max_grad_norm is not None:
        tail.append(optax.clip_by_global_norm(max_grad_norm))
    tail.append(
        optax.inject_hyperparams(optax.adamw)(
            learning_rate=learning_rate, weight_decay=weight_decay
        )
    )
    if aggregator is None:
        return optax.chain(*tail)
    if aggregate_at == "micro_batch" and micro_batches > 1:
        return optax.chain(
            aggregator, optax.MultiSteps(optax.chain(*tail), every_k_schedule=micro_batches)
        )
    return optax.chain(aggregator, *tail)
