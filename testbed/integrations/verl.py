"""verl plug-in: the registry's objectives as verl policy losses, under non-clashing names.

verl picks a policy loss by ``actor_rollout_ref.actor.policy_loss.loss_mode``; functions are added
with ``@register_policy_loss(name)`` and called as ``fn(old_log_prob, log_prob, advantages,
response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None) -> (loss,
metrics)``. ``register()`` registers ``testbed_<name>`` for every objective (verl's own ``sapo``
is Qwen's soft adaptive method; ours is ``testbed_sapo``). verl's ``clip_ratio_low`` /
``clip_ratio_high`` / ``clip_ratio_c`` map to eps_low / eps_high / dual_clip_c; any other field
of ``ObjectiveConfig`` is read from ``policy_loss.testbed`` (a dict) when present.

The registration must run inside verl's Ray workers: set
``actor_rollout_ref.model.external_lib=testbed.integrations.verl_plugin`` (the workers import it
when they build the model, and importing it calls ``register()``). This module imports without
verl; ``policy_losses()`` gives the functions for tests and reuse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from testbed.objectives import ObjectiveConfig, get_objective, list_objectives

PREFIX = "testbed_"


def _get(config: Any, key: str, default: Any = None) -> Any:
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def objective_config(name: str, config: Any, loss_agg_mode: str) -> ObjectiveConfig:
    """Our ObjectiveConfig from verl's actor config (None: our defaults)."""
    fields: dict[str, Any] = {"name": name, "loss_agg_mode": loss_agg_mode}
    low = _get(config, "clip_ratio_low", _get(config, "clip_ratio"))
    high = _get(config, "clip_ratio_high", _get(config, "clip_ratio"))
    c = _get(config, "clip_ratio_c")
    for key, value in (("eps_low", low), ("eps_high", high), ("dual_clip_c", c)):
        if value is not None:
            fields[key] = float(value)
    extra = _get(_get(config, "policy_loss"), "testbed") or {}
    known = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    unknown = set(extra) - known
    if unknown:
        raise ValueError(f"policy_loss.testbed: unknown fields {sorted(unknown)}")
    return ObjectiveConfig(**{**fields, **dict(extra)})


def make_policy_loss(name: str) -> Callable[..., tuple[torch.Tensor, dict[str, float]]]:
    """The verl-signature function for registry objective ``name``."""
    objective = get_objective(name)

    def policy_loss(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if rollout_is_weights is not None:
            raise ValueError(
                f"rollout_is_weights: {PREFIX}{name} does not apply rollout importance-sampling weights; "
                "disable rollout IS correction for this loss"
            )
        cfg = objective_config(name, config, loss_agg_mode)
        loss, metrics = objective(
            log_prob, old_log_prob, advantages, response_mask.to(log_prob.dtype), None, cfg
        )
        return loss, {f"actor/{PREFIX}{k}": v for k, v in metrics.items()}

    policy_loss.__name__ = f"{PREFIX}{name}"
    policy_loss.__doc__ = objective.__doc__
    return policy_loss


def policy_losses() -> dict[str, Callable[..., tuple[torch.Tensor, dict[str, float]]]]:
    return {f"{PREFIX}{n}": make_policy_loss(n) for n in list_objectives()}


def register() -> list[str]:
    """Register every objective in verl's policy-loss registry; returns the names."""
    from verl.trainer.ppo.core_algos import register_policy_loss

    losses = policy_losses()
    for name, fn in losses.items():
        register_policy_loss(name)(fn)
    return sorted(losses)
