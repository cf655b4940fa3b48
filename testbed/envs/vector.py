"""Gymnasium vector environments over the batched cores: N episodes stepped in numpy at once.

    import gymnasium, testbed
    envs = gymnasium.make_vec("testbed/SearchTokens-v0", num_envs=4096)  # this class, not N envs
    envs = gymnasium.make_vec("testbed/SearchTabular-v0", num_envs=64, autoreset_mode="SameStep")

The spaces are the single environments' (``gym_envs.py``), batched; ``info`` holds the same keys as
arrays, each with its ``_key`` mask, as ``gymnasium.vector.SyncVectorEnv`` gives them. Every
autoreset mode of Gymnasium is honoured (``metadata["autoreset_mode"]``): NEXT_STEP (default; the
step after an episode ends resets it, with reward 0), SAME_STEP (the ending step resets at once;
``info["final_obs"]`` and ``info["final_info"]`` hold what it ended on) and DISABLED (reset the
ended ones with ``reset(options={"reset_mask": mask})``). ``reset`` options: ``episode`` (N episode
ids), ``split`` (``train`` or ``eval``), ``reset_mask``.

Randomness: one generator for the batch (``reset(seed=s)`` makes the run reproducible), as the
core draws for all its rows at once; an env of the batch is therefore not the single env of seed
``s + i``, though it follows the same rules step by step (see tests/test_vector_env.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from testbed.envs.gym_envs import SPLITS, TabularSearchEnv, TokenSearchEnv, _task
from testbed.envs.tabular import TabularSearchBatch
from testbed.envs.task import TaskConfig
from testbed.envs.tokens import FREE, TokenSearchBatch
from testbed.envs.world import Episodes, World

INFO_KEYS = ("episode", "turns", "invalid", "searches")


def splice_episodes(ep: Episodes, rows: np.ndarray, new: Episodes) -> None:
    """Write the episodes ``new`` into rows ``rows`` of ``ep`` (a fixed world's shared facts stay)."""
    for f in dataclasses.fields(Episodes):
        dst = getattr(ep, f.name)
        if dst.flags.writeable:  # a fixed world's facts are one read-only array broadcast to all rows
            dst[rows] = getattr(new, f.name)


class _SearchVectorEnv(VectorEnv):
    """Autoreset, episode choice, info and the row resets shared by both grains."""

    core: TokenSearchBatch | TabularSearchBatch

    def __init__(
        self,
        num_envs: int,
        single: TokenSearchEnv | TabularSearchEnv,
        autoreset_mode: str | AutoresetMode,
        copy: bool,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}: must be an int >= 1")
        self.num_envs, self.copy, self.config = num_envs, copy, single.config
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {**single.metadata, "autoreset_mode": self.autoreset_mode}
        self.single_action_space = single.action_space
        self.single_observation_space = single.observation_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._ended = np.zeros(num_envs, dtype=bool)  # ended at the last step, not reset since

    # -- what each grain supplies ----------------------------------------------------------------
    def _reset_rows(self, rows: np.ndarray, ids: np.ndarray) -> None: ...

    def _step_core(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _obs(self) -> Any: ...

    def _single_obs(self, i: int) -> Any: ...

    # -- the shared part -------------------------------------------------------------------------
    @property
    def _world(self) -> World:
        world = self.core.world
        assert world is not None, "the gym envs run the simulated task"
        return world

    def _draw(self, rows: np.ndarray, options: dict) -> np.ndarray:
        """Episode ids of ``rows``, as the single env picks them (``options``: episode or split)."""
        world = self._world
        if "episode" in options:
            ids = np.asarray(options["episode"])
            if ids.shape != (self.num_envs,) or ids.dtype.kind not in "iu" or (ids < 0).any():
                raise ValueError(f"options['episode']: expected {self.num_envs} int ids >= 0, got {ids!r}")
            world.episodes(ids[rows])  # a fixed world names the valid range
            return ids[rows].astype(np.int64)
        split = options.get("split", "train")
        if split not in SPLITS:
            raise ValueError(f"options['split']={split!r}: must be one of {list(SPLITS)}")
        if split == "train":
            return world.train_ids(self.np_random, len(rows))
        if world.procedural:
            return 2 * self.np_random.integers(0, 2**61, len(rows)) + 1
        return self.np_random.choice(world.held_out, len(rows))

    def _info(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        c = self.core
        values = {"episode": c.question, "turns": c.turns, "invalid": c.invalid, "searches": c.searches}
        out: dict[str, np.ndarray] = {}
        for key in INFO_KEYS:
            out[key] = np.where(mask, values[key], 0)
            out[f"_{key}"] = mask.copy()
        return out

    def _out(self, obs: Any) -> Any:
        if not self.copy:
            return obs
        return {k: v.copy() for k, v in obs.items()} if isinstance(obs, dict) else obs.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        elif not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (self.num_envs,)):
            raise ValueError(f"options['reset_mask']: expected a bool array of shape ({self.num_envs},)")
        elif not mask.any():
            raise ValueError("options['reset_mask']: must select at least one environment")
        rows = np.flatnonzero(mask)
        self._reset_rows(rows, self._draw(rows, options))
        self._ended[rows] = False
        return self._out(self._obs()), self._info(mask)

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu":
            raise ValueError(
                f"actions: expected {self.num_envs} integers, got {actions.dtype} {actions.shape}"
            )
        pending = self._ended
        if self.autoreset_mode == AutoresetMode.DISABLED and pending.any():
            raise RuntimeError("step() with ended environments: reset them (options={'reset_mask': ...})")
        reward, terminated, truncated = self._step_core(actions)  # ended rows are left as they are
        ended = terminated | truncated
        extra: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.NEXT_STEP and pending.any():
            rows = np.flatnonzero(pending)
            self._reset_rows(rows, self._draw(rows, {}))
        elif self.autoreset_mode == AutoresetMode.SAME_STEP and ended.any():
            rows = np.flatnonzero(ended)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in rows:
                final_obs[i] = self._single_obs(int(i))
            extra = {"final_obs": final_obs, "_final_obs": ended.copy()}
            extra.update(final_info=self._info(ended), _final_info=ended.copy())
            self._reset_rows(rows, self._draw(rows, {}))
            ended = np.zeros_like(ended)  # nothing is left to reset
        self._ended = ended
        info = {**self._info(np.ones(self.num_envs, dtype=bool)), **extra}
        return self._out(self._obs()), reward, terminated, truncated, info


class TokenSearchVectorEnv(_SearchVectorEnv):
    """``testbed/SearchTokens-v0``, N at a time (observation: the N contexts, see ``TokenSearchEnv``)."""

    core: TokenSearchBatch

    def __init__(
        self,
        num_envs: int,
        config: TaskConfig | dict | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_envs, TokenSearchEnv(_task(config, kwargs)), autoreset_mode, copy)
        self.core = TokenSearchBatch(self.config, num_envs)
        c = self.core.capacity
        self._tokens = np.zeros((num_envs, c), dtype=np.int64)
        self._env_mask = np.zeros((num_envs, c), dtype=np.int8)
        self._len = np.zeros(num_envs, dtype=np.int64)

    def _reset_rows(self, rows: np.ndarray, ids: np.ndarray) -> None:
        """What ``TokenSearchBatch.reset`` does, for ``rows`` only (the others keep going)."""
        core = self.core
        if core.ep is None or len(rows) == self.num_envs:
            full = np.array(core.question)
            full[rows] = ids
            every = core.reset(full)
            prompts = [every[r] for r in rows]
        else:
            new = self._world.episodes(ids)
            splice_episodes(core.ep, rows, new)
            prompts = [self._world.question_tokens(new, k) for k in range(len(rows))]
            core.question[rows] = ids
            core.phase[rows] = FREE
            core.seg[rows] = -1
            for state in (core.seg_len, core.turns, core.searches, core.invalid):
                state[rows] = 0
            core.done[rows] = False
            core.last_docs[rows] = -1
            core.length[rows] = [len(p) for p in prompts]
        self._tokens[rows] = 0
        self._env_mask[rows] = 0
        for row, p in zip(rows, prompts, strict=True):
            self._tokens[row, : len(p)] = p
            self._env_mask[row, : len(p)] = 1
            self._len[row] = len(p)

    def _step_core(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        core, v = self.core, self.core.vocab
        live = ~core.done
        out = core.step(actions, self.np_random)
        rows = np.flatnonzero(live)
        # an id outside the vocabulary is malformed: the context records it as <invalid>
        shown = np.where((actions >= 0) & (actions < v.size), actions, v.invalid)
        self._tokens[rows, self._len[rows]] = shown[rows]
        self._env_mask[rows, self._len[rows]] = 0
        self._len[rows] += 1
        r, j = np.nonzero(np.arange(out.obs.shape[1])[None, :] < out.obs_len[:, None])
        self._tokens[r, self._len[r] + j] = out.obs[r, j]
        self._env_mask[r, self._len[r] + j] = 1
        self._len += out.obs_len
        return out.reward, out.terminated, out.truncated

    def _obs(self) -> dict[str, np.ndarray]:
        return {"tokens": self._tokens, "env_mask": self._env_mask, "length": self._len}

    def _single_obs(self, i: int) -> dict[str, Any]:
        return {
            "tokens": self._tokens[i].copy(),
            "env_mask": self._env_mask[i].copy(),
            "length": int(self._len[i]),
        }


class TabularSearchVectorEnv(_SearchVectorEnv):
    """``testbed/SearchTabular-v0``, N at a time (observation: the N state indices)."""

    core: TabularSearchBatch

    def __init__(
        self,
        num_envs: int,
        config: TaskConfig | dict | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_envs, TabularSearchEnv(_task(config, kwargs)), autoreset_mode, copy)
        self.core = TabularSearchBatch(self.config, num_envs)
        self._state = np.zeros(num_envs, dtype=np.int64)

    def _reset_rows(self, rows: np.ndarray, ids: np.ndarray) -> None:
        """What ``TabularSearchBatch.reset`` does, for ``rows`` only (the others keep going)."""
        core = self.core
        if core.ep is None or len(rows) == self.num_envs:
            full = np.array(core.question)
            full[rows] = ids
            self._state[:] = core.reset(full)
            return
        new = core.world.episodes(ids)
        splice_episodes(core.ep, rows, new)
        core.question[rows] = ids
        core.belief[rows] = new.start
        core.on_path[rows] = True
        for state in (core.hops_done, core.found, core.turns, core.searches, core.invalid):
            state[rows] = 0
        core.done[rows] = False
        self._state[rows] = core.observe()[rows]

    def _step_core(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        live = ~self.core.done
        state, reward, terminated, truncated = self.core.step(actions, self.np_random)
        self._state[live] = state[live]  # an ended row keeps the state it ended in
        return reward, terminated, truncated

    def _obs(self) -> np.ndarray:
        return self._state

    def _single_obs(self, i: int) -> int:
        return int(self._state[i])
