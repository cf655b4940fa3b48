"""Loss aggregation: how per-token losses become one scalar (verl's ``loss_agg_mode`` names).

With per-token loss l[i, t] and mask m[i, t], over the sequences with at least one masked token
(so appending padding rows or columns never changes the result):

- ``token-mean``: sum_it m l / sum_it m                      (DAPO: every token weighs the same)
- ``seq-mean-token-sum``: mean_i sum_t m l                    (long responses weigh more)
- ``seq-mean-token-mean``: mean_i (sum_t m l / sum_t m)       (original GRPO)
- ``seq-mean-token-sum-norm``: sum_it m l / (n_seq * C)       (Dr. GRPO, arXiv 2503.20783: a
  constant C, by default the padded length T as in verl; pass C explicitly for padding invariance)

An empty mask gives 0 (with a zero gradient), never NaN.
"""

from __future__ import annotations

import torch

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, mode: str, norm_const: float | None = None
) -> torch.Tensor:
    """Reduce a [B, T] per-token tensor to a scalar under ``mask`` with aggregation ``mode``."""
    mask = mask.to(per_token.dtype)
    masked = per_token * mask
    tokens_per_seq = mask.sum(-1)
    n_seq = (tokens_per_seq > 0).sum().clamp(min=1)
    if mode == "token-mean":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if mode == "seq-mean-token-sum":
        return masked.sum() / n_seq
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / tokens_per_seq.clamp(min=1.0)).sum() / n_seq
    if mode == "seq-mean-token-sum-norm":
        const = float(per_token.shape[-1]) if norm_const is None else float(norm_const)
        return masked.sum() / (n_seq * const)
    raise ValueError(f"loss_agg_mode={mode!r}: must be one of {list(AGG_MODES)}")
