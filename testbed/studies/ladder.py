"""The scale ladder: the isdd scenario's GRPO-vs-SAPO comparison, unchanged, with Qwen2-architecture
policies of growing size (``policy.kind="qwen2"``, through the Hugging Face adapter) in place of the
testbed's small transformer.

Each rung's base model is made by us (no weights can be downloaded): built from a config, trained
``pretrain_steps`` as a language model on the search task's transcripts (the world's text), then on
the imperfect oracle's demonstrations (the same warm start as every base policy, cached the same
way, at an Adam learning rate scaled as 1 / width), so that it knows the format and searches
imperfectly. ``rollout_mismatch`` measures the
rollout/trainer mismatch a lower-precision sampler gives at each size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from testbed.config import ConfigError, with_overrides
from testbed.run import RunConfig, build_trainer
from testbed.scenarios import get_scenario, qwen2_policy
from testbed.studies.compare import curves
from testbed.sweep.experiment import Experiment
from testbed.sweep.spec import SweepSpec

# (n_layers, d_model, n_heads): about 0.1 M (the testbed transformer's size), 1 M, 10 M and 80 M
# parameters (15 d_model^2 per layer: attention 3 d^2 with half as many KV heads, MLP 12 d^2).
RUNGS: dict[str, tuple[int, int, int]] = {
    "0.1m": (2, 64, 4),
    "1m": (4, 128, 4),
    "10m": (8, 288, 4),
    "80m": (16, 576, 8),
}


def rung_overrides(rung: str, device: str = "cpu") -> dict[str, Any]:
    """The scenario's settings with rung ``rung``'s policy on ``device``."""
    if rung not in RUNGS:
        raise ConfigError(f"rung={rung!r}: unknown; known: {list(RUNGS)}")
    return {**get_scenario("isdd").overrides, **qwen2_policy(*RUNGS[rung]), "policy.device": device}


def _figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    curves(rows, path, hue="part")


def ladder(rung: str, seeds: int = 4, device: str = "cpu", lr: float | None = None) -> Experiment:
    """GRPO and SAPO (paper form) on the isdd scenario with rung ``rung``'s Qwen2 policy, and GRPO
    on the scenario's control (its drift source removed), paired seeds; ``lr`` replaces the
    scenario's RL learning rate (None: unchanged)."""
    base = rung_overrides(rung, device) | ({"trainer.lr": lr} if lr is not None else {})
    s = tuple(range(seeds))
    parts = {o: SweepSpec(base={**base, "objective.name": o}, seeds=s) for o in ("grpo", "sapo")}
    control = {**base, **get_scenario("isdd").control, "objective.name": "grpo"}
    parts["grpo_control"] = SweepSpec(base=control, seeds=s)
    return Experiment(
        name=f"ladder_{rung}",
        parts=parts,
        description=f"GRPO and SAPO on the isdd scenario (RL lr {base['trainer.lr']}), Qwen2 policy "
        f"of rung {rung} on {device}",
        columns=("part",),
        reference={"part": "grpo"},
        figure=_figure,
    )


def n_parameters(cfg: RunConfig) -> int:
    """Parameters of ``cfg``'s policy (built, not trained)."""
    from testbed.envs import World
    from testbed.policies import build_policy
    from testbed.run import core_factory

    policy = build_policy(
        dataclasses.replace(cfg.policy, device="cpu"), core_factory(cfg, World(cfg.task.world))(1)
    )
    return sum(p.numel() for p in policy.parameters())


def rollout_mismatch(cfg: RunConfig, dtype: str, cache_dir: Path | None = None) -> dict[str, Any]:
    """Sample one training batch from a ``dtype`` copy of ``cfg``'s base policy and score it in
    float32, as an inference engine and a trainer do: the per-token log-ratio log pi_fp32 -
    log pi_dtype over written tokens (mean, mean absolute, 99.9th percentile of its absolute value),
    the ratio's 1st and 99th percentiles, and the sequence-level KL estimate (mean summed log-ratio)."""
    cfg = with_overrides(cfg, {"trainer.rollout_dtype": dtype})
    trainer = build_trainer([cfg], cache_dir)
    batch = trainer.collect()
    with torch.no_grad():
        fp32, _ = trainer.policy.score(batch)
    m = batch.mask.bool()
    diff = (fp32 - batch.behaviour_log_probs)[m].double()
    ratio = diff.exp().numpy()
    seq = ((batch.behaviour_log_probs - fp32) * batch.mask).sum(1)
    return {
        "dtype": dtype,
        "tokens": int(m.sum()),
        "log_ratio_mean": float(diff.mean()),
        "log_ratio_abs_mean": float(diff.abs().mean()),
        "log_ratio_abs_p999": float(np.quantile(diff.abs().numpy(), 0.999)),
        "ratio_p01": float(np.quantile(ratio, 0.01)),
        "ratio_p99": float(np.quantile(ratio, 0.99)),
        "seq_kl_estimate": float(seq.mean()),
    }
