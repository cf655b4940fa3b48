"""The objective registry: one signature for every policy objective, one decorator to add one.

An objective body is a pure function ``body(log_probs, old_log_probs, advantages, mask, cfg)`` of
[B, T] tensors (advantages already broadcast to tokens, mask already float) that returns the scalar
policy loss and a dict of its own metrics. ``@register_objective("name")`` wraps it into the public
signature shared by the trainer, the TRL subclass and the verl plug-in::

    loss, metrics = objective(log_probs, old_log_probs, advantages, mask,
                              ref_log_probs=None, config=ObjectiveConfig(...),
                              rollout_log_probs=None)

``rollout_log_probs`` are the rollout engine's log-probs of the sampled tokens where they differ
from the trainer's ``old_log_probs`` (vLLM vs FSDP, bf16 sampling): None means identical. Only
bodies registered with ``uses_rollout_log_probs=True`` (TIS, MIS) receive them, as a sixth
argument; every other objective ignores them.

The wrapper validates the inputs (errors name the bad argument), adds the optional reference-KL
term, and adds the diagnostics every objective reports (``common.ratio_metrics`` and the fraction
of tokens whose gradient is exactly zero). A body that adds a penalty to its surrogate reports the
surrogate alone as ``pg_loss``; otherwise ``pg_loss`` is the body's loss.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Protocol

import torch

from testbed.aggregation import AGG_MODES, aggregate
from testbed.config import check_choice, check_positive, check_range, fail
from testbed.kl import KL_ESTIMATORS, kl_estimate
from testbed.objectives.common import log_ratio_and_ratio, ratio_metrics, zero_grad_metrics

Metrics = dict[str, float]
Tensor = torch.Tensor


class Objective(Protocol):
    def __call__(
        self,
        log_probs: Tensor,
        old_log_probs: Tensor,
        advantages: Tensor,
        mask: Tensor,
        ref_log_probs: Tensor | None = None,
        config: ObjectiveConfig | None = None,
        *,
        rollout_log_probs: Tensor | None = None,
    ) -> tuple[Tensor, Metrics]: ...


Body = Callable[..., tuple[Tensor, Metrics]]

_REGISTRY: dict[str, Objective] = {}
# Each objective's default loss_agg_mode: its paper's (see the body's docstring).
_DEFAULT_AGG: dict[str, str] = {}

SAPO_ADV_CONDITIONS = ("nonneg", "pos", "any")
SAPO_TOKEN_SELECTIONS = ("below_tau", "all")
SAPO_NORMS = ("paper", "penalized")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Every objective's knobs in one flat, validated record (each objective reads its own).

    Fields are grouped by the objective that reads them and prefixed by its name, except the PPO
    clip range that several share; each body's docstring names its fields.
    """

    name: str = "grpo"
    # Shared by all: how per-token losses become a scalar (None: the objective's paper default,
    # see ``agg_mode``), and the optional reference-KL term.
    loss_agg_mode: str | None = None
    agg_norm_const: float | None = None
    ref_kl_coef: float = 0.0
    ref_kl_estimator: str = "k3"
    # TRL's use_bias_correction_kl: weight the per-token reference KL by r (pi_theta / pi_old).
    ref_kl_ratio_weighted: bool = False
    log_ratio_clamp: float = 20.0  # |log r| bound before exp, as verl: keeps r finite
    # PPO-style clipping (grpo, dual_clip, two_sided_clip, gppo, opsm, sapo, llds, tis, mis).
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip_c: float = 3.0
    two_sided_delta: float = 3.0
    # CISPO: bounds of the detached IS weight (MiniMax-M1 and TRL: no lower bound; TRL's cap 5).
    cispo_min: float = 0.0
    cispo_max: float = 5.0
    # GSPO: sequence-level ratio clipping (arXiv 2507.18071 uses 3e-4 / 4e-4).
    gspo_eps_low: float = 3e-4
    gspo_eps_high: float = 4e-4
    # OPSM: mask negative sequences whose mean log(pi_old / pi_theta) exceeds delta.
    opsm_delta: float = 0.1
    # Clip-Cov / KL-Cov (arXiv 2505.22617).
    clip_cov_ratio: float = 2e-4
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    kl_cov_ratio: float = 2e-3
    kl_cov_coef: float = 1.0
    # Qwen's soft adaptive gate (arXiv 2511.20347).
    gate_tau_pos: float = 1.0
    gate_tau_neg: float = 1.05
    # SAPO, Search Agent Policy Optimization (arXiv 2603.10069) and its ablation knobs.
    sapo_tau: float = 0.8
    sapo_w: float = 0.1
    sapo_adv_condition: str = "nonneg"
    sapo_token_selection: str = "below_tau"
    sapo_kl: str = "k1"
    sapo_norm: str = "paper"
    # LLDS, likelihood-preserving regulariser (arXiv 2512.04220).
    llds_coef: float = 0.1
    # TIS / MIS against rollout/trainer mismatch: truncation cap, and the kept band of MIS.
    tis_cap: float = 2.0
    mis_low: float = 0.5
    mis_high: float = 2.0

    def __post_init__(self) -> None:
        if self.name not in _REGISTRY:
            fail(self, "name", self.name, f"unknown objective; known: {sorted(_REGISTRY)}")
        if self.loss_agg_mode is not None:
            check_choice(self, "loss_agg_mode", AGG_MODES)
        check_choice(self, "ref_kl_estimator", KL_ESTIMATORS)
        check_choice(self, "sapo_kl", KL_ESTIMATORS)
        check_choice(self, "sapo_adv_condition", SAPO_ADV_CONDITIONS)
        check_choice(self, "sapo_token_selection", SAPO_TOKEN_SELECTIONS)
        check_choice(self, "sapo_norm", SAPO_NORMS)
        check_positive(
            self,
            "eps_low",
            "eps_high",
            "gspo_eps_low",
            "gspo_eps_high",
            "ref_kl_coef",
            "sapo_w",
            "llds_coef",
            "kl_cov_coef",
            "opsm_delta",
            "cispo_min",
            allow_zero=True,
        )
        check_positive(
            self, "log_ratio_clamp", "sapo_tau", "gate_tau_pos", "gate_tau_neg", "tis_cap", "mis_low"
        )
        check_range(self, "eps_low", 0.0, 1.0)
        check_range(self, "clip_cov_ratio", 0.0, 1.0)
        check_range(self, "kl_cov_ratio", 0.0, 1.0)
        if self.agg_norm_const is not None and self.agg_norm_const <= 0:
            fail(self, "agg_norm_const", self.agg_norm_const, "must be > 0 or None")
        if self.dual_clip_c <= 1.0:
            fail(self, "dual_clip_c", self.dual_clip_c, "must be > 1")
        # Only the objective that reads delta ties it to eps_high (TRL's CISPO cap 5 must not need it).
        if self.name == "two_sided_clip" and self.two_sided_delta <= 1.0 + self.eps_high:
            fail(self, "two_sided_delta", self.two_sided_delta, "must be > 1 + eps_high")
        if self.cispo_max <= self.cispo_min:
            fail(self, "cispo_max", self.cispo_max, "must be > cispo_min")
        if self.clip_cov_lb > self.clip_cov_ub:
            fail(self, "clip_cov_lb", self.clip_cov_lb, "must be <= clip_cov_ub")
        if self.mis_high <= self.mis_low:
            fail(self, "mis_high", self.mis_high, "must be > mis_low")

    @property
    def agg_mode(self) -> str:
        """The aggregation in force: ``loss_agg_mode`` if set, else the objective's paper default."""
        return self.loss_agg_mode if self.loss_agg_mode is not None else _DEFAULT_AGG[self.name]


