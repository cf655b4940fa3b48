"""Each objective against verl 0.9.1's own code (``core_algos``), on identical random tensors.

Values and gradients agree within 1e-6 in float64 for every pair that computes the same thing.
Ragged masks with empty rows, zero-advantage groups and log-ratios up to +-5 (inside both sides'
clamps). Run with ``python -m pytest -m verl``; skipped when verl is absent (install:
``pip install -c constraints.txt --no-deps verl==0.9.1`` plus omegaconf, hydra-core,
antlr4-python3-runtime==4.9.3, tensordict, pyvers, codetiming, orjson).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

pytestmark = pytest.mark.verl
core = pytest.importorskip("verl.trainer.ppo.core_algos")
rollout_corr = pytest.importorskip("verl.trainer.ppo.rollout_corr_helper")
from verl.workers.config.actor import ActorConfig, PolicyLossConfig  # noqa: E402

from testbed.aggregation import AGG_MODES, aggregate  # noqa: E402
from testbed.integrations.verl import policy_losses  # noqa: E402
from testbed.kl import kl_estimate  # noqa: E402
from testbed.objectives import ObjectiveConfig, get_objective  # noqa: E402

TOL = 1e-6


@dataclasses.dataclass
class Batch:
    log_prob: torch.Tensor
    old: torch.Tensor
    rollout: torch.Tensor
    adv: torch.Tensor  # [B, T], constant per response as GRPO gives
    mask: torch.Tensor


def make_batch(seed: int, scale: float = 1.0, b: int = 8, t: int = 7) -> Batch:
    g = torch.Generator().manual_seed(seed)
    log_prob = -3 * torch.rand(b, t, generator=g, dtype=torch.float64)
    old = log_prob - scale * torch.randn(b, t, generator=g, dtype=torch.float64)
    rollout = old - 0.5 * torch.randn(b, t, generator=g, dtype=torch.float64)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    adv[:2] = 0.0  # a zero-advantage group
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()
    mask[-1] = 0.0  # an empty row
    return Batch(log_prob, old, rollout, adv[:, None].expand(b, t).clone(), mask)


def actor(**kw) -> ActorConfig:
    policy = PolicyLossConfig(**kw.pop("policy_loss", {}))
    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=policy, **kw)


def both(
    ours: Callable[[torch.Tensor], torch.Tensor],
    theirs: Callable[[torch.Tensor], torch.Tensor],
    lp: torch.Tensor,
) -> tuple[float, float]:
    """Max abs differences of value and of gradient w.r.t. log_prob."""
    a = lp.clone().requires_grad_(True)
    b = lp.clone().requires_grad_(True)
    la, lb = ours(a), theirs(b)
    (ga,) = torch.autograd.grad(la, a, allow_unused=True)
    (gb,) = torch.autograd.grad(lb, b, allow_unused=True)
    ga = torch.zeros_like(a) if ga is None else ga
    gb = torch.zeros_like(b) if gb is None else gb
    return float((la - lb).detach().abs()), float((ga - gb).abs().max())


def ours_fn(cfg: ObjectiveConfig, x: Batch, **kw) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda lp: get_objective(cfg.name)(lp, x.old, x.adv, x.mask, config=cfg, **kw)[0]


def verl_fn(
    mode: str, x: Batch, agg: str, config: ActorConfig, **kw
) -> Callable[[torch.Tensor], torch.Tensor]:
    fn = core.get_policy_loss_fn(mode)
    return lambda lp: fn(x.old, lp, x.adv, x.mask, loss_agg_mode=agg, config=config, **kw)[0]


NO_DUAL = 1e9  # verl's vanilla always dual-clips; a huge c turns it off to compare with plain PPO clip

# (our config, verl loss_mode, verl config): the pairs that compute the same thing.
PAIRS = [
    (
        ObjectiveConfig(name="grpo", eps_low=0.2, eps_high=0.28),
        "vanilla",
        dict(clip_ratio_high=0.28, clip_ratio_c=NO_DUAL),
    ),
    (ObjectiveConfig(name="dual_clip", dual_clip_c=3.0), "vanilla", {}),
    (ObjectiveConfig(name="two_sided_clip", two_sided_delta=2.5), "vanilla", dict(clip_ratio_c=2.5)),
    (ObjectiveConfig(name="cispo", cispo_min=0.8, cispo_max=1.2), "cispo", {}),
    (
        ObjectiveConfig(name="gspo_token", gspo_eps_low=3e-4, gspo_eps_high=4e-4),
        "gspo",
        dict(clip_ratio_low=3e-4, clip_ratio_high=4e-4),
    ),
    (ObjectiveConfig(name="soft_adaptive_gate", gate_tau_pos=1.0, gate_tau_neg=1.05), "sapo", {}),
    (ObjectiveConfig(name="reinforce"), "gpg", {}),
    (
        ObjectiveConfig(name="kl_cov", kl_cov_ratio=0.1, kl_cov_coef=0.5),
        "kl_cov",
        dict(policy_loss=dict(kl_cov_ratio=0.1, ppo_kl_coef=0.5)),
    ),
]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("cfg", "mode", "verl_kw"), PAIRS, ids=[p[0].name for p in PAIRS])
def test_objective_matches_verl(cfg: ObjectiveConfig, mode: str, verl_kw: dict, seed: int) -> None:
    x = make_batch(seed)
    agg = cfg.agg_mode
    value, grad = both(ours_fn(cfg, x), verl_fn(mode, x, agg, actor(**verl_kw)), x.log_prob)
    assert value < TOL and grad < TOL, (value, grad)


@pytest.mark.parametrize("seed", range(5))
def test_clip_cov_matches_verl_when_every_eligible_token_is_selected(seed: int) -> None:
    """verl samples its k tokens at random among the eligible; with k >= eligible both take all."""
    x = make_batch(seed, scale=0.5)
    cfg = ObjectiveConfig(name="clip_cov", clip_cov_ratio=1.0, clip_cov_lb=0.0, clip_cov_ub=5.0)
    verl_cfg = actor(policy_loss=dict(clip_cov_ratio=1.0, clip_cov_lb=0.0, clip_cov_ub=5.0))
    value, grad = both(ours_fn(cfg, x), verl_fn("clip_cov", x, "token-mean", verl_cfg), x.log_prob)
    assert value < TOL and grad < TOL
    _, metrics = get_objective("clip_cov")(x.log_prob, x.old, x.adv, x.mask, config=cfg)
    assert 0 < metrics["cov_selected_frac"] < 1  # the check is not vacuous


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregation_matches_verl_agg_loss(mode: str, seed: int) -> None:
    x = make_batch(seed)
    loss_mat = torch.randn(x.mask.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ours = aggregate(loss_mat, x.mask, mode)
    theirs = core.agg_loss(loss_mat, x.mask, mode)
    assert float((ours - theirs).abs()) < TOL


@pytest.mark.parametrize(("ours", "theirs"), [("k1", "kl"), ("k2", "mse"), ("k3", "low_var_kl")])
def test_kl_estimators_match_verl(ours: str, theirs: str) -> None:
    x = make_batch(0, scale=3.0)
    diff = kl_estimate(x.log_prob, x.old, ours) - core.kl_penalty(x.log_prob, x.old, theirs)
    assert float(diff.abs().max()) < TOL


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    ("cfg", "threshold"),
    [
        (ObjectiveConfig(name="tis", tis_cap=2.0), 2.0),
        (ObjectiveConfig(name="mis", mis_low=0.5, mis_high=2.0), "0.5_2.0"),
    ],
    ids=["tis", "mis"],
)
def test_tis_and_mis_match_verls_rollout_correction(cfg: ObjectiveConfig, threshold, seed: int) -> None:
    """verl: weights from compute_rollout_correction_weights, multiplied into its vanilla loss."""
    x = make_batch(seed)
    weights, _ = rollout_corr.compute_rollout_correction_weights(
        x.old - x.rollout, x.mask, rollout_is="token", rollout_is_threshold=threshold
    )
    theirs = verl_fn("vanilla", x, "token-mean", actor(clip_ratio_c=NO_DUAL), rollout_is_weights=weights)
    value, grad = both(ours_fn(cfg, x, rollout_log_probs=x.rollout), theirs, x.log_prob)
    assert value < TOL and grad < TOL


@pytest.mark.parametrize(
    "mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
)
def test_plugin_rescales_micro_batches_as_verl(mode: str) -> None:
    """Split a batch in two micro-batches with verl's global_batch_info: the sum equals the whole."""
    x = make_batch(3)
    whole_cfg = actor(clip_ratio_c=3.0, loss_scale_factor=7)
    whole = core.get_policy_loss_fn("vanilla")(x.old, x.log_prob, x.adv, x.mask, mode, whole_cfg)[0]
    info = {
        "dp_size": 1,
        "batch_num_tokens": int(x.mask.sum()),
        "global_batch_size": int((x.mask.sum(-1) > 0).sum()),
        "loss_scale_factor": 7,
    }
    ours = policy_losses()["testbed_dual_clip"]
    total = torch.zeros((), dtype=torch.float64)
    for part in (slice(0, 3), slice(3, None)):
        cfg = actor(clip_ratio_c=3.0, loss_scale_factor=7)
        cfg.global_batch_info.update(info)
        total = total + ours(x.old[part], x.log_prob[part], x.adv[part], x.mask[part], mode, cfg)[0]
    assert float((total - whole).abs()) < TOL


