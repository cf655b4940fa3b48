"""TRL plug-in: ``GRPOTrainer`` with its loss replaced by any objective of the registry.

    trainer = TestbedGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...),
                                 objective="testbed_sapo", objective_kwargs={"sapo_tau": 0.8},
                                 train_dataset=..., processing_class=tok)

Objectives are named ``testbed_<name>`` (``testbed_sapo`` is Search Agent Policy Optimization; TRL's
own ``loss_type="sapo"`` is Qwen's soft adaptive method, ``testbed_soft_adaptive_gate`` here).

What ``GRPOConfig`` sets, it sets here too, exactly as TRL's own ``_compute_loss`` uses it:
``epsilon`` / ``epsilon_high`` -> eps_low / eps_high (gspo_eps_* for GSPO; CISPO's cap is
``epsilon_high``); ``loss_type`` -> the normalisation (grpo: per-sequence mean; bnpo: micro-batch
token mean; dr_grpo: token sum / (sequences x max_completion_length); dapo and cispo: token sum over
the accumulation window's tokens; luspo: per-sequence sum), while ``loss_type="cispo"`` / ``"sapo"``
also name TRL's objective and need ``testbed_cispo`` / ``testbed_soft_adaptive_gate``;
``sapo_temperature_pos/neg``, ``delta`` (two-sided clip) and ``off_policy_mask_threshold`` (OPSM)
go to their objective's fields; ``beta`` -> the unclamped k3 reference KL, added per token and
aggregated with the surrogate as TRL does, weighted by TRL's importance weight (the token ratio, or
GSPO's sequence ratio) when ``use_bias_correction_kl`` (TRL's default); ``entropy_coef`` and
``use_adaptive_entropy`` (with ``entropy_target`` / ``entropy_coef_*``) -> TRL's entropy bonus;
``mask_truncated_completions`` -> the masked rows count in the per-row means as in TRL (grpo,
sapo, dr_grpo and luspo divide by every row). vLLM's importance-sampling correction goes to
``testbed_tis`` (``vllm_importance_sampling_mode`` ``token_truncate`` / ``sequence_truncate``,
``vllm_importance_sampling_clip_max`` -> tis_cap) and ``testbed_mis`` (``token_mask`` /
``sequence_mask`` -> rollout_is_level, ``vllm_importance_sampling_clip_min/max`` -> mis_low /
mis_high), which receive the sampler's log-probs. ``objective_kwargs`` sets only what TRL has no
field for. Settings this plug-in cannot honour are refused at construction: ``use_liger_kernel``
(Liger's fused loss bypasses the override), ``top_entropy_quantile < 1``, ``loss_type="vespo"``,
a MoE router's auxiliary loss, vLLM's correction with any other objective, and ``testbed_tis`` /
``testbed_mis`` without it (they would be GRPO). Tool tokens (``tool_mask``) are masked like
retrieved ones. TRL's log keys (``entropy``, ``kl``, ``clip_ratio/*``, ``cispo_clip_ratio``,
``entropy_coef``, ``policy_loss``) are logged as TRL logs them, beside ``testbed/*``.

SAPO's and LLDS's penalties need pi_theta != pi_old: with ``num_iterations=1`` and one optimizer
step per generation batch, TRL's old log-probs are the current ones and every ratio is 1, so they
are plain GRPO: construction warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import nanmax, nanmin

from testbed.aggregation import aggregate
from testbed.config import ConfigError
from testbed.integrations.verl import PENALTY_WEIGHT, without_penalty
from testbed.kl import kl_estimate
from testbed.objectives import Objective, ObjectiveConfig, get_objective

PREFIX = "testbed_"
# loss_type -> our aggregation; normalisation across micro-batches is applied in _compute_loss.
LOSS_TYPE_AGG = {
    "grpo": "seq-mean-token-mean",
    "sapo": "seq-mean-token-mean",
    "bnpo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
    "dapo": "token-mean",
    "cispo": "token-mean",
    "luspo": "seq-mean-token-sum",
}
WINDOW_NORMALISED = ("dapo", "cispo")  # token sum / tokens of the whole accumulation window
ROW_MEAN = ("grpo", "sapo", "dr_grpo", "luspo")  # TRL divides by every row, masked ones included
CLIPPED = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")  # the loss types TRL logs clip_ratio/* for
# vllm_importance_sampling_mode -> (objective, rollout_is_level)
VLLM_IS_MODES = {
    "token_truncate": ("tis", "token"),
    "sequence_truncate": ("tis", "sequence"),
    "token_mask": ("mis", "token"),
    "sequence_mask": ("mis", "sequence"),
}
LOSS_TYPE_OBJECTIVE = {"cispo": "cispo", "sapo": "soft_adaptive_gate"}
TRL_OWNED = frozenset(
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
        "gate_tau_pos",
        "gate_tau_neg",
        "two_sided_delta",
        "opsm_delta",
        "ref_kl_coef",
        "ref_kl_estimator",
        "ref_kl_ratio_weighted",
        "tis_cap",
        "mis_low",
        "mis_high",
        "rollout_is_level",
    }
)
NEEDS_OFF_POLICY = ("sapo", "llds", "tis", "mis")


def registry_name(plugin_name: str) -> str:
    """``testbed_sapo`` -> ``sapo``; a name without the prefix is refused (it may be TRL's own)."""
    if not plugin_name.startswith(PREFIX):
        raise ValueError(
            f"objective={plugin_name!r}: testbed objectives are named {PREFIX}<name>, e.g. {PREFIX}sapo"
        )
    return plugin_name[len(PREFIX) :]


def _refuse(field: str, value: Any, why: str) -> None:
    raise ConfigError(f"GRPOConfig.{field}={value!r}: {why}")


def trl_objective_config(
    name: str, args: Any, objective_kwargs: Mapping[str, Any] | None = None
) -> ObjectiveConfig:
    """Our ObjectiveConfig from TRL's ``GRPOConfig`` plus the knobs TRL has no field for."""
    extra = dict(objective_kwargs or {})
    owned = sorted(set(extra) & TRL_OWNED)
    if owned:
        raise ConfigError(f"objective_kwargs.{owned[0]}: set by GRPOConfig, not here")
    loss_type = args.loss_type
    if loss_type not in LOSS_TYPE_AGG:
        _refuse(
            "loss_type", loss_type, f"not supported by {PREFIX}{name}; use one of {sorted(LOSS_TYPE_AGG)}"
        )
    wanted = LOSS_TYPE_OBJECTIVE.get(loss_type)
    if wanted is not None and name != wanted:
        _refuse("loss_type", loss_type, f"is TRL's {loss_type} objective; use objective={PREFIX}{wanted}")
    needed = {v: k for k, v in LOSS_TYPE_OBJECTIVE.items()}.get(name)
    if needed is not None and loss_type != needed:
        _refuse(
            "loss_type", loss_type, f"{PREFIX}{name} needs loss_type={needed!r}, TRL's normalisation for it"
        )
    sequence_level = name in ("gspo", "gspo_token")
    if (args.importance_sampling_level == "sequence") != sequence_level:
        _refuse(
            "importance_sampling_level",
            args.importance_sampling_level,
            "'sequence' is GSPO: use it with testbed_gspo(_token), 'token' with every other objective",
        )
    if args.top_entropy_quantile < 1.0:
        _refuse("top_entropy_quantile", args.top_entropy_quantile, "not supported by the testbed objectives")
    if (args.delta is not None) != (name == "two_sided_clip"):
        _refuse(
            "delta", args.delta, "TRL's two-sided clip: set it with testbed_two_sided_clip, and only then"
        )
    if (args.off_policy_mask_threshold is not None) != (name == "opsm"):
        _refuse(
            "off_policy_mask_threshold",
            args.off_policy_mask_threshold,
            "OPSM: set it with testbed_opsm, and only then",
        )
    corrected = bool(args.use_vllm and args.vllm_importance_sampling_correction)
    if corrected and name not in ("tis", "mis"):
        _refuse(
            "vllm_importance_sampling_correction",
            True,
            "use testbed_tis or testbed_mis (or set it False): other objectives do not weight their tokens",
        )
    if name in ("tis", "mis") and not corrected:
        _refuse(
            "vllm_importance_sampling_correction",
            args.vllm_importance_sampling_correction,
            f"{PREFIX}{name} needs the sampler's log-probs: use_vllm=True and "
            "vllm_importance_sampling_correction=True (without them it is GRPO)",
        )
    eps_low = float(args.epsilon)
    eps_high = float(args.epsilon_high if args.epsilon_high is not None else args.epsilon)
    fields: dict[str, Any] = {
        "name": name,
        "loss_agg_mode": LOSS_TYPE_AGG[loss_type],
        "ref_kl_coef": float(args.beta),
        "ref_kl_estimator": "k3",
        "ref_kl_ratio_weighted": bool(args.use_bias_correction_kl),
    }
    if sequence_level:
        fields.update(gspo_eps_low=eps_low, gspo_eps_high=eps_high)
    elif name == "cispo":
        fields.update(cispo_min=0.0, cispo_max=eps_high)
    else:
        fields.update(eps_low=eps_low, eps_high=eps_high)
    if loss_type == "dr_grpo":
        fields["agg_norm_const"] = float(args.max_completion_length)
    if name == "soft_adaptive_gate":
        fields.update(gate_tau_pos=args.sapo_temperature_pos, gate_tau_neg=args.sapo_temperature_neg)
    if name == "two_sided_clip":
        fields["two_sided_delta"] = float(args.delta)
    if name == "opsm":
        fields["opsm_delta"] = float(args.off_policy_mask_threshold)
    if name in ("tis", "mis"):
        fields.update(_vllm_is_fields(name, args))
    return ObjectiveConfig(**fields, **extra)


def _vllm_is_fields(name: str, args: Any) -> dict[str, Any]:
    """tis / mis fields from TRL's vllm_importance_sampling_mode and clip bounds."""
    mode = args.vllm_importance_sampling_mode
    wanted, level = VLLM_IS_MODES.get(mode, (None, None))
    if wanted != name:
        _refuse("vllm_importance_sampling_mode", mode, f"{PREFIX}{name} takes {_modes_of(name)}")
    low, high = args.vllm_importance_sampling_clip_min, args.vllm_importance_sampling_clip_max
    if name == "tis":
        if low is not None:
            _refuse("vllm_importance_sampling_clip_min", low, "testbed_tis truncates from above only")
        if high is None:
            _refuse("vllm_importance_sampling_clip_max", high, "testbed_tis needs a cap")
        return {"tis_cap": float(high), "rollout_is_level": level}
    return {
        "mis_low": 0.0 if low is None else float(low),
        "mis_high": float("inf") if high is None else float(high),
        "rollout_is_level": level,
    }


def _modes_of(name: str) -> str:
    return " or ".join(repr(m) for m, (o, _) in VLLM_IS_MODES.items() if o == name)


class TestbedGRPOTrainer(GRPOTrainer):
    args: GRPOConfig  # what GRPOTrainer holds, seen by the stubs as Trainer's TrainingArguments

    def __init__(
        self,
        *args: Any,
        objective: str = "testbed_sapo",
        objective_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        grpo_args = kwargs.get("args")
        if grpo_args is not None and getattr(grpo_args, "use_liger_kernel", False):
            raise ValueError(
                "use_liger_kernel=True: Liger's fused GRPO loss bypasses _compute_loss, so the testbed "
                "objective would silently not run; set use_liger_kernel=False"
            )
        name = registry_name(objective)
        get_objective(name)
        super().__init__(*args, **kwargs)
        if self.aux_loss_enabled:
            raise ConfigError(
                "router_aux_loss_coef: the MoE router's auxiliary loss is not added by the testbed "
                "objectives; set it to 0"
            )
        self.objective_config = trl_objective_config(name, self.args, objective_kwargs)
        self.objective: Objective = get_objective(name)
        on_policy = (
            self.args.num_iterations == 1
            # Optional in GRPOConfig's fields, always set by its __post_init__
            and self.args.steps_per_generation <= self.args.gradient_accumulation_steps  # type: ignore[operator]
        )
        if name in NEEDS_OFF_POLICY and on_policy and not self.args.use_vllm:
            warnings.warn(
                f"objective={objective!r} with num_iterations=1 and one optimizer step per generation "
                "batch: TRL's old log-probs equal the current ones (every ratio is 1), so it computes "
                "plain GRPO; raise num_iterations or steps_per_generation for it to act",
                UserWarning,
                stacklevel=2,
            )

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        logps, entropies = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True
        )[:2]
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old  # absent when each batch is used once
        cfg = self.objective_config
        rollout = inputs.get("sampling_per_token_logps") if cfg.name in ("tis", "mis") else None
        mask = mask.to(logps.dtype)
        advantages = inputs["advantages"]
        loss, metrics = self.objective(logps, old, advantages, mask, None, cfg, rollout_log_probs=rollout)
        weight = PENALTY_WEIGHT.get(cfg.name)
        surrogate = loss
        if weight is not None:  # the penalty keeps its own normalisation; TRL's rules act on the rest
            zero = without_penalty(cfg, weight)
            surrogate = self.objective(logps, old, advantages, mask, None, zero, rollout_log_probs=rollout)[0]
        coef_1 = self._importance_weights(logps.detach() - old, mask)
        kl = None
        if self.beta != 0.0:
            # TRL: unclamped k3 to the reference, times its importance weight, added per token
            kl = kl_estimate(logps, inputs["ref_per_token_logps"].detach(), "k3", exact=True)
            if cfg.ref_kl_ratio_weighted:
                kl = kl * torch.exp(self._importance_weights(logps - old, mask))
            surrogate = surrogate + self.beta * aggregate(kl, mask, cfg.agg_mode, cfg.agg_norm_const)
            loss = loss + self.beta * aggregate(kl, mask, cfg.agg_mode, cfg.agg_norm_const)
        penalty = loss - surrogate
        if self.loss_type in ROW_MEAN:  # TRL's per-row means count the masked rows too
            surrogate = surrogate * (mask.sum(-1) > 0).sum() / mask.size(0)
        loss = surrogate + penalty
        mode = "train" if self.model.training else "eval"  # type: ignore[union-attr]  # set by Trainer.__init__
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if self.loss_type in WINDOW_NORMALISED:
            # TRL: token sum / the tokens of the accumulation window, not / this micro-batch's tokens
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = normalizer * accumulation / self.args.steps_per_generation
            loss = loss * mask.sum().clamp(min=1.0) / normalizer
        else:
            loss = loss / accumulation
        policy_loss = loss.detach() * (1.0 if self.loss_type in WINDOW_NORMALISED else accumulation)
        if self._entropy_bonus_enabled:
            loss = loss - self._entropy_bonus(entropies, mask, mode, accumulation, policy_loss)
        for key, value in metrics.items():
            self._metrics[mode][f"testbed/{key}"].append(value)
        self._log_trl_metrics(mode, coef_1, entropies, advantages, mask, kl)
        return loss

    def _importance_weights(self, log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """TRL's log importance weight: per token [B, T], or GSPO's sequence mean [B, 1]."""
        if self.importance_sampling_level == "sequence":
            return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
        return log_ratio

    def _entropy_bonus(
        self,
        entropies: torch.Tensor,
        mask: torch.Tensor,
        mode: str,
        accumulation: float,
        policy_loss: torch.Tensor,
    ) -> torch.Tensor:
        """TRL's entropy bonus coef * H (H: the masked mean entropy) and its adaptive coefficient."""
        entropy = (entropies * mask).sum() / mask.sum().clamp(min=1.0) / accumulation
        coef = self.entropy_coef
        if self.use_adaptive_entropy and self._last_world_entropy > self.args.entropy_target:
            coef = 0.0
        self._metrics[mode]["policy_loss"].append(self.accelerator.gather(policy_loss).nanmean().item())
        if self.use_adaptive_entropy and mode == "train":
            stats = torch.stack([(entropies * mask).sum(), mask.sum()]).detach()
            window = self._entropy_window_stats
            self._entropy_window_stats = stats if window is None else window + stats  # type: ignore[assignment]
            if self.accelerator.sync_gradients:
                totals = self.accelerator.reduce(self._entropy_window_stats, reduction="sum")
                world = (totals[0] / totals[1].clamp(min=1.0)).item()
                if world <= self.args.entropy_target:
                    self.entropy_coef = min(
                        self.entropy_coef + self.args.entropy_coef_delta, self.args.entropy_coef_max
                    )
                else:
                    self.entropy_coef = max(
                        self.entropy_coef - self.args.entropy_coef_delta, self.args.entropy_coef_min
                    )
                self._last_world_entropy = world
                self._entropy_window_stats = None
        if mode == "train" and self.accelerator.sync_gradients:
            self._metrics[mode]["entropy_coef"].append(self.entropy_coef)
        return coef * entropy

    def _log_trl_metrics(
        self,
        mode: str,
        log_weight: torch.Tensor,
        entropies: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        kl: torch.Tensor | None,
    ) -> None:
        """TRL's own keys, with TRL's definitions: global masked means over processes, per sequence
        for GSPO's sequence weights; the min / max of the per-sequence clip shares."""

        def global_mean(x: torch.Tensor) -> float:
            if x.shape[1] == 1:  # one value per sequence
                local = torch.stack([x.sum(), torch.tensor(float(x.shape[0]), device=x.device)])
            else:
                local = torch.stack([(x * mask).sum(), mask.sum()])
            totals = self.accelerator.reduce(local.float(), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        def seq_mean(x: torch.Tensor) -> torch.Tensor:
            return x.squeeze(1) if x.shape[1] == 1 else (x * mask).sum(-1) / mask.sum(-1)

        metrics = self._metrics[mode]
        if kl is not None:
            metrics["kl"].append(global_mean(kl.detach()))
        metrics["entropy"].append(global_mean(entropies.detach()))
        ratio = torch.exp(log_weight)
        adv = advantages[:, None] if advantages.dim() == 1 else advantages
        if self.loss_type in CLIPPED:
            low = ((ratio < 1 - self.epsilon_low) & (adv < 0)).float()
            high = ((ratio > 1 + self.epsilon_high) & (adv > 0)).float()
            metrics["clip_ratio/low_mean"].append(global_mean(low))
            metrics["clip_ratio/high_mean"].append(global_mean(high))
            metrics["clip_ratio/region_mean"].append(global_mean(((low + high) > 0).float()))
            metrics["clip_ratio/low_min"].append(nanmin(self.accelerator.gather(seq_mean(low))).item())
            metrics["clip_ratio/high_max"].append(nanmax(self.accelerator.gather(seq_mean(high))).item())
        elif self.loss_type == "cispo":
            clipped = ((ratio > self.epsilon_high) & (adv > 0)).float()
            metrics["cispo_clip_ratio"].append(global_mean(clipped))
