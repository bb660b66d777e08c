r"""Optax gradient transformations over stacked per-objective gradients.

Each transformation here takes *stacked* updates (every leaf ``[K, *param_shape]``, slice k the
gradient of objective k), computes the K x K Gram matrix leaf by leaf, turns it into K
coefficients with a weighting from :mod:`raco_jax.aggregation.weightings`, and returns
:math:`d = \sum_k a_k g_k` shaped like the parameters, in the input dtype. It must therefore come
FIRST in an ``optax.chain``; everything after it (clipping, AdamW, schedules) sees ordinary
updates::

    tx = optax.chain(raco_jax.clipped_cagrad(weights=(0.8, 0.2), c=0.4),
                     optax.clip_by_global_norm(1.0), optax.adamw(1e-3))

The state of every transformation is a NamedTuple holding the last step's
:class:`~raco_jax.AggregationDiagnostics` under ``diagnostics`` (``coefficients``, ``dual``,
``clipped_dual``, ``gram``, ``duality_gap``, ``num_conflicts``, ``cos_update_anchor``,
``finite``), so ``optax.tree.get(state, "coefficients")`` finds them in any chain.

Gradient accumulation: ``optax.MultiSteps`` must not wrap the aggregator (its accumulator is
shaped like the parameters and cannot hold ``[K, ...]`` leaves) and must not sit after it (it would
average aggregated directions, not aggregate the averaged per-objective gradients that Algorithm
1 prescribes). Use :func:`accumulate_objectives`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from raco_jax.aggregation.gram import (
    anchor_products,
    combine,
    combine_with_anchor,
    gram_matrix,
    num_objectives,
    weighted_anchor,
)
from raco_jax.aggregation.weightings import (
    AggregationDiagnostics,
    Rescale,
    cagrad_solution,
    mgda_coefficients,
    pcgrad_coefficients,
    rescale_mode,
    validate_c,
    validate_weights,
    weighted_sum_coefficients,
)

__all__ = [
    "AggregatorState",
    "PCGradState",
    "StackedAccumulationState",
    "accumulate_objectives",
    "cagrad",
    "clipped_cagrad",
    "mgda",
    "pcgrad",
    "weighted_sum",
]

Weights = Sequence[float] | jax.Array


class AggregatorState(NamedTuple):
    """State of a Gram-based aggregator: the last step's diagnostics.

    Attributes:
      diagnostics: an :class:`raco_jax.AggregationDiagnostics` (what each field means is
        documented there). Before the first update every field is zero (``finite`` is True).
        When the transformation does not know K at ``init`` (``mgda()``, ``cagrad()`` without
        weights, ``pcgrad()`` without weights, all without ``num_objectives``), the
        ``[K]``-shaped fields have size 0 and only the scalar diagnostics are recorded; pass
        ``num_objectives=K`` to record them all.

    ``optax.tree.get(state, "coefficients")`` finds a field in any chain.
    """

    diagnostics: AggregationDiagnostics


class PCGradState(NamedTuple):
    """State of :func:`pcgrad`: the PRNG key for the projection orders, and the diagnostics."""

    key: jax.Array
    diagnostics: AggregationDiagnostics


def _empty_diagnostics(k: int) -> AggregationDiagnostics:
    return AggregationDiagnostics(
        coefficients=jnp.zeros((k,), jnp.float32),
        dual=jnp.zeros((k,), jnp.float32),
        clipped_dual=jnp.zeros((k,), jnp.float32),
        gram=jnp.zeros((k, k), jnp.float32),
        duality_gap=jnp.zeros((), jnp.float32),
        num_conflicts=jnp.zeros((), jnp.int32),
        cos_update_anchor=jnp.zeros((), jnp.float32),
        finite=jnp.ones((), bool),
    )


def _fit_to_state(diagnostics: AggregationDiagnostics, k_state: int) -> AggregationDiagnostics:
    """Drops the [K]-shaped diagnostics when the state was created without knowing K."""
    if k_state > 0:
        return diagnostics
    empty = _empty_diagnostics(0)
    return diagnostics._replace(
        coefficients=empty.coefficients,
        dual=empty.dual,
        clipped_dual=empty.clipped_dual,
        gram=empty.gram,
    )


def _check_k(stacked: Any, expected: int | None, name: str) -> int:
    k = num_objectives(stacked, argname="updates")
    if expected is not None and k != expected:
        raise ValueError(
            f"{name}: the stacked updates have {k} objectives (leading size) but the "
            f"transformation was built for {expected} (len(weights) or num_objectives)."
        )
    return k


def _gram_aggregator(
    name: str,
    expected_k: int | None,
    coefficients_fn: Callable[[jax.Array, int], tuple[jax.Array, AggregationDiagnostics]],
) -> optax.GradientTransformationExtraArgs:
    state_k = expected_k or 0

    def init_fn(params: Any) -> AggregatorState:
        del params
        return AggregatorState(_empty_diagnostics(state_k))

    def update_fn(
        updates: Any, state: AggregatorState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, AggregatorState]:
        del params, extra_args
        k = _check_k(updates, expected_k, name)
        gram = gram_matrix(updates)
        coefficients, diagnostics = coefficients_fn(gram, k)
        new_updates = combine(updates, coefficients)
        diagnostics = _fit_to_state(diagnostics, state.diagnostics.coefficients.shape[0])
        return new_updates, AggregatorState(diagnostics)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# Where ||g_0||^2 < this fraction of (sum_k w_k ||g_k||)^2 (||g_0|| < 0.1 sum_k w_k ||g_k||), the
# Gram matrix alone would cost more than 1e-6 of relative accuracy: the CAGrad transforms then
# take the anchored path (g_0 in compensated precision, its products, d formed around g_0).
_ANCHORED_PATH_RATIO2 = 1e-2


def _anchor_cancels(gram: jax.Array, weights: jax.Array) -> jax.Array:
    norm2 = weights @ gram @ weights
    upper = jnp.sum(weights * jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))) ** 2
    return norm2 < _ANCHORED_PATH_RATIO2 * upper


def _cagrad_aggregator(
    name: str,
    expected_k: int | None,
    weights_fn: Callable[[int], jax.Array],
    c: jax.Array,
    clip: bool,
    rescale: Rescale,
) -> optax.GradientTransformationExtraArgs:
    """A Gram aggregator for (clipped) CAGrad with the anchored path near stationary points.

    One Gram pass decides: if g_0 = sum_k w_k g_k is not strongly cancelling, the Gram matrix is
    enough (coefficients, one combine pass); otherwise (``lax.cond``, so only one branch runs)
    g_0 is formed in compensated precision, its K + 1 inner products are taken from the vectors,
    and d = t g_0 + sum_k beta_k g_k is formed around it, which keeps d exact to float32 at any
    cancellation.
    """
    state_k = expected_k or 0

    def init_fn(params: Any) -> AggregatorState:
        del params
        return AggregatorState(_empty_diagnostics(state_k))

    def update_fn(
        updates: Any, state: AggregatorState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, AggregatorState]:
        del params, extra_args
        k = _check_k(updates, expected_k, name)
        weights = weights_fn(k)
        gram = gram_matrix(updates)

        def plain(updates: Any, gram: jax.Array) -> tuple[Any, AggregationDiagnostics]:
            sol = cagrad_solution(gram, weights, c, clip=clip, rescale=rescale)
            return combine(updates, sol.coefficients), sol.diagnostics

        def anchored(updates: Any, gram: jax.Array) -> tuple[Any, AggregationDiagnostics]:
            anchor = weighted_anchor(updates, weights)
            products = anchor_products(updates, anchor)
            sol = cagrad_solution(gram, weights, c, clip=clip, rescale=rescale, anchor=products)
            out = combine_with_anchor(updates, anchor, sol.anchor_scale, sol.residual)
            return out, sol.diagnostics

        new_updates, diagnostics = jax.lax.cond(
            _anchor_cancels(gram, weights), anchored, plain, updates, gram
        )
        diagnostics = _fit_to_state(diagnostics, state.diagnostics.coefficients.shape[0])
        return new_updates, AggregatorState(diagnostics)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _known_k(weights: Any, num_objectives_arg: int | None) -> int | None:
    if weights is not None:
        return int(jnp.shape(weights)[0])
    if num_objectives_arg is not None:
        if int(num_objectives_arg) < 2:
            raise ValueError(f"num_objectives must be >= 2, got {num_objectives_arg}.")
        return int(num_objectives_arg)
    return None


def clipped_cagrad(
    weights: Weights, c: float | jax.Array = 0.4
) -> optax.GradientTransformationExtraArgs:
    r"""RACO's clipped CAGrad: conflict-averse updates that respect user weights.

    For stacked gradients :math:`g_1..g_K` with Gram matrix H and weights w on the simplex:
    :math:`g_0 = \sum_k w_k g_k`, :math:`s = c\|g_0\|`,
    :math:`p^* = \arg\min_{p\in\Delta} p^\top H w + s\sqrt{p^\top H p}` (solved exactly on
    device), :math:`\tilde p = \min(p^*, w)` coordinate-wise with no renormalisation,
    :math:`\tilde G = \sum_k \tilde p_k g_k` and

    .. math:: d = g_0 + c\|g_0\| \frac{\tilde G}{\|\tilde G\|} \quad (d = g_0 \text{ if } \tilde G = 0).

    The correction always has length :math:`c\|g_0\|`; :math:`d = \sum_k a_k g_k` with
    :math:`a_k \ge w_k`; c = 0 gives the weighted sum. No rescale.

    Args:
      weights: ``[K]`` user weights, non-negative and summing to 1; may be a jax array (so it can
        be injected with ``optax.inject_hyperparams``).
      c: correction radius, ``0 <= c < 1`` (default 0.4, the paper's); injectable, so it can
        follow a schedule.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(stacked, state, params=None)``
      takes ``[K, ...]`` leaves and returns parameter-shaped updates in the input dtypes. Its
      state is an :class:`AggregatorState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import raco_jax
      >>> params = {"x": jnp.zeros(2)}
      >>> tx = optax.chain(raco_jax.clipped_cagrad(weights=(0.2, 0.8), c=0.5), optax.sgd(1.0))
      >>> state = tx.init(params)
      >>> stacked = {"x": jnp.array([[1.0, -4.0], [-1.0, 1.0]])}
      >>> updates, state = tx.update(stacked, state, params)
      >>> [round(float(v), 6) for v in updates["x"]]  # -d
      [0.882999, 0.099557]
      >>> [round(float(v), 6) for v in optax.tree.get(state, "coefficients")]
      [0.327519, 1.210518]

    References:
      Chen, Li, Chen, Lin, "Reward-free Alignment for Conflicting Objectives", ICML 2026,
      https://arxiv.org/abs/2602.02495 (Algorithm 1, CAGrad-Clip).
    """
    weights = validate_weights(weights)
    c = validate_c(c, strict_below_one=True)
    k = _known_k(weights, None)

    return _cagrad_aggregator("clipped_cagrad", k, lambda _: weights, c, True, None)


def cagrad(
    c: float | jax.Array = 0.4,
    weights: Weights | None = None,
    rescale: Rescale = None,
    num_objectives: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Conflict-averse gradient descent (CAGrad), unclipped, with an optional weighted anchor.

    :math:`d = g_0 + c\|g_0\|\, G_{p^*}/\|G_{p^*}\|` with :math:`g_0 = \sum_k w_k g_k` and p* the
    exact dual solution (see :func:`clipped_cagrad`). Uniform weights (the default) reproduce the
    original CAGrad direction. In the degenerate case :math:`G_{p^*} = 0` (0 in the hull) the
    direction is the projection of :math:`g_0` onto the dual cone
    :math:`\{d : \langle g_k, d\rangle \ge 0\}`, the optimal direction closest to :math:`g_0`.

    Args:
      c: correction radius, ``c >= 0`` (c >= 1 is allowed here, as in the CAGrad paper).
      weights: ``[K]`` anchor weights on the simplex; None = uniform ``1/K``.
      rescale: None (default, no rescale), ``"1+c"`` (the CAGrad toy code divides d by 1+c) or
        ``"1+c^2"`` (its supervised code); the CAGrad code's integers 0, 1 (= ``"1+c^2"``) and
        2 (= ``"1+c"``) are accepted too.
      num_objectives: K, only needed to record the ``[K]``-shaped diagnostics when weights is
        None.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` over stacked updates (state
      :class:`AggregatorState`).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import raco_jax
      >>> tx = raco_jax.cagrad(c=0.5)
      >>> stacked = {"x": jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])}
      >>> d, _ = tx.update(stacked, tx.init({"x": jnp.zeros(3)}))
      >>> [round(float(v), 6) for v in d["x"]]
      [0.183503, 1.204124, 1.204124]

    References:
      Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task Learning",
      NeurIPS 2021, https://arxiv.org/abs/2110.14048.
    """
    c = validate_c(c, strict_below_one=False)
    rescale_mode(rescale, clip=False)
    if weights is not None:
        weights = validate_weights(weights)
    k = _known_k(weights, num_objectives)

    def weights_fn(kk: int) -> jax.Array:
        return weights if weights is not None else jnp.full((kk,), 1.0 / kk, jnp.float32)

    return _cagrad_aggregator("cagrad", k, weights_fn, c, False, rescale)


def weighted_sum(
    weights: Weights, diagnostics: bool = True
) -> optax.GradientTransformationExtraArgs:
    r"""Linear scalarisation :math:`d = \sum_k w_k g_k` (the DPO-LW baseline).

    Equal to the gradient of the weighted loss :math:`\sum_k w_k L_k`. The Gram matrix is still
    computed for the diagnostics (conflict counts); use it as the baseline of every comparison.

    Args:
      weights: ``[K]`` weights on the simplex (injectable).
      diagnostics: compute the Gram matrix for the state's diagnostics (conflict count,
        ``gram``, the ``finite`` check). With False the update is a single pass over the
        stacked gradients and the state keeps zeros (the cheapest possible baseline); a NaN
        gradient entry then stays in its own leaf of the update.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` over stacked updates (state
      :class:`AggregatorState`).

    Example:
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> tx = raco_jax.weighted_sum((0.2, 0.8))
      >>> stacked = {"x": jnp.array([[1.0, -4.0], [-1.0, 1.0]])}
      >>> tx.update(stacked, tx.init(None))[0]["x"]
      Array([-0.6,  0. ], dtype=float32)
    """
    weights = validate_weights(weights)
    k = _known_k(weights, None)

    def coefficients_fn(gram: jax.Array, _: int) -> tuple[jax.Array, AggregationDiagnostics]:
        return weighted_sum_coefficients(gram, weights)

    if diagnostics:
        return _gram_aggregator("weighted_sum", k, coefficients_fn)

    def init_fn(params: Any) -> AggregatorState:
        del params
        return AggregatorState(_empty_diagnostics(k))

    def update_fn(
        updates: Any, state: AggregatorState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, AggregatorState]:
        del params, extra_args
        _check_k(updates, k, "weighted_sum")
        diagnostics = state.diagnostics._replace(coefficients=weights)
        return combine(updates, weights), AggregatorState(diagnostics)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def mgda(num_objectives: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""MGDA: the minimum-norm element of the convex hull of the objective gradients.

    :math:`d = \sum_k p^*_k g_k`, :math:`p^* = \arg\min_{p\in\Delta}\|\sum_k p_k g_k\|`, solved
    exactly on device. d is a common descent direction whenever one exists and 0 at
    Pareto-stationary points; it ignores user weights.

    Args:
      num_objectives: K, only needed to record the ``[K]``-shaped diagnostics in the state.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` over stacked updates.

    Example:
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> tx = raco_jax.mgda(num_objectives=2)
      >>> stacked = {"x": jnp.array([[1.0, 0.0], [0.0, 2.0]])}
      >>> [round(float(v), 4) for v in tx.update(stacked, tx.init(None))[0]["x"]]
      [0.8, 0.4]

    References:
      Désidéri, 2012; Sener and Koltun, NeurIPS 2018.
    """
    k = _known_k(None, num_objectives)

    def coefficients_fn(gram: jax.Array, _: int) -> tuple[jax.Array, AggregationDiagnostics]:
        return mgda_coefficients(gram)

    return _gram_aggregator("mgda", k, coefficients_fn)


def pcgrad(
    seed: int = 0,
    weights: Weights | None = None,
    reduction: Literal["sum", "mean"] = "sum",
    num_objectives: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""PCGrad (projecting conflicting gradients) with random projection orders.

    Each objective's gradient is projected onto the normal plane of every other objective's
    gradient it conflicts with, in a random order drawn from a PRNG key kept in the state (a new
    order every step, reproducible from ``seed``). Computed in Gram space (see
    :func:`raco_jax.aggregation.weightings.pcgrad_coefficients`).

    Sum vs mean: the PCGrad paper and its official code SUM the projected gradients
    (``reduction="sum"``, the default); several PyTorch ports average them (``"mean"``), which
    is the same direction scaled by 1/K (it matters with SGD, not with Adam). With ``weights`` the
    result is :math:`\sum_k w_k g_k'`.

    Args:
      seed: seed of the projection orders.
      weights: optional ``[K]`` weights on the simplex.
      reduction: ``"sum"`` or ``"mean"`` (without weights).
      num_objectives: K, only needed to record the ``[K]``-shaped diagnostics without weights.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` over stacked updates (state
      :class:`PCGradState`).

    Example:
      >>> import jax.numpy as jnp
      >>> import raco_jax
      >>> tx = raco_jax.pcgrad(seed=0)
      >>> stacked = {"x": jnp.array([[1.0, 0.0], [-1.0, 1.0]])}
      >>> [round(float(v), 4) for v in tx.update(stacked, tx.init(None))[0]["x"]]
      [0.5, 1.5]

    References:
      Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning",
      NeurIPS 2020, https://arxiv.org/abs/2001.06782.
    """
    if weights is not None:
        weights = validate_weights(weights)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
    expected_k = _known_k(weights, num_objectives)
    state_k = expected_k or 0

    def init_fn(params: Any) -> PCGradState:
        del params
        return PCGradState(jax.random.key(seed), _empty_diagnostics(state_k))

    def update_fn(
        updates: Any, state: PCGradState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, PCGradState]:
        del params, extra_args
        _check_k(updates, expected_k, "pcgrad")
        key, subkey = jax.random.split(state.key)
        gram = gram_matrix(updates)
        coefficients, diagnostics = pcgrad_coefficients(gram, subkey, weights, reduction)
        diagnostics = _fit_to_state(diagnostics, state.diagnostics.coefficients.shape[0])
        return combine(updates, coefficients), PCGradState(key, diagnostics)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class StackedAccumulationState(NamedTuple):
    """State of :func:`accumulate_objectives`.

    Attributes:
      mini_step: int32, micro-batches accumulated since the last optimizer step.
      accumulated: running sum of the stacked gradients (leaves ``[K, *param_shape]``, at least
        float32).
      inner_state: the wrapped transformation's state.
    """

    mini_step: jax.Array
    accumulated: Any
    inner_state: Any


