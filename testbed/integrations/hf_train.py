"""GRPO-family training of a Hugging Face causal LM search agent: the project's Trainer, unchanged,
on the text search task with a BM25 tool.

    trainer = hf_trainer(RunConfig(...), model_path=None)   # None: tiny offline Qwen2 + tokenizer
    rows, summary = train(trainer.cfg, trainer=trainer)
"""

from __future__ import annotations

import functools

import torch

from testbed.envs import World
from testbed.envs.bm25 import BM25Retriever
from testbed.integrations.hf_policy import HFPolicy, add_lora, load_model
from testbed.integrations.text_task import TextQA, TextSearchBatch, add_tags, corpus_words, text_task_config
from testbed.integrations.tiny import tiny_qwen2, train_tokenizer
from testbed.trainer import RunConfig, Trainer


def hf_trainer(
    cfg: RunConfig,
    model_path: str | None = None,
    device: str = "cpu",
    lora: bool = False,
    qa: TextQA | None = None,
    max_obs_len: int = 64,
    model=None,
    tokenizer=None,
) -> Trainer:
    """A Trainer whose policy is a HF model: ``model``/``tokenizer`` given, loaded from
    ``model_path``, or (neither) a tiny Qwen2 with a tokenizer trained on the task's text."""
    qa = qa or TextQA.from_world(World(cfg.task.world))
    if model is None and model_path is not None:
        model, tokenizer = load_model(model_path, device)
    elif model is None:
        tokenizer = train_tokenizer(corpus_words(qa))
        model = tiny_qwen2(len(tokenizer), seed=cfg.seed).to(device)
    if tokenizer is None:
        raise ValueError("tokenizer: needed with a given model")
    add_tags(tokenizer, model)
    if lora:
        model = add_lora(model)
    task = text_task_config(cfg.task)
    retriever = BM25Retriever(qa.corpus, task.retriever.top_k)
    make_batch = functools.partial(
        TextSearchBatch, task, tokenizer=tokenizer, qa=qa, retriever=retriever, max_obs_len=max_obs_len
    )
    torch.manual_seed(cfg.seed)
    trainer = Trainer(cfg, policy=HFPolicy(model), make_batch=make_batch, splits=(qa.train, qa.held_out))
    trainer.tokenizer = tokenizer
    return trainer
