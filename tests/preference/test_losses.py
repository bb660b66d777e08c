"""DPO-family losses, AMoPO, MODPO, metrics and the batch contract against float64 NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raco_jax.preference import (
    LOSS_TYPES,
    PreferenceBatch,
    amopo_losses,
    dpo_losses,
    make_batch,
    modpo_loss,
    objective_counts,
    pair_margins,
    preference_metrics,
    split_pairs,
    swap_responses,
    validate_batch,
)


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _np_pairwise(u, beta, loss_type, eps):
    z = beta * u
    if loss_type in ("sigmoid", "sigmoid_norm"):
        return -(1 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)
    if loss_type == "hinge":
        return np.maximum(0.0, 1.0 - z)
    if loss_type == "ipo":
        return (u - 1.0 / (2.0 * beta)) ** 2
    return (-(1 - eps) * _log_sigmoid(z) + eps * _log_sigmoid(-z)) / (1 - 2 * eps)


def _np_dpo(margins, signs, labeled, beta, loss_type, eps=0.0, exclude_ties=False):
    margins = np.asarray(margins, np.float64)
    out = []
    for s, lab in zip(np.asarray(signs, np.float64), np.asarray(labeled, np.float64), strict=True):
        w = lab * np.abs(s) if exclude_ties else lab
        values = _np_pairwise(s * margins, beta, loss_type, eps)
        n = w.sum()
        out.append((w * values).sum() / n if n > 0 else 0.0)
    return np.array(out)


def _case(seed, k=3, b=6):
    rng = np.random.default_rng(seed)
    policy = rng.normal(-20.0, 5.0, size=2 * b)
    ref = rng.normal(-20.0, 5.0, size=2 * b)
    lengths = rng.integers(1, 30, size=2 * b).astype(np.float64)
    signs = rng.choice([-1.0, 0.0, 1.0], size=(k, b))
    labeled = (rng.random((k, b)) < 0.8).astype(np.float64)
    labeled[-1] = 0.0  # an objective with no labeled pair
    return policy, ref, lengths, signs, labeled


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "robust"])
@pytest.mark.parametrize("exclude_ties", [False, True])
def test_summed_margin_losses_match_numpy(loss_type, exclude_ties):
    policy, ref, _, signs, labeled = _case(0)
    margins = (policy[:6] - ref[:6]) - (policy[6:] - ref[6:])
    eps = 0.2 if loss_type in ("sigmoid", "robust") else 0.0
    ours = dpo_losses(
        jnp.asarray(margins, jnp.float32),
        signs,
        labeled,
        beta=0.1,
        loss_type=loss_type,
        label_smoothing=eps,
        exclude_ties=exclude_ties,
    )
    ref_losses = _np_dpo(margins, signs, labeled, 0.1, loss_type, eps, exclude_ties)
    np.testing.assert_allclose(np.asarray(ours), ref_losses, rtol=1e-6, atol=1e-6)
    assert float(ours[-1]) == 0.0


@pytest.mark.parametrize("loss_type", ["sigmoid_norm", "ipo"])
def test_length_normalised_losses_match_numpy(loss_type):
    policy, ref, lengths, signs, labeled = _case(1)
    ratios = (policy - ref) / lengths
    margins = ratios[:6] - ratios[6:]
    ours = dpo_losses(
        jnp.asarray(policy - ref, jnp.float32),
        signs,
        labeled,
        beta=2.0,
        loss_type=loss_type,
        lengths=lengths,
    )
    np.testing.assert_allclose(
        np.asarray(ours), _np_dpo(margins, signs, labeled, 2.0, loss_type), rtol=1e-6, atol=1e-6
    )
    assert np.allclose(pair_margins(policy, ref, lengths), margins, atol=1e-5)


def test_amopo_matches_numpy():
    policy, _, lengths, signs, labeled = _case(2)
    avg = policy / lengths
    beta = 0.5
    ref = []
    for s, lab in zip(signs, labeled, strict=True):
        winner_minus_loser = s * (avg[:6] - avg[6:])
        values = -_log_sigmoid(beta * winner_minus_loser)
        ref.append((lab * values).sum() / max(lab.sum(), 1.0))
    ours = amopo_losses(jnp.asarray(policy, jnp.float32), lengths, signs, labeled, beta=beta)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", [0, 2])
@pytest.mark.parametrize("full_rows", [False, True])
def test_modpo_matches_numpy(target, full_rows):
    policy, ref, _, signs, labeled = _case(3)
    rng = np.random.default_rng(3)
    rewards = rng.normal(size=(3, 12))  # r_j(x, y) for the 3 objectives, a rows then b rows
    reward_margins = rewards[:, :6] - rewards[:, 6:]
    weights = np.array([0.5, 0.2, 0.3])
    beta = 0.1
    delta = (policy[:6] - ref[:6]) - (policy[6:] - ref[6:])
    others = [j for j in range(3) if j != target]
    inner = (beta * delta - weights[others] @ reward_margins[others]) / weights[target]
    s, lab = signs[target], labeled[target]
    values = -_log_sigmoid(s * inner)
    expected = (lab * values).sum() / max(lab.sum(), 1.0)
    given_margins = reward_margins if full_rows else reward_margins[others]
    ours = modpo_loss(
        jnp.asarray(delta, jnp.float32),
        signs,
        given_margins,
        weights,
        target=target,
        labeled=labeled,
        beta=beta,
    )
    np.testing.assert_allclose(float(ours), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_ties_and_unlabeled_pairs_have_zero_gradient(loss_type):
    rng = np.random.default_rng(4)
    b = 5
    ratios = jnp.asarray(rng.normal(size=2 * b), jnp.float32)
    lengths = jnp.asarray(rng.integers(1, 9, size=2 * b), jnp.float32)
    signs = jnp.array([[0.0, 1.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, -1.0, -1.0]])
    labeled = jnp.array([[1.0, 1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    eps = 0.1 if loss_type in ("sigmoid", "robust", "sigmoid_norm") else 0.0
    kw = dict(beta=0.3, loss_type=loss_type, label_smoothing=eps, lengths=lengths)

    def losses(r):
        return dpo_losses(r, signs, labeled, **kw)

    jac = np.asarray(jax.jacobian(losses)(ratios))  # [K, 2B]
    for k in range(2):
        for i in range(b):
            zero = float(signs[k, i]) == 0.0 or float(labeled[k, i]) == 0.0
            if zero:
                assert jac[k, i] == 0.0 and jac[k, b + i] == 0.0, (k, i)
    # a tie contributes a constant to the mean
    tie_value = _np_pairwise(0.0, 0.3, loss_type, eps)
    only_ties = dpo_losses(ratios, jnp.zeros((1, b)), None, **kw)
    np.testing.assert_allclose(float(only_ties[0]), tie_value, rtol=1e-6)


def test_unlabeled_pairs_are_excluded_from_the_mean_and_ties_optionally():
    margins = jnp.array([1.0, -2.0, 3.0])
    signs = jnp.array([[1.0, 0.0, -1.0]])
    labeled = jnp.array([[1.0, 1.0, 0.0]])
    loss = dpo_losses(margins, signs, labeled, beta=1.0)
    expected = (-_log_sigmoid(1.0) + np.log(2.0)) / 2
    np.testing.assert_allclose(float(loss[0]), expected, rtol=1e-6)
    loss_no_ties = dpo_losses(margins, signs, labeled, beta=1.0, exclude_ties=True)
    np.testing.assert_allclose(float(loss_no_ties[0]), -_log_sigmoid(1.0), rtol=1e-6)
    assert float(dpo_losses(margins, signs, jnp.zeros((1, 3)))[0]) == 0.0
    grads = jax.grad(lambda m: dpo_losses(m, signs, jnp.zeros((1, 3)))[0])(margins)
    assert np.all(np.asarray(grads) == 0.0)


def test_normalizer_makes_micro_batch_losses_add_up():
    policy, ref, _, signs, labeled = _case(5, b=8)
    margins = jnp.asarray(pair_margins(policy, ref))
    full = dpo_losses(margins, signs, labeled)
    counts = objective_counts(signs, labeled)
    parts = sum(
        dpo_losses(
            margins[i : i + 2], signs[:, i : i + 2], labeled[:, i : i + 2], normalizer=counts
        )
        for i in range(0, 8, 2)
    )
    np.testing.assert_allclose(np.asarray(parts), np.asarray(full), rtol=1e-6, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    loss_type=st.sampled_from(LOSS_TYPES),
    beta=st.floats(0.01, 2.0),
)
def test_swapping_responses_and_signs_leaves_losses_unchanged(seed, loss_type, beta):
    policy, ref, lengths, signs, labeled = _case(seed, k=2, b=4)
    ratios = jnp.asarray(policy - ref, jnp.float32)
    swapped = jnp.concatenate([ratios[4:], ratios[:4]])
    swapped_lengths = np.concatenate([lengths[4:], lengths[:4]])
    kw = dict(beta=beta, loss_type=loss_type)
    a = dpo_losses(ratios, signs, labeled, lengths=lengths, **kw)
    b = dpo_losses(swapped, -signs, labeled, lengths=swapped_lengths, **kw)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # and permuting the pairs changes nothing either
    perm = np.random.default_rng(seed).permutation(4)
    rows = np.concatenate([perm, perm + 4])
    c = dpo_losses(ratios[rows], signs[:, perm], labeled[:, perm], lengths=lengths[rows], **kw)
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(margin=st.floats(-50, 50), beta=st.floats(0.01, 5.0), eps=st.floats(0.0, 0.49))
def test_sigmoid_label_smoothing_interpolates_between_the_two_directions(margin, beta, eps):
    m = jnp.array([margin], jnp.float32)
    up = dpo_losses(m, jnp.ones((1, 1)), beta=beta)[0]
    down = dpo_losses(m, -jnp.ones((1, 1)), beta=beta)[0]
    smooth = dpo_losses(m, jnp.ones((1, 1)), beta=beta, label_smoothing=eps)[0]
    eps = float(np.float32(eps))  # the loss is float32: a tiny eps (say 1e-246) is 0 there
    np.testing.assert_allclose(float(smooth), (1 - eps) * float(up) + eps * float(down), rtol=1e-5)


def test_loss_argument_errors():
    m, s = jnp.zeros(2), jnp.ones((1, 2))
    with pytest.raises(ValueError, match="loss_type"):
        dpo_losses(m, s, loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_losses(m, s, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_losses(m, s, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="sigmoid_norm"):
        dpo_losses(m, s, loss_type="sigmoid_norm")
    with pytest.raises(ValueError, match="margins"):
        dpo_losses(jnp.zeros(3), s)
    with pytest.raises(ValueError, match=r"signs must be \[K, B\]"):
        dpo_losses(m, jnp.ones(2))
    with pytest.raises(ValueError, match="labeled"):
        dpo_losses(m, s, labeled=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="beta"):
        dpo_losses(m, s, beta=0.0)
    with pytest.raises(ValueError, match="weights"):
        modpo_loss(m, s[0], jnp.zeros((1, 2)), jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="reward_margins"):
        modpo_loss(m, s[0], jnp.zeros((3, 2)), jnp.array([0.5, 0.5]))


def test_metrics_resolve_chosen_by_sign_and_skip_ties():
    logps = np.array([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0])  # a rows, then b rows
    ref = np.array([-1.5, -2.0, -2.0, -4.0, -4.0, -6.5])
    signs = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0]])
    labeled = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    m = preference_metrics(logps, signs, labeled, ref, beta=2.0, objectives=("q", "v"))
    r = 2.0 * (logps - ref)  # rewards: a = [1, 0, -2], b = [0, -2, 1]
    ra, rb = r[:3], r[3:]
    # objective q: pair 0 a wins, pair 1 b wins, pair 2 tie (excluded)
    np.testing.assert_allclose(float(m["rewards/q/chosen"]), (ra[0] + rb[1]) / 2)
    np.testing.assert_allclose(float(m["rewards/q/rejected"]), (rb[0] + ra[1]) / 2)
    np.testing.assert_allclose(float(m["rewards/q/accuracies"]), 0.5)  # pair 1: -2 < 0
    np.testing.assert_allclose(float(m["logps/q/chosen"]), (logps[0] + logps[4]) / 2)
    # objective v: pair 0 b wins, pair 1 unlabeled, pair 2 a wins
    np.testing.assert_allclose(
        float(m["rewards/v/margins"]), ((rb[0] - ra[0]) + (ra[2] - rb[2])) / 2
    )
    np.testing.assert_allclose(float(m["rewards/v/accuracies"]), 0.0)
    assert float(m["pairs/v/decisive"]) == 2.0
    np.testing.assert_allclose(float(m["rewards/accuracies"]), 0.25)  # pooled: 1 of 4


def _toy_batch():
    ids = np.arange(4 * 5).reshape(4, 5) % 7 + 1
    mask = np.ones((4, 5))
    loss_mask = np.zeros((4, 5))
    loss_mask[:, 3:] = 1
    return make_batch(ids, mask, loss_mask, [[1, -1], [0, 1]], labeled=[[1, 1], [1, 0]])


def test_batch_contract_and_validation():
    batch = _toy_batch()
    assert isinstance(batch, PreferenceBatch)
    assert batch.input_ids.dtype == np.int32 and batch.loss_mask.dtype == np.float32
    assert batch.num_pairs == 2 and batch.num_objectives == 2
    with pytest.raises(ValueError, match="input_ids"):
        make_batch(np.zeros((3, 5), int), np.ones((3, 5)), np.zeros((3, 5)), [[1]])
    with pytest.raises(ValueError, match="signs"):
        validate_batch(batch._replace(signs=np.ones((2, 3), np.float32)))
    with pytest.raises(ValueError, match="labeled must hold"):
        validate_batch(batch._replace(labeled=batch.labeled * 0.5))
    with pytest.raises(ValueError, match=r"loss_mask\[:, 0\]"):
        validate_batch(batch._replace(loss_mask=np.ones((4, 5), np.float32)))
    padded = batch._replace(attention_mask=np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="padding"):
        validate_batch(padded)
    with pytest.raises(ValueError, match="ref_logps"):
        validate_batch(batch._replace(ref_logps=np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="ref_logps must be finite"):
        validate_batch(batch._replace(ref_logps=np.array([0, np.nan, 0, 0], np.float32)))
    jax.jit(lambda b: b.signs.sum())(batch)  # a pytree


def test_split_pairs_and_swap_keep_pairs_together():
    batch = _toy_batch()._replace(ref_logps=np.arange(4.0, dtype=np.float32))
    micro = split_pairs(batch, 2)
    assert micro.input_ids.shape == (2, 2, 5) and micro.signs.shape == (2, 2, 1)
    np.testing.assert_array_equal(micro.input_ids[1], batch.input_ids[[1, 3]])
    np.testing.assert_array_equal(micro.ref_logps[1], [1.0, 3.0])
    np.testing.assert_array_equal(micro.labeled[1][:, 0], batch.labeled[:, 1])
    with pytest.raises(ValueError, match="divisible"):
        split_pairs(batch, 3)
    swapped = swap_responses(batch)
    np.testing.assert_array_equal(swapped.input_ids[:2], batch.input_ids[2:])
    np.testing.assert_array_equal(swapped.signs, -batch.signs)
