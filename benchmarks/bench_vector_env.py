"""Steps/s of the token-grain core, of our VectorEnv and of Gymnasium's SyncVectorEnv, side by side.

    python benchmarks/bench_vector_env.py [--num-envs 4096] [--seconds 3] [--world procedural|fixed]

Random actions throughout (uniform over the vocabulary, as ``action_space.sample`` draws them); the
VectorEnv and sync rows use Gymnasium's own ``benchmark_vector_step`` (NEXT_STEP autoreset; the
steps that only reset are not counted). The core row steps the batch and resets it whole when every
episode has ended (no per-env resets, no observation buffers): its upper bound.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils.performance import benchmark_vector_step

import testbed  # noqa: F401 (registers the environments)
from testbed.envs import TaskConfig, TokenSearchBatch
from testbed.envs.gym_envs import _task


def core_steps_per_s(task: TaskConfig, n: int, seconds: float) -> float:
    core, rng = TokenSearchBatch(task, n), np.random.default_rng(0)
    world, steps, start = core.world, 0, time.perf_counter()
    assert world is not None  # the simulated task
    core.reset(world.train_ids(rng, n))
    while time.perf_counter() - start < seconds:
        live = int((~core.done).sum())
        if live == 0:
            core.reset(world.train_ids(rng, n))
            continue
        core.step(rng.integers(0, core.vocab.size, n), rng)
        steps += live
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument(
        "--sync-envs", type=int, default=64, help="SyncVectorEnv size (it steps N envs in Python)"
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--world", choices=["procedural", "fixed"], default="procedural")
    args = parser.parse_args()
    kwargs: dict[str, Any] = {"world": {"kind": args.world}}
    task = _task(None, kwargs)
    env_id, n = "testbed/SearchTokens-v0", args.num_envs
    rows = [("core (TokenSearchBatch)", n, core_steps_per_s(task, n, args.seconds))]
    vec = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)
    rows.append(("VectorEnv (vector_entry_point)", n, benchmark_vector_step(vec, args.seconds, seed=0)))
    sync = gym.make_vec(env_id, num_envs=args.sync_envs, vectorization_mode="sync", **kwargs)
    rows.append(("SyncVectorEnv (sync)", args.sync_envs, benchmark_vector_step(sync, args.seconds, seed=0)))
    print(f"token grain, {args.world} world, random actions")
    print(f"| {'':32} | {'envs':>6} | {'steps/s':>12} |")
    print(f"|{'-' * 34}|{'-' * 8}|{'-' * 14}|")
    for name, envs, rate in rows:
        print(f"| {name:32} | {envs:>6} | {rate:>12,.0f} |")


if __name__ == "__main__":
    main()
