"""The default study on one GPU in one process: the default scenario's baselines (GRPO, SAPO, LLDS,
TIS and GRPO on the control, 32 paired seeds, 150 updates), every member of a population in one
batched policy, populations one after the other.

    python benchmarks/gpu_default_study.py                      # on cuda, into runs/gpu_default_study
    python benchmarks/gpu_default_study.py --device cpu --smoke # the same path at smoke size (a test)

The runs are stored as any sweep's (``--out``; a rerun skips stored runs), keyed with
``policy.device`` as given (cuda runs never mix with CPU runs of the same config). Writes
``paper_figures/gpu/default_study_<device>.json`` (``--json``) and prints: the base policy's time,
each population's members, wall time, training tokens per second (tokens the policies wrote in
their training batches, over the population's whole wall time, evaluations included) and peak GPU
memory, and the whole study's wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from testbed.config import config_hash, to_dict, with_overrides
from testbed.run import RunConfig, build_trainer, split_populations
from testbed.studies import get_study
from testbed.studies.scenarios import DEFAULT_SCENARIO
from testbed.sweep.runner import default_cache_dir, train_members
from testbed.sweep.store import ResultStore


def study_configs(device: str, seeds: int, updates: int | None, smoke: bool) -> list[RunConfig]:
    """The default scenario's baselines study, every run on ``device``."""
    parts = get_study(f"{DEFAULT_SCENARIO}_baselines", seeds).at_size(smoke)
    extra: dict[str, Any] = {"policy.device": device}
    if smoke:  # the scenario's 300 language-modelling steps are no part of a smoke test
        extra["warm_start.pretrain_steps"] = 2
    if updates is not None:
        extra["trainer.n_updates"] = updates
    return [with_overrides(c, extra) for spec in parts.values() for c in spec.configs()]


def written_tokens(rows: list[dict], cfg: RunConfig) -> float:
    """Tokens one run's policy wrote in its training batches (mean response length x batch size,
    summed over updates; evaluation rollouts not counted)."""
    batch = cfg.trainer.questions_per_batch * cfg.trainer.group_size
    return sum(r["response_length"] * batch for r in rows if "response_length" in r)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--updates", type=int, default=None, help="cut every run (default: the study's)")
    parser.add_argument("--smoke", action="store_true", help="the study at smoke size")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_default_study"))
    parser.add_argument("--cache", type=Path, default=default_cache_dir())
    parser.add_argument("--json", type=Path, help="default: paper_figures/gpu/default_study_DEVICE.json")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    cfgs = study_configs(args.device, args.seeds, args.updates, args.smoke)
    store = ResultStore(args.out)
    # a repeated config (at smoke size GRPO and its control coincide) runs once
    todo = list({config_hash(c): c for c in cfgs if not store.has(config_hash(c))}.values())
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "runs": len(cfgs),
        "runs_to_make": len(todo),
        "updates": cfgs[0].trainer.n_updates,
        "populations": [],
    }
    start = time.perf_counter()
    if todo:  # the base policy (cached): trained once, before any population
        build_trainer([todo[0]], args.cache)
        sync(args.device)
    report["base_s"] = time.perf_counter() - start
    print(
        f"{len(todo)} of {len(cfgs)} runs to make on {report['device']}; base policy {report['base_s']:.1f} s"
    )
    for group in split_populations(todo, max_members=len(todo) or 1):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        outputs = train_members(group, args.cache)
        sync(args.device)
        wall = time.perf_counter() - t
        tokens = 0.0
        for cfg, out in zip(group, outputs, strict=True):
            store.write(config_hash(cfg), out.rows, out.summary, out.provenance, config=to_dict(cfg))
            tokens += written_tokens(out.rows, cfg)
        part = {
            "members": len(group),
            "minibatches": group[0].trainer.minibatches,
            "objectives": sorted({c.objective.name for c in group}),
            "wall_s": wall,
            "train_tokens_per_s": tokens / wall,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        }
        report["populations"].append(part)
        print(json.dumps(part), flush=True)
    report["wall_s"] = time.perf_counter() - start
    print(f"study: {report['wall_s']:.1f} s ({report['wall_s'] / 60:.1f} min) for {len(todo)} runs")
    path = args.json or Path("paper_figures/gpu") / f"default_study_{args.device.replace(':', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
