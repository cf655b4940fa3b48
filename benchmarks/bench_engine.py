"""The engine, old against new: a run of the default scenario through the Hugging Face adapter
(``policy.engine=hf``, full passes) and through the testbed's own Qwen2 (lean passes), then a
population of K members on the new engine, per member.

    python benchmarks/bench_engine.py [--updates 10] [--population 4] [--threads 1] [--compile]

Same seeds and configs as the scenario's GRPO runs, cut to ``--updates`` updates with an
evaluation at the start and the end (the scenario evaluates every 10 updates), one torch thread.
Both engines start from one base policy, the new engine's (from the warm-start cache; trained
once when missing, its time printed apart), the old one in transformers' layout: the same runs.
Prints CPU seconds per phase (rollout, update, evaluation) and per run, the ratios side by side,
and each arm's projection to the scenario's whole run (its updates, and its evaluation points at
the measured cost of one).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import defaultdict
from pathlib import Path

import torch

from testbed.config import with_overrides
from testbed.policies import Qwen2Policy, population_state
from testbed.policies.hf import HFPolicy
from testbed.run import RunConfig, build_trainer, torch_threads
from testbed.studies.scenarios import DEFAULT_SCENARIO, get_scenario
from testbed.sweep.runner import default_cache_dir
from testbed.trainer import Trainer

PHASES = ("collect", "update", "evaluate")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def base_policy(cfg: RunConfig, cache: Path) -> tuple[Qwen2Policy, float]:
    """The scenario's base policy on the new engine (from the warm-start cache; trained and cached
    when missing) and the seconds that took."""
    start = time.perf_counter()
    policy = build_trainer([cfg], cache).policy
    assert isinstance(policy, Qwen2Policy), "the new engine's base"
    return policy, time.perf_counter() - start


def trainer_from(cfgs: list[RunConfig], base: Qwen2Policy) -> Trainer:
    """A trainer for ``cfgs`` whose policy starts from ``base``'s weights on either engine (the old
    one in transformers' layout), so that both engines run the same runs from the same start."""
    trainer = build_trainer(
        [with_overrides(c, {"warm_start.steps": 0, "warm_start.pretrain_steps": 0}) for c in cfgs]
    )
    if isinstance(trainer.policy, HFPolicy):
        weights = base.hf_state_dict(0)
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]  # tied
        trainer.policy.model.load_state_dict(weights)
    else:
        trainer.policy.load_state_dict(population_state(base.state_dict(), len(cfgs)))
    return trainer


def timed_run(trainer: Trainer) -> tuple[float, float, dict[str, float]]:
    """(wall seconds, CPU seconds, CPU seconds per phase) of ``trainer.run()``. CPU time (this
    process's) is what the ratios use: on a shared machine it moves far less than wall time with
    the other processes' load."""
    seconds: dict[str, float] = defaultdict(float)
    for name in PHASES:
        method = getattr(trainer, name)

        def timed(*a, _m=method, _n=name, **kw):
            t = time.process_time()
            out = _m(*a, **kw)
            seconds[_n] += time.process_time() - t
            return out

        setattr(trainer, name, timed)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.run()
    return time.perf_counter() - wall, time.process_time() - cpu, dict(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--population", type=int, default=4, help="K of the population (0: skip it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also the new engine with policy.compile")
    parser.add_argument("--cache", type=Path, default=default_cache_dir())
    args = parser.parse_args()
    scenario = get_scenario(args.scenario)
    short = {"trainer.n_updates": args.updates, "trainer.eval_every": args.updates, "objective.name": "grpo"}
    full = with_overrides(RunConfig(), scenario.overrides).trainer
    new = with_overrides(RunConfig(), {**scenario.overrides, **short})
    arms = {"old (hf adapter, full passes)": [with_overrides(new, {"policy.engine": "hf"})]}
    arms["new (testbed Qwen2, lean passes)"] = [new]
    if args.compile:
        arms["new, torch.compile"] = [with_overrides(new, {"policy.compile": True})]
    if args.population:
        arms[f"new, population K={args.population}"] = [
            with_overrides(new, {"seed": s}) for s in range(args.population)
        ]
    capability = torch.backends.cpu.get_cpu_capability()
    print(
        f"{args.scenario}: {args.updates} updates, evaluations at 0 and {args.updates}; CPU {cpu_name()}, "
        f"{args.threads} torch thread(s), torch {torch.__version__} ({capability})"
    )
    with torch_threads(args.threads):
        base, took = base_policy(new, args.cache)
        print(f"base policy (new engine, both engines start from it): {took:.1f} s")
        print("CPU seconds of this process per run (wall seconds of the whole population in brackets)")
        print(
            "| arm | runs | run s (wall) | per run s | rollout s | update s | evaluation s | speed "
            f"| projected {full.n_updates}-update run s | speed |"
        )
        print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        first: tuple[float, float] | None = None
        for label, cfgs in arms.items():
            wall, seconds, phases = timed_run(trainer_from(cfgs, base))
            per = {p: phases.get(p, 0.0) / len(cfgs) for p in PHASES}
            per_run = seconds / len(cfgs)
            # the scenario's run: its updates at this rate, its evaluation points at this cost each
            projected = (per["collect"] + per["update"]) * full.n_updates / args.updates + per[
                "evaluate"
            ] / 2 * (full.n_updates // full.eval_every + 1)
            first = first or (per_run, projected)
            cells = " | ".join(f"{per[p]:.2f}" for p in PHASES)
            run = f"{seconds:.1f} ({wall:.1f})"
            speeds = f"{first[0] / per_run:.2f}x | {projected:.0f} | {first[1] / projected:.2f}x"
            print(f"| {label} | {len(cfgs)} | {run} | {per_run:.2f} | {cells} | {speeds} |", flush=True)


if __name__ == "__main__":
    main()
