r"""DPO-family losses for K objectives sharing the same preference pairs.

Every pair i has two responses, a and b, and one sign per objective k: :math:`s_{k,i} = +1`
when a is preferred under objective k, -1 when b is, 0 for a tie. A loss type is a function
:math:`\ell(u)` of the ORIENTED margin :math:`u = s\,\delta` (winner minus loser), with
:math:`\delta_i = (\log\pi(y_a) - \log\pi(y_b)) - (\log\pi_{ref}(y_a) - \log\pi_{ref}(y_b))`:

=================  ==============================================================================
``sigmoid``        :math:`-(1-\epsilon)\log\sigma(\beta u) - \epsilon\log\sigma(-\beta u)` (DPO,
                   conservative DPO with label smoothing :math:`\epsilon`)
``hinge``          :math:`\max(0, 1 - \beta u)` (SLiC)
``ipo``            :math:`(u - \tfrac{1}{2\beta})^2` (IPO; TRL applies it to log-ratios
                   AVERAGED over each response's tokens: pass per-response log-ratios and
                   ``lengths``, see :func:`dpo_losses`)
``robust``         :math:`\frac{-(1-\epsilon)\log\sigma(\beta u) + \epsilon\log\sigma(-\beta u)}
                   {1 - 2\epsilon}` (robust DPO, unbiased under label noise :math:`\epsilon`)
``sigmoid_norm``   ``sigmoid`` on length-normalised margins
                   :math:`\frac{r_a}{|y_a|} - \frac{r_b}{|y_b|}` with :math:`r = \log\pi -
                   \log\pi_{ref}` per response (TRL's ``sigmoid_norm``, Tülu 3's
                   length-normalised DPO)
=================  ==============================================================================

Ties. Every loss depends on the margin only through :math:`u = s\delta`, so a tie (s = 0) has a
constant loss (:math:`\log 2` for ``sigmoid``, ``sigmoid_norm`` and ``robust``, 1 for ``hinge``,
:math:`1/(4\beta^2)` for ``ipo``) and EXACTLY zero gradient, for every type. Ties stay in the
denominator of the mean by default (as in the RACO reference code); ``exclude_ties=True`` drops
them from it.

Unlabeled pairs (``labeled = 0``) never count: objective k's loss is the mean of
:math:`\ell` over its own labeled pairs,
:math:`L_k = \sum_i c_{k,i}\,\ell(s_{k,i}\delta_i) / \max(\sum_i c_{k,i}, 1)` with
:math:`c_{k,i} = \text{labeled}_{k,i}` (times :math:`|s_{k,i}|` with ``exclude_ties``); with no
labeled pair it is 0 (and so is its gradient). When a batch is split into micro-batches, pass the
whole batch's counts as ``normalizer`` so the micro-batch losses add up to the batch loss.

The K losses come from ``jax.vmap`` over the K sign rows of one pairwise loss, so one policy
forward serves every objective. Imports jax only.
"""

from __future__ import annotations

from typing import Literal, get_args

import jax
import jax.numpy as jnp

__all__ = [
    "LENGTH_NORMALISED_LOSS_TYPES",
    "LOSS_TYPES",
    "amopo_losses",
    "dpo_losses",
    "modpo_loss",
    "objective_counts",
    "pair_margins",
]

LossType = Literal["sigmoid", "hinge", "ipo", "robust", "sigmoid_norm"]
LOSS_TYPES: tuple[str, ...] = get_args(LossType)
#: The loss types computed on per-response log-ratios averaged over each response's tokens (as
#: TRL does): pass ``[2B]`` log-ratios and ``lengths`` to :func:`dpo_losses`.
LENGTH_NORMALISED_LOSS_TYPES: tuple[str, ...] = ("sigmoid_norm", "ipo")


def _check_loss_type(loss_type: str, label_smoothing: float) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")
    try:
        eps = float(label_smoothing)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return
    upper = 0.5 if loss_type in ("sigmoid", "sigmoid_norm") else 0.5 - 1e-12
    if not 0.0 <= eps <= upper:
        raise ValueError(
            f"label_smoothing must be in [0, 0.5{']' if upper == 0.5 else ')'} for "
            f"loss_type={loss_type!r}, got {label_smoothing!r}."
        )
    if eps != 0.0 and loss_type in ("hinge", "ipo"):
        raise ValueError(
            f"label_smoothing applies to the sigmoid and robust losses, not {loss_type!r}; "
            f"got {label_smoothing!r}."
        )


