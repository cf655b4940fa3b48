"""GRPO vs SAPO on a real-size causal LM (GPU): the project's trainer and objectives, unchanged, on
the synthetic search task with the BM25 tool. Prints rollout tokens/s, training tokens/s and peak
GPU memory per objective.

    python benchmarks/gpu_scaleup.py --model /path/to/local/Qwen2.5-0.5B-Instruct
    python benchmarks/gpu_scaleup.py              # no weights: Qwen2-0.5B shape, random init

Without weights the model is a real architecture at a real size initialised from its config (so
the throughput figures are real; the rewards are not). It needs a CUDA machine for meaningful
numbers, and runs (slowly) on CPU with --device cpu --shape tiny.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from testbed.config import with_overrides
from testbed.envs import World
from testbed.envs.text.qa_data import TextQA
from testbed.envs.text.task import corpus_words
from testbed.policies.hf_tiny import train_tokenizer
from testbed.run import RunConfig, build_trainer

# Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab 151936).
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2-0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
    },
}


def random_model(shape: str, device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=True)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = Qwen2ForCausalLM(cfg)
    return model.to(device=device, dtype=dtype)  # type: ignore[call-arg]  # transformers' decorated .to


def measure(trainer, updates: int, device: str) -> dict[str, float]:
    """Time rollouts and updates separately (after one untimed warm-up update); tokens = positions
    the model processed."""
    trainer.update(trainer.collect())
    rollout_s = train_s = 0.0
    rollout_tokens = train_tokens = 0
    rewards = []
    for _ in range(updates):
        sync(device)
        t0 = time.perf_counter()
        batch = trainer.collect()
        sync(device)
        t1 = time.perf_counter()
        (row,) = trainer.update(batch)
        sync(device)
        t2 = time.perf_counter()
        rollout_s += t1 - t0
        train_s += t2 - t1
        rollout_tokens += batch.tokens.numel()
        # the update scores the batch epochs times, plus once before (old) and once after (pooled signals)
        train_tokens += batch.tokens.numel() * (trainer.tc.epochs + 2)
        rewards.append(float(batch.rewards.mean()))
    out = {
        "rollout_tokens_per_s": rollout_tokens / rollout_s,
        "train_tokens_per_s": train_tokens / train_s,
        "rollout_s": rollout_s,
        "train_s": train_s,
        "train_reward": sum(rewards) / len(rewards),
        "ratio_p05_pos_last": row.get("ratio_p05_pos", float("nan")),
    }
    if device.startswith("cuda"):
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="local HF model directory (no hub access)")
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), default="qwen2-0.5b", help="architecture when no --model"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--objectives", nargs="+", default=["grpo", "sapo"])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    base = {
        "policy.kind": "hf",
        "task.world.kind": "fixed",
        "trainer.questions_per_batch": "8",
        "trainer.group_size": "5",
        "trainer.minibatches": "4",
        "trainer.lr": "1e-6",
        "trainer.eval_every": "1000",
        **dict(s.split("=", 1) for s in args.set),
    }
    results = {}
    for name in args.objectives:
        cfg = with_overrides(RunConfig(), {**base, "objective.name": name, "policy.device": args.device})
        qa = TextQA.from_world(World(cfg.task.world))
        if args.model:
            trainer = build_trainer([with_overrides(cfg, {"policy.model_path": args.model})], qa=qa)
        else:
            model, tokenizer = random_model(args.shape, args.device), train_tokenizer(corpus_words(qa))
            trainer = build_trainer([cfg], qa=qa, model=model, tokenizer=tokenizer)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        results[name] = measure(trainer, args.updates, args.device)
        n_params = sum(p.numel() for p in trainer.policy.parameters())
        results[name]["params_m"] = n_params / 1e6
        print(name, json.dumps({k: round(v, 3) for k, v in results[name].items()}), flush=True)
        del trainer
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
