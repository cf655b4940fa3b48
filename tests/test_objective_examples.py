"""Each objective on one small batch whose loss is worked out by hand, token by token."""

from __future__ import annotations

import math

import pytest
import torch

from testbed.objectives import ObjectiveConfig, get_objective

# Two responses of two tokens; r = [[1.5, 0.5], [1.1, 4.0]], A = [+1, -1], eps = 0.2.
LOG_PROBS = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], dtype=torch.float64)
RATIOS = [[1.5, 0.5], [1.1, 4.0]]
OLD = LOG_PROBS - torch.log(torch.tensor(RATIOS, dtype=torch.float64))
ADV = torch.tensor([1.0, -1.0], dtype=torch.float64)
MASK = torch.ones(2, 2, dtype=torch.float64)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def gate(r: float, t: float) -> float:
    return (4 / t) * sigmoid(t * (r - 1))


S1, S2 = math.sqrt(1.5 * 0.5), math.sqrt(1.1 * 4.0)

# Per-token losses in row-major order, written from each paper's formula.
EXPECTED = {
    # -min(rA, clip(r)A): 1.5 clipped to 1.2; 0.5 unclipped; -1.1; 4.0 unclipped for A < 0
    "grpo": [-1.2, -0.5, 1.1, 4.0],
    "gppo": [-1.2, -0.5, 1.1, 4.0],
    "opsm": [-1.2, -0.5, 1.1, 4.0],  # row 2 has mean log(old/new) < 0 <= delta: kept
    # dual-clip bounds the A < 0 token at -c A = 3
    "dual_clip": [-1.2, -0.5, 1.1, 3.0],
    "two_sided_clip": [-1.2, -0.5, 1.1, 3.0],
    # -clip(r) A log pi
    # -min(r, 5) A log pi: no lower bound (MiniMax-M1, TRL)
    "cispo": [-1.5 * 1 * -1.0, -0.5 * 1 * -2.0, -1.1 * -1 * -0.5, -4.0 * -1 * -1.5],
    "reinforce": [1.0, 2.0, -0.5, -1.5],
    "soft_adaptive_gate": [-gate(1.5, 1.0), -gate(0.5, 1.0), gate(1.1, 1.05), gate(4.0, 1.05)],
    # sequence ratios sqrt(0.75) and sqrt(4.4): neither clipped in the direction of min
    "gspo": [-S1, -S1, S2, S2],
    "gspo_token": [-S1, -S1, S2, S2],
    # covariance (A - 0)(log pi + 1.25) = [0.25, -0.75, -0.75, 0.25]: k = 1, tied tokens 0 and 3
    "kl_cov": [-1.5 + math.log(1.5), -0.5, 1.1, 4.0 + math.log(4.0)],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_computed_token_mean(name: str) -> None:
    loss, _ = get_objective(name)(LOG_PROBS, OLD, ADV, MASK, config=ObjectiveConfig(name=name))
    assert float(loss) == pytest.approx(sum(EXPECTED[name]) / 4, rel=1e-9)


def test_hand_computed_sapo() -> None:
    # A >= 0 response only; its r = 0.5 token is <= tau: -log 0.5, normalised by its 2 tokens.
    cfg = ObjectiveConfig(name="sapo", sapo_w=1.0)
    loss, metrics = get_objective("sapo")(LOG_PROBS, OLD, ADV, MASK, config=cfg)
    penalty = math.log(2.0) / 2
    assert metrics["sapo_penalty"] == pytest.approx(penalty)
    assert float(loss) == pytest.approx(sum(EXPECTED["grpo"]) / 4 + 1.0 * penalty)
    assert metrics["pg_loss"] == pytest.approx(sum(EXPECTED["grpo"]) / 4)  # the surrogate alone
    assert metrics["sapo_penalized_frac"] == pytest.approx(0.25)


def test_hand_computed_sapo_penalized_norm_and_k3() -> None:
    cfg = ObjectiveConfig(name="sapo", sapo_norm="penalized", sapo_kl="k3", sapo_w=2.0)
    loss, metrics = get_objective("sapo")(LOG_PROBS, OLD, ADV, MASK, config=cfg)
    k3 = 0.5 - 1 - math.log(0.5)  # r - 1 - log r
    assert metrics["sapo_penalty"] == pytest.approx(k3)
    assert float(loss) == pytest.approx(sum(EXPECTED["grpo"]) / 4 + 2.0 * k3)


def test_hand_computed_clip_cov_skips_clipped_tokens() -> None:
    # covariance [0.25, -0.75, -0.75, 0.25]: tokens 0 and 3 lie in (0.1, 5), but token 0 (A > 0,
    # r = 1.5) is already clipped by PPO, so only token 3 is eligible; k = max(1, floor(2e-4 * 4)) = 1.
    cfg = ObjectiveConfig(name="clip_cov", clip_cov_lb=0.1)
    loss, metrics = get_objective("clip_cov")(LOG_PROBS, OLD, ADV, MASK, config=cfg)
    grpo = EXPECTED["grpo"]
    assert float(loss) == pytest.approx((grpo[0] + grpo[1] + grpo[2]) / 4)
    assert metrics["cov_selected_frac"] == 0.25


def test_hand_computed_opsm_drops_drifted_negative_response() -> None:
    old = LOG_PROBS - torch.log(torch.tensor([[1.5, 0.5], [0.5, 0.5]], dtype=torch.float64))
    loss, metrics = get_objective("opsm")(LOG_PROBS, old, ADV, MASK, config=ObjectiveConfig(name="opsm"))
    assert float(loss) == pytest.approx((-1.2 - 0.5) / 4)
    assert metrics["opsm_masked_seq_frac"] == 0.5


def test_hand_computed_metrics() -> None:
    _, m = get_objective("grpo")(LOG_PROBS, OLD, ADV, MASK)
    assert m["ratio_min_all"] == pytest.approx(0.5)
    assert m["ratio_mean_pos"] == pytest.approx(1.0)
    assert m["ratio_mean_neg"] == pytest.approx(2.55)
    assert m["low_ratio_frac_pos"] == pytest.approx(0.5)  # r = 0.5 <= the diagnostics' 0.8
    assert m["low_ratio_frac_nonneg"] == pytest.approx(0.5)
    assert m["clip_frac_upper"] == pytest.approx(0.25)  # A > 0, r = 1.5 > 1.2
    assert m["clip_frac_lower"] == 0.0
    # gradient is zero on the clipped positive token only
    assert m["zero_grad_frac_all"] == pytest.approx(0.25)
    assert m["zero_grad_frac_pos"] == pytest.approx(0.5)
    k3 = [r - 1 - math.log(r) for row in RATIOS for r in row]
    assert m["approx_kl"] == pytest.approx(sum(k3) / 4)
    assert m["approx_kl_k1"] == pytest.approx(-sum(math.log(r) for row in RATIOS for r in row) / 4)


def test_reference_kl_term_is_added() -> None:
    ref = LOG_PROBS - 0.5
    cfg = ObjectiveConfig(ref_kl_coef=0.1, ref_kl_estimator="k1")
    loss, m = get_objective("grpo")(LOG_PROBS, OLD, ADV, MASK, ref_log_probs=ref, config=cfg)
    assert m["ref_kl"] == pytest.approx(0.5)
    assert float(loss) == pytest.approx(sum(EXPECTED["grpo"]) / 4 + 0.05)


def test_hand_computed_clip_cov_count_is_share_of_all_tokens() -> None:
    # 12 masked tokens, ratio 0.25: k = 3 (of all tokens, not of the eligible ones); on-policy,
    # the covariance (A - 0)(log pi - mean) is largest on the 3 likeliest tokens of the A = +1 row.
    lp = torch.tensor([[-0.1, -0.2, -0.3, -4.0, -5.0, -6.0], [-1.0] * 6], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    cfg = ObjectiveConfig(name="clip_cov", clip_cov_ratio=0.25, clip_cov_lb=0.0, clip_cov_ub=10.0)
    loss, metrics = get_objective("clip_cov")(lp, lp, adv, torch.ones(2, 6, dtype=torch.float64), config=cfg)
    assert metrics["cov_selected_frac"] == pytest.approx(3 / 12)
    # the three selected (+1 tokens of loss -1 each) are removed: (-3 + 6) / 12
    assert float(loss) == pytest.approx(3 / 12)


def test_hand_computed_llds() -> None:
    # A >= 0 row: log pi_old - log pi = -log r = [-log 1.5, log 2], summed log(4/3) > 0: the gate is
    # open; the hinge keeps log 2; N = 4, every masked token (the authors' masked mean).
    cfg = ObjectiveConfig(name="llds", llds_coef=0.5)
    loss, metrics = get_objective("llds")(LOG_PROBS, OLD, ADV, MASK, config=cfg)
    assert metrics["llds_penalty"] == pytest.approx(math.log(2.0) / 4)
    assert float(loss) == pytest.approx(sum(EXPECTED["grpo"]) / 4 + 0.5 * math.log(2.0) / 4)
    assert metrics["llds_active_frac"] == pytest.approx(0.25)
    assert metrics["pg_loss"] == pytest.approx(sum(EXPECTED["grpo"]) / 4)


@pytest.mark.parametrize(("gate", "penalty"), [("action", 0.5 / 5), ("response", 0.0), ("token", 1.0 / 5)])
def test_hand_computed_llds_gates(gate: str, penalty: float) -> None:
    # One A > 0 response, a masked tool result at t = 2 splitting it into two actions, and an A < 0
    # response of one token. Drops log pi_old - log pi: action 1 sums 0.5 - 1.2 < 0 (closed),
    # action 2 sums 0.3 + 0.2 > 0 (open), the response sums -0.2 (closed). N = 5 masked tokens.
    drop = torch.tensor([[0.5, -1.2, 9.0, 0.3, 0.2], [2.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    lp = torch.full_like(drop, -1.0)
    mask = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float64)
    cfg = ObjectiveConfig(name="llds", llds_gate=gate)
    _, metrics = get_objective("llds")(lp, lp + drop, torch.tensor([1.0, -1.0]).double(), mask, config=cfg)
    assert metrics["llds_penalty"] == pytest.approx(penalty)


# Rollout engine log-probs: rho = pi_old / pi_rollout = [[3, 1], [0.25, 1.5]].
RHO = [[3.0, 1.0], [0.25, 1.5]]
ROLLOUT = OLD - torch.log(torch.tensor(RHO, dtype=torch.float64))


def test_hand_computed_tis() -> None:
    loss, metrics = get_objective("tis")(
        LOG_PROBS, OLD, ADV, MASK, config=ObjectiveConfig(name="tis"), rollout_log_probs=ROLLOUT
    )
    weights = [2.0, 1.0, 0.25, 1.5]  # min(rho, 2)
    assert float(loss) == pytest.approx(
        sum(w * g for w, g in zip(weights, EXPECTED["grpo"], strict=True)) / 4
    )
    assert metrics["tis_truncated_frac"] == pytest.approx(0.25)
    # without rollout log-probs TIS is GRPO
    assert float(get_objective("tis")(LOG_PROBS, OLD, ADV, MASK)[0]) == pytest.approx(
        sum(EXPECTED["grpo"]) / 4
    )


def test_hand_computed_mis() -> None:
    cfg = ObjectiveConfig(name="mis", mis_low=0.5, mis_high=2.0)
    loss, metrics = get_objective("mis")(LOG_PROBS, OLD, ADV, MASK, config=cfg, rollout_log_probs=ROLLOUT)
    weights = [0.0, 1.0, 0.0, 1.5]  # rho outside [0.5, 2] dropped, kept ones keep rho
    assert float(loss) == pytest.approx(
        sum(w * g for w, g in zip(weights, EXPECTED["grpo"], strict=True)) / 4
    )
    assert metrics["mis_masked_frac"] == pytest.approx(0.5)


def test_hand_computed_sequence_level_mismatch() -> None:
    # per response, rho = 3 * 1 = 3 and 0.25 * 1.5 = 0.375 on every token
    seq = ObjectiveConfig(name="tis", rollout_is_level="sequence")
    loss, _ = get_objective("tis")(LOG_PROBS, OLD, ADV, MASK, config=seq, rollout_log_probs=ROLLOUT)
    weights = [2.0, 2.0, 0.375, 0.375]  # min(rho, 2)
    assert float(loss) == pytest.approx(
        sum(w * g for w, g in zip(weights, EXPECTED["grpo"], strict=True)) / 4
    )
    seq = ObjectiveConfig(name="mis", rollout_is_level="sequence", mis_low=0.0, mis_high=2.0)
    loss, metrics = get_objective("mis")(LOG_PROBS, OLD, ADV, MASK, config=seq, rollout_log_probs=ROLLOUT)
    weights = [0.0, 0.0, 0.375, 0.375]  # the first response's 3 > 2 drops it whole; no lower bound
    assert float(loss) == pytest.approx(
        sum(w * g for w, g in zip(weights, EXPECTED["grpo"], strict=True)) / 4
    )
    assert metrics["mis_masked_frac"] == pytest.approx(0.5)


def test_mis_default_band_is_icepops() -> None:
    cfg = ObjectiveConfig(name="mis")
    assert (cfg.mis_low, cfg.mis_high, cfg.rollout_is_level) == (0.5, 5.0, "token")
    assert (ObjectiveConfig().llds_coef, ObjectiveConfig().llds_gate) == (0.2, "action")


def test_hand_computed_sapo_and_isdd_metrics_at_their_boundaries() -> None:
    """A = 0 counts as non-negative and r = tau exactly is penalised (r <= tau): tau = 1 (exact)."""
    # rows: A = 0 with r = [1, 0.5]; A = +1 with r = [1.5, 1.2]; A = -1 with r = [0.5, 0.5]
    log_ratio = torch.tensor([[0.0, math.log(0.5)], [math.log(1.5), math.log(1.2)], [math.log(0.5)] * 2])
    log_ratio = log_ratio.double()
    lp = torch.zeros_like(log_ratio)
    adv = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    mask = torch.ones(3, 2, dtype=torch.float64)
    cfg = ObjectiveConfig(name="sapo", sapo_w=1.0, sapo_tau=1.0)
    _, m = get_objective("sapo")(lp, lp - log_ratio, adv, mask, config=cfg, low_ratio_threshold=1.0)
    # penalised: both A = 0 tokens; N = the 4 tokens of the A >= 0 responses
    assert m["sapo_penalty"] == pytest.approx(math.log(2.0) / 4)
    assert m["sapo_penalized_frac"] == pytest.approx(2 / 6)
    assert m["low_ratio_frac_nonneg"] == pytest.approx(2 / 4)
    assert m["low_ratio_frac_pos"] == 0.0
