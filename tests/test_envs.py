"""The simulated search environments: API conformance, malformed actions, rewards, baselines."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import testbed.envs  # noqa: F401  (registers the environments)
from testbed.config import ConfigError
from testbed.envs import (
    RetrieverConfig,
    SimulatedRetriever,
    TabularSearchBatch,
    TaskConfig,
    World,
    WorldConfig,
)
from testbed.envs.baselines import run_tabular_episodes, run_token_episodes

TASK = TaskConfig(max_turns=3, format_penalty=0.2)


@pytest.mark.parametrize("env_id", ["SearchTokens-v0", "SearchTabular-v0"])
def test_passes_gymnasium_env_checker(env_id: str) -> None:
    env = gym.make(env_id, max_turns=3, world={"n_entities": 10})
    check_env(env.unwrapped, skip_render_check=True)


def test_same_seed_same_world() -> None:
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=3))
    assert np.array_equal(a.facts, b.facts)
    assert all(np.array_equal(a.questions[k], b.questions[k]) for k in a.questions)
    assert not np.array_equal(a.facts, World(WorldConfig(seed=4)).facts)


def test_questions_follow_their_chain() -> None:
    w = World(WorldConfig(hop_weights=(1.0, 1.0, 1.0), n_questions=50))
    for q in range(50):
        e = w.questions["start"][q]
        for r in w.questions["chain"][q, : w.questions["hops"][q]]:
            e = w.facts[e, r]
        assert e == w.questions["answer"][q]
    assert set(w.questions["hops"]) == {1, 2, 3}


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        (lambda: WorldConfig(n_entities=1), "n_entities"),
        (lambda: WorldConfig(hop_weights=()), "hop_weights"),
        (lambda: RetrieverConfig(recall=1.5), "recall"),
        (lambda: TaskConfig(max_turns=0), "max_turns"),
        (lambda: TaskConfig(reward="bleu"), "reward"),
    ],
)
def test_bad_config_names_the_field(cfg, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"\.{field}="):
        cfg()


def test_retriever_recall_knob() -> None:
    world = World(WorldConfig())
    rng = np.random.default_rng(0)
    v = world.vocab
    subj = rng.integers(0, 24, 200)
    rel = rng.integers(0, 4, 200)
    queries = np.stack([v.entity(subj), v.relation(rel)], 1)
    target = world.doc_id(subj, rel)[:, None]
    for recall, expect in [(1.0, 1.0), (0.0, 0.0)]:
        docs = SimulatedRetriever(world, RetrieverConfig(recall=recall, distractor_rate=1.0)).retrieve(
            queries, rng
        )
        # with recall 0 a look-alike never equals the target (it differs in subject or relation)
        assert (docs == target).any(1).mean() == expect
    # a malformed query (two entities) gets random documents, never a crash
    docs = SimulatedRetriever(world).retrieve(np.stack([v.entity(subj), v.entity(subj)], 1), rng)
    assert docs.shape == (200, 3)


def _play(tokens: list[int], task: TaskConfig = TASK, question: int = 0):
    env = gym.make("SearchTokens-v0", config=task).unwrapped
    env.reset(seed=0, options={"question": question})
    out = None
    for t in tokens:
        out = env.step(t)
        if out[2] or out[3]:
            break
    return env, out


def _words(env, text: str) -> list[int]:
    return [env.core.vocab.ids[w] for w in text.split()]


def test_a_correct_episode_scores_one() -> None:
    env = gym.make("SearchTokens-v0", config=TASK).unwrapped
    env.reset(seed=0, options={"question": 0})
    w, q = env.core.world, 0
    e = int(w.questions["start"][q])
    for r in w.questions["chain"][q, : w.questions["hops"][q]]:
        env.step(env.core.vocab.search_open)
        env.step(int(w.vocab.entity(e)))
        env.step(int(w.vocab.relation(r)))
        term = env.step(env.core.vocab.search_close)[2]
        assert not term and "<information>" in env.render()
        e = int(w.facts[e, r])
    out = [env.step(t) for t in _words(env, f"<answer> e{e} </answer>")]
    assert out[-1][1] == 1.0 and out[-1][2]


@pytest.mark.parametrize(
    "text",
    [
        "</search>",  # closing tag with no opening one
        "<search> </search>",  # empty query
        "<search> e1 <search>",  # nested tag
        "<search> e1 r1 e2 r2",  # over-long query (max_query_len = 3)
        "<information>",  # the agent may not write observations
        "<bos>",  # a special token that is no tag
        "<answer> </answer>",  # empty answer
    ],
)
def test_malformed_actions_get_the_corrective_observation(text: str) -> None:
    env, _ = _play([])
    for t in _words(env, text):
        _, _, term, trunc, info = env.step(t)
    assert info["invalid"] == 1 and not term and not trunc
    assert env.render().endswith("<information> <invalid> </information>")


def test_out_of_vocabulary_action_is_malformed_not_a_crash() -> None:
    env, _ = _play([])
    _, _, _, _, info = env.step(10**6)
    assert info["invalid"] == 1


def test_answer_before_search_when_disallowed() -> None:
    task = TaskConfig(require_search=True)
    env = gym.make("SearchTokens-v0", config=task).unwrapped
    env.reset(seed=0)
    info = env.step(env.core.vocab.answer_open)[4]
    assert info["invalid"] == 1


def test_format_penalty_and_max_turns() -> None:
    env = gym.make("SearchTokens-v0", config=TASK).unwrapped
    env.reset(seed=0)
    close = env.core.vocab.search_close
    results = [env.step(close) for _ in range(4)]
    assert [r[3] for r in results] == [False, False, False, True]  # the 4th turn truncates
    assert results[-1][1] == pytest.approx(-0.2)
    assert results[-1][4]["turns"] == 3


def test_f1_reward_gives_partial_credit() -> None:
    task = TaskConfig(reward="f1", max_answer_len=2)
    env = gym.make("SearchTokens-v0", config=task).unwrapped
    env.reset(seed=0, options={"question": 0})
    gold = int(env.core.world.questions["answer"][0])
    wrong = (gold + 1) % 24
    out = [env.step(t) for t in _words(env, f"<answer> e{gold} e{wrong} </answer>")]
    assert out[-1][1] == pytest.approx(2 * 0.5 / 1.5)


@settings(max_examples=60, deadline=None)
@given(actions=st.lists(st.integers(-3, 60), min_size=1, max_size=80), seed=st.integers(0, 2**16))
def test_arbitrary_token_sequences(actions: list[int], seed: int) -> None:
    """Never raise, never exceed max turns, rewards in range, env tokens flagged, replays match."""

    def play():
        env = gym.make("SearchTokens-v0", config=TASK).unwrapped
        obs, _ = env.reset(seed=seed)
        trace, agent_tokens = [], []
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            agent_tokens.append(a % env.core.vocab.size)
            trace.append((r, term, trunc))
            assert info["turns"] <= TASK.max_turns
            assert -TASK.format_penalty <= r <= 1.0
            if term or trunc:
                break
        n = obs["length"]
        flagged_agent = obs["tokens"][:n][obs["env_mask"][:n] == 0]
        assert flagged_agent.tolist() == agent_tokens
        return trace, obs["tokens"].tolist()

    assert play() == play()


@settings(max_examples=60, deadline=None)
@given(actions=st.lists(st.integers(-2, 9), min_size=1, max_size=20), seed=st.integers(0, 2**16))
def test_arbitrary_tabular_actions(actions: list[int], seed: int) -> None:
    def play():
        env = gym.make("SearchTabular-v0", config=TASK).unwrapped
        env.reset(seed=seed)
        trace = []
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            assert env.observation_space.contains(obs)
            assert info["turns"] <= TASK.max_turns and -0.2 <= r <= 1.0
            trace.append((obs, r, term, trunc))
            if term or trunc:
                break
        return trace

    assert play() == play()


@pytest.mark.parametrize("grain", ["token", "tabular"])
def test_oracle_ceiling_and_random_floor(grain: str) -> None:
    task = TaskConfig()
    rng = np.random.default_rng(0)
    qs = np.arange(96) % 72
    if grain == "token":
        from testbed.envs import TokenSearchBatch

        core = TokenSearchBatch(task, 96)
        oracle, random = run_token_episodes(core, qs, rng, 0.0), run_token_episodes(core, qs, rng, None)
    else:
        core = TabularSearchBatch(task, 96)
        oracle, random = run_tabular_episodes(core, qs, rng, True), run_tabular_episodes(core, qs, rng, False)
    assert oracle.mean() == 1.0
    assert random.mean() < 0.1
