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
        rollout_log_probs=lp - ratios.log(),
    )


@pytest.mark.parametrize(
    ("cfg", "prop"),
    [
        (ObjectiveConfig(name="clip_cov", clip_cov_lb=0.1), "unit_ratio_is_policy_gradient"),
        (ObjectiveConfig(name="kl_cov", kl_cov_coef=10.0), "gradient_follows_advantage_sign"),
        (
            ObjectiveConfig(name="sapo", sapo_adv_condition="any", sapo_tau=5.0, sapo_w=10.0),
            "gradient_follows_advantage_sign",
        ),
        (ObjectiveConfig(name="sapo", sapo_tau=1.5), "unit_ratio_is_policy_gradient"),
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


@pytest.mark.parametrize("knobs", [{"sapo_token_selection": "all"}, {"sapo_w": 5.0, "sapo_tau": 1.5}])
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
        batch, ObjectiveConfig(name="sapo", sapo_w=0.0, sapo_tau=tau), ObjectiveConfig()
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
        batch, ObjectiveConfig(name="sapo", sapo_tau=tau, sapo_w=3.0), ObjectiveConfig(), old_log_probs=old
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
    sapo = [
        abs(_grad("sapo", lr, sapo_w=1.0, sapo_tau=0.8)) for lr in (-1.0, -5.0, -15.0)
    ]  # w = 1 for clarity
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
        assert abs(_grad("cispo", lr, adv)) == pytest.approx(min(float(torch.exp(torch.tensor(lr))), 5.0))
    # the weight is min(r, cispo_max): past 5 the gradient is -5 A; no lower bound by default
    assert _grad("cispo", 2.0, 1.0) == pytest.approx(-5.0)
    assert _grad("cispo", -1.0, 1.0) == pytest.approx(-torch.exp(torch.tensor(-1.0)).item())
    assert _grad("cispo", -1.0, 1.0, cispo_min=0.8) == pytest.approx(-0.8)


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


def test_llds_gradient_does_not_vanish_as_ratio_collapses() -> None:
    llds = [abs(_grad("llds", lr, llds_coef=1.0)) for lr in (-1.0, -5.0, -15.0)]
    assert all(g >= 1.0 for g in llds)  # A r + lambda (one token, N = 1)
    assert _grad("llds", 0.5, 1.0, llds_coef=1.0) == _grad("grpo", 0.5, 1.0)  # r > 1: hinge off
    assert _grad("llds", -1.0, -1.0, llds_coef=1.0) == _grad("grpo", -1.0, -1.0)  # A < 0: no penalty


@settings(max_examples=60, deadline=None)
@given(batch=objective_batches())
def test_llds_with_zero_coef_and_tis_without_mismatch_are_grpo(batch) -> None:
    grpo = evaluate(get_objective("grpo"), ObjectiveConfig(), batch)
    llds = evaluate(get_objective("llds"), ObjectiveConfig(name="llds", llds_coef=0.0), batch)
    tis = evaluate(
        get_objective("tis"), ObjectiveConfig(name="tis"), batch, rollout_log_probs=batch.old_log_probs
    )
    for other in (llds, tis):
        assert torch.equal(other[0], grpo[0]) and torch.equal(other[1], grpo[1])


@settings(max_examples=60, deadline=None)
@given(batch=objective_batches())
def test_mis_with_a_band_holding_every_ratio_is_untruncated_tis(batch) -> None:
    mis = evaluate(get_objective("mis"), ObjectiveConfig(name="mis", mis_low=1e-12, mis_high=1e12), batch)
    tis = evaluate(get_objective("tis"), ObjectiveConfig(name="tis", tis_cap=1e12), batch)
    assert torch.equal(mis[0], tis[0]) and torch.equal(mis[1], tis[1])


def test_tis_weight_is_capped_and_detached() -> None:
    lp, old, a, m = _single_token(0.0)
    for log_rho, weight in [(5.0, 2.0), (-1.0, float(torch.exp(torch.tensor(-1.0))))]:
        rollout = old - log_rho
        loss, _ = get_objective("tis")(lp, old, a, m, rollout_log_probs=rollout)
        (g,) = torch.autograd.grad(loss, lp)
        assert float(g) == pytest.approx(-weight)  # weight * -A * r, r = 1


def test_rollout_log_probs_are_validated() -> None:
    lp, old, a, m = _single_token(0.0)
    with pytest.raises(ValueError, match=r"^rollout_log_probs: expected shape"):
        get_objective("tis")(lp, old, a, m, rollout_log_probs=torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"^rollout_log_probs: contains non-finite"):
        get_objective("grpo")(lp, old, a, m, rollout_log_probs=torch.full((1, 1), float("nan")))


@pytest.mark.parametrize("log_ratio", [-12.0, -20.0, -30.0])
def test_sapo_k3_penalty_keeps_its_gradient_on_collapsed_tokens(log_ratio: float) -> None:
    """k3 = r - 1 - log r: d/d log pi = r - 1, about -1 for r -> 0 (a clamp would give 0)."""
    g = _grad("sapo", log_ratio, sapo_w=1.0, sapo_kl="k3")
    r = float(torch.exp(torch.tensor(max(log_ratio, -20.0))))
    assert g == pytest.approx(-r + (r - 1.0), abs=1e-6)  # surrogate -A r plus penalty r - 1


@pytest.mark.parametrize("name", ["gspo", "gspo_token", "soft_adaptive_gate"])
def test_per_sequence_objectives_default_to_their_papers_aggregation(name: str) -> None:
    lp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, 0.0, 0.0]], dtype=torch.float64)
    old = lp - 0.1
    adv = torch.tensor([1.0, -0.5], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    assert ObjectiveConfig(name=name).agg_mode == "seq-mean-token-mean"
    default, _ = get_objective(name)(lp, old, adv, mask)
    seq, _ = get_objective(name)(
        lp, old, adv, mask, config=ObjectiveConfig(name=name, loss_agg_mode="seq-mean-token-mean")
    )
    tok, _ = get_objective(name)(
        lp, old, adv, mask, config=ObjectiveConfig(name=name, loss_agg_mode="token-mean")
    )
    assert torch.equal(default, seq) and not torch.isclose(default, tok)
