"""The objective registry: one signature for every policy objective, one decorator to add one.

An objective body is a pure function ``body(log_probs, old_log_probs, advantages, mask, cfg)`` of
[B, T] tensors (advantages already broadcast to tokens, mask already float) that returns the scalar
policy loss and a dict of its own metrics. ``@register_objective("name")`` wraps it into the public
signature shared by the trainer, the TRL subclass and the verl plug-in::

    loss, metrics = objective(log_probs, old_log_probs, advantages, mask,
                              ref_log_probs=None, config=ObjectiveConfig(...),
                              rollout_log_probs=None, low_ratio_threshold=0.8)

``rollout_log_probs`` are the rollout engine's log-probs of the sampled tokens where they differ
from the trainer's ``old_log_probs`` (vLLM vs FSDP, bf16 sampling): None means identical. Only
bodies registered with ``uses_rollout_log_probs=True`` (TIS, MIS) receive them, as a sixth
argument; every other objective ignores them. ``low_ratio_threshold`` is where the diagnostics
count a token as collapsed (r at or below it), the trainer's ``diag_ratio_threshold``.

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
from testbed.config import added_field, check_at_most, check_choice, check_positive, check_range, fail
from testbed.config import field as config_field
from testbed.kl import KL_ESTIMATORS, kl_estimate
from testbed.objectives.common import (
    LOW_RATIO_THRESHOLD,
    log_ratio_and_ratio,
    ratio_metrics,
    zero_grad_metrics,
)

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
        low_ratio_threshold: float = LOW_RATIO_THRESHOLD,
    ) -> tuple[Tensor, Metrics]: ...


Body = Callable[..., tuple[Tensor, Metrics]]

_REGISTRY: dict[str, Objective] = {}
# Each objective's default loss_agg_mode: its paper's (see the body's docstring).
_DEFAULT_AGG: dict[str, str] = {}

SAPO_ADV_CONDITIONS = ("nonneg", "pos", "any")
SAPO_TOKEN_SELECTIONS = ("below_tau", "all")
SAPO_NORMS = ("paper", "penalized", "all")
LLDS_GATES = ("action", "response", "token")
ROLLOUT_IS_LEVELS = ("token", "sequence")
# Defaults that moved after runs were stored: field -> (the objective that reads it, the default
# those runs were keyed with). Other objectives keep the old value in their key (see storage_key).
_KEYED_BEFORE: dict[str, tuple[str, float]] = {"llds_coef": ("llds", 0.1), "mis_high": ("mis", 2.0)}


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Every objective's knobs in one flat, validated record (each objective reads its own).

    Fields are grouped by the objective that reads them and prefixed by its name, except the PPO
    clip range that several share; each body's docstring names its fields.
    """

    name: str = config_field(
        "grpo",
        help="The objective (loss) to train with: cispo, clip_cov, dual_clip, gppo, grpo, gspo, "
        "gspo_token, kl_cov, llds, mis, opsm, reinforce, sapo, soft_adaptive_gate, tis, two_sided_clip.",
        trl="loss_type (its sapo is our soft_adaptive_gate)",
        verl="actor_rollout_ref.actor.policy_loss.loss_mode (its vanilla is our grpo)",
    )
    # Shared by all: how per-token losses become a scalar, and the optional reference-KL term.
    loss_agg_mode: str | None = config_field(
        None,
        help="How per-token losses become one scalar: token-mean, seq-mean-token-sum, "
        "seq-mean-token-mean or seq-mean-token-sum-norm; None: the objective's paper default.",
        trl="loss_type (its normalisation)",
        verl="actor_rollout_ref.actor.loss_agg_mode",
    )
    agg_norm_const: float | None = config_field(
        None,
        help="seq-mean-token-sum-norm's constant (Dr. GRPO's); None: the padded response length; > 0.",
        source="Dr. GRPO, arXiv 2503.20783",
        trl="max_completion_length (loss_type=dr_grpo)",
        verl="actor_rollout_ref.actor.loss_scale_factor",
    )
    ref_kl_coef: float = config_field(
        0.0,
        help="Weight of the KL penalty to the reference (base) policy; 0 turns it off; >= 0.",
        trl="beta",
        verl="actor_rollout_ref.actor.kl_loss_coef",
    )
    ref_kl_estimator: str = config_field(
        "k3",
        help="Estimator of that KL: k1 (log ratio), k2 (half its square) or k3 (r - 1 - log r, Schulman's).",
        source="Schulman, Approximating KL divergence (2020)",
        verl="actor_rollout_ref.actor.kl_loss_type (kl, mse, low_var_kl)",
    )
    ref_kl_ratio_weighted: bool = config_field(
        False,
        help="Weight the per-token reference KL by r = pi_theta / pi_old (an unbiased reverse-KL gradient).",
        source="DeepSeek-V3.2 (arXiv 2512.02556)",
        trl="use_bias_correction_kl",
    )
    log_ratio_clamp: float = config_field(
        20.0, help="Bound on |log r| before exp, as verl, so that r stays finite; > 0."
    )
    # PPO-style clipping (grpo, dual_clip, two_sided_clip, gppo, opsm, sapo, llds, tis, mis).
    eps_low: float = config_field(
        0.2,
        help="PPO clip range below 1: r is clipped at 1 - eps_low; in [0, 1].",
        source="PPO, arXiv 1707.06347",
        trl="epsilon",
        verl="actor_rollout_ref.actor.clip_ratio_low",
    )
    eps_high: float = config_field(
        0.2,
        help="PPO clip range above 1: r is clipped at 1 + eps_high (DAPO's clip-higher: 0.28); >= 0.",
        source="DAPO, arXiv 2503.14476",
        trl="epsilon_high",
        verl="actor_rollout_ref.actor.clip_ratio_high",
    )
    dual_clip_c: float = config_field(
        3.0,
        help="dual_clip: for A < 0 the loss is bounded by -c A; > 1.",
        source="Dual-clip PPO, arXiv 1912.09729",
        verl="actor_rollout_ref.actor.clip_ratio_c",
    )
    two_sided_delta: float = config_field(
        3.0,
        help="two_sided_clip: for A < 0 the ratio is first capped at delta; > 1 + eps_high.",
        source="INTELLECT-2, arXiv 2505.07291",
        trl="delta",
    )
    # CISPO: bounds of the detached IS weight (MiniMax-M1 and TRL: no lower bound; TRL's cap 5).
    cispo_min: float = config_field(
        0.0,
        help="cispo: lower bound of the detached importance weight; >= 0 (0: none, as the paper).",
        source="MiniMax-M1, arXiv 2506.13585",
        verl="1 - actor_rollout_ref.actor.clip_ratio_low (loss_mode=cispo)",
    )
    cispo_max: float = config_field(
        5.0,
        help="cispo: upper bound of the detached importance weight; > cispo_min.",
        source="MiniMax-M1, arXiv 2506.13585",
        trl="epsilon_high (loss_type=cispo)",
        verl="1 + actor_rollout_ref.actor.clip_ratio_high (loss_mode=cispo)",
    )
    # GSPO: sequence-level ratio clipping.
    gspo_eps_low: float = config_field(
        3e-4,
        help="gspo, gspo_token: clip range below 1 of the sequence ratio; >= 0.",
        source="GSPO, arXiv 2507.18071",
        trl="epsilon (importance_sampling_level=sequence)",
        verl="actor_rollout_ref.actor.clip_ratio_low (loss_mode=gspo)",
    )
    gspo_eps_high: float = config_field(
        4e-4,
        help="gspo, gspo_token: clip range above 1 of the sequence ratio; >= 0.",
        source="GSPO, arXiv 2507.18071",
        trl="epsilon_high (importance_sampling_level=sequence)",
        verl="actor_rollout_ref.actor.clip_ratio_high (loss_mode=gspo)",
    )
    opsm_delta: float = config_field(
        0.1,
        help="opsm: a response with A < 0 whose mean log(pi_old / pi_theta) exceeds delta is masked; >= 0.",
        source="DeepSeek-V3.2, arXiv 2512.02556",
        trl="off_policy_mask_threshold",
    )
    # Clip-Cov / KL-Cov (arXiv 2505.22617).
    clip_cov_ratio: float = config_field(
        2e-4,
        help="clip_cov: share of the masked tokens whose loss is removed (those of largest covariance); "
        "in [0, 1].",
        source="Cui et al., arXiv 2505.22617",
        verl="actor_rollout_ref.actor.policy_loss.clip_cov_ratio",
    )
    clip_cov_lb: float = config_field(
        1.0,
        help="clip_cov: only tokens with covariance above this bound are eligible; <= clip_cov_ub.",
        source="Cui et al., arXiv 2505.22617",
        verl="actor_rollout_ref.actor.policy_loss.clip_cov_lb",
    )
    clip_cov_ub: float = config_field(
        5.0,
        help="clip_cov: only tokens with covariance below this bound are eligible.",
        source="Cui et al., arXiv 2505.22617",
        verl="actor_rollout_ref.actor.policy_loss.clip_cov_ub",
    )
    kl_cov_ratio: float = config_field(
        2e-3,
        help="kl_cov: share of the masked tokens (those of largest covariance) given the |log r| penalty; "
        "in [0, 1].",
        source="Cui et al., arXiv 2505.22617",
        verl="actor_rollout_ref.actor.policy_loss.kl_cov_ratio",
    )
    kl_cov_coef: float = config_field(
        1.0,
        help="kl_cov: weight of the |log r| penalty; >= 0.",
        source="Cui et al., arXiv 2505.22617",
        verl="actor_rollout_ref.actor.policy_loss.ppo_kl_coef",
    )
    # Qwen's soft adaptive gate.
    gate_tau_pos: float = config_field(
        1.0,
        help="soft_adaptive_gate: temperature of the sigmoid gate for A > 0 (larger: closer to a hard "
        "clip); > 0.",
        source="Gao et al., arXiv 2511.20347",
        trl="sapo_temperature_pos",
        verl="actor_rollout_ref.actor.tau_pos",
    )
    gate_tau_neg: float = config_field(
        1.05,
        help="soft_adaptive_gate: temperature of the sigmoid gate for A <= 0; > 0.",
        source="Gao et al., arXiv 2511.20347",
        trl="sapo_temperature_neg",
        verl="actor_rollout_ref.actor.tau_neg",
    )
    # SAPO, Search Agent Policy Optimization, and its ablation knobs.
    sapo_tau: float = config_field(
        0.8,
        help="sapo: tokens with r = pi_theta / pi_old <= tau (and an eligible advantage) get the KL "
        "penalty; > 0.",
        source="SAPO, arXiv 2603.10069",
    )
    sapo_w: float = config_field(
        0.1, help="sapo: weight of the KL(pi_old || pi_theta) penalty; >= 0.", source="SAPO, arXiv 2603.10069"
    )
    sapo_adv_condition: str = config_field(
        "nonneg",
        help="sapo: responses whose tokens may be penalised: nonneg (A >= 0, the paper's), pos (A > 0) "
        "or any.",
        source="SAPO, arXiv 2603.10069",
    )
    sapo_token_selection: str = config_field(
        "below_tau",
        help="sapo: below_tau penalises eligible tokens with r <= sapo_tau (the paper's); all: every one.",
        source="SAPO, arXiv 2603.10069",
    )
    sapo_kl: str = config_field(
        "k1",
        help="sapo: the penalty's KL estimator, k1 (-log r, the paper's), k2 or k3.",
        source="SAPO, arXiv 2603.10069",
    )
    sapo_norm: str = config_field(
        "paper",
        help="sapo: the penalty's denominator: paper (tokens of responses with an eligible advantage), "
        "penalized (the penalised tokens only) or all (every masked token: what verl can count "
        "across micro-batches, the verl plug-in's default).",
        source="SAPO, arXiv 2603.10069",
    )
    llds_coef: float = config_field(
        0.2,
        help="llds: weight (lambda) of the hinge max(0, log pi_old - log pi_theta) on the gated tokens of "
        "responses with A >= 0, summed over every masked token; >= 0 (0.2: the authors' scripts).",
        source="LLDS, arXiv 2512.04220",
    )
    llds_gate: str = added_field(
        "action",
        help="llds: the unit whose summed likelihood drop opens the gate: action (a run of consecutive "
        "masked tokens, the paper's best), response, or token (each token alone).",
        source="LLDS, arXiv 2512.04220 (the authors' dp_actor.py)",
    )
    # TIS / MIS against rollout/trainer mismatch: truncation cap, and the kept band of MIS.
    tis_cap: float = config_field(
        2.0,
        help="tis: cap C of the detached weight min(pi_old / pi_rollout, C) of each token's clipped "
        "loss; > 0.",
        source="Yao et al. (2025), Your efficient RL framework secretly brings you off-policy RL training",
        trl="vllm_importance_sampling_clip_max (mode token_truncate)",
        verl="algorithm.rollout_correction.rollout_is_threshold (rollout_is=token)",
    )
    mis_low: float = config_field(
        0.5,
        help="mis: each token's loss is weighted by the detached pi_old / pi_rollout, and dropped when that "
        "lies below mis_low; >= 0 (0: no lower bound).",
        source="IcePop (Ring-1T, arXiv 2510.18855); Liu, Li et al. (2025), When speed kills stability",
        trl="vllm_importance_sampling_clip_min (mode token_mask)",
        verl="algorithm.rollout_correction.rollout_is_threshold (lower of lo_hi)",
    )
    mis_high: float = config_field(
        5.0,
        help="mis: tokens whose pi_old / pi_rollout lies above mis_high are dropped; > mis_low "
        "([0.5, 5]: IcePop's band and verl's decoupled_token_icepop preset).",
        source="IcePop (Ring-1T, arXiv 2510.18855); Liu, Li et al. (2025), When speed kills stability",
        trl="vllm_importance_sampling_clip_max (mode token_mask)",
        verl="algorithm.rollout_correction.rollout_is_threshold (upper of lo_hi)",
    )
    rollout_is_level: str = added_field(
        "token",
        help="tis, mis: the weight pi_old / pi_rollout per token, or per response (the product over its "
        "tokens, When speed kills stability's sequence-level MIS).",
        source="Liu, Li et al. (2025), When speed kills stability",
        trl="vllm_importance_sampling_mode (token_* or sequence_*)",
        verl="algorithm.rollout_correction.rollout_is (token or sequence)",
    )

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
        check_choice(self, "llds_gate", LLDS_GATES)
        check_choice(self, "rollout_is_level", ROLLOUT_IS_LEVELS)
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
            "mis_low",
            allow_zero=True,
        )
        check_positive(self, "log_ratio_clamp", "sapo_tau", "gate_tau_pos", "gate_tau_neg", "tis_cap")
        # sane ceilings: past them a loss overflows (float32 exp(89) is inf) far from the field
        check_at_most(self, 80.0, "log_ratio_clamp")
        for name in ("sapo_tau", "gate_tau_pos", "gate_tau_neg"):
            check_range(self, name, 1e-3, 1e3)
        coefficients = ("ref_kl_coef", "sapo_w", "llds_coef", "kl_cov_coef", "opsm_delta")
        check_at_most(self, 1e3, *coefficients, "eps_high", "gspo_eps_low", "gspo_eps_high")
        caps = ("dual_clip_c", "two_sided_delta", "cispo_max", "tis_cap", "mis_high", "clip_cov_ub")
        check_at_most(self, 1e12, *caps)  # finite in float32 even times an advantage
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

    def storage_key(self, plain: dict[str, object]) -> dict[str, object]:
        """What ``config_hash`` keys: an objective that does not read a field whose default moved keeps
        the old default in its key, so its stored runs keep their keys; llds keys its gate always
        (its penalty changed with the gate)."""
        for name, (reader, before) in _KEYED_BEFORE.items():
            if self.name != reader and getattr(self, name) == _FIELD_DEFAULTS[name]:
                plain[name] = before
        if self.name == "llds":
            plain["llds_gate"] = self.llds_gate
        return plain

    @property
    def agg_mode(self) -> str:
        """The aggregation in force: ``loss_agg_mode`` if set, else the objective's paper default."""
        return self.loss_agg_mode if self.loss_agg_mode is not None else _DEFAULT_AGG[self.name]


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ObjectiveConfig)}


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
            low_ratio_threshold: float = LOW_RATIO_THRESHOLD,
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
                # exact: TRL's k3 is unclamped; a clamp drops the gradient of the tokens that drift most
                ref = ref_log_probs.detach()
                per_token_kl = kl_estimate(log_probs, ref, cfg.ref_kl_estimator, exact=True)
                if cfg.ref_kl_ratio_weighted:
                    per_token_kl = per_token_kl * log_ratio_and_ratio(log_probs, old, cfg)[1]
                ref_kl = aggregate(per_token_kl, m, cfg.agg_mode, cfg.agg_norm_const)
                loss = loss + cfg.ref_kl_coef * ref_kl
                metrics["ref_kl"] = float(ref_kl.detach())
            metrics.update(ratio_metrics(log_probs.detach() - old, adv, m, cfg, low_ratio_threshold))
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
