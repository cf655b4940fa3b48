"""verl plug-in: the registry's objectives as verl policy losses, under non-clashing names.

verl picks a policy loss by ``actor_rollout_ref.actor.policy_loss.loss_mode``; functions are added
with ``@register_policy_loss(name)`` and called as ``fn(old_log_prob, log_prob, advantages,
response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None) -> (loss,
metrics)``. ``register()`` registers ``testbed_<name>`` for every objective (verl's own ``sapo``
is Qwen's soft adaptive method; ours is ``testbed_sapo``).

What verl's actor config sets, it sets here too (``VERL_OWNED``): ``clip_ratio_low`` /
``clip_ratio_high`` (each falling back to ``clip_ratio`` when None, as verl) -> eps_low / eps_high,
for GSPO gspo_eps_low / gspo_eps_high (verl's gspo reads the same keys), and for CISPO cispo_min =
1 - clip_ratio_low, cispo_max = 1 + clip_ratio_high (verl's two-sided CISPO); ``clip_ratio_c`` ->
dual_clip_c; ``tau_pos`` / ``tau_neg`` -> gate_tau_pos / gate_tau_neg;
``policy_loss.clip_cov_ratio/lb/ub``, ``kl_cov_ratio``, ``ppo_kl_coef`` -> clip_cov_*,
kl_cov_ratio, kl_cov_coef; ``loss_agg_mode`` and ``loss_scale_factor`` -> the aggregation, except
that the soft adaptive gate always takes the per-sequence mean, as verl's ``sapo`` does. The loss is
rescaled by ``config.global_batch_info`` exactly as verl's ``agg_loss`` does (each micro-batch
weighs its share of the global tokens or sequences, times ``dp_size``), so it does not depend on how
a mini-batch is split. SAPO's and LLDS's penalties are means over every masked token of the
mini-batch (``batch_num_tokens``, the only count verl passes): LLDS's own normalisation, and for SAPO
``sapo_norm=all``, fixed here (its A >= 0 token count is not known across micro-batches).

TIS and MIS are refused: verl passes no rollout log-probs to a policy loss (its own rollout
correction, ``algorithm.rollout_correction``, weights the loss through ``rollout_is_weights``,
which these losses do not take).

Every other field (``sapo_tau``, ``sapo_w``, ``llds_coef``, ...) comes from the environment
variable ``TESTBED_OBJECTIVE`` ("sapo_tau=0.7 sapo_w=0.5", fields separated by spaces or commas),
read inside the workers at each call and checked when the plug-in is imported (a misspelt field fails
there, not at the first loss): verl's ``PolicyLossConfig`` refuses unknown keys, while Ray's
runtime environment, which verl's config exposes, passes variables to every worker::

    '+ray_kwargs.ray_init.runtime_env.env_vars.TESTBED_OBJECTIVE="sapo_tau=0.7 sapo_w=0.5"'

The registration must run inside verl's Ray workers: set
``actor_rollout_ref.model.external_lib=testbed.integrations.verl_plugin`` (the workers import it
when they build the model, and importing it calls ``register()``). This module imports without
verl; ``policy_losses()`` gives the functions for tests and reuse.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from testbed.config import ConfigError, parse_value
from testbed.objectives import ObjectiveConfig, get_objective, list_objectives

PREFIX = "testbed_"
ENV = "TESTBED_OBJECTIVE"
# Fields that verl's own config sets; TESTBED_OBJECTIVE may not set them a second way.
VERL_OWNED = frozenset(
    {
        "name",
        "loss_agg_mode",
        "agg_norm_const",
        "eps_low",
        "eps_high",
        "gspo_eps_low",
        "gspo_eps_high",
        "cispo_min",
        "cispo_max",
        "dual_clip_c",
        "gate_tau_pos",
        "gate_tau_neg",
        "clip_cov_ratio",
        "clip_cov_lb",
        "clip_cov_ub",
        "kl_cov_ratio",
        "kl_cov_coef",
    }
)
# Fields the plug-in fixes: the only normalisation of SAPO's penalty verl's batch info can count.
PLUGIN_FIXED: dict[str, Any] = {"sapo_norm": "all"}
# Objectives whose penalty is a mean over every masked token: (its weight field).
PENALTY_WEIGHT = {"sapo": "sapo_w", "llds": "llds_coef"}
NEEDS_ROLLOUT = ("tis", "mis")
PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, float]]]


def _get(config: Any, key: str, default: Any = None) -> Any:
    if config is None:
        return default
    value = config.get(key, default) if isinstance(config, Mapping) else getattr(config, key, default)
    return default if value is None else value


def env_fields(text: str) -> dict[str, Any]:
    """``"sapo_tau=0.7 sapo_w=0.5"`` -> typed ObjectiveConfig fields; errors name the bad item."""
    known = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    fields: dict[str, Any] = {}
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{ENV}: {item!r} is not field=value")
        if key not in known:
            raise ConfigError(f"{ENV}: unknown field {key!r}; known: {sorted(known - VERL_OWNED)}")
        if key in VERL_OWNED:
            raise ConfigError(f"{ENV}: {key!r} is set by verl's actor config, not here")
        fields[key] = parse_value(ObjectiveConfig, key, value)
        if key in PLUGIN_FIXED and fields[key] != PLUGIN_FIXED[key]:
            raise ConfigError(
                f"{ENV}: {key}={value!r}: under verl it is {PLUGIN_FIXED[key]!r} (verl counts only the "
                "mini-batch's masked tokens across micro-batches)"
            )
    return fields


def check_environment(environ: Mapping[str, str] = os.environ) -> None:
    """Fail now, with the field's name, if ``TESTBED_OBJECTIVE`` holds a bad field or value."""
    ObjectiveConfig(**env_fields(environ.get(ENV, "")))


