"""The verl plug-in: names, signature, how its knobs are set, and verl's real config accepting them."""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Any

import pytest
import torch

from testbed.config import ConfigError
from testbed.integrations.verl import ENV, objective_config, policy_losses
from testbed.objectives import ObjectiveConfig, get_objective


def test_verl_plugin_signature_and_names(monkeypatch) -> None:
    losses = policy_losses()
    assert "testbed_sapo" in losses and "sapo" not in losses
    lp = torch.randn(3, 5) - 2
    old = lp + 0.3 * torch.randn(3, 5)
    adv = torch.tensor([[1.0] * 5, [-1.0] * 5, [0.5] * 5])
    mask = torch.ones(3, 5)
    mask[2, 3:] = 0
    monkeypatch.setenv(ENV, "sapo_tau=0.7, sapo_w=0.5")
    verl_cfg = {"clip_ratio": 0.25, "clip_ratio_low": None, "clip_ratio_high": 0.28}
    loss, metrics = losses["testbed_sapo"](
        old, lp, adv, mask, loss_agg_mode="seq-mean-token-mean", config=verl_cfg
    )
    cfg = ObjectiveConfig(
        name="sapo",
        eps_low=0.25,
        eps_high=0.28,
        sapo_tau=0.7,
        sapo_w=0.5,
        sapo_norm="all",  # fixed by the plug-in: verl counts only all masked tokens across micro-batches
        loss_agg_mode="seq-mean-token-mean",
    )
    ours, _ = get_objective("sapo")(lp, old, adv, mask, None, cfg)
    assert torch.equal(loss, ours)  # clip_ratio_low None falls back to clip_ratio, as in verl
    assert {
        "actor/testbed_sapo_penalty",
        "actor/pg_clipfrac",
        "actor/ppo_kl",
        "actor/pg_clipfrac_lower",
    } <= set(metrics)
    with pytest.raises(ValueError, match="rollout_is_weights"):
        losses["testbed_grpo"](old, lp, adv, mask, rollout_is_weights=torch.ones(3, 5))


def test_verl_config_maps_every_field_verl_owns() -> None:
    verl_cfg = {
        "clip_ratio": 0.2,
        "clip_ratio_low": 0.1,
        "clip_ratio_high": 0.3,
        "clip_ratio_c": 4.0,
        "tau_pos": 1.2,
        "tau_neg": 1.3,
        "loss_scale_factor": 64,
        "policy_loss": {
            "clip_cov_ratio": 0.01,
            "clip_cov_lb": 0.5,
            "clip_cov_ub": 3.0,
            "kl_cov_ratio": 0.02,
            "ppo_kl_coef": 0.7,
        },
    }
    cfg = objective_config("cispo", verl_cfg, "seq-mean-token-sum-norm", environ={})
    assert (cfg.eps_low, cfg.eps_high, cfg.dual_clip_c) == (0.1, 0.3, 4.0)
    assert (cfg.cispo_min, cfg.cispo_max) == (pytest.approx(0.9), pytest.approx(1.3))
    assert (cfg.gate_tau_pos, cfg.gate_tau_neg) == (1.2, 1.3)
    assert (cfg.clip_cov_ratio, cfg.clip_cov_lb, cfg.clip_cov_ub) == (0.01, 0.5, 3.0)
    assert (cfg.kl_cov_ratio, cfg.kl_cov_coef, cfg.agg_norm_const) == (0.02, 0.7, 64.0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("tua=1", r"TESTBED_OBJECTIVE: unknown field 'tua'"),
        ("eps_high=0.3", r"TESTBED_OBJECTIVE: 'eps_high' is set by verl's actor config"),
        ("sapo_tau", r"TESTBED_OBJECTIVE: 'sapo_tau' is not field=value"),
        ("sapo_tau=-1", r"ObjectiveConfig\.sapo_tau=-1"),
        ("gspo_eps_low=0.1", r"'gspo_eps_low' is set by verl's actor config"),
        ("sapo_norm=paper", r"sapo_norm='paper': under verl it is 'all'"),
    ],
)
def test_verl_env_knobs_errors_name_the_field(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        objective_config("sapo", None, "token-mean", environ={ENV: text})


@pytest.mark.parametrize("name", ["testbed_tis", "testbed_mis"])
def test_verl_refuses_tis_and_mis_which_would_be_grpo(name: str) -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match=rf"loss_mode={name}: verl passes no rollout log-probs"):
        policy_losses()[name](x, x, x, torch.ones(2, 3))


