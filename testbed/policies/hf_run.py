"""The parts of a run whose policy is a Hugging Face causal LM (``policy.kind="hf"``): the text
search task with a BM25 tool over the fixed world's corpus (or the retrieval server at
``task.retriever.url``), and the model, for ``testbed.run``.

``policy.model_path`` names a local model directory (no hub access); without one, a tiny Qwen2 is
built from a config (seeded by ``warm_start.seed``) with a tokenizer trained on the task's text.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

from testbed.config import ConfigError
from testbed.envs import World
from testbed.envs.text.bm25 import BM25Retriever, TextRetriever
from testbed.envs.text.qa_data import TextQA
from testbed.envs.text.retrieval_server import RetrievalClient
from testbed.envs.text.task import add_tags, corpus_words, text_core, text_task_config
from testbed.envs.tokens import TokenSearchBatch
from testbed.policies import resolve_device
from testbed.policies.hf import HFPolicy, add_lora, load_model
from testbed.policies.hf_tiny import qwen2_model, train_tokenizer


def hf_parts(
    cfg, qa: TextQA | None = None, max_obs_len: int = 64, model=None, tokenizer=None
) -> tuple[HFPolicy, World | QAEpisodes, Callable[..., TokenSearchBatch]]:
    """(policy, episode source, make_core) for a ``RunConfig`` with ``policy.kind="hf"``: the
    fixed world's questions, or those of ``qa`` (e.g. ``qa_data.load_qa``) when given; ``model`` and
    ``tokenizer`` given (e.g. a randomly initialised real architecture) replace the config's."""
    if cfg.task.world.kind != "fixed":
        raise ConfigError(
            f"task.world.kind={cfg.task.world.kind!r}: the text task searches one fixed corpus; use 'fixed'"
        )
    world = World(cfg.task.world)
    episodes: World | QAEpisodes = world
    if qa is None and cfg.task.qa_path is not None:
        from testbed.envs.text.qa_data import load_qa

        qa = load_qa(cfg.task.qa_path, cfg.task.corpus_path, test=cfg.task.qa_test_path)
    if qa is None:
        qa = TextQA.from_world(world)
    else:  # a dataset of its own: its questions are the episodes
        episodes = QAEpisodes(qa.train, qa.held_out)
    pc = cfg.policy
    if model is not None:
        if tokenizer is None:
            raise ValueError("tokenizer: needed with a given model")
    elif pc.model_path is not None:
        model, tokenizer = load_model(pc.model_path, resolve_device(pc))
    else:
        tokenizer = train_tokenizer(corpus_words(qa))
        model = qwen2_model(len(tokenizer), seed=cfg.warm_start.seed).to(resolve_device(pc))
    add_tags(tokenizer, model)
    if pc.lora:
        model = add_lora(model)
    task = text_task_config(cfg.task)
    rc = task.retriever  # a retrieval server when the config names one, else BM25 over the corpus
    retriever: TextRetriever = (
        RetrievalClient(rc.url, rc.top_k, rc.timeout) if rc.url else BM25Retriever(qa.corpus, rc.top_k)
    )
    make_core = functools.partial(
        text_core, task, tokenizer=tokenizer, qa=qa, retriever=retriever, max_obs_len=max_obs_len
    )
    return HFPolicy(model), episodes, make_core


@dataclasses.dataclass(frozen=True)
class QAEpisodes:
    """Episode ids of a QA dataset: training questions drawn at random, every held-out one evaluated."""

    train: np.ndarray
    held_out: np.ndarray

    def train_ids(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(self.train, n)

    def eval_ids(self, n: int) -> np.ndarray:
        return self.held_out.copy()
