"""Runs per minute of the headline configuration: a process pool of single runs against
populations (K runs in one process), on this machine's cores, with peak memory per worker.

    python benchmarks/bench_population.py [--updates 10] [--ks 1 4 16 32] [--workers 2]

Every arm trains the same runs (seeds 0..N-1 of GRPO on the default task, ``--updates`` updates,
an evaluation at the start and the end); each worker uses one torch thread. ``pool, own base``
is the process pool as it was before populations: every run trains its own base policy;
``pool, shared base`` and ``population K`` start every run from one cached base, whose one-off
cost is printed apart.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from testbed.config import with_overrides
from testbed.run import RunConfig, build_trainer, split_populations, train_population


def _configs(n: int, updates: int) -> list[RunConfig]:
    over = {"trainer.n_updates": updates, "trainer.eval_every": updates}
    return [with_overrides(RunConfig(), {**over, "seed": s}) for s in range(n)]


def _work(cfgs: list[RunConfig], cache_dir: Path | None) -> int:
    """Train one population (or one run); returns this worker's peak resident memory in KiB."""
    train_population(cfgs, cache_dir, threads=1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _arm(jobs: list[list[RunConfig]], cache_dir: Path | None, workers: int) -> tuple[float, float]:
    """(runs per minute, peak MiB of one worker) for jobs spread over ``workers`` processes."""
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        peaks = list(pool.map(_work, jobs, [cache_dir] * len(jobs)))
    runs = sum(len(j) for j in jobs)
    return 60 * runs / (time.perf_counter() - start), max(peaks) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--own-base-runs", type=int, default=2, help="runs of the own-base pool (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        start = time.perf_counter()
        build_trainer(_configs(1, args.updates), cache)
        base_s = time.perf_counter() - start
        print(f"base policy (paid once per study): {base_s:.1f} s")
        print("| arm | runs | runs/min | peak MiB per worker |\n|:--|--:|--:|--:|")
        own = _configs(args.own_base_runs, args.updates)
        rate, mem = _arm([[c] for c in own], None, args.workers)
        print(f"| pool, own base | {len(own)} | {rate:.2f} | {mem:.0f} |", flush=True)
        results = {"own": rate}
        shared = _configs(2 * args.workers, args.updates)
        results["shared"], mem = _arm([[c] for c in shared], cache, args.workers)
        print(f"| pool, shared base | {len(shared)} | {results['shared']:.2f} | {mem:.0f} |", flush=True)
        for k in args.ks:
            cfgs = _configs(k * args.workers, args.updates)
            pops = split_populations(cfgs, k, min_populations=args.workers)
            prate, mem = _arm(pops, cache, args.workers)
            results[k] = prate
            print(f"| population K={k} | {len(cfgs)} | {prate:.2f} | {mem:.0f} |", flush=True)
        for k in args.ks:
            own_x, shared_x = results[k] / results["own"], results[k] / results["shared"]
            print(f"population K={k}: {own_x:.2f}x the own-base pool, {shared_x:.2f}x the shared-base pool")


if __name__ == "__main__":
    main()