def accumulate_objectives(
    tx: optax.GradientTransformation, every_k: int, num_objectives: int
) -> optax.GradientTransformationExtraArgs:
    """Averages stacked per-objective gradients over micro-batches, then applies ``tx`` once.

    Algorithm 1 of RACO solves the CAGrad dual once per optimizer step on the gradients of the
    whole (large) batch. With micro-batches that means averaging the STACKED gradients first and
    aggregating once, which is what this wrapper does: for ``every_k - 1`` calls it adds the
    ``[K, ...]`` updates to an accumulator and returns zero updates (leaving ``tx``'s state
    untouched); on the ``every_k``-th call it hands the mean to ``tx`` (a chain headed by a
    raco_jax aggregator) and returns its updates.

    Why not ``optax.MultiSteps``: wrapping the aggregator, ``MultiSteps(chain(aggregator, ...))``
    keeps a parameter-shaped accumulator that cannot hold ``[K, ...]`` leaves (it fails); placing it
    after the aggregator, ``chain(aggregator, MultiSteps(adam))``, averages the aggregated
    directions of each micro-batch, which differs from aggregating the averaged gradients because
    aggregation is non-linear.

    Args:
      tx: the transformation to apply to the averaged stacked gradients.
      every_k: the number of micro-batches per optimizer step (>= 1).
      num_objectives: K, to shape the accumulator at ``init`` time.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`StackedAccumulationState`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import raco_jax
      >>> tx = raco_jax.accumulate_objectives(
      ...     optax.chain(raco_jax.weighted_sum((0.5, 0.5)), optax.sgd(1.0)), every_k=2,
      ...     num_objectives=2)
      >>> params = {"x": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> u1, state = tx.update({"x": jnp.array([[1.0, 0.0], [0.0, 1.0]])}, state, params)
      >>> u2, state = tx.update({"x": jnp.array([[3.0, 0.0], [0.0, 3.0]])}, state, params)
      >>> u1["x"], u2["x"]
      (Array([0., 0.], dtype=float32), Array([-1., -1.], dtype=float32))
    """
    if not isinstance(every_k, int) or every_k < 1:
        raise ValueError(f"every_k must be a positive int, got {every_k!r}.")
    if not isinstance(num_objectives, int) or num_objectives < 1:
        raise ValueError(f"num_objectives must be a positive int, got {num_objectives!r}.")

    def init_fn(params: Any) -> StackedAccumulationState:
        accumulated = jax.tree_util.tree_map(
            lambda p: jnp.zeros(
                (num_objectives, *jnp.shape(p)), jnp.promote_types(jnp.result_type(p), jnp.float32)
            ),
            params,
        )
        return StackedAccumulationState(
            mini_step=jnp.zeros((), jnp.int32), accumulated=accumulated, inner_state=tx.init(params)
        )

    def update_fn(
        updates: Any, state: StackedAccumulationState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, StackedAccumulationState]:
        _check_k(updates, num_objectives, "accumulate_objectives")
        accumulated = jax.tree_util.tree_map(
            lambda acc, g: acc + g.astype(acc.dtype), state.accumulated, updates
        )

        def inner_update(acc: Any, inner_state: Any) -> tuple[Any, Any]:
            mean = jax.tree_util.tree_map(lambda a, g: (a / every_k).astype(g.dtype), acc, updates)
            return optax.with_extra_args_support(tx).update(mean, inner_state, params, **extra_args)

        out_shapes = jax.eval_shape(inner_update, accumulated, state.inner_state)[0]

        def emit(acc: Any, inner_state: Any) -> tuple[Any, Any, Any, jax.Array]:
            new_updates, new_inner = inner_update(acc, inner_state)
            zeros = jax.tree_util.tree_map(jnp.zeros_like, acc)
            return new_updates, new_inner, zeros, jnp.zeros((), jnp.int32)

        def hold(acc: Any, inner_state: Any) -> tuple[Any, Any, Any, jax.Array]:
            zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out_shapes)
            return zeros, inner_state, acc, state.mini_step + 1

        new_updates, inner_state, accumulated, mini_step = jax.lax.cond(
            state.mini_step >= every_k - 1, emit, hold, accumulated, state.inner_state
        )
        return new_updates, StackedAccumulationState(mini_step, accumulated, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
