"""Gymnasium environments over the batched cores (one environment = a batch of one).

``SearchTokens-v0``: actions are token ids, observations the whole context so far (fixed-shape
int arrays, safe for vector envs with shared memory). ``SearchTabular-v0``: discrete actions and
states. Both take a ``TaskConfig`` (or its fields as keyword arguments) and pick a question from
the training split at reset; ``options={"question": q}`` or ``{"split": "held_out"}`` choose one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from testbed.config import from_dict
from testbed.envs.tabular import TabularSearchBatch
from testbed.envs.tokens import TaskConfig, TokenSearchBatch


def _task(config: TaskConfig | dict | None, kwargs: dict[str, Any]) -> TaskConfig:
    if isinstance(config, TaskConfig):
        return config
    return from_dict(TaskConfig, {**(config or {}), **kwargs})


class _SearchEnv(gym.Env):
    """Question choice and info shared by both grains."""

    def _pick_question(self, options: dict | None) -> int:
        options = options or {}
        if "question" in options:
            return int(options["question"])
        split = options.get("split", "train")
        if split not in ("train", "held_out"):
            raise ValueError(f"options['split']={split!r}: must be 'train' or 'held_out'")
        pool = self.core.world.train if split == "train" else self.core.world.held_out
        return int(self.np_random.choice(pool))

    def _info(self) -> dict[str, int]:
        c = self.core
        return {"question": int(c.question[0]), "turns": int(c.turns[0]), "invalid": int(c.invalid[0])}


class TokenSearchEnv(_SearchEnv):
    metadata: ClassVar[dict] = {"render_modes": ["ansi"]}

    def __init__(
        self, config: TaskConfig | dict | None = None, render_mode: str | None = None, **kwargs: Any
    ):
        self.config = _task(config, kwargs)
        self.core = TokenSearchBatch(self.config, 1)
        self.render_mode = render_mode
        v = self.core.vocab.size
        self.capacity = self.core.capacity
        self.action_space = spaces.Discrete(v)
        self.observation_space = spaces.Dict(
            {
                "tokens": spaces.Box(0, v - 1, (self.capacity,), np.int64),
                "env_mask": spaces.Box(0, 1, (self.capacity,), np.int8),
                "length": spaces.Discrete(self.capacity + 1),
            }
        )
        self._tokens = np.zeros(self.capacity, dtype=np.int64)
        self._env_mask = np.zeros(self.capacity, dtype=np.int8)
        self._len = 0

    def _append(self, tokens, env: bool) -> None:
        n = len(tokens)
        self._tokens[self._len : self._len + n] = tokens
        self._env_mask[self._len : self._len + n] = env
        self._len += n

    def _obs(self) -> dict[str, Any]:
        return {"tokens": self._tokens.copy(), "env_mask": self._env_mask.copy(), "length": self._len}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        (prompt,) = self.core.reset(np.array([self._pick_question(options)]))
        self._tokens[:] = 0
        self._env_mask[:] = 0
        self._len = 0
        self._append(prompt, env=True)
        return self._obs(), self._info()

    def step(self, action):
        out = self.core.step(np.array([int(action)]), self.np_random)
        self._append([int(action) % self.core.vocab.size], env=False)
        self._append(out.obs[0, : out.obs_len[0]], env=True)
        info = {**self._info(), "searches": int(self.core.searches[0])}
        return self._obs(), float(out.reward[0]), bool(out.terminated[0]), bool(out.truncated[0]), info

    def render(self) -> str:
        return self.core.vocab.decode(self._tokens[: self._len])


class TabularSearchEnv(_SearchEnv):
    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, config: TaskConfig | dict | None = None, **kwargs: Any):
        self.config = _task(config, kwargs)
        self.core = TabularSearchBatch(self.config, 1)
        self.action_space = spaces.Discrete(self.core.n_actions)
        self.observation_space = spaces.Discrete(self.core.n_states)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs = self.core.reset(np.array([self._pick_question(options)]))
        return int(obs[0]), self._info()

    def step(self, action):
        obs, reward, term, trunc = self.core.step(np.array([int(action)]), self.np_random)
        return int(obs[0]), float(reward[0]), bool(term[0]), bool(trunc[0]), self._info()
