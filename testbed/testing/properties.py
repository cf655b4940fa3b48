"""The property suite every objective must pass, runnable on any registered objective in one call.

    from testbed.testing import check_objective
    check_objective("my_objective")                      # all properties
    check_objective("clip_cov", skip=["unit_ratio_is_policy_gradient"])

Each property is a function ``(objective, config, batch) -> None`` that asserts; the suite runs
each under hypothesis over ``objective_batches()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings

from testbed.aggregation import aggregate
from testbed.objectives import Objective, ObjectiveConfig, get_objective
from testbed.testing.strategies import ObjectiveBatch, objective_batches

Property = Callable[[Objective, ObjectiveConfig, ObjectiveBatch], None]


def evaluate(
    objective: Objective, cfg: ObjectiveConfig, batch: ObjectiveBatch, **replace: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(loss, d loss / d log_probs, metrics) for ``batch`` with some tensors replaced."""
    fields: dict[str, Any] = {
        "log_probs": batch.log_probs,
        "old_log_probs": batch.old_log_probs,
        "advantages": batch.advantages,
        "mask": batch.mask,
        "ref_log_probs": batch.ref_log_probs,
        "rollout_log_probs": batch.rollout_log_probs,
    }
    fields.update(replace)
    log_probs = fields.pop("log_probs").detach().clone().requires_grad_(True)
    loss, metrics = objective(log_probs, config=cfg, **fields)
    (grad,) = torch.autograd.grad(loss, log_probs, allow_unused=True)
    return loss.detach(), (torch.zeros_like(log_probs) if grad is None else grad), metrics


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-9), f"{what}: {a} != {b}"


def finite_outputs(objective: Objective, cfg: ObjectiveConfig, batch: ObjectiveBatch) -> None:
    loss, grad, metrics = evaluate(objective, cfg, batch)
    assert torch.isfinite(loss), f"loss is {loss}"
    assert torch.isfinite(grad).all(), f"non-finite gradient {grad}"
    bad = {k: v for k, v in metrics.items() if v in (float("inf"), float("-inf"))}
    assert not bad, f"infinite metrics {bad}"


def masked_tokens_get_no_gradient(objective: Objective, cfg: ObjectiveConfig, batch: ObjectiveBatch) -> None:
    _, grad, _ = evaluate(objective, cfg, batch)
    outside = grad[batch.mask == 0]
    assert (outside == 0).all(), f"masked tokens got gradient {outside}"


def empty_mask_gives_zero(objective: Objective, cfg: ObjectiveConfig, batch: ObjectiveBatch) -> None:
    loss, grad, _ = evaluate(objective, cfg, batch, mask=torch.zeros_like(batch.mask))
    assert loss == 0, f"loss with an empty mask is {loss}"
    assert (grad == 0).all(), "gradient with an empty mask is not zero"


def padding_changes_nothing(objective: Objective, cfg: ObjectiveConfig, batch: ObjectiveBatch) -> None:
    if cfg.agg_mode == "seq-mean-token-sum-norm" and cfg.agg_norm_const is None:
        cfg = dataclasses.replace(cfg, agg_norm_const=float(batch.shape[1]))
    b, t = batch.shape
    gen = torch.Generator().manual_seed(b * 31 + t)

    def pad(x: torch.Tensor, fill: float | None) -> torch.Tensor:
        """x in the top-left corner of a larger tensor of ``fill`` (random log-probs if None)."""
        if fill is None:
            out = -5 * torch.rand(b + 2, t + 3, generator=gen, dtype=x.dtype)
        else:
            out = torch.full((b + 2, t + 3), fill, dtype=x.dtype)
        out[:b, :t] = x
        return out

    adv = torch.cat([batch.advantages, torch.tensor([1.5, -0.5], dtype=batch.advantages.dtype)])
    loss, grad, _ = evaluate(objective, cfg, batch)
    p_loss, p_grad, _ = evaluate(
        objective,
        cfg,
        batch,
        log_probs=pad(batch.log_probs, None),
        old_log_probs=pad(batch.old_log_probs, None),
        ref_log_probs=pad(batch.ref_log_probs, None),
        rollout_log_probs=pad(batch.rollout_log_probs, None),
        mask=pad(batch.mask, 0.0),
        advantages=adv,
    )
    _close(p_loss, loss, "loss after padding")
    _close(p_grad[:b, :t], grad, "gradient after padding")