def test_plugin_metrics_are_verls() -> None:
    x = make_batch(1, scale=1.0)
    cfg = actor(clip_ratio_c=2.0)
    _, theirs = core.get_policy_loss_fn("vanilla")(x.old, x.log_prob, x.adv, x.mask, "token-mean", cfg)
    _, ours = policy_losses()["testbed_dual_clip"](x.old, x.log_prob, x.adv, x.mask, "token-mean", cfg)
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key
    assert theirs["actor/pg_clipfrac_lower"] > 0  # not vacuous


def _split_total(
    name: str, x: Batch, mode: str, parts: list[slice], dp_size: int, **actor_kw
) -> torch.Tensor:
    """Sum over micro-batches (spread over dp_size ranks) of the plug-in's loss, with verl's batch info,
    divided by dp_size as the ranks' gradient all-reduce averages them."""
    info = {
        "dp_size": dp_size,
        "batch_num_tokens": int(x.mask.sum()),
        "global_batch_size": int((x.mask.sum(-1) > 0).sum()),
    }
    fn = policy_losses()[name]
    total = torch.zeros((), dtype=torch.float64)
    for part in parts:
        cfg = actor(**actor_kw)
        cfg.global_batch_info.update(info)
        total = total + fn(x.old[part], x.log_prob[part], x.adv[part], x.mask[part], mode, cfg)[0]
    return total / dp_size