def _check_beta(beta: float) -> None:
    try:
        value = float(beta)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return
    if not value > 0.0:
        raise ValueError(f"beta must be positive, got {beta!r}.")


def _pairwise_loss(
    oriented: jax.Array, beta: float, loss_type: str, label_smoothing: float
) -> jax.Array:
    """The per-pair loss ell(u) of the oriented margin u = s * margin (float32)."""
    z = beta * oriented
    if loss_type in ("sigmoid", "sigmoid_norm"):
        return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(
            z
        ) - label_smoothing * jax.nn.log_sigmoid(-z)
    if loss_type == "hinge":
        return jax.nn.relu(1.0 - z)
    if loss_type == "ipo":
        return (oriented - 1.0 / (2.0 * beta)) ** 2
    # robust
    return (
        -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) + label_smoothing * jax.nn.log_sigmoid(-z)
    ) / (1.0 - 2.0 * label_smoothing)


def _as_signs(signs: jax.Array) -> jax.Array:
    signs = jnp.asarray(signs)
    if signs.ndim == 1:
        raise ValueError(
            f"signs must be [K, B] (one row per objective), got shape {signs.shape}; "
            "use signs[None] for one objective."
        )
    if signs.ndim != 2:
        raise ValueError(f"signs must be [K, B], got shape {signs.shape}.")
    return signs.astype(jnp.float32)


def _as_labeled(labeled: jax.Array | None, signs: jax.Array) -> jax.Array:
    if labeled is None:
        return jnp.ones_like(signs)
    labeled = jnp.asarray(labeled)
    if labeled.shape != signs.shape:
        raise ValueError(
            f"labeled must have the shape of signs {signs.shape}, got {labeled.shape}."
        )
    return labeled.astype(jnp.float32)


def pair_margins(
    logps: jax.Array,
    ref_logps: jax.Array | None = None,
    lengths: jax.Array | None = None,
) -> jax.Array:
    r"""Pair margins :math:`\delta_i = r_{a,i} - r_{b,i}` from per-sequence log-probs in batch
    layout (rows 0..B-1 response a, rows B..2B-1 response b).

    :math:`r = \log\pi - \log\pi_{ref}` (just :math:`\log\pi` without a reference), divided by
    the response length when ``lengths`` is given.

    Args:
      logps: ``[2B]`` policy summed log-probs.
      ref_logps: ``[2B]`` reference summed log-probs, or None (reference-free).
      lengths: ``[2B]`` response token counts (clamped at 1), or None.

    Returns:
      ``[B]`` float32 margins.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.preference import pair_margins
      >>> pair_margins(jnp.array([-1.0, -4.0]), jnp.array([-2.0, -2.0]))
      Array([3.], dtype=float32)
    """
    ratios = _logratios(logps, ref_logps, lengths)
    half = ratios.shape[0] // 2
    return ratios[:half] - ratios[half:]


def _logratios(
    logps: jax.Array, ref_logps: jax.Array | None, lengths: jax.Array | None
) -> jax.Array:
    logps = jnp.asarray(logps, jnp.float32)
    if logps.ndim != 1 or logps.shape[0] % 2:
        raise ValueError(
            f"logps must be [2B] (rows a then rows b of the batch), got shape {logps.shape}."
        )
    ratios = logps
    if ref_logps is not None:
        ref_logps = jnp.asarray(ref_logps, jnp.float32)
        if ref_logps.shape != logps.shape:
            raise ValueError(
                f"ref_logps must have the shape of logps {logps.shape}, got {ref_logps.shape}."
            )
        ratios = ratios - ref_logps
    if lengths is not None:
        lengths = jnp.asarray(lengths, jnp.float32)
        if lengths.shape != logps.shape:
            raise ValueError(
                f"lengths must have the shape of logps {logps.shape}, got {lengths.shape}."
            )
        ratios = ratios / jnp.maximum(lengths, 1.0)
    return ratios


def objective_counts(
    signs: jax.Array, labeled: jax.Array | None = None, exclude_ties: bool = False
) -> jax.Array:
    """``[K]`` number of pairs that count in each objective's mean (labeled, minus ties with
    ``exclude_ties``): pass the whole batch's counts as ``normalizer`` to micro-batch losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.preference import objective_counts
      >>> objective_counts(jnp.array([[1.0, 0.0, -1.0]]), jnp.array([[1.0, 1.0, 0.0]]))
      Array([2.], dtype=float32)
    """
    signs = _as_signs(signs)
    weights = _as_labeled(labeled, signs)
    if exclude_ties:
        weights = weights * jnp.abs(signs)
    return jnp.sum(weights, axis=-1)