def objective_config(
    name: str, config: Any, loss_agg_mode: str, environ: Mapping[str, str] = os.environ
) -> ObjectiveConfig:
    """Our ObjectiveConfig from verl's actor config (None: verl's defaults) and TESTBED_OBJECTIVE."""
    clip = _get(config, "clip_ratio", 0.2)
    low = float(_get(config, "clip_ratio_low", clip))
    high = float(_get(config, "clip_ratio_high", clip))
    policy_loss = _get(config, "policy_loss")
    fields: dict[str, Any] = {
        "name": name,
        # verl's sapo (the soft gate) aggregates per sequence whatever loss_agg_mode says
        "loss_agg_mode": "seq-mean-token-mean" if name == "soft_adaptive_gate" else loss_agg_mode,
        "eps_low": low,
        "eps_high": high,
        "gspo_eps_low": low,
        "gspo_eps_high": high,
        "cispo_min": 1.0 - low,
        "cispo_max": 1.0 + high,
        "dual_clip_c": float(_get(config, "clip_ratio_c", 3.0)),
        "gate_tau_pos": float(_get(config, "tau_pos", 1.0)),
        "gate_tau_neg": float(_get(config, "tau_neg", 1.05)),
        "clip_cov_ratio": float(_get(policy_loss, "clip_cov_ratio", 2e-4)),
        "clip_cov_lb": float(_get(policy_loss, "clip_cov_lb", 1.0)),
        "clip_cov_ub": float(_get(policy_loss, "clip_cov_ub", 5.0)),
        "kl_cov_ratio": float(_get(policy_loss, "kl_cov_ratio", 2e-4)),
        "kl_cov_coef": float(_get(policy_loss, "ppo_kl_coef", 0.1)),
    }
    scale = _get(_get(config, "global_batch_info"), "loss_scale_factor", _get(config, "loss_scale_factor"))
    if loss_agg_mode == "seq-mean-token-sum-norm" and scale is not None:
        fields["agg_norm_const"] = float(scale)
    return ObjectiveConfig(**fields, **PLUGIN_FIXED, **env_fields(environ.get(ENV, "")))


