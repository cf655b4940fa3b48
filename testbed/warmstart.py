"""Warm start: supervised pre-training on imperfect oracle demonstrations, cached per config.

RL from scratch on a sparse search reward learns nothing; real search-agent runs start from an
instruct model that already uses the format and sometimes searches well. The stand-in: the oracle
agent writes demonstrations, each of its words replaced by a random one with ``error_rate``, and
the policy is trained to imitate them (NLL on the agent's tokens only).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from testbed.aggregation import aggregate
from testbed.batch import Batch
from testbed.config import check_positive, check_range, config_hash
from testbed.envs import TabularSearchBatch, TokenSearchBatch
from testbed.envs.baselines import TokenOracle, tabular_oracle
from testbed.policies import Policy


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    error_rate: float = 0.25
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3

    def __post_init__(self) -> None:
        check_range(self, "error_rate", 0.0, 1.0)
        check_positive(self, "batch_size", "lr")
        check_positive(self, "steps", allow_zero=True)


def demonstrations(
    core: TokenSearchBatch | TabularSearchBatch,
    questions: np.ndarray,
    error_rate: float,
    rng: np.random.Generator,
) -> Batch:
    """Oracle episodes (with errors) on ``questions`` as a Batch."""
    if isinstance(core, TabularSearchBatch):
        return _tabular_demos(core, questions, error_rate, rng)
    return _token_demos(core, questions, error_rate, rng)


def _token_demos(core: TokenSearchBatch, questions, error_rate, rng) -> Batch:
    b = len(questions)
    prompts = core.reset(questions)
    oracle = TokenOracle(core, error_rate)
    oracle.reset()
    cap = core.capacity
    tokens = np.full((b, cap), core.vocab.pad, dtype=np.int64)
    mask = np.zeros((b, cap), dtype=np.float32)
    length = np.zeros(b, dtype=np.int64)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
        length[i] = len(p)
    rewards = np.zeros(b)
    rows = np.arange(b)
    while not core.done.all():
        tok = oracle.act(rng)
        live = ~core.done
        out = core.step(tok, rng)
        oracle.observe(np.where(live, tok, -1))
        rewards += out.reward
        tokens[rows[live], length[live]] = tok[live]
        mask[rows[live], length[live]] = 1.0
        length += live
        for i in np.flatnonzero(out.obs_len):
            n = out.obs_len[i]
            tokens[i, length[i] : length[i] + n] = out.obs[i, :n]
            length[i] += n
    end = int(length.max())
    return Batch(
        tokens=torch.as_tensor(tokens[:, :end]),
        mask=torch.as_tensor(mask[:, :end]),
        behaviour_log_probs=torch.zeros(b, end),
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        group_ids=torch.arange(b),
        question_ids=torch.as_tensor(questions),
        searches=torch.as_tensor(core.searches.copy()),
    )


def _tabular_demos(core: TabularSearchBatch, questions, error_rate, rng) -> Batch:
    b = len(questions)
    obs = core.reset(questions)
    horizon = core.config.max_turns + 1
    states = np.zeros((b, horizon), dtype=np.int64)
    actions = np.zeros((b, horizon), dtype=np.int64)
    mask = np.zeros((b, horizon), dtype=np.float32)
    rewards = np.zeros(b)
    for t in range(horizon):
        live = ~core.done
        act = tabular_oracle(core)
        noisy = rng.random(b) < error_rate
        act[noisy] = rng.integers(0, core.n_actions, noisy.sum())
        states[:, t], actions[:, t], mask[:, t] = obs, act, live
        obs, reward, _, _ = core.step(act, rng)
        rewards += reward
    return Batch(
        tokens=torch.as_tensor(actions),
        mask=torch.as_tensor(mask),
        behaviour_log_probs=torch.zeros(b, horizon),
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        group_ids=torch.arange(b),
        question_ids=torch.as_tensor(questions),
        searches=torch.as_tensor(core.hops_done.copy()),
        states=torch.as_tensor(states),
    )


def imitate(policy: Policy, demos: Callable[[], Batch], cfg: WarmStartConfig) -> list[float]:
    """Train ``policy`` on fresh demonstrations each step (token-mean NLL on written tokens).

    Fresh episodes every step, never a fixed set: a small model memorises a fixed set's random
    errors instead of learning the task. Returns the losses.
    """
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    losses = []
    for _ in range(cfg.steps):
        mb = demos()
        logp, _ = policy.score(mb)
        loss = -aggregate(logp, mb.mask, "token-mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def warm_start(
    policy: Policy,
    core: TokenSearchBatch | TabularSearchBatch,
    cfg: WarmStartConfig,
    key: object,
    seed: int,
    cache_dir: Path | None,
) -> None:
    """Load the warm-started weights for (``key``, cfg, seed) from the cache, or train and cache them."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"warm-{config_hash({'key': key, 'warm_start': cfg, 'seed': seed})}.pt"
        if path.exists():
            policy.load_state_dict(torch.load(path, weights_only=True))
            return
    rng = np.random.default_rng(seed + 7919)
    demo_core = type(core)(core.config, cfg.batch_size, core.world)

    def demos() -> Batch:
        return demonstrations(demo_core, rng.choice(core.world.train, cfg.batch_size), cfg.error_rate, rng)

    imitate(policy, demos, cfg)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(policy.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: parallel workers never read a half-written file
