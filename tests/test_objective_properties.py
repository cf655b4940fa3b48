"""Every registered objective through the shipped property suite, plus method-specific properties."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.aggregation import AGG_MODES
from testbed.objectives import ObjectiveConfig, get_objective, list_objectives
from testbed.testing import PROPERTIES, ObjectiveBatch, check_objective, evaluate, objective_batches

# Properties a built-in objective does not have, by design, with the reason.
KNOWN_EXCEPTIONS = {
    # Clip-Cov detaches its selected tokens even on-policy.
    "clip_cov": {"unit_ratio_is_policy_gradient"},
    # KL-Cov's |log r| term pulls a selected token back toward pi_old whatever the sign of A.
    "kl_cov": {"gradient_follows_advantage_sign"},
}


@pytest.mark.parametrize("name", list_objectives())
def test_property_suite(name: str) -> None:
    check_objective(name, skip=KNOWN_EXCEPTIONS.get(name, ()))


def _fixed_batch() -> ObjectiveBatch:
    """Two responses, r = [[1.5, 0.5], [1.1, 4.0]], A = [+1, -1]."""
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], dtype=torch.float64)
    ratios = torch.tensor([[1.5, 0.5], [1.1, 4.0]], dtype=torch.float64)
    return ObjectiveBatch(
        log_probs=lp,
        old_log_probs=lp - ratios.log(),
        advantages=torch.tensor([1.0, -1.0], dtype=torch.float64),
        mask=torch.ones(2, 2, dtype=torch.float64),
        ref_log_probs=lp,
        group_ids=torch.tensor([0, 1]),
    )


@pytest.mark.parametrize(
    ("cfg", "prop"),
    [
        (ObjectiveConfig(name="clip_cov", clip_cov_lb=0.1), "unit_ratio_is_policy_gradient"),
        (ObjectiveConfig(name="kl_cov", kl_cov_coef=10.0), "gradient_follows_advantage_sign"),
        (
            ObjectiveConfig(name="sapo", sapo_adv_condition="any", tau=5.0, w=10.0),
            "gradient_follows_advantage_sign",
        ),
        (ObjectiveConfig(name="sapo", tau=1.5), "unit_ratio_is_policy_gradient"),
        (ObjectiveConfig(name="sapo", sapo_token_selection="all"), "unit_ratio_is_policy_gradient"),
    ],
)
def test_skipped_properties_really_fail(cfg: ObjectiveConfig, prop: str) -> None:
    """Where a property is skipped below, the objective really lacks it (the skip hides nothing)."""
    with pytest.raises(AssertionError):
        PROPERTIES[prop](get_objective(cfg.name), cfg, _fixed_batch())


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("name", ["grpo", "sapo", "gspo"])
def test_property_suite_every_aggregation_with_reference_kl(name: str, mode: str) -> None:
    cfg = ObjectiveConfig(name=name, loss_agg_mode=mode, ref_kl_coef=0.1)
    check_objective(name, cfg, skip={"gradient_follows_advantage_sign"}, max_examples=25)


@pytest.mark.parametrize(
    "knobs",
    [
        {"sapo_adv_condition": "pos"},
        {"sapo_kl": "k2"},
        {"sapo_kl": "k3"},
        {"sapo_norm": "penalized"},
    ],
)
def test_property_suite_sapo_ablations(knobs: dict) -> None:
    check_objective("sapo", ObjectiveConfig(name="sapo", **knobs), max_examples=25)


@pytest.mark.parametrize("knobs", [{"sapo_token_selection": "all"}, {"w": 5.0, "tau": 1.5}])
def test_sapo_penalty_acts_on_policy_when_it_selects_tokens_with_r_at_1(knobs: dict) -> None:
    """With tau >= 1 or every token selected, the k1 penalty's gradient is there at r = 1 too."""
    cfg = ObjectiveConfig(name="sapo", **knobs)
    check_objective("sapo", cfg, skip={"unit_ratio_is_policy_gradient"}, max_examples=25)


def _paired(batch, cfg_a: ObjectiveConfig, cfg_b: ObjectiveConfig, **replace):
    a = evaluate(get_objective(cfg_a.name), cfg_a, batch, **replace)
    b = evaluate(get_objective(cfg_b.name), cfg_b, batch, **replace)
    return a, b


@settings(max_examples=60, deadline=None)
@given(batch=objective_batches(), tau=st.floats(0.05, 2.0))
def test_sapo_equals_grpo_when_w_is_zero(batch, tau: float) -> None:
    (l_s, g_s, _), (l_g, g_g, _) = _paired(
        batch, ObjectiveConfig(name="sapo", w=0.0, tau=tau), ObjectiveConfig()
    )
    assert torch.equal(l_s, l_g)
    assert torch.equal(g_s, g_g)


@settings(max_examples=60, deadline=None)
@given(batch=objective_batches(max_abs_log_ratio=3.0))
def test_sapo_equals_grpo_when_no_eligible_token_is_below_tau(batch) -> None:
    tau = 0.8
    # Lift every eligible (A >= 0) token above tau: log r >= 0 there.
    lift = (batch.advantages[:, None] >= 0) & (batch.log_probs < batch.old_log_probs)
    old = torch.where(lift, 2 * batch.log_probs - batch.old_log_probs, batch.old_log_probs)
    (l_s, g_s, m_s), (l_g, g_g, _) = _paired(
        batch, ObjectiveConfig(name="sapo", tau=tau, w=3.0), ObjectiveConfig(), old_log_probs=old
    )
    assert m_s["sapo_penalty"] == 0.0
    assert torch.equal(l_s, l_g)
    assert torch.equal(g_s, g_g)