def _stand_in_verl(monkeypatch) -> dict:
    """A stand-in for verl's core_algos whose registry is returned."""
    registry: dict = {}

    def register_policy_loss(name):
        def deco(fn):
            registry[name] = fn
            return fn

        return deco

    for mod in ("verl", "verl.trainer", "verl.trainer.ppo"):
        monkeypatch.setitem(sys.modules, mod, types.ModuleType(mod))
    core: Any = types.ModuleType("verl.trainer.ppo.core_algos")
    core.register_policy_loss = register_policy_loss
    monkeypatch.setitem(sys.modules, "verl.trainer.ppo.core_algos", core)
    monkeypatch.delitem(sys.modules, "testbed.integrations.verl_plugin", raising=False)
    return registry


def test_verl_plugin_registers_into_verls_registry(monkeypatch) -> None:
    """With a stand-in for verl's core_algos, importing the plugin registers every objective."""
    registry = _stand_in_verl(monkeypatch)
    monkeypatch.delenv(ENV, raising=False)
    plugin = importlib.import_module("testbed.integrations.verl_plugin")
    assert set(plugin.REGISTERED) == set(registry) and "testbed_sapo" in registry


def test_verl_plugin_checks_its_knobs_when_imported(monkeypatch) -> None:
    """A misspelt field fails when the worker imports the plug-in, not at the first loss."""
    registry = _stand_in_verl(monkeypatch)
    monkeypatch.setenv(ENV, "sapo_tua=0.7")
    with pytest.raises(ConfigError, match="unknown field 'sapo_tua'"):
        importlib.import_module("testbed.integrations.verl_plugin")
    monkeypatch.setenv(ENV, "sapo_w=-1")
    with pytest.raises(ConfigError, match=r"ObjectiveConfig\.sapo_w=-1"):
        importlib.import_module("testbed.integrations.verl_plugin")
    assert not registry


# The lines of docs/SCALE_UP.md, verbatim.
README_OVERRIDES = [
    "actor_rollout_ref.model.external_lib=testbed.integrations.verl_plugin",
    "actor_rollout_ref.actor.policy_loss.loss_mode=testbed_sapo",
    '+ray_kwargs.ray_init.runtime_env.env_vars.TESTBED_OBJECTIVE="sapo_tau=0.7 sapo_w=0.5"',
]


@pytest.mark.verl
def test_verls_real_config_accepts_our_knobs_and_they_reach_the_loss(monkeypatch) -> None:
    """Compose verl's ppo_trainer.yaml with the lines of docs/SCALE_UP.md, build the actor config as the
    workers do, merge the Ray runtime env as verl's main_ppo does, and run the registered loss."""
    pytest.importorskip("verl.trainer.ppo.core_algos")
    import verl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos
    from verl.utils.config import omega_conf_to_dataclass

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    required = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.rollout.n=4"]
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose("ppo_trainer", overrides=README_OVERRIDES + required)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    runtime_env = OmegaConf.merge(
        {"env_vars": {"TOKENIZERS_PARALLELISM": "true"}}, cfg.ray_kwargs.ray_init.runtime_env
    )
    container: Any = OmegaConf.to_container(runtime_env)
    env_vars = container["env_vars"]
    assert env_vars[ENV] == "sapo_tau=0.7 sapo_w=0.5"

    monkeypatch.setattr(core_algos, "POLICY_LOSS_REGISTRY", dict(core_algos.POLICY_LOSS_REGISTRY))
    monkeypatch.delitem(sys.modules, cfg.actor_rollout_ref.model.external_lib, raising=False)
    importlib.import_module(cfg.actor_rollout_ref.model.external_lib)  # what each worker does

    monkeypatch.setenv(ENV, env_vars[ENV])  # what Ray does in every worker
    fn = core_algos.get_policy_loss_fn(actor.policy_loss.loss_mode)
    lp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    old = lp - torch.log(torch.tensor([[1.0, 0.6]], dtype=torch.float64))
    adv = torch.ones(1, 2, dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.float64)
    _, metrics = fn(old, lp, adv, mask, actor.loss_agg_mode, actor)
    # r = 0.6 <= sapo_tau = 0.7 is penalised; with the default tau 0.8 too, so check tau itself:
    assert metrics["actor/testbed_sapo_penalized_frac"] == 0.5
    old2 = lp - torch.log(torch.tensor([[1.0, 0.75]], dtype=torch.float64))  # 0.75 > 0.7: not penalised
    _, metrics = fn(old2, lp, adv, mask, actor.loss_agg_mode, actor)
    assert metrics["actor/testbed_sapo_penalized_frac"] == 0.0