def _mean_over_counted(
    values: jax.Array, weights: jax.Array, normalizer: jax.Array | None
) -> jax.Array:
    """Sum of weights * values over the last axis divided by the count (or normalizer)."""
    total = jnp.sum(jnp.where(weights != 0, weights * values, 0.0), axis=-1)
    counts = jnp.sum(weights, axis=-1) if normalizer is None else jnp.asarray(normalizer)
    return total / jnp.where(counts > 0, counts, 1.0).astype(jnp.float32)


def _resolve_margins(
    margins: jax.Array, num_pairs: int, lengths: jax.Array | None, loss_type: str
) -> jax.Array:
    margins = jnp.asarray(margins, jnp.float32)
    if margins.shape == (num_pairs,):
        if lengths is not None:
            raise ValueError(
                "lengths normalise per-response log-ratios: pass margins as the [2B] "
                "per-response log-ratios (rows a then b) together with lengths [2B]."
            )
        if loss_type == "sigmoid_norm":
            raise ValueError(
                "loss_type='sigmoid_norm' needs the [2B] per-response log-ratios as margins and "
                "their response lengths [2B]; got [B] pair margins."
            )
        return margins
    if margins.shape == (2 * num_pairs,):
        if loss_type == "sigmoid_norm" and lengths is None:
            raise ValueError("loss_type='sigmoid_norm' needs lengths [2B] (response token counts).")
        return pair_margins(margins, None, lengths)
    raise ValueError(
        f"margins must be [B] = ({num_pairs},) pair margins or [2B] = ({2 * num_pairs},) "
        f"per-response log-ratios (B from signs [K, B]), got shape {margins.shape}."
    )


def dpo_losses(
    margins: jax.Array,
    signs: jax.Array,
    labeled: jax.Array | None = None,
    beta: float = 0.1,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
    lengths: jax.Array | None = None,
    exclude_ties: bool = False,
    normalizer: jax.Array | None = None,
) -> jax.Array:
    r"""K DPO-family losses, one per objective, from shared pair margins.

    :math:`L_k = \frac{1}{n_k}\sum_i c_{k,i}\,\ell(s_{k,i}\delta_i)` with :math:`\ell` the
    ``loss_type`` (see the module docstring for the formulas and TRL's names),
    :math:`c_{k,i}` = labeled (times :math:`|s_{k,i}|` with ``exclude_ties``),
    :math:`n_k = \max(\sum_i c_{k,i}, 1)` or ``normalizer``. Ties (s = 0) give a constant loss
    and exactly zero gradient for every type; an objective without labeled pairs has loss 0.

    Margins come in one of two forms:

    * ``[B]``: pair margins :math:`\delta_i` (summed log-ratios, the DPO margin), used as they
      are (for ``ipo`` this is plain IPO on summed log-ratios);
    * ``[2B]``: per-response log-ratios :math:`r = \log\pi - \log\pi_{ref}` in batch layout
      (rows a then b); :math:`\delta = r_a - r_b`, or with ``lengths`` [2B]
      :math:`\delta = r_a/|y_a| - r_b/|y_b|`. ``sigmoid_norm`` requires this form with lengths;
      TRL's ``ipo`` is this form with lengths (log-ratios averaged over tokens).

    Args:
      margins: ``[B]`` pair margins or ``[2B]`` per-response log-ratios (see above).
      signs: ``[K, B]`` in {+1, -1, 0}: +1 when response a wins under objective k.
      labeled: ``[K, B]`` in {0, 1}: whether pair i is labeled for objective k (default all).
      beta: the DPO temperature (> 0).
      loss_type: ``"sigmoid"``, ``"hinge"``, ``"ipo"``, ``"robust"`` or ``"sigmoid_norm"``.
      label_smoothing: :math:`\epsilon` of the sigmoid (in [0, 0.5]) and robust (in [0, 0.5))
        losses.
      lengths: ``[2B]`` response lengths for length-normalised margins (with ``[2B]`` margins).
      exclude_ties: drop ties from the denominator of each mean.
      normalizer: ``[K]`` denominators replacing the per-objective counts (pass the whole
        batch's :func:`objective_counts` when summing micro-batch losses).

    Returns:
      ``[K]`` float32 losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.preference import dpo_losses
      >>> margins = jnp.array([2.0, -1.0])
      >>> signs = jnp.array([[1.0, 1.0], [-1.0, 0.0]])  # objective 2: b wins pair 1, pair 2 ties
      >>> dpo_losses(margins, signs, beta=0.5)  # tie: log 2 in objective 2's mean
      Array([0.64366937, 1.0032045 ], dtype=float32)
      >>> dpo_losses(margins, signs, labeled=jnp.array([[1.0, 1.0], [0.0, 0.0]]), beta=0.5)
      Array([0.64366937, 0.        ], dtype=float32)

    References:
      Rafailov et al., "Direct Preference Optimization", NeurIPS 2023; Azar et al. (IPO),
      AISTATS 2024; Zhao et al. (SLiC-HF), 2023; Chowdhury et al. (robust DPO), ICML 2024;
      Lambert et al. (Tülu 3, length-normalised DPO), 2024.
    """
    _check_loss_type(loss_type, label_smoothing)
    _check_beta(beta)
    signs = _as_signs(signs)
    labeled = _as_labeled(labeled, signs)
    delta = _resolve_margins(margins, signs.shape[1], lengths, loss_type)
    if normalizer is not None:
        normalizer = jnp.broadcast_to(jnp.asarray(normalizer, jnp.float32), signs.shape[:1])

    def one_objective(
        sign_row: jax.Array, labeled_row: jax.Array, norm: jax.Array | None
    ) -> jax.Array:
        values = _pairwise_loss(sign_row * delta, beta, loss_type, label_smoothing)
        weights = labeled_row * jnp.abs(sign_row) if exclude_ties else labeled_row
        return _mean_over_counted(values, weights, norm)

    if normalizer is None:
        return jax.vmap(lambda s, lab: one_objective(s, lab, None))(signs, labeled)
    return jax.vmap(one_objective)(signs, labeled, normalizer)


