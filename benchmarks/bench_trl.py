"""Benchmark (CPU): GRPO updates of the same tiny Qwen2 through our trainer and through TRL's
GRPOTrainer (with our objective), tokens per second side by side, one run.

    python experiments/bench_trl.py [--steps 5] [--completions 16] [--length 32]

Tokens are the positions each side's rollout produced (prompt + completion), counted over the
timed steps; each step is one rollout batch plus one optimizer step (no reference model, one pass
per batch). Ours runs the multi-turn search task with BM25 retrieval inside the rollout; TRL
generates plain completions of the same length budget, so the comparison favours TRL, if anyone.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from testbed.config import with_overrides
from testbed.envs import World, WorldConfig
from testbed.envs.text.qa_data import TextQA
from testbed.envs.text.task import corpus_words
from testbed.policies.hf_tiny import qwen2_model, train_tokenizer
from testbed.run import RunConfig, build_trainer


def ours(tokenizer, qa: TextQA, steps: int, completions: int, length: int) -> float:
    cfg = with_overrides(
        RunConfig(),
        {
            "objective.name": "grpo",
            "trainer.questions_per_batch": str(completions // 8),
            "trainer.group_size": "8",
            "trainer.minibatches": "1",
            "task.max_len": str(length + 16),
            "task.world.kind": "fixed",
            "policy.kind": "hf",
        },
    )
    trainer = build_trainer([cfg], qa=qa, model=qwen2_model(len(tokenizer)), tokenizer=tokenizer)
    trainer.update(trainer.collect())  # warm-up
    tokens, start = 0, time.perf_counter()
    for _ in range(steps):
        batch = trainer.collect()
        trainer.update(batch)
        tokens += int((batch.tokens != tokenizer.pad_token_id).sum())
    return tokens / (time.perf_counter() - start)


def trl(tokenizer, qa: TextQA, steps: int, completions: int, length: int) -> float:
    from datasets import Dataset
    from trl import GRPOConfig

    from testbed.integrations.trl import TestbedGRPOTrainer

    lengths: list[int] = []

    def reward(prompts, completions, completion_ids, **_):
        lengths.extend(len(c) for c in completion_ids)
        return [float(len(c) % 3) for c in completion_ids]

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=False,
            per_device_train_batch_size=completions,
            num_generations=8,
            max_completion_length=length,
            max_steps=steps + 1,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            logging_steps=1000,
            disable_tqdm=True,
        )
        data = Dataset.from_dict({"prompt": qa.questions[: completions * (steps + 1)]})
        trainer = TestbedGRPOTrainer(
            model=qwen2_model(len(tokenizer)),
            reward_funcs=reward,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            objective="testbed_grpo",
        )
        step_times: list[float] = []

        class Timer:
            def __init__(self) -> None:
                self.t = time.perf_counter()

        timer = Timer()
        from transformers import TrainerCallback

        class OnStep(TrainerCallback):
            def on_step_end(self, *_, **__):
                now = time.perf_counter()
                step_times.append(now - timer.t)
                timer.t = now

        trainer.add_callback(OnStep())
        trainer.train()
    prompt_len = sum(len(tokenizer(q)["input_ids"]) for q in qa.questions[:completions]) / completions
    timed = step_times[1:]  # the first is the warm-up
    tokens = sum(lengths[completions:]) + prompt_len * completions * len(timed)
    return tokens / sum(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--completions", type=int, default=16)
    parser.add_argument("--length", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    qa = TextQA.from_world(World(WorldConfig(kind="fixed")))
    tokenizer = train_tokenizer(corpus_words(qa))
    a = ours(tokenizer, qa, args.steps, args.completions, args.length)
    b = trl(tokenizer, qa, args.steps, args.completions, args.length)
    print(f"ours: {a:,.0f} tokens/s   TRL GRPOTrainer: {b:,.0f} tokens/s   ratio ours/TRL: {a / b:.2f}")


if __name__ == "__main__":
    main()
