"""LLDS against a re-derivation of its authors' code (the LLDS repository's verl ``dp_actor.py``).

Their update adds to the policy loss, per micro-batch (``no_reduce_lambda`` = lambda = 0.2 in their
scripts), with ``pos = A >= 0`` and ``hinge = max(0, old_log_prob - log_prob)``:

- response gate (``chunk_noreduce`` off): a response is gated when the masked sum of
  ``(old_log_prob - log_prob) * pos`` is > 0; penalty tokens ``gate * hinge * pos``;
- action gate (``chunk_noreduce`` on): runs of consecutive ``response_mask * pos`` tokens are the
  actions; an action is gated when its summed ``old_log_prob - log_prob`` is > 0;
- ``masked_mean(lambda * tokens, response_mask)``: divided by every masked token.

Written here from that description, independently of ``testbed.objectives.llds``.
"""

from __future__ import annotations

import pytest
import torch

from testbed.objectives import ObjectiveConfig, get_objective


def authors_penalty(old: torch.Tensor, new: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, gate: str):
    pos = (adv >= 0).double()
    diff = old - new
    hinge = torch.clamp(diff, min=0.0)
    masked = mask * pos
    if gate == "response":
        summed = (diff * pos * masked).sum(-1)
        tokens = (summed > 0).double()[:, None] * hinge * pos
    else:
        tokens = torch.zeros_like(diff)
        for i in range(diff.shape[0]):  # walk each row's runs of masked A >= 0 tokens
            t = 0
            while t < diff.shape[1]:
                if masked[i, t] == 0:
                    t += 1
                    continue
                end = t
                while end < diff.shape[1] and masked[i, end] > 0:
                    end += 1
                if diff[i, t:end].sum() > 0:
                    tokens[i, t:end] = hinge[i, t:end]
                t = end
    return (tokens * mask).sum() / mask.sum()


def batch(seed: int, b: int = 6, t: int = 12):
    g = torch.Generator().manual_seed(seed)
    new = -3 * torch.rand(b, t, generator=g, dtype=torch.float64)
    old = new + 0.5 * torch.randn(b, t, generator=g, dtype=torch.float64)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    adv[0] = 0.0
    mask = (torch.rand(b, t, generator=g) > 0.25).double()  # gaps: masked tool results between actions
    mask[:, 0] = 1.0
    return new, old, adv, mask


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gate", ["action", "response"])
def test_llds_penalty_equals_the_authors(gate: str, seed: int) -> None:
    new, old, adv, mask = batch(seed)
    expected = authors_penalty(old, new, adv[:, None].expand_as(new), mask, gate)
    cfg = ObjectiveConfig(name="llds", llds_gate=gate, llds_coef=0.2)
    lp = new.clone().requires_grad_(True)
    loss, metrics = get_objective("llds")(lp, old, adv, mask, config=cfg)
    assert metrics["llds_penalty"] == pytest.approx(float(expected), rel=1e-12, abs=1e-15)
    # the gradient of the penalty: -lambda / N on every active token
    surrogate, _ = get_objective("grpo")(lp, old, adv, mask)
    (grad,) = torch.autograd.grad(loss - surrogate, lp)
    ref = new.clone().requires_grad_(True)
    (expected_grad,) = torch.autograd.grad(
        0.2 * authors_penalty(old, ref, adv[:, None].expand_as(new), mask, gate), ref
    )
    assert torch.allclose(grad, expected_grad, atol=1e-12)


def test_llds_gates_differ_and_default_is_the_papers() -> None:
    """Not vacuous: on these batches the three gates give three different penalties."""
    new, old, adv, mask = batch(0)
    values = {
        gate: get_objective("llds")(new, old, adv, mask, config=ObjectiveConfig(name="llds", llds_gate=gate))[
            1
        ]["llds_penalty"]
        for gate in ("action", "response", "token")
    }
    assert len(set(values.values())) == 3, values
    cfg = ObjectiveConfig(name="llds")
    assert (cfg.llds_gate, cfg.llds_coef) == ("action", 0.2)