def amopo_losses(
    logps: jax.Array,
    lengths: jax.Array,
    signs: jax.Array,
    labeled: jax.Array | None = None,
    beta: float = 0.1,
    exclude_ties: bool = False,
    normalizer: jax.Array | None = None,
) -> jax.Array:
    r"""Static AMoPO: reference-free, length-normalised per-objective losses.

    .. math:: L_k = \operatorname{mean}_i\Big[-\log\sigma\Big(
       \frac{\beta}{|y_w|}\log\pi(y_w\mid x) - \frac{\beta}{|y_l|}\log\pi(y_l\mid x)\Big)\Big]

    with winner w and loser l of pair i under objective k read from its sign (ties: log 2,
    zero gradient; unlabeled pairs excluded). The training loss is
    :math:`\sum_k w_k L_k` with the user weights (the static variant: fixed weights, no
    adaptive re-weighting).

    Args:
      logps: ``[2B]`` policy summed log-probs (rows a then b).
      lengths: ``[2B]`` response token counts.
      signs: ``[K, B]`` signs; labeled: ``[K, B]`` label mask (default all).
      beta: temperature.
      exclude_ties: drop ties from the denominators.
      normalizer: ``[K]`` denominators (see :func:`dpo_losses`).

    Returns:
      ``[K]`` float32 losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.preference import amopo_losses
      >>> logps = jnp.array([-2.0, -9.0])  # a: 2 tokens, b: 3 tokens
      >>> amopo_losses(logps, jnp.array([2.0, 3.0]), jnp.array([[1.0], [-1.0]]), beta=1.0)
      Array([0.126928, 2.126928], dtype=float32)

    References:
      Liu et al., "AMoPO: Adaptive Multi-objective Preference Optimization without Reward
      Models and Reference Models", ACL 2025 (the static, reference-free, length-normalised
      form used as a baseline by RACO).
    """
    return dpo_losses(
        logps,
        signs,
        labeled,
        beta=beta,
        loss_type="sigmoid_norm",
        lengths=lengths,
        exclude_ties=exclude_ties,
        normalizer=normalizer,
    )


