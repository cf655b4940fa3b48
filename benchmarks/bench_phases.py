"""Where a compare population's time goes: the trainer's rollout (``collect``), optimizer steps
(``update``, with the old-policy and pooled-diagnostics passes) and evaluation (``evaluate``).

    python benchmarks/bench_phases.py [--scenario isdd] [--seeds 8] [--updates 10]

One population of GRPO and SAPO on ``--seeds`` seeds each, one torch thread; prints seconds per
call of each phase and the projected time of the scenario's run.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from testbed.policies import has_members
from testbed.run import build_trainer, torch_threads
from testbed.studies.compare import compare_experiment
from testbed.studies.scenarios import DEFAULT_SCENARIO

PHASES = ("collect", "update", "evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--updates", type=int, default=10)
    args = parser.parse_args()
    full = compare_experiment(("grpo",), (0,), args.scenario).arms["grpo"].configs()[0].trainer
    short = {"trainer.n_updates": args.updates, "trainer.eval_every": args.updates}
    exp = compare_experiment(("grpo", "sapo"), range(args.seeds), args.scenario, short)
    cfgs = [c for spec in exp.arms.values() for c in spec.configs()]
    if not has_members(cfgs[0].policy):
        cfgs = cfgs[:1]  # no member dimension (the Hugging Face adapter): one run
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    with torch_threads(1):
        start = time.perf_counter()
        trainer = build_trainer(cfgs)
        built = time.perf_counter() - start
        print(f"{args.scenario}: {len(cfgs)} member(s); base policy and trainer {built:.1f} s")
        for name in PHASES:
            method = getattr(trainer, name)

            def timed(*a, _m=method, _n=name, **kw):
                t = time.perf_counter()
                out = _m(*a, **kw)
                seconds[_n] += time.perf_counter() - t
                calls[_n] += 1
                return out

            setattr(trainer, name, timed)
        trainer.run()
    n_updates, n_evals = full.n_updates, full.n_updates // full.eval_every + 1
    per = {n: seconds[n] / calls[n] for n in PHASES}
    for n in PHASES:
        print(f"{n:>9}: {per[n]:6.2f} s per call, {calls[n]} calls")
    total = (per["collect"] + per["update"]) * n_updates + per["evaluate"] * n_evals
    print(f"projected for the scenario's {n_updates} updates and {n_evals} evaluations: {total / 60:.1f} min")


if __name__ == "__main__":
    main()