def register_objective(
    name: str, default_agg: str = "token-mean", uses_rollout_log_probs: bool = False
) -> Callable[[Body], Objective]:
    """Register ``body`` under ``name`` and return it wrapped in the public signature.

    ``default_agg`` is the aggregation used when the config leaves ``loss_agg_mode`` None;
    ``uses_rollout_log_probs`` passes the rollout log-probs to the body as a sixth argument.
    """
    if default_agg not in AGG_MODES:
        raise ValueError(f"default_agg={default_agg!r}: must be one of {list(AGG_MODES)}")

    def decorate(body: Body) -> Objective:
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} is already registered")

        @functools.wraps(body)
        def objective(
            log_probs: Tensor,
            old_log_probs: Tensor,
            advantages: Tensor,
            mask: Tensor,
            ref_log_probs: Tensor | None = None,
            config: ObjectiveConfig | None = None,
            *,
            rollout_log_probs: Tensor | None = None,
        ) -> tuple[Tensor, Metrics]:
            cfg = config if config is not None else ObjectiveConfig(name=name)
            adv, m = _validated(log_probs, old_log_probs, advantages, mask, ref_log_probs, rollout_log_probs)
            old = old_log_probs.detach()
            run: Body = body
            if uses_rollout_log_probs:
                rollout = old if rollout_log_probs is None else rollout_log_probs.detach()
                run = functools.partial(_with_rollout, body, rollout)
            pg_loss, metrics = run(log_probs, old, adv, m, cfg)
            loss = pg_loss
            if ref_log_probs is not None and cfg.ref_kl_coef > 0:
                per_token_kl = kl_estimate(log_probs, ref_log_probs.detach(), cfg.ref_kl_estimator)
                if cfg.ref_kl_ratio_weighted:
                    per_token_kl = per_token_kl * log_ratio_and_ratio(log_probs, old, cfg)[1]
                ref_kl = aggregate(per_token_kl, m, cfg.agg_mode, cfg.agg_norm_const)
                loss = loss + cfg.ref_kl_coef * ref_kl
                metrics["ref_kl"] = float(ref_kl.detach())
            metrics.update(ratio_metrics(log_probs.detach() - old, adv, m, cfg))
            metrics.update(zero_grad_metrics(run, log_probs, old, adv, m, cfg))
            metrics.setdefault("pg_loss", float(pg_loss.detach()))
            metrics["loss"] = float(loss.detach())
            return loss, metrics

        objective.body = body  # type: ignore[attr-defined]
        objective.objective_name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = objective
        _DEFAULT_AGG[name] = default_agg
        return objective

    return decorate