def batch_order_changes_nothing(objective: Objective, cfg: ObjectiveConfig, batch: ObjectiveBatch) -> None:
    perm = torch.randperm(batch.shape[0], generator=torch.Generator().manual_seed(0))
    loss, grad, _ = evaluate(objective, cfg, batch)
    p_loss, p_grad, _ = evaluate(
        objective,
        cfg,
        batch,
        log_probs=batch.log_probs[perm],
        old_log_probs=batch.old_log_probs[perm],
        ref_log_probs=batch.ref_log_probs[perm],
        rollout_log_probs=batch.rollout_log_probs[perm],
        mask=batch.mask[perm],
        advantages=batch.advantages[perm],
    )
    _close(p_loss, loss, "loss after reordering the batch")
    _close(p_grad, grad[perm], "gradient after reordering the batch")


def unit_ratio_is_policy_gradient(objective: Objective, cfg: ObjectiveConfig, batch: ObjectiveBatch) -> None:
    """On-policy (pi_theta == pi_old == pi_rollout, no reference term) the gradient is agg(-A log pi)'s."""
    if cfg.agg_mode == "seq-mean-token-sum-norm" and cfg.agg_norm_const is None:
        cfg = dataclasses.replace(cfg, agg_norm_const=float(batch.shape[1]))
    cfg = dataclasses.replace(cfg, ref_kl_coef=0.0)
    on_policy = batch.log_probs
    _, grad, _ = evaluate(objective, cfg, batch, old_log_probs=on_policy, rollout_log_probs=on_policy)
    lp = batch.log_probs.detach().clone().requires_grad_(True)
    pg = aggregate(-batch.advantages[:, None] * lp, batch.mask, cfg.agg_mode, cfg.agg_norm_const)
    (expected,) = torch.autograd.grad(pg, lp)
    _close(grad, expected, "gradient at r = 1 vs plain policy gradient")


def gradient_follows_advantage_sign(
    objective: Objective, cfg: ObjectiveConfig, batch: ObjectiveBatch
) -> None:
    """Descending the loss never lowers a positive token's log-prob nor raises a negative one's."""
    cfg = dataclasses.replace(cfg, ref_kl_coef=0.0)
    _, grad, _ = evaluate(objective, cfg, batch)
    adv = batch.advantages[:, None].expand_as(grad)
    valid = batch.mask > 0
    assert (grad[valid & (adv > 0)] <= 0).all(), "a positive-advantage token is pushed down"
    assert (grad[valid & (adv < 0)] >= 0).all(), "a negative-advantage token is pushed up"


PROPERTIES: dict[str, Property] = {
    f.__name__: f
    for f in (
        finite_outputs,
        masked_tokens_get_no_gradient,
        empty_mask_gives_zero,
        padding_changes_nothing,
        batch_order_changes_nothing,
        unit_ratio_is_policy_gradient,
        gradient_follows_advantage_sign,
    )
}


def check_objective(
    objective: str | Objective,
    config: ObjectiveConfig | None = None,
    skip: Iterable[str] = (),
    max_examples: int = 40,
) -> None:
    """Run every property in ``PROPERTIES`` (less ``skip``) on ``objective``; raise on the first failure."""
    skip = set(skip)
    unknown = skip - set(PROPERTIES)
    if unknown:
        raise ValueError(f"skip: unknown properties {sorted(unknown)}; known: {sorted(PROPERTIES)}")
    if isinstance(objective, str):
        config = config or ObjectiveConfig(name=objective)
        objective = get_objective(objective)
    elif config is None:
        config = ObjectiveConfig(name=objective.objective_name)  # type: ignore[attr-defined]
    for name, prop in PROPERTIES.items():
        if name in skip:
            continue
        _run_property(prop, objective, config, max_examples)


def _run_property(prop: Property, objective: Objective, cfg: ObjectiveConfig, max_examples: int) -> None:
    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(batch=objective_batches())
    def run(batch: ObjectiveBatch) -> None:
        prop(objective, cfg, batch)

    run.__name__ = prop.__name__
    run()
