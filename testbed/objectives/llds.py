"""LLDS: a likelihood-preserving regulariser against Lazy Likelihood Displacement.

"On GRPO Collapse in Search-R1: The Lazy Likelihood-Displacement Death Spiral", Deng, Li, Gong,
Ren, Thrampoulidis and Li, arXiv 2512.04220 (2025): the likelihood of correct (A >= 0) responses
stagnates, then decays, then collapses; the fix pushes back up the likelihood of the A >= 0
actions (or responses) whose likelihood fell between the old and the current policy, only on the
tokens responsible. The authors' code (their verl ``dp_actor.py``) gates on an action's or a
response's summed likelihood change, applies a per-token hinge inside the gated set, and divides
by every masked token of the batch; their scripts use lambda = 0.2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from testbed.aggregation import aggregate
from testbed.objectives.clip import grpo_token_loss
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective

Tensor = torch.Tensor


def action_ids(selected: Tensor) -> Tensor:
    """Per row, the 1-based index of the run of consecutive selected tokens each token is in (0 if
    unselected): with tool results masked out, each run is one of the model's actions."""
    previous = F.pad(selected[:, :-1], (1, 0), value=False)
    return (selected & ~previous).long().cumsum(-1) * selected


def llds_gate(drop: Tensor, kept: Tensor, gate: str) -> Tensor:
    """Tokens of ``kept`` whose unit (token, action or response) lost likelihood: sum of drop > 0."""
    drop = drop.detach() * kept
    if gate == "token":
        unit_drop = drop
    elif gate == "response":
        unit_drop = drop.sum(-1, keepdim=True).expand_as(drop)
    else:  # action
        ids = action_ids(kept)
        sums = drop.new_zeros(drop.shape[0], drop.shape[1] + 1).scatter_add(1, ids, drop)
        unit_drop = sums.gather(1, ids)
    return kept & (unit_drop > 0)


@register_objective("llds")
def llds(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """GRPO clipped surrogate plus a gated hinge on the likelihood drop of A >= 0 actions.

    d_it = log pi_old - log pi_theta;  G_it = 1[sum_{t' in u(i,t)} d_it' > 0] (detached), u(i,t)
    the gate's unit around token t of a response with A_i >= 0 (empty when A_i < 0);
    loss = L_GRPO_clip + llds_coef * (1 / N) * sum_it m_it G_it max(0, d_it)

    with N the number of masked tokens of the batch, every response counted (the authors'
    masked mean). llds_gate picks the unit: ``action`` (default; the paper's best: a run of
    consecutive masked tokens, one turn between tool results), ``response`` (the whole response),
    or ``token`` (each token alone, no summing: a finer gate than the paper's). Inside a gated unit
    only the tokens whose likelihood fell are pushed back up, with gradient -grad log pi_theta that
    does not vanish as r -> 0; at r = 1 nothing is gated, so on-policy LLDS is GRPO. SAPO (arXiv
    2603.10069) is the token-gated penalty with the hinge moved to r <= sapo_tau. Fields:
    llds_coef (lambda, 0.2 as the authors' scripts), llds_gate, eps_low, eps_high. Aggregation of
    the surrogate: token-mean (the authors' verl); the penalty keeps its own normalisation.
    Metrics: pg_loss (surrogate), llds_penalty (unweighted), llds_active_frac (share of masked
    tokens the hinge acts on).
    """
    pg = aggregate(
        grpo_token_loss(log_probs, old_log_probs, advantages, cfg), mask, cfg.agg_mode, cfg.agg_norm_const
    )
    drop = old_log_probs - log_probs
    gated = llds_gate(drop, (mask > 0) & (advantages >= 0), cfg.llds_gate)
    # strict > 0: no gradient at r = 1, where the hinge's kink sits
    active = gated & (drop.detach() > 0)
    n = max(int((mask > 0).sum()), 1)
    penalty = torch.where(active, drop, torch.zeros_like(drop)).sum() / n
    metrics = {
        "pg_loss": float(pg.detach()),
        "llds_penalty": float(penalty.detach()),
        "llds_active_frac": float(active.sum()) / n,
    }
    return pg + cfg.llds_coef * penalty, metrics
