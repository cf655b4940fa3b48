"""The scale ladder: the isdd scenario's GRPO-vs-SAPO comparison, unchanged, with Qwen2-architecture
policies of growing size (``policy.kind="qwen2"``, through the Hugging Face adapter) in place of the
testbed's small transformer.

Each rung's base model is made by us (no weights can be downloaded): built from a config, trained
``pretrain_steps`` as a language model on the search task's transcripts (the world's text), then on
the imperfect oracle's demonstrations (the same warm start as every base policy, cached the same
way, at an Adam learning rate scaled as 1 / width), so that it knows the format and searches
imperfectly. ``rollout_mismatch`` measures the rollout/trainer mismatch a lower-precision sampler
gives at each size. ``run_ladder`` (``sapo-testbed ladder``) runs rungs x seeds x arms into one
store and writes the ladder's tables and figure.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from testbed.config import ConfigError, with_overrides
from testbed.run import RunConfig, build_trainer
from testbed.studies.figures import arm_curves, ladder_figure
from testbed.studies.scenarios import get_scenario, qwen2_policy, scenario_experiment
from testbed.sweep.experiment import Experiment, run_experiment, store_for
from testbed.sweep.runner import LocalExecutor, RunsFailed, default_cache_dir, run_configs

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


def ladder(rung: str, seeds: int = 4, device: str = "cpu", lr: float | None = None) -> Experiment:
    """GRPO and SAPO (paper form) on the isdd scenario with rung ``rung``'s Qwen2 policy, and GRPO
    on the scenario's control (its drift source removed), paired seeds; ``lr`` replaces the
    scenario's RL learning rate (None: unchanged)."""
    over = rung_overrides(rung, device) | ({"trainer.lr": lr} if lr is not None else {})
    return scenario_experiment(
        "isdd",
        ("grpo", "sapo"),
        range(seeds),
        over,
        name=f"ladder_{rung}",
        description=f"GRPO and SAPO on the isdd scenario (RL lr {over['trainer.lr']}), Qwen2 policy "
        f"of rung {rung} on {device}",
        figure=arm_curves,
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


def _first_config(exp: Experiment, smoke: bool) -> RunConfig:
    return next(iter(exp.at_size(smoke).values())).configs()[0]


def _make_base(cfg: RunConfig, cache_dir: Path) -> float:
    """Train (or find) ``cfg``'s base model in the cache; returns the seconds it took."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    build_trainer([cfg], cache_dir)
    return time.perf_counter() - start


def run_ladder(
    rungs: Sequence[str],
    seeds: int,
    root: Path,
    out: Path,
    device: str = "cpu",
    lr: float | None = None,
    workers: int | None = None,
    smoke: bool = False,
) -> str:
    """Every rung's base (cached; all at once), then every run (rungs x seeds x arms) in one worker
    pool into the store ``ladder`` under ``root`` (a rerun resumes). Writes in ``out``: ``ladder.md``
    (per rung: device, parameters, seeds, wall times, the paired table, the mismatch), ``ladder.csv``
    (one row per rung and arm), ``ladder_mismatch.csv``, ``ladder_summaries.csv``,
    ``ladder_rows.csv`` and ``ladder.png`` / ``.pdf``; returns ``ladder.md``'s text."""
    exps = {rung: ladder(rung, seeds, device, lr) for rung in rungs}  # a bad rung fails here
    out.mkdir(parents=True, exist_ok=True)
    cache = default_cache_dir()
    firsts = {rung: _first_config(exp, smoke) for rung, exp in exps.items()}
    with LocalExecutor(workers) as pool:  # every rung's base at once, before any run needs it
        jobs: dict[str, Future] = {rung: pool.submit(_make_base, cfg, cache) for rung, cfg in firsts.items()}
        base_s = {rung: job.result() for rung, job in jobs.items()}

    # One pool for every rung's runs, the largest rung first (it takes longest), seed by seed, so
    # that a run cut short by a time limit leaves whole paired seeds behind.
    store = store_for("ladder", root, smoke)
    params = {rung: n_parameters(cfg) / 1e6 for rung, cfg in firsts.items()}
    order = sorted(exps, key=lambda r: -params[r])
    cfgs = [c for r in order for spec in exps[r].at_size(smoke).values() for c in spec.configs()]
    cfgs.sort(key=lambda c: c.seed)  # stable: the rung order kept within a seed
    start = time.perf_counter()
    try:
        with LocalExecutor(workers) as pool:
            run_configs(cfgs, store, pool, cache, population=1)
    except RunsFailed as err:  # the others are stored: report them with the failures named
        print(err, flush=True)
    wall = time.perf_counter() - start

    rows, summaries, tables, numbers, mismatch = [], [], [], [], []
    for rung, exp in exps.items():
        results = run_experiment(exp, store, smoke, only_stored=True)
        extra = {"rung": rung, "params_m": params[rung], "device": device, "rl_lr": firsts[rung].trainer.lr}
        rows.append(results.rows.assign(**extra))
        summaries.append(results.summaries.assign(**extra))
        timing = {"base_s": round(base_s[rung], 1), "all_runs_wall_s": round(wall)}
        tables.append(results.table.assign(**extra, **timing))
        numbers.append(exp.numbers(results.summaries).assign(**extra, **timing))
        for dtype in ("bfloat16", "float16"):
            mismatch.append({**extra, **rollout_mismatch(firsts[rung], dtype, cache)})
        print(f"rung {rung}: {params[rung]:.3g} M parameters, base {base_s[rung]:.0f} s", flush=True)

    table, mis = pd.concat(tables), pd.DataFrame(mismatch)
    pd.concat(numbers).to_csv(out / "ladder.csv", index=False)  # numbers; ladder.md has them as text
    mis.to_csv(out / "ladder_mismatch.csv", index=False)
    pd.concat(summaries).to_csv(out / "ladder_summaries.csv", index=False)
    all_rows = pd.concat(rows)
    all_rows.to_csv(out / "ladder_rows.csv", index=False)
    ladder_figure(all_rows, out / "ladder")
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor()
    text = [
        "# Scale ladder",
        "",
        f"Device: {name or platform.machine()} ({device}); torch {torch.__version__}; "
        f"{table['seeds'].max()} paired seeds per arm{' (smoke size)' if smoke else ''}.",
        "",
        table.to_markdown(index=False, floatfmt=".3g"),
        "",
        "## Rollout/trainer mismatch (one training batch sampled in dtype, scored in float32)",
        "",
        mis.to_markdown(index=False, floatfmt=".3g"),
        "",
    ]
    (out / "ladder.md").write_text("\n".join(text))
    return "\n".join(text)
