"""The vector envs: Gymnasium's vector API, step for step what N single envs in a SyncVectorEnv do
(under each autoreset mode), row resets that match the core's own reset, seeded reproducibility."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import testbed  # noqa: F401 (registers the environments)
from testbed.envs import World
from testbed.envs.vector import TabularSearchVectorEnv, TokenSearchVectorEnv
from testbed.envs.world import Vocab

IDS = {"tokens": "testbed/SearchTokens-v0", "tabular": "testbed/SearchTabular-v0"}
# Deterministic retrieval (the right document, alone, first), so that envs drawing from different
# random streams still see the same documents; procedural and fixed worlds both.
EXACT = {"retriever": {"top_k": 1, "recall": 1.0, "rank_noise": 0.0}, "max_len": 24}
WORLDS = [{}, {"world": {"kind": "fixed"}}]
MODES = list(AutoresetMode)


class FedEpisodes(gym.Wrapper):
    """A single env whose resets replay the episode ``next_episode`` (set from the vector env)."""

    next_episode = 0

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=seed, options={"episode": int(self.next_episode)})


def _token_actions(env: TokenSearchVectorEnv, rng: np.random.Generator, queue: list[list[int]]) -> np.ndarray:
    """Per env, the next token of a random script of well-formed searches, answers and stray tags."""
    world = env.core.world
    assert world is not None  # the simulated task
    v, n_e, n_r = cast(Vocab, env.core.vocab), world.config.n_entities, world.config.n_relations
    out = []
    for q in queue:
        if not q:
            kind = rng.integers(4)
            e, r = v.entity(int(rng.integers(n_e))), v.relation(int(rng.integers(n_r)))
            q += [
                [v.search_open, e, r, v.search_close],
                [v.answer_open, e, v.answer_close],
                [v.search_close],
                [e],
            ][kind]
        out.append(q.pop(0))
    return np.array(out)


def _pair(grain: str, world: dict, mode: AutoresetMode, n: int = 6):
    kwargs = {**EXACT, **world}
    vec = gym.make_vec(
        IDS[grain], num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kwargs
    )
    sync = SyncVectorEnv(
        [lambda: FedEpisodes(gym.make(IDS[grain], **kwargs)) for _ in range(n)], autoreset_mode=mode
    )
    return vec, sync


def _feed(sync: SyncVectorEnv, info: dict) -> None:
    for env, episode in zip(sync.envs, info["episode"], strict=True):
        cast(FedEpisodes, env).next_episode = episode


@pytest.mark.parametrize("mode", MODES, ids=[m.name for m in MODES])
@pytest.mark.parametrize("world", WORLDS, ids=["procedural", "fixed"])
@pytest.mark.parametrize("grain", list(IDS))
def test_steps_as_single_envs_in_a_sync_vector_env(grain: str, world: dict, mode: AutoresetMode) -> None:
    vec, sync = _pair(grain, world, mode)
    rng, queue = np.random.default_rng(0), [cast(list[int], []) for _ in range(vec.num_envs)]
    obs, info = vec.reset(seed=0)
    _feed(sync, info)
    assert data_equivalence(sync.reset(seed=0), (obs, info), exact=True)
    ends = 0
    for _ in range(60):
        if grain == "tokens":
            actions = _token_actions(vec.unwrapped, rng, queue)
        else:  # searches and answers (the guess draws from the env's own stream)
            actions = rng.integers(0, vec.single_action_space.n - 1, vec.num_envs)
        out = vec.step(actions)
        assert vec.observation_space.contains(out[0])
        _feed(sync, out[4])
        expected = sync.step(actions)
        assert data_equivalence(expected, out, exact=True), (expected, out)
        done = out[2] | out[3]
        ends += int(done.sum())
        if mode == AutoresetMode.DISABLED and done.any():
            obs, info = vec.reset(options={"reset_mask": done})
            _feed(sync, info)
            assert data_equivalence(sync.reset(options={"reset_mask": done}), (obs, info), exact=True)
    assert ends >= vec.num_envs  # episodes did end, and restart


@pytest.mark.parametrize("world", WORLDS, ids=["procedural", "fixed"])
@pytest.mark.parametrize("cls", [TokenSearchVectorEnv, TabularSearchVectorEnv])
def test_row_resets_leave_the_core_as_its_own_reset_does(cls, world: dict) -> None:
    env = cls(8, **world)
    env.reset(seed=1)
    for _ in range(5):
        env.step(env.action_space.sample())
    rows, ids = np.array([1, 4, 5]), np.array([10, 12, 14])
    env._reset_rows(rows, ids)
    fresh = cls(8, **world).core
    expected = np.array(env.core.question)
    fresh.reset(expected)
    for name, value in vars(fresh).items():  # every state array, whatever the core adds later
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(env.core, name)[rows], value[rows], err_msg=name)
    for f in dataclasses.fields(fresh.ep):
        np.testing.assert_array_equal(getattr(env.core.ep, f.name)[rows], getattr(fresh.ep, f.name)[rows])


@pytest.mark.parametrize("grain", list(IDS))
def test_a_seed_reproduces_the_run(grain: str) -> None:
    runs = []
    for _ in range(2):
        env = gym.make_vec(IDS[grain], num_envs=16)
        env.action_space.seed(3)
        trace: list[Any] = [env.reset(seed=3)]
        trace += [env.step(env.action_space.sample()) for _ in range(40)]
        runs.append(trace)
    assert data_equivalence(runs[0], runs[1], exact=True)


def test_api_guards() -> None:
    env = TabularSearchVectorEnv(4, autoreset_mode="Disabled")
    assert env.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions: expected 4 integers"):
        env.step(np.zeros(4))
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.zeros(4, dtype=bool)})
    answer = np.full(4, cast(Any, env.single_action_space).n - 2)
    env.step(answer)  # every episode ends
    with pytest.raises(RuntimeError, match="reset them"):
        env.step(answer)
    with pytest.raises(ValueError, match="episode"):
        env.reset(options={"episode": np.array([1, 2])})
    eval_ids = env.reset(seed=0, options={"split": "eval"})[1]["episode"]
    assert World(env.config.world).procedural and (eval_ids % 2 == 1).all()  # evaluation ids are odd
