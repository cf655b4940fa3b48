"""Gymnasium environments over the batched cores (one environment = a batch of one).

Both take a ``TaskConfig`` (or its fields as keyword arguments). At reset they draw a training
episode (a fresh world and question in a procedural world, a training question in a fixed one);
``options={"episode": id}`` replays one, ``options={"split": "eval"}`` draws an evaluation episode
(never a training one). ``info`` carries ``episode``, ``turns``, ``invalid`` and ``searches``.

``testbed/SearchTokens-v0`` (Search-R1's protocol on the world's words; see ``tokens.py``):

| space | type | meaning |
| --- | --- | --- |
| action | ``Discrete(V)`` | next token id; a malformed one is answered ``<invalid>`` |
| obs ``tokens`` | ``Box(0, V-1, (C,), int64)`` | the context: prompt, agent tokens, retrieved blocks |
| obs ``env_mask`` | ``Box(0, 1, (C,), int8)`` | 1 where the environment wrote the token |
| obs ``length`` | ``Discrete(C + 1)`` | tokens of ``tokens`` in use |

V is the vocabulary size (specials, entities ``e*``, relations ``r*``), C = ``max_len`` + one
retrieval block. ``env.unwrapped.decode(ids)`` gives the words of token ids, ``encode(text)`` the ids
of a space-separated text.

``testbed/SearchTabular-v0`` (see ``tabular.py``):

| space | type | meaning |
| --- | --- | --- |
| action | ``Discrete(R + 2)`` | ``j < R``: search relation j of the belief; ``R``: answer; ``R + 1``: guess |
| obs | ``Discrete(S)`` | (turn, hops, hops done, next relation or done, last found) as one index |

Rewards lie in [-format_penalty, 1] (EM, or F1 for the token grain with ``reward="f1"``). Stepping
after the episode ended is an error (call ``reset``); so is an action that is not an integer.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from testbed.config import from_dict
from testbed.envs.tabular import TabularSearchBatch
from testbed.envs.task import TaskConfig
from testbed.envs.tokens import TokenSearchBatch
from testbed.envs.world import World

SPLITS = ("train", "eval")


def _task(config: TaskConfig | dict | None, kwargs: dict[str, Any]) -> TaskConfig:
    if isinstance(config, TaskConfig):
        if kwargs:
            raise ValueError(f"give a TaskConfig or its fields, not both (got {sorted(kwargs)})")
        return config
    return from_dict(TaskConfig, {**(config or {}), **kwargs})


def _action(action: Any) -> int:
    scalar_array = isinstance(action, np.ndarray) and action.shape == () and action.dtype.kind in "iu"
    if not scalar_array and (isinstance(action, bool) or not isinstance(action, numbers.Integral)):
        raise ValueError(f"action={action!r}: must be an integer")
    return int(action)


class _SearchEnv(gym.Env):
    """Episode choice, the after-the-end guard and info shared by both grains."""

    core: TokenSearchBatch | TabularSearchBatch

    @property
    def _world(self) -> World:
        world = self.core.world
        assert world is not None, "the gym envs run the simulated task"
        return world

    def _pick_episode(self, options: dict | None) -> int:
        options = options or {}
        world = self._world
        if "episode" in options:
            ep = options["episode"]
            if isinstance(ep, bool) or not isinstance(ep, numbers.Integral) or ep < 0:
                raise ValueError(f"options['episode']={ep!r}: must be an int >= 0")
            world.episodes(np.array([ep]))  # a fixed world names the valid range
            return int(ep)
        split = options.get("split", "train")
        if split not in SPLITS:
            raise ValueError(f"options['split']={split!r}: must be one of {list(SPLITS)}")
        if split == "train":
            return int(world.train_ids(self.np_random, 1)[0])
        if world.procedural:
            return int(2 * self.np_random.integers(0, 2**61) + 1)
        return int(self.np_random.choice(world.held_out))

    def _check_live(self) -> None:
        if self.core.done[0]:
            raise RuntimeError("step() after the episode ended: call reset() first")

    def _info(self) -> dict[str, int]:
        c = self.core
        return {
            "episode": int(c.question[0]),
            "turns": int(c.turns[0]),
            "invalid": int(c.invalid[0]),
            "searches": int(c.searches[0]),
        }


class TokenSearchEnv(_SearchEnv):
    # gymnasium declares metadata as an instance attribute; it is a class-level constant here
    metadata: ClassVar[dict] = {"render_modes": ["ansi"]}  # type: ignore[misc]
    core: TokenSearchBatch

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
        (prompt,) = self.core.reset(np.array([self._pick_episode(options)]))
        self._tokens[:] = 0
        self._env_mask[:] = 0
        self._len = 0
        self._append(prompt, env=True)
        return self._obs(), self._info()

    def step(self, action):
        self._check_live()
        action = _action(action)
        out = self.core.step(np.array([action]), self.np_random)
        # an id outside the vocabulary is malformed: the context records it as <invalid>
        shown = action if 0 <= action < self.core.vocab.size else self.core.vocab.invalid
        self._append([shown], env=False)
        self._append(out.obs[0, : out.obs_len[0]], env=True)
        return (
            self._obs(),
            float(out.reward[0]),
            bool(out.terminated[0]),
            bool(out.truncated[0]),
            self._info(),
        )

    def decode(self, ids) -> str:
        return self._world.vocab.decode(ids)  # the simulated task's vocab is its world's

    def encode(self, text: str) -> list[int]:
        ids = self._world.vocab.ids
        unknown = [w for w in text.split() if w not in ids]
        if unknown:
            raise ValueError(f"text: unknown words {unknown}")
        return [ids[w] for w in text.split()]

    def render(self) -> str:
        return self.decode(self._tokens[: self._len])


class TabularSearchEnv(_SearchEnv):
    metadata: ClassVar[dict] = {"render_modes": []}  # type: ignore[misc]  # as in TokenSearchEnv
    core: TabularSearchBatch

    def __init__(self, config: TaskConfig | dict | None = None, **kwargs: Any):
        self.config = _task(config, kwargs)
        self.core = TabularSearchBatch(self.config, 1)
        self.action_space = spaces.Discrete(self.core.n_actions)
        self.observation_space = spaces.Discrete(self.core.n_states)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs = self.core.reset(np.array([self._pick_episode(options)]))
        return int(obs[0]), self._info()

    def step(self, action):
        self._check_live()
        obs, reward, term, trunc = self.core.step(np.array([_action(action)]), self.np_random)
        return int(obs[0]), float(reward[0]), bool(term[0]), bool(trunc[0]), self._info()

    def decode(self, state: int) -> dict[str, int]:
        turn, hops, done, nxt, found = np.unravel_index(int(state), self.core.dims)
        return {
            "turn": int(turn),
            "hops": int(hops) + 1,
            "hops_done": int(done),
            "next_relation": int(nxt),
            "found": int(found),
        }

    def encode(self, turn: int, hops: int, hops_done: int, next_relation: int, found: int) -> int:
        return int(np.ravel_multi_index((turn, hops - 1, hops_done, next_relation, found), self.core.dims))