SPLITS = [[slice(0, 8)], [slice(0, 3), slice(3, None)], [slice(0, 2), slice(2, 5), slice(5, 7), slice(7, 8)]]


@pytest.mark.parametrize("name", ["testbed_sapo", "testbed_llds", "testbed_dual_clip"])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("dp_size", [1, 2])
def test_plugin_loss_does_not_depend_on_the_split(name: str, mode: str, dp_size: int) -> None:
    """SAPO's and LLDS's penalties too: one mini-batch, split into micro-batches over dp ranks."""
    x = make_batch(4, scale=1.0)
    whole = policy_losses()[name](x.old, x.log_prob, x.adv, x.mask, mode, actor())[0]
    for parts in SPLITS:
        assert float((_split_total(name, x, mode, parts, dp_size) - whole).abs()) < TOL, parts
    _, metrics = policy_losses()[name](x.old, x.log_prob, x.adv, x.mask, mode, actor())
    assert metrics.get(f"actor/{name}_penalty", 1.0) > 0  # the penalties act: not vacuous


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_plugin_scales_by_dp_size_as_verls_agg_loss(mode: str) -> None:
    """One rank's micro-batch of a dp_size = 2 run: the plug-in's loss equals verl's own."""
    x = make_batch(2)
    info = {"dp_size": 2, "batch_num_tokens": 40, "global_batch_size": 11, "loss_scale_factor": None}
    cfg = actor(clip_ratio_c=3.0)
    cfg.global_batch_info.update(info)
    theirs = core.get_policy_loss_fn("vanilla")(x.old, x.log_prob, x.adv, x.mask, mode, cfg)[0]
    ours = policy_losses()["testbed_dual_clip"](x.old, x.log_prob, x.adv, x.mask, mode, cfg)[0]
    assert float((ours - theirs).abs()) < TOL


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", ["testbed_gspo", "testbed_gspo_token"])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_plugin_gspo_takes_verls_clip_ratios(name: str, mode: str, seed: int) -> None:
    x = make_batch(seed, scale=0.3)
    cfg = actor(clip_ratio_low=0.2, clip_ratio_high=0.28)
    theirs = core.get_policy_loss_fn("gspo")(x.old, x.log_prob, x.adv, x.mask, mode, cfg)[0]
    ours = policy_losses()[name](x.old, x.log_prob, x.adv, x.mask, mode, cfg)[0]
    assert float((ours - theirs).abs()) < TOL


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum"])
def test_plugin_soft_gate_aggregates_per_sequence_as_verls_sapo(mode: str) -> None:
    x = make_batch(1)
    cfg = actor()
    theirs = core.get_policy_loss_fn("sapo")(x.old, x.log_prob, x.adv, x.mask, mode, cfg)[0]
    ours = policy_losses()["testbed_soft_adaptive_gate"](x.old, x.log_prob, x.adv, x.mask, mode, cfg)[0]
    assert float((ours - theirs).abs()) < TOL
