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
go to their objective's fields; ``beta`` -> the k3 reference KL, weighted by the ratio when
``use_bias_correction_kl`` (TRL's default). ``objective_kwargs`` sets only what TRL has no field
for. Settings this plug-in cannot honour are refused at construction: ``use_liger_kernel`` (Liger's
fused loss bypasses the override), ``top_entropy_quantile < 1``, ``loss_type="vespo"``, vLLM's
importance-sampling correction unless the objective is ``testbed_tis`` / ``testbed_mis`` (which then
receive the sampler's log-probs). Tool tokens (``tool_mask``) are masked like retrieved ones. TRL's
log keys (``entropy``, ``clip_ratio/*``, ``kl``) are logged as TRL logs them, beside ``testbed/*``.

SAPO's and LLDS's penalties need pi_theta != pi_old: with ``num_iterations=1`` and one optimizer
step per generation batch, TRL's old log-probs are the current ones and every ratio is 1, so they
are plain GRPO (and TIS/MIS without vLLM are GRPO too): construction warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from testbed.config import ConfigError
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
    if args.use_vllm and args.vllm_importance_sampling_correction and name not in ("tis", "mis"):
        _refuse(
            "vllm_importance_sampling_correction",
            True,
            "use testbed_tis or testbed_mis (or set it False): other objectives do not weight their tokens",
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
    return ObjectiveConfig(**fields, **extra)


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
        ref = inputs.get("ref_per_token_logps") if self.beta else None
        rollout = (
            inputs.get("sampling_per_token_logps") if self.objective_config.name in ("tis", "mis") else None
        )
        mask = mask.to(logps.dtype)
        loss, metrics = self.objective(
            logps, old, inputs["advantages"], mask, ref, self.objective_config, rollout_log_probs=rollout
        )
        mode = "train" if self.model.training else "eval"  # type: ignore[union-attr]  # set by Trainer.__init__
        if self.loss_type in WINDOW_NORMALISED:
            # TRL: token sum / the tokens of the accumulation window, not / this micro-batch's tokens
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = (
                    normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
                )
            loss = loss * mask.sum().clamp(min=1.0) / normalizer
        elif mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        for key, value in metrics.items():
            self._metrics[mode][f"testbed/{key}"].append(value)
        self._log_trl_metrics(mode, logps.detach() - old, entropies, inputs["advantages"], mask, ref, logps)
        return loss

    def _log_trl_metrics(
        self,
        mode: str,
        log_ratio: torch.Tensor,
        entropies: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        ref: torch.Tensor | None,
        logps: torch.Tensor,
    ) -> None:
        """TRL's own keys, with TRL's definitions (global masked means over processes)."""

        def global_mean(x: torch.Tensor) -> float:
            totals = self.accelerator.reduce(
                torch.stack([(x * mask).sum(), mask.sum()]).float(), reduction="sum"
            )
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        self._metrics[mode]["entropy"].append(global_mean(entropies.detach()))
        if ref is not None:
            d = ref - logps.detach()
            kl = torch.exp(d) - d - 1
            if self.objective_config.ref_kl_ratio_weighted:
                kl = kl * torch.exp(log_ratio)  # TRL logs the corrected KL
            self._metrics[mode]["kl"].append(global_mean(kl))
        if self.loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "luspo"):
            cfg = self.objective_config
            ratio = torch.exp(log_ratio)
            adv = advantages[:, None] if advantages.dim() == 1 else advantages
            low = ((ratio < 1 - cfg.eps_low) & (adv < 0)).float()
            high = ((ratio > 1 + cfg.eps_high) & (adv > 0)).float()
            self._metrics[mode]["clip_ratio/low_mean"].append(global_mean(low))
            self._metrics[mode]["clip_ratio/high_mean"].append(global_mean(high))
            self._metrics[mode]["clip_ratio/region_mean"].append(global_mean(low + high))
