"""A Hugging Face causal LM behind the project's Policy interface (CPU or CUDA, bf16 on GPU).

Sampling feeds one token per step through the model's KV cache and samples on the model's device;
``score`` runs the whole sequence. Log-probs come back on the CPU (differentiably), where the
objectives run on [B, T] tensors; the model's own work stays on its device.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from testbed.batch import Batch
from testbed.policies.base import log_probs_and_entropy


class HFPolicy(nn.Module):
    grain = "token"
    members = 1

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # transformers 5.2x renamed past_key_values to cache (argument and output); accept both
        # a peft model's method, which nn.Module.__getattr__'s stub types as a Tensor or Module
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
        self._cache = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def start(self, batch_size: int) -> dict[str, Any]:
        return {"past": None}

    def next_logits(self, inputs: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        kwargs = {self._cache: state["past"]}
        out = self.model(input_ids=inputs[:, None].to(self.device), use_cache=True, **kwargs)
        state["past"] = out[self._cache]
        return out.logits[:, -1]  # sampled on the model's device: a full vocabulary is large

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch.tokens.to(self.device)
        logits = self.model(input_ids=tokens[:, :-1]).logits
        logp, entropy = log_probs_and_entropy(logits, tokens[:, 1:])
        pad = torch.zeros_like(logp[:, :1])
        logp, entropy = torch.cat([pad, logp], 1).cpu(), torch.cat([pad, entropy], 1).cpu()
        return logp * batch.mask, entropy * batch.mask


def load_model(path: str, device: str | torch.device = "cpu"):
    """A local model directory (no hub access): model in bf16 on CUDA, fp32 on CPU, and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    # transformers' stub of the model's .to (a decorated method) takes the model as the argument
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True).to(device)  # type: ignore[arg-type]
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def add_lora(model, r: int = 8, alpha: int = 16):
    """Wrap ``model`` with LoRA adapters on its attention projections (peft)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