def global_scale(mask: torch.Tensor, mode: str, info: Any) -> float:
    """Factor turning our micro-batch mean into verl's share of the global mean (1 without info)."""
    dp = _get(info, "dp_size", 1)
    if mode == "token-mean":
        total = _get(info, "batch_num_tokens")
        return 1.0 if total is None else float(mask.sum()) * dp / float(total)
    total = _get(info, "global_batch_size")
    return 1.0 if total is None else float((mask.sum(-1) > 0).sum()) * dp / float(total)


def verl_metrics(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: ObjectiveConfig,
) -> dict[str, float]:
    """verl's standard keys, defined as its vanilla loss defines them."""
    log_ratio = (log_prob - old_log_prob).detach().clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    n = mask.sum().clamp(min=1.0)
    clipped = ((advantages > 0) & (ratio > 1 + cfg.eps_high)) | ((advantages < 0) & (ratio < 1 - cfg.eps_low))
    lower = (advantages < 0) & (ratio > cfg.dual_clip_c)
    return {
        "actor/pg_clipfrac": float((clipped * mask).sum() / n),
        "actor/ppo_kl": float((-log_ratio * mask).sum() / n),
        "actor/pg_clipfrac_lower": float((lower * mask).sum() / n),
    }


def make_policy_loss(name: str) -> PolicyLoss:
    """The verl-signature function for registry objective ``name``."""
    objective = get_objective(name)
    weight = PENALTY_WEIGHT.get(name)

    def policy_loss(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if name in NEEDS_ROLLOUT:
            raise ConfigError(
                f"loss_mode={PREFIX}{name}: verl passes no rollout log-probs to a policy loss, so it would "
                f"be GRPO; use {PREFIX}grpo with verl's algorithm.rollout_correction instead"
            )
        if rollout_is_weights is not None:
            raise ValueError(
                f"rollout_is_weights: {PREFIX}{name} cannot weight its per-token loss; set "
                "algorithm.rollout_correction.rollout_is=null for this loss"
            )
        cfg = objective_config(name, config, loss_agg_mode)
        mask = response_mask.to(log_prob.dtype)
        loss, metrics = objective(log_prob, old_log_prob, advantages, mask, None, cfg)
        info = _get(config, "global_batch_info")
        scale = global_scale(mask, cfg.agg_mode, info)
        if weight is None:
            loss = loss * scale
        else:  # the surrogate weighs as loss_agg_mode says, the penalty as a mean over all tokens
            adv = advantages[:, None].expand_as(log_prob) if advantages.dim() == 1 else advantages
            surrogate = objective.body(  # type: ignore[attr-defined]
                log_prob, old_log_prob.detach(), adv.detach(), mask, without_penalty(cfg, weight)
            )[0]
            loss = surrogate * scale + (loss - surrogate) * global_scale(mask, "token-mean", info)
        out = {f"actor/{PREFIX}{k}": v for k, v in metrics.items()}
        out.update(verl_metrics(old_log_prob, log_prob, advantages, mask, cfg))
        return loss, out

    policy_loss.__name__ = f"{PREFIX}{name}"
    policy_loss.__doc__ = objective.__doc__
    return policy_loss


def without_penalty(cfg: ObjectiveConfig, weight: str) -> ObjectiveConfig:
    """``cfg`` with its penalty's weight 0: the objective's surrogate alone."""
    zero: dict[str, Any] = {weight: 0.0}
    return dataclasses.replace(cfg, **zero)


def policy_losses() -> dict[str, PolicyLoss]:
    return {f"{PREFIX}{n}": make_policy_loss(n) for n in list_objectives()}


def register() -> list[str]:
    """Register every objective in verl's policy-loss registry; returns the names."""
    from verl.trainer.ppo.core_algos import register_policy_loss

    losses = policy_losses()
    for name, fn in losses.items():
        register_policy_loss(name)(fn)
    return sorted(losses)