def _single_token(log_ratio: float, adv: float = 1.0):
    lp = torch.tensor([[-1.0]], dtype=torch.float64, requires_grad=True)
    old = lp.detach() - log_ratio
    return lp, old, torch.tensor([adv], dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)


def _grad(name: str, log_ratio: float, adv: float = 1.0, **cfg) -> float:
    lp, old, a, m = _single_token(log_ratio, adv)
    loss, _ = get_objective(name)(lp, old, a, m, config=ObjectiveConfig(name=name, **cfg))
    (g,) = torch.autograd.grad(loss, lp)
    return float(g)


def test_as_ratio_vanishes_grpo_gradient_vanishes_but_sapo_does_not() -> None:
    grpo = [abs(_grad("grpo", lr)) for lr in (-1.0, -5.0, -15.0)]
    sapo = [abs(_grad("sapo", lr, w=1.0, tau=0.8)) for lr in (-1.0, -5.0, -15.0)]  # w = 1 for clarity
    assert grpo[0] > grpo[1] > grpo[2] and grpo[2] < 1e-6
    # SAPO's gradient on the token is A r + w (one response, N = 1): bounded below by w.
    assert all(g >= 1.0 for g in sapo)
    assert sapo[2] == pytest.approx(1.0 + torch.exp(torch.tensor(-15.0)).item())


@settings(max_examples=60, deadline=None)
@given(batch=objective_batches())
def test_gspo_token_variant_equals_sequence_variant_in_value(batch) -> None:
    for mode in AGG_MODES:
        cfg = ObjectiveConfig(name="gspo", loss_agg_mode=mode)
        (l_seq, _, _), (l_tok, _, _) = _paired(batch, cfg, dataclasses.replace(cfg, name="gspo_token"))
        assert torch.allclose(l_seq, l_tok, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(batch=objective_batches(), c=st.floats(1.5, 10.0))
def test_dual_clip_bounds_negative_advantage_loss(batch, c: float) -> None:
    """Per negative token, the dual-clip loss is at most -c A (token-sum over one token each)."""
    cfg = ObjectiveConfig(name="dual_clip", dual_clip_c=c, loss_agg_mode="seq-mean-token-sum")
    neg = batch.advantages < 0
    if not neg.any():
        return
    mask = batch.mask * neg[:, None]
    loss, _, _ = evaluate(get_objective("dual_clip"), cfg, batch, mask=mask)
    n_seq = int((mask.sum(-1) > 0).sum())
    bound = (-c * batch.advantages[:, None] * mask).sum() / max(n_seq, 1)
    assert loss <= bound + 1e-9


def test_dual_clip_gradient_vanishes_beyond_c() -> None:
    assert _grad("dual_clip", log_ratio=2.0, adv=-1.0, dual_clip_c=3.0) == 0.0  # r = e^2 > 3
    assert _grad("grpo", log_ratio=2.0, adv=-1.0) > 0.0


@settings(max_examples=60, deadline=None)
@given(batch=objective_batches(), delta=st.floats(1.5, 10.0))
def test_two_sided_clip_equals_dual_clip_with_c_delta(batch, delta: float) -> None:
    (l_t, g_t, _), (l_d, g_d, _) = _paired(
        batch,
        ObjectiveConfig(name="two_sided_clip", two_sided_delta=delta),
        ObjectiveConfig(name="dual_clip", dual_clip_c=delta),
    )
    assert torch.allclose(l_t, l_d, rtol=1e-9, atol=1e-12)
    assert torch.allclose(g_t, g_d, rtol=1e-9, atol=1e-12)


def test_cispo_keeps_gradient_on_clipped_tokens() -> None:
    for lr, adv in [(1.0, 1.0), (-1.0, -1.0), (-10.0, 1.0)]:
        assert _grad("grpo", lr, adv) == 0.0 or abs(lr) == 10.0
        assert abs(_grad("cispo", lr, adv)) > 0.5
    # the weight is clip(r): past 1 + eps_high the gradient is -(1 + eps_high) A
    assert _grad("cispo", 1.0, 1.0) == pytest.approx(-1.2)


def test_gppo_keeps_bounded_gradient_where_ppo_clips() -> None:
    assert _grad("grpo", 1.0, 1.0) == 0.0
    assert _grad("gppo", 1.0, 1.0) == pytest.approx(-1.2)
    assert _grad("gppo", -1.0, -1.0) == pytest.approx(0.8)


@settings(max_examples=60, deadline=None)
@given(batch=objective_batches(), eps=st.floats(0.0, 0.9))
def test_clip_higher_with_equal_bounds_is_ppo_clip(batch, eps: float) -> None:
    """grpo with eps_low == eps_high == eps equals PPO's formula written out by hand."""
    loss, grad, _ = evaluate(get_objective("grpo"), ObjectiveConfig(eps_low=eps, eps_high=eps), batch)
    lp = batch.log_probs.clone().requires_grad_(True)
    r = torch.exp((lp - batch.old_log_probs).clamp(-20, 20))
    a = batch.advantages[:, None]
    ppo = -torch.min(r * a, torch.clamp(r, 1 - eps, 1 + eps) * a)
    expected = (ppo * batch.mask).sum() / batch.mask.sum().clamp(min=1)
    (g,) = torch.autograd.grad(expected, lp)
    assert torch.allclose(loss, expected.detach(), rtol=1e-9, atol=1e-12)
    assert torch.allclose(grad, g, rtol=1e-9, atol=1e-12)


def test_clip_higher_lets_positive_tokens_rise_further() -> None:
    lr = float(torch.log(torch.tensor(1.25)))
    assert _grad("grpo", lr, 1.0) == 0.0
    assert _grad("grpo", lr, 1.0, eps_high=0.28) < 0.0
