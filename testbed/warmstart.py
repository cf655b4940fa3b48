"""The base policy of a study: supervised pre-training on imperfect oracle demonstrations, cached.

RL from scratch on a sparse search reward learns nothing; real search-agent runs start from an
instruct model that already uses the format and sometimes searches well. The stand-in: the oracle
agent writes demonstrations, each of its words replaced by a random one with ``error_rate``, and
the policy is trained to imitate them (NLL on the agent's tokens only), after ``pretrain_steps``
of language modelling on the same transcripts' every token (the world's text: questions, retrieved
documents, searches and answers), as a model is pre-trained before it is instructed. Every RL run of a study
starts from the same base, as every run of a real study starts from one instruct model: the base
is keyed by task, policy and this config (its own ``seed`` included), never by the RL seed.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from testbed.aggregation import aggregate
from testbed.batch import Batch
from testbed.config import added_field, check_positive, check_range, check_seed, config_hash, fail
from testbed.envs.agents import TabularOracle, TokenOracle
from testbed.policies import Policy
from testbed.rollout import Core, rollout

# Bumped when the cached weights' layout or meaning changes, so old caches are never reused.
CACHE_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    error_rate: float = 0.25
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    pretrain_steps: int = added_field(
        0,
        help="Language-model pre-training steps on whole demonstration transcripts (every token) "
        "before imitation; 0 skips it.",
    )

    def __post_init__(self) -> None:
        check_range(self, "error_rate", 0.0, 1.0)
        check_positive(self, "batch_size", "lr")
        check_positive(self, "steps", "pretrain_steps", allow_zero=True)
        check_seed(self, "seed")


def demonstrations(core: Core, episodes: np.ndarray, error_rate: float, rng: np.random.Generator) -> Batch:
    """Oracle episodes (with errors) on ``episodes``, through the same driver as any rollout."""
    oracle = TabularOracle if core.grain == "tabular" else TokenOracle
    return rollout(oracle(error_rate, rng), core, episodes, np.arange(len(episodes)), rng)


def whole_text(batch: Batch, pad: int) -> Batch:
    """``batch`` with every token of its transcripts after the first marked as written (language
    modelling): the non-pad ones, and any the agent wrote (a pad it wrote is text too)."""
    mask = torch.maximum((batch.tokens != pad).float(), batch.mask)
    mask[:, 0] = 0.0
    return dataclasses.replace(batch, mask=mask)


def imitate(policy: Policy, demos: Callable[[], Batch], cfg: WarmStartConfig, pad: int = 0) -> list[float]:
    """Train ``policy`` on fresh demonstrations each step: ``cfg.pretrain_steps`` of token-mean NLL
    on every token (``pad`` excepted), then ``cfg.steps`` on the agent's written tokens only.

    Fresh episodes every step, never a fixed set: a small model memorises a fixed set's random
    errors instead of learning the task. Returns the losses.
    """
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    losses = []
    for step in range(cfg.pretrain_steps + cfg.steps):
        mb = demos()
        if step < cfg.pretrain_steps:
            mb = whole_text(mb, pad)
        logp, _ = policy.score(mb)
        loss = -aggregate(logp, mb.mask, "token-mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def cache_path(cache_dir: Path, key: object, cfg: WarmStartConfig) -> Path:
    return Path(cache_dir) / f"base-{config_hash({'key': key, 'warm_start': cfg, 'format': CACHE_FORMAT})}.pt"


def base_policy(
    build: Callable[[], Policy],
    make_core: Callable[[int], Core],
    cfg: WarmStartConfig,
    key: object,
    cache_dir: Path | None,
) -> Policy:
    """The study's base policy: built by ``build`` (seeded by ``cfg.seed``), then loaded from the
    cache for (``key``, cfg) or trained on demonstrations and cached."""
    torch.manual_seed(cfg.seed)
    policy = build()
    if not cfg.steps + cfg.pretrain_steps:
        return policy
    path = cache_path(cache_dir, key, cfg) if cache_dir is not None else None
    if path is not None and path.exists():
        policy.load_state_dict(torch.load(path, weights_only=True))
        return policy
    core = make_core(cfg.batch_size)
    if cfg.pretrain_steps and core.grain != "token":
        fail(cfg, "pretrain_steps", cfg.pretrain_steps, "language modelling needs the token grain")
    rng = np.random.default_rng(cfg.seed + 7919)
    world = core.world
    assert world is not None, "demonstrations are played in the simulated world"
    imitate(
        policy,
        lambda: demonstrations(core, world.train_ids(rng, cfg.batch_size), cfg.error_rate, rng),
        cfg,
        pad=core.vocab.pad if core.grain == "token" else 0,
    )
    if path is not None:
        _save(policy, path)
    return policy


def _save(policy: Policy, path: Path) -> None:
    """Atomic write (parallel workers never read half a file); an unwritable cache only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(policy.state_dict(), tmp)
        os.replace(tmp, path)
    except OSError as err:
        warnings.warn(
            f"base-policy cache {path.parent} not written ({err}); the base is retrained next time",
            stacklevel=2,
        )
