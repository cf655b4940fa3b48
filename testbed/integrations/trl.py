"""TRL plug-in: ``GRPOTrainer`` with its loss replaced by any objective of the registry.

    trainer = TestbedGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...),
                                 objective="testbed_sapo", train_dataset=..., processing_class=tok)

Objectives are named ``testbed_<name>`` (``testbed_sapo`` is Search Agent Policy Optimization; TRL's
own ``loss_type="sapo"`` is Qwen's soft adaptive method, ``testbed_soft_adaptive_gate`` here). The
override owns the normalisation: the objective aggregates each micro-batch by its
``loss_agg_mode`` and the result is divided by the gradient-accumulation steps. TRL's ``beta``
becomes the objective's reference-KL coefficient (k3, as TRL). Tool tokens (``tool_mask``) are
masked like retrieved ones. ``use_liger_kernel=True`` is refused: Liger's fused loss would bypass
this override silently.
"""

from __future__ import annotations

import dataclasses

import torch
from trl import GRPOTrainer

from testbed.objectives import ObjectiveConfig, get_objective

PREFIX = "testbed_"


def registry_name(plugin_name: str) -> str:
    """``testbed_sapo`` -> ``sapo``; a name without the prefix is refused (it may be TRL's own)."""
    if not plugin_name.startswith(PREFIX):
        raise ValueError(
            f"objective={plugin_name!r}: testbed objectives are named {PREFIX}<name>, e.g. {PREFIX}sapo"
        )
    return plugin_name[len(PREFIX) :]


class TestbedGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, objective: str | ObjectiveConfig = "testbed_sapo", **kwargs) -> None:
        grpo_args = kwargs.get("args")
        if grpo_args is not None and getattr(grpo_args, "use_liger_kernel", False):
            raise ValueError(
                "use_liger_kernel=True: Liger's fused GRPO loss bypasses _compute_loss, so the testbed "
                "objective would silently not run; set use_liger_kernel=False"
            )
        if isinstance(objective, str):
            objective = ObjectiveConfig(name=registry_name(objective))
        super().__init__(*args, **kwargs)
        if self.beta:
            objective = dataclasses.replace(objective, ref_kl_coef=float(self.beta), ref_kl_estimator="k3")
        self.objective_config = objective
        self.objective = get_objective(objective.name)

    def _compute_loss(self, model, inputs):
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        logps, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1)
        )[:2]
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old  # absent when each batch is used once
        ref = inputs.get("ref_per_token_logps") if self.beta else None
        loss, metrics = self.objective(
            logps, old, inputs["advantages"], mask.to(logps.dtype), ref, self.objective_config
        )
        mode = "train" if self.model.training else "eval"
        for key, value in metrics.items():
            self._metrics[mode][f"testbed/{key}"].append(value)
        return loss / (self.current_gradient_accumulation_steps if mode == "train" else 1.0)
