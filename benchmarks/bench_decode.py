"""The rollout on the Qwen2 engine: decoding position by position against feeding the positions no
row writes in blocks (``Qwen2Policy.feed``) and decoding a population in member groups
(``decode_rows``); all three give the same batches, bit for bit (tests/test_rollout.py).

    python benchmarks/bench_decode.py [--members 1 16] [--repeats 5]

For each population size K: a training rollout (K x 128 rows, sampled) and an evaluation rollout
(K x 512 rows, sampled) of the default scenario from its base policy, one torch thread; the modes
take turns, ``--repeats`` times each. Prints CPU seconds per rollout per member (the mean) and the
speed against position by position.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from bench_engine import base_policy, cpu_name, trainer_from

from testbed.config import with_overrides
from testbed.policies import Qwen2Policy
from testbed.rollout import PolicyAgent, rollout
from testbed.run import RunConfig, torch_threads
from testbed.studies.scenarios import DEFAULT_SCENARIO, get_scenario
from testbed.sweep.runner import default_cache_dir
from testbed.trainer import Trainer

MODES = ("position by position", "fed blocks", "fed blocks, member groups")


def one_rollout(trainer: Trainer, evaluation: bool, mode: str) -> float:
    """CPU seconds of one sampled rollout of ``trainer``'s members in ``mode``."""
    policy = trainer.policy
    assert isinstance(policy, Qwen2Policy), "the Qwen2 engine"
    policy.decode_rows = 2**31 if mode != MODES[2] else type(policy)(policy.shape).decode_rows
    k = trainer.k
    if evaluation:
        ids = np.tile(trainer.world.eval_ids(trainer.tc.eval_episodes), k)
        core = trainer.eval_cores[False]
    else:
        q, g = trainer.tc.questions_per_batch, trainer.tc.group_size
        ids = np.concatenate([np.repeat(trainer.world.train_ids(rng, q), g) for rng in trainer.rngs])
        core = trainer.cores
    agent = PolicyAgent(policy, [torch.Generator().manual_seed(j) for j in range(k)])
    agent.feeds = mode != MODES[0]
    streams = [np.random.default_rng(j) for j in range(k)]
    start = time.process_time()
    rollout(agent, core, ids, np.arange(len(ids)), streams)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = with_overrides(RunConfig(), get_scenario(DEFAULT_SCENARIO).overrides)
    print(f"{DEFAULT_SCENARIO}: CPU {cpu_name()}, 1 torch thread, torch {torch.__version__}")
    print(
        "| members | rollout | rows | "
        + " | ".join(f"{m} s" for m in MODES)
        + " | speed (fed) | speed (groups) |"
    )
    print("|--:|:--|--:|" + "--:|" * (len(MODES) + 2))
    with torch_threads(1):
        base, _ = base_policy(cfg, default_cache_dir())
        for k in args.members:
            trainer = trainer_from([with_overrides(cfg, {"seed": s}) for s in range(k)], base)
            for evaluation in (False, True):
                seconds: dict[str, float] = defaultdict(float)
                one_rollout(trainer, evaluation, MODES[1])  # warm up
                for r in range(args.repeats):
                    for mode in MODES if r % 2 else MODES[::-1]:
                        seconds[mode] += one_rollout(trainer, evaluation, mode) / args.repeats / k
                rows = k * (trainer.tc.eval_episodes if evaluation else len(trainer.cores.done) // k)
                cells = " | ".join(f"{seconds[m]:.3f}" for m in MODES)
                speed = " | ".join(f"{seconds[MODES[0]] / seconds[m]:.2f}x" for m in MODES[1:])
                kind = "evaluation" if evaluation else "training"
                print(f"| {k} | {kind} | {rows} | {cells} | {speed} |", flush=True)


if __name__ == "__main__":
    main()