def _with_rollout(
    body: Body, rollout: Tensor, log_probs: Tensor, old: Tensor, adv: Tensor, m: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    return body(log_probs, old, adv, m, cfg, rollout)


def get_objective(name: str) -> Objective:
    """The registered objective called ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; known: {sorted(_REGISTRY)}") from None


def list_objectives() -> list[str]:
    return sorted(_REGISTRY)


def unregister_objective(name: str) -> None:
    """Remove ``name`` from the registry (for tests that register throwaway objectives)."""
    _REGISTRY.pop(name, None)
    _DEFAULT_AGG.pop(name, None)


def _validated(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    ref_log_probs: Tensor | None,
    rollout_log_probs: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Check shapes and values; return advantages broadcast to [B, T] and the mask as floats."""
    tensors = {"log_probs": log_probs, "old_log_probs": old_log_probs, "mask": mask}
    if ref_log_probs is not None:
        tensors["ref_log_probs"] = ref_log_probs
    if rollout_log_probs is not None:
        tensors["rollout_log_probs"] = rollout_log_probs
    for field, t in {**tensors, "advantages": advantages}.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{field}: expected a torch.Tensor, got {type(t).__name__}")
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs: expected shape [B, T], got {tuple(log_probs.shape)}")
    shape = log_probs.shape
    for field, t in tensors.items():
        if t.shape != shape:
            raise ValueError(f"{field}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    if advantages.shape == shape[:1]:
        advantages = advantages[:, None].expand(shape)
    elif advantages.shape != shape:
        raise ValueError(
            f"advantages: expected shape {tuple(shape[:1])} or {tuple(shape)}, got {tuple(advantages.shape)}"
        )
    for field, t in {**tensors, "advantages": advantages}.items():
        if t.is_floating_point() and not torch.isfinite(t.detach()).all():
            raise ValueError(f"{field}: contains non-finite values")
    m = mask.to(log_probs.dtype)
    if not ((m == 0) | (m == 1)).all():
        raise ValueError("mask: values must be 0 or 1")
    return advantages.to(log_probs.dtype).detach(), m
