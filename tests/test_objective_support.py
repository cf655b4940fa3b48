"""Registry, configuration errors, input validation, aggregation, advantages and KL estimators."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.advantages import group_advantages
from testbed.aggregation import aggregate
from testbed.config import ConfigError
from testbed.kl import kl_estimate
from testbed.objectives import (
    ObjectiveConfig,
    get_objective,
    list_objectives,
    register_objective,
    unregister_objective,
)
from testbed.testing import check_objective


def test_unknown_objective_lists_known_names() -> None:
    with pytest.raises(KeyError, match=r"known: .*'grpo'.*'sapo'"):
        get_objective("nope")
    with pytest.raises(ConfigError, match=r"ObjectiveConfig.name='nope'.*known"):
        ObjectiveConfig(name="nope")


def test_register_a_new_objective_and_test_it_in_one_line() -> None:
    @register_objective("test_pg_mean")
    def body(log_probs, old_log_probs, advantages, mask, cfg):
        return -(advantages * log_probs * mask).sum() / mask.sum().clamp(min=1), {}

    try:
        assert "test_pg_mean" in list_objectives()
        check_objective("test_pg_mean", max_examples=10)
        with pytest.raises(ValueError, match="already registered"):
            register_objective("test_pg_mean")(body)
    finally:
        unregister_objective("test_pg_mean")


def test_property_suite_catches_a_broken_objective() -> None:
    @register_objective("test_leaky")
    def body(log_probs, old_log_probs, advantages, mask, cfg):
        return -(advantages[:, :1] * log_probs).mean(), {}  # ignores the mask

    try:
        with pytest.raises(AssertionError):
            check_objective("test_leaky", max_examples=50)
    finally:
        unregister_objective("test_leaky")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eps_low", -0.1),
        ("eps_high", -1.0),
        ("sapo_tau", 0.0),
        ("sapo_tau", -0.5),
        ("sapo_w", -1.0),
        ("llds_coef", -0.1),
        ("tis_cap", 0.0),
        ("mis_low", -0.5),
        ("llds_gate", "turn"),
        ("rollout_is_level", "batch"),
        ("cispo_min", -0.5),
        ("loss_agg_mode", "mean"),
        ("sapo_kl", "k4"),
        ("sapo_adv_condition", ">=0"),
        ("sapo_token_selection", "some"),
        ("sapo_norm", "batch"),
        ("dual_clip_c", 1.0),
        ("ref_kl_estimator", "exact"),
    ],
)
def test_bad_config_names_field_and_value(field: str, value) -> None:
    with pytest.raises(ConfigError, match=rf"ObjectiveConfig\.{field}={value!r}"):
        ObjectiveConfig(**{field: value})


def _ok_inputs():
    lp = torch.zeros(2, 3)
    return lp, lp.clone(), torch.ones(2), torch.ones(2, 3)


@pytest.mark.parametrize(
    ("position", "bad", "field"),
    [
        (1, torch.zeros(2, 4), "old_log_probs"),
        (2, torch.ones(3), "advantages"),
        (3, torch.ones(2, 2), "mask"),
        (3, torch.full((2, 3), 0.5), "mask"),
        (1, torch.full((2, 3), float("nan")), "old_log_probs"),
        (0, torch.zeros(6), "log_probs"),
    ],
)
def test_bad_inputs_name_the_argument(position: int, bad: torch.Tensor, field: str) -> None:
    args = list(_ok_inputs())
    args[position] = bad
    with pytest.raises(ValueError, match=rf"^{field}:"):
        get_objective("grpo")(*args)


def test_aggregation_modes_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert float(aggregate(x, m, "token-mean")) == pytest.approx(10 / 4)
    assert float(aggregate(x, m, "seq-mean-token-sum")) == pytest.approx((6 + 4) / 2)
    assert float(aggregate(x, m, "seq-mean-token-mean")) == pytest.approx((2 + 4) / 2)
    assert float(aggregate(x, m, "seq-mean-token-sum-norm")) == pytest.approx(10 / (2 * 3))
    assert float(aggregate(x, m, "seq-mean-token-sum-norm", 5.0)) == pytest.approx(10 / (2 * 5))
    assert float(aggregate(x, torch.zeros_like(m), "token-mean")) == 0.0


def test_group_advantages_by_hand() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.3, 0.3, 0.3])
    g = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2])
    adv = group_advantages(r, g, "grpo")
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    assert adv[:4].tolist() == pytest.approx(
        [0.5 / (std + 1e-6), -0.5 / (std + 1e-6)] * 1 + [-0.5 / (std + 1e-6), 0.5 / (std + 1e-6)]
    )
    assert adv[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # size-1 group and zero-std group
    assert group_advantages(r, g, "drgrpo")[:4].tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])
    # RLOO: R_i minus the mean of the other three
    assert group_advantages(r, g, "rloo")[:4].tolist() == pytest.approx(
        [1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3]
    )


@settings(max_examples=100, deadline=None)
@given(
    rewards=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=12),
    n_groups=st.integers(1, 4),
    estimator=st.sampled_from(["grpo", "drgrpo", "rloo"]),
)
def test_group_advantages_are_finite_and_centred(rewards, n_groups: int, estimator: str) -> None:
    r = torch.tensor(rewards, dtype=torch.float64)
    g = torch.arange(len(rewards)) % n_groups
    adv = group_advantages(r, g, estimator)
    assert torch.isfinite(adv).all()
    for k in range(n_groups):
        assert abs(float(adv[g == k].double().sum())) < 1e-3 * max(1.0, float(adv.abs().max()))


def test_group_advantages_bad_input() -> None:
    with pytest.raises(ValueError, match="estimator='ppo'"):
        group_advantages(torch.ones(2), torch.zeros(2), "ppo")
    with pytest.raises(ValueError, match="rewards"):
        group_advantages(torch.ones(2), torch.zeros(3))


def test_kl_estimators() -> None:
    p = torch.tensor([-1.0, -2.0])
    q = torch.tensor([-1.5, -1.0])
    lr = p - q
    assert torch.allclose(kl_estimate(p, q, "k1"), lr)
    assert torch.allclose(kl_estimate(p, q, "k2"), lr**2 / 2)
    assert torch.allclose(kl_estimate(p, q, "k3"), torch.exp(-lr) - 1 + lr)
    assert (kl_estimate(p, q, "k3") >= 0).all()
    assert torch.isfinite(kl_estimate(torch.tensor([0.0]), torch.tensor([-500.0]), "k3")).all()
    with pytest.raises(ValueError, match="k9"):
        kl_estimate(p, q, "k9")


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
def test_constant_groups_give_exactly_zero_not_rounding_noise(estimator: str) -> None:
    """0.7 six times has a float mean != 0.7: without the guard, noise / eps would leak through."""
    r = torch.tensor([0.7] * 6 + [0.1] * 3, dtype=torch.float64)
    g = torch.tensor([0] * 6 + [1] * 3)
    assert group_advantages(r, g, estimator).tolist() == [0.0] * 9


def test_two_sided_delta_is_checked_only_for_its_objective() -> None:
    ObjectiveConfig(name="cispo", eps_high=5.0)  # TRL's CISPO setting needs no unrelated knob
    with pytest.raises(ConfigError, match=r"ObjectiveConfig\.two_sided_delta=3\.0"):
        ObjectiveConfig(name="two_sided_clip", eps_high=5.0)


def test_quantiles_match_torch_and_pass_torchs_size_limit() -> None:
    from testbed.objectives.common import quantiles, ratio_metrics

    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 1000):
        x = torch.randn(n, generator=gen, dtype=torch.float64)
        qs = (0.05, 0.5, 0.95)
        assert torch.allclose(quantiles(x, qs), torch.quantile(x, torch.tensor(qs, dtype=torch.float64)))
    n = 2**24 + 8  # torch.quantile refuses this many
    log_ratio = torch.zeros(1, n)
    log_ratio[0, :8] = -1.0
    out = ratio_metrics(log_ratio, torch.ones(1, n), torch.ones(1, n), ObjectiveConfig())
    assert out["ratio_p50_all"] == 1.0 and out["ratio_min_all"] == pytest.approx(
        float(torch.exp(torch.tensor(-1.0)))
    )
