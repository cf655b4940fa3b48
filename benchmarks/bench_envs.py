"""Benchmark: environment steps per second of the batched tabular and token cores (one core).

    python experiments/bench_envs.py [--batch 4096] [--seconds 3]

Agents act uniformly at random (every malformed-action path is exercised); an episode that ends
is reset with its batch; only steps of live episodes count.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from testbed.envs import TabularSearchBatch, TaskConfig, TokenSearchBatch


def _bench(core, n_actions: int, seconds: float, rng: np.random.Generator) -> float:
    pool = core.world.train
    core.reset(rng.choice(pool, core.batch_size))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            steps += int((~core.done).sum())  # only live episodes count
            core.step(rng.integers(0, n_actions, core.batch_size), rng)
        if core.done.mean() > 0.5:
            core.reset(rng.choice(pool, core.batch_size))
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    task = TaskConfig()
    tab = TabularSearchBatch(task, args.batch)
    tok = TokenSearchBatch(task, args.batch)
    print(f"tabular: {_bench(tab, tab.n_actions, args.seconds, rng):,.0f} env steps/s (batch {args.batch})")
    print(f"token:   {_bench(tok, tok.vocab.size, args.seconds, rng):,.0f} env steps/s (batch {args.batch})")


if __name__ == "__main__":
    main()
