"""Rollout tokens/s of a Hugging Face causal LM per decode mode of ``HFPolicy`` (dynamic KV cache,
static cache, CUDA graph), side by side in one run, with peak GPU memory and a cross-mode check.

    python benchmarks/bench_hf_rollout.py --device cuda --json hf_rollout.json
    python benchmarks/bench_hf_rollout.py --shape tiny --device cpu --modes dynamic static

The model is a Qwen2 architecture at real size, randomly initialised (``benchmarks/gpu_scaleup.py``'s
SHAPES and random_model: bf16 on CUDA), on the text search task of the fixed world with BM25, as
gpu_scaleup builds it. Every mode plays the same episodes with the same seeds, after one untimed
warm-up rollout (which includes a graph's capture). Tokens = positions the model processed =
batch x model steps. A random model's episodes end after about 25 positions (its invalid actions
use up the 4 turns); ``--set task.max_turns=64`` runs them to the task's length limit.

The check, against the first mode (``dynamic`` by default): every mode fed the first mode's
rollout tokens for ``--check-steps`` steps (largest log-prob difference, agreement on the most
likely token), and the share of sampled tokens equal to the first mode's over a whole rollout (in
bf16 different kernels round differently, so rollouts can part at a near-tie).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from testbed.config import with_overrides
from testbed.envs import World
from testbed.envs.text.qa_data import TextQA
from testbed.envs.text.task import corpus_words
from testbed.policies.hf import DECODES, HFPolicy
from testbed.policies.hf_run import hf_parts
from testbed.policies.hf_tiny import train_tokenizer
from testbed.rollout import PolicyAgent, rollout
from testbed.run import RunConfig


def scaleup() -> ModuleType:
    """``benchmarks/gpu_scaleup.py`` (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parent / "gpu_scaleup.py"
    spec = importlib.util.spec_from_file_location("gpu_scaleup", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(policy: HFPolicy, core, episodes: np.ndarray, args) -> tuple[dict[str, Any], torch.Tensor]:
    """One warm-up and ``args.repeats`` timed rollouts: the figures, and the first timed rollout's
    tokens (for the token agreement between modes)."""
    groups = np.repeat(np.arange(len(episodes) // args.group), args.group)

    def play(seed: int):
        agent = PolicyAgent(policy, torch.Generator().manual_seed(seed))
        return rollout(agent, core, episodes, groups, np.random.default_rng(seed))

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    play(args.seed)
    sync(args.device)
    warmup_s = time.perf_counter() - start
    seconds, positions, tokens = [], 0, []
    for r in range(args.repeats):
        sync(args.device)
        start = time.perf_counter()
        batch = play(args.seed + 1 + r)
        sync(args.device)
        seconds.append(time.perf_counter() - start)
        positions += batch.tokens.shape[0] * (batch.tokens.shape[1] - 1)
        tokens.append(batch.tokens)
    row: dict[str, Any] = {
        "tokens_per_s": positions / sum(seconds),
        "rollout_s": sum(seconds) / len(seconds),
        "warmup_s": warmup_s,
        "steps": tokens[0].shape[1] - 1,
    }
    if cuda:
        row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row, tokens[0]


def teacher_forced(model, modes: list[str], tokens: torch.Tensor, max_len: int, steps: int) -> dict[str, Any]:
    """Every mode fed the same ``tokens`` for the first ``steps`` steps: the largest log-prob
    difference from the first mode, and how often the two agree on the most likely token."""
    policies = {mode: HFPolicy(model, decode=mode) for mode in modes}
    states = {mode: policy.start(len(tokens), max_len=max_len) for mode, policy in policies.items()}
    diff, agree = dict.fromkeys(modes, 0.0), dict.fromkeys(modes, 0.0)
    n = min(steps, tokens.shape[1] - 1)
    with torch.no_grad():
        for i in range(n):
            logp = {
                mode: torch.log_softmax(policy.next_logits(tokens[:, i], states[mode]).float(), -1)
                for mode, policy in policies.items()
            }
            ref = logp[modes[0]]
            for mode, lp in logp.items():
                diff[mode] = max(diff[mode], float((lp - ref).abs().max()))
                agree[mode] += float((lp.argmax(-1) == ref.argmax(-1)).float().mean()) / n
    return {mode: {"max_abs_logp_diff": diff[mode], "argmax_agree": agree[mode]} for mode in modes}


def token_agreement(tokens: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    """The share of sampled tokens equal to the reference rollout's, and the first position where
    any row parts from it."""
    t = min(tokens.shape[1], ref.shape[1])
    same = tokens[:, :t] == ref[:, :t]
    parted = (~same).any(0).nonzero()
    return {
        "token_agree": float(same.float().mean()),
        "first_parting_pos": int(parted[0]) if len(parted) else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    gpu_scaleup = scaleup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(gpu_scaleup.SHAPES), default="qwen2-0.5b")
    parser.add_argument("--batch", type=int, default=256, help="rows per rollout")
    parser.add_argument("--group", type=int, default=8, help="rows per question (GRPO's group)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", choices=DECODES, default=["dynamic", "static", "graph"])
    parser.add_argument("--repeats", type=int, default=1, help="timed rollouts per mode")
    parser.add_argument("--check-steps", type=int, default=16, help="teacher-forced steps compared")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="run config overrides (task.max_turns=64)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.batch % args.group:
        parser.error(f"--batch {args.batch}: not a multiple of --group {args.group}")

    overrides = {"policy.kind": "hf", "task.world.kind": "fixed", **dict(s.split("=", 1) for s in args.set)}
    cfg = with_overrides(RunConfig(), overrides)
    world = World(cfg.task.world)
    tokenizer = train_tokenizer(corpus_words(TextQA.from_world(world)))
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = gpu_scaleup.random_model(args.shape, args.device)
    _, source, make_core = hf_parts(cfg, model=model, tokenizer=tokenizer)  # adds the tags to the model
    model.eval()
    sync(args.device)
    init_s = time.perf_counter() - start
    episodes = np.repeat(
        source.train_ids(np.random.default_rng(args.seed), args.batch // args.group), args.group
    )
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"{args.shape} ({params:.0f}M parameters, {next(model.parameters()).dtype}) on {name}: "
        f"batch {args.batch}, model built in {init_s:.1f}s",
        flush=True,
    )

    core = make_core(args.batch)
    rows, tokens = {}, {}
    for mode in args.modes:
        rows[mode], tokens[mode] = measure(HFPolicy(model, decode=mode), core, episodes, args)
        gc.collect()  # the mode's cache and graph, before the next mode's peak
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    ref_mode = args.modes[0]
    checks = teacher_forced(model, args.modes, tokens[ref_mode], core.capacity, args.check_steps)
    for mode, row in rows.items():
        row.update(checks[mode], **token_agreement(tokens[mode], tokens[ref_mode]))
        row["speedup"] = row["tokens_per_s"] / rows[ref_mode]["tokens_per_s"]
    print(
        f"{'mode':8} {'tokens/s':>10} {'rollout s':>9} {'warm-up s':>9} {'steps':>5} {'peak GiB':>8} "
        f"{'x ' + ref_mode:>10} {'max|dlogp|':>10} {'argmax=':>7} {'tokens=':>7} {'parts at':>8}"
    )
    for mode, row in rows.items():
        peak = f"{row['peak_gpu_gib']:.2f}" if "peak_gpu_gib" in row else "-"
        parted = row["first_parting_pos"] if row["first_parting_pos"] is not None else "-"
        print(
            f"{mode:8} {row['tokens_per_s']:10.0f} {row['rollout_s']:9.2f} {row['warmup_s']:9.2f} "
            f"{row['steps']:5d} {peak:>8} {row['speedup']:10.2f} {row['max_abs_logp_diff']:10.2e} "
            f"{row['argmax_agree']:7.3f} {row['token_agree']:7.3f} {parted!s:>8}"
        )
    result = {
        "shape": args.shape,
        "batch": args.batch,
        "device": name,
        "dtype": str(next(model.parameters()).dtype),
        "params_m": params,
        "init_s": init_s,
        "reference": ref_mode,
        "overrides": args.set,
        "modes": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