def modpo_loss(
    margins: jax.Array,
    signs: jax.Array,
    reward_margins: jax.Array,
    weights: jax.Array,
    target: int = 0,
    labeled: jax.Array | None = None,
    beta: float = 0.1,
    exclude_ties: bool = False,
    normalizer: jax.Array | None = None,
) -> jax.Array:
    r"""MODPO's loss for one target objective, with margin rewards for the others.

    .. math:: L = \operatorname{mean}_i\Big[-\log\sigma\Big(s_i\Big(\frac{\beta}{w_t}\delta_i
       - \frac{1}{w_t}\sum_{j\ne t} w_j\,(r_j(x, y_a) - r_j(x, y_b))\Big)\Big)\Big]

    with :math:`\delta_i` the DPO margin (policy minus reference log-ratios, a minus b),
    :math:`s_i` the target objective's sign and :math:`r_j` the margin reward models of the
    other objectives (e.g. implicit DPO rewards of single-objective models). Ties: log 2 and
    zero gradient; unlabeled pairs excluded.

    Args:
      margins: ``[B]`` pair margins :math:`\delta` (or ``[2B]`` per-response log-ratios).
      signs: ``[B]`` signs of the target objective (or ``[K, B]``: row ``target`` is used).
      reward_margins: ``[K - 1, B]`` reward differences :math:`r_j(a) - r_j(b)` of the other
        objectives in order, or ``[K, B]`` with row ``target`` ignored.
      weights: ``[K]`` objective weights; :math:`w_t` must be positive.
      target: index of the target objective.
      labeled: ``[B]`` (or ``[K, B]``) label mask of the target objective.
      beta: temperature.
      exclude_ties: drop ties from the denominator.
      normalizer: scalar denominator (see :func:`dpo_losses`).

    Returns:
      The scalar float32 loss.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.preference import modpo_loss
      >>> loss = modpo_loss(jnp.array([1.0]), jnp.array([1.0]), jnp.array([[2.0]]),
      ...                   jnp.array([0.5, 0.5]), beta=1.0)
      >>> round(float(loss), 6)  # -log sigmoid(1/0.5 - 0.5 * 2 / 0.5) = log 2
      0.693147

    References:
      Zhou et al., "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct
      Preference Optimization" (MODPO), Findings of ACL 2024, https://arxiv.org/abs/2310.03708.
    """
    _check_beta(beta)
    weights = jnp.asarray(weights, jnp.float32)
    if weights.ndim != 1 or weights.shape[0] < 2:
        raise ValueError(f"weights must be [K] with K >= 2, got shape {weights.shape}.")
    num_objectives = weights.shape[0]
    if not 0 <= target < num_objectives:
        raise ValueError(f"target must index one of the {num_objectives} objectives, got {target}.")
    try:
        w_target = float(weights[target])
    except jax.errors.ConcretizationTypeError:
        w_target = None
    if w_target is not None and not w_target > 0:
        raise ValueError(f"weights[target] must be positive for MODPO, got {w_target}.")
    signs = jnp.asarray(signs, jnp.float32)
    if signs.ndim == 2:
        signs = signs[target]
    if labeled is not None:
        labeled = jnp.asarray(labeled, jnp.float32)
        if labeled.ndim == 2:
            labeled = labeled[target]
    reward_margins = jnp.asarray(reward_margins, jnp.float32)
    others = [j for j in range(num_objectives) if j != target]
    if reward_margins.ndim != 2 or reward_margins.shape[1] != signs.shape[-1]:
        raise ValueError(
            f"reward_margins must be [K - 1, B] or [K, B] with B = {signs.shape[-1]}, got shape "
            f"{reward_margins.shape}."
        )
    if reward_margins.shape[0] == num_objectives:
        reward_margins = reward_margins[jnp.array(others)]
    elif reward_margins.shape[0] != num_objectives - 1:
        raise ValueError(
            f"reward_margins must have K - 1 = {num_objectives - 1} or K = {num_objectives} rows "
            f"(K = len(weights)), got {reward_margins.shape[0]}."
        )
    delta = _resolve_margins(margins, signs.shape[-1], None, "sigmoid")
    w_others = weights[jnp.array(others)]
    combined = (beta * delta - w_others @ reward_margins) / weights[target]
    # beta is folded into `combined`, so the sigmoid loss is applied with temperature 1.
    losses = dpo_losses(
        combined,
        signs[None],
        None if labeled is None else labeled[None],
        beta=1.0,
        exclude_ties=exclude_ties,
        normalizer=normalizer,
    )
    return losses[0]
