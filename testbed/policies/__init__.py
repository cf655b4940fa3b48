"""Policies: one interface (``base.Policy``) for the tabular and the token grain.

Add a policy: a module here implementing ``Policy`` (``grain``, ``members``, ``start``,
``next_logits``, ``score``), a ``kind`` in ``PolicyConfig`` and a branch in ``build_policy``. The
Hugging Face policy (``kind="hf"``: a model on the text task, ``hf.py``) is built with its task by
``hf_run.py``, which ``testbed.run`` calls; ``kind="qwen2"`` is a Qwen2-architecture causal LM of shape
(``n_layers``, ``d_model``, ``n_heads``) over the simulated task's own words, behind the same
Hugging Face adapter (the scale ladder's policies).
"""

from __future__ import annotations

import dataclasses
from typing import cast

from testbed.config import check_choice, check_positive, fail
from testbed.envs import TabularSearchBatch, TokenSearchBatch
from testbed.policies.base import Policy, population_state
from testbed.policies.tabular import TabularPolicy
from testbed.policies.transformer import TransformerPolicy

POLICY_KINDS = ("transformer", "tabular", "hf", "qwen2")
# Kinds with a member dimension: a population of K runs trains as one policy (the others: K = 1).
POPULATION_KINDS = ("transformer", "tabular")


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """``transformer`` and ``tabular`` are built here; ``hf`` loads ``model_path`` (a local Hugging
    Face model directory; None builds a tiny offline Qwen2), optionally with LoRA adapters."""

    kind: str = "transformer"
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    model_path: str | None = None
    lora: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_choice(self, "kind", POLICY_KINDS)
        check_positive(self, "n_layers", "d_model", "n_heads")
        if self.d_model % self.n_heads:
            fail(self, "d_model", self.d_model, f"must be divisible by n_heads={self.n_heads}")
        if self.kind != "hf" and (self.model_path is not None or self.lora):
            fail(self, "kind", self.kind, "model_path and lora need kind='hf'")


def build_policy(cfg: PolicyConfig, core: TokenSearchBatch | TabularSearchBatch, members: int = 1) -> Policy:
    """A freshly initialised policy of ``members`` members for the task ``core`` (grain from ``cfg.kind``)."""
    # the policy's kind names the grain of its task, so of ``core``
    if cfg.kind == "tabular":
        tabular = cast(TabularSearchBatch, core)
        return TabularPolicy(tabular.n_states, tabular.n_actions, members)
    if cfg.kind == "transformer":
        tokens = cast(TokenSearchBatch, core)
        return TransformerPolicy(
            tokens.vocab.size, tokens.capacity, cfg.n_layers, cfg.d_model, cfg.n_heads, members
        )
    if cfg.kind == "qwen2":
        if members != 1:
            raise ValueError(f"policy.kind='qwen2' has no member dimension; asked for {members} members")
        from testbed.policies.hf import HFPolicy
        from testbed.policies.hf_tiny import qwen2_model

        tokens = cast(TokenSearchBatch, core)
        model = qwen2_model(
            tokens.vocab.size, cfg.d_model, cfg.n_layers, cfg.n_heads, tokens.capacity, seed=None, mlp_ratio=4
        )
        return cast(Policy, HFPolicy(model.to(cfg.device)))
    raise ValueError(f"policy.kind={cfg.kind!r}: built by testbed.run, not build_policy")


__all__ = [
    "POLICY_KINDS",
    "POPULATION_KINDS",
    "Policy",
    "PolicyConfig",
    "TabularPolicy",
    "TransformerPolicy",
    "build_policy",
    "population_state",
]
