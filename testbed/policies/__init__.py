"""Policies: one interface (``base.Policy``) for the tabular and the token grain.

Add a policy: a module here implementing ``Policy`` (``grain``, ``start``, ``next_logits``,
``score``), a ``kind`` in ``PolicyConfig`` and a branch in ``build_policy``.
"""

from __future__ import annotations

import dataclasses

from testbed.config import check_choice, check_positive, fail
from testbed.envs import TabularSearchBatch, TokenSearchBatch
from testbed.policies.base import Policy
from testbed.policies.tabular import TabularPolicy
from testbed.policies.transformer import TransformerPolicy

POLICY_KINDS = ("transformer", "tabular")


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    kind: str = "transformer"
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4

    def __post_init__(self) -> None:
        check_choice(self, "kind", POLICY_KINDS)
        check_positive(self, "n_layers", "d_model", "n_heads")
        if self.d_model % self.n_heads:
            fail(self, "d_model", self.d_model, f"must be divisible by n_heads={self.n_heads}")


def build_policy(cfg: PolicyConfig, core: TokenSearchBatch | TabularSearchBatch) -> Policy:
    """A freshly initialised policy for the task ``core`` (the grain follows ``cfg.kind``)."""
    if cfg.kind == "tabular":
        return TabularPolicy(core.n_states, core.n_actions)
    return TransformerPolicy(core.vocab.size, core.capacity, cfg.n_layers, cfg.d_model, cfg.n_heads)


__all__ = ["POLICY_KINDS", "Policy", "PolicyConfig", "TabularPolicy", "TransformerPolicy", "build_policy"]
