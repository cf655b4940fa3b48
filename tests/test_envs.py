"""The simulated search environments: API conformance, procedural worlds, malformed actions,
rewards, scripted agents through the episode driver."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import testbed  # noqa: F401  (registers the environments)
from testbed.config import ConfigError
from testbed.envs import (
    RetrieverConfig,
    SimulatedRetriever,
    TaskConfig,
    World,
    WorldConfig,
)

TASK = TaskConfig(max_turns=3, format_penalty=0.2)
FIXED = TaskConfig(world=WorldConfig(kind="fixed"), max_turns=3, format_penalty=0.2)
TOKENS, TABULAR = "testbed/SearchTokens-v0", "testbed/SearchTabular-v0"


@pytest.mark.parametrize("env_id", [TOKENS, TABULAR])
@pytest.mark.parametrize("kind", ["procedural", "fixed"])
def test_passes_gymnasium_env_checker(env_id: str, kind: str) -> None:
    env = gym.make(env_id, max_turns=3, world={"n_entities": 10, "kind": kind})
    check_env(env.unwrapped, skip_render_check=True)


def test_procedural_episodes_differ_by_seed_and_repeat_by_seed() -> None:
    world = World(WorldConfig())
    a = world.episodes(np.array([2, 4, 2]))
    assert not np.array_equal(a.facts[0], a.facts[1])  # two episodes, two worlds
    assert np.array_equal(a.facts[0], a.facts[2]) and a.answer[0] == a.answer[2]  # same id, same episode
    again = World(WorldConfig()).episodes(np.array([2]))
    assert np.array_equal(again.facts[0], a.facts[0]) and again.answer[0] == a.answer[0]
    # the same question (start and chain) in two worlds has two answers: it cannot be memorised
    ids = np.arange(0, 4000, 2)
    ep = world.episodes(ids)
    key = [(s, tuple(c)) for s, c in zip(ep.start, ep.chain, strict=True)]
    answers: dict = {}
    for k, ans in zip(key, ep.answer, strict=True):
        answers.setdefault(k, set()).add(int(ans))
    assert any(len(v) > 1 for v in answers.values())


def test_training_and_evaluation_episodes_never_overlap() -> None:
    world = World(WorldConfig())
    train = world.train_ids(np.random.default_rng(0), 10_000)
    assert (train % 2 == 0).all() and (world.eval_ids(512) % 2 == 1).all()


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_parametric_share_fixes_that_share_of_facts(share: float) -> None:
    world = World(WorldConfig(parametric_share=share))
    ep = world.episodes(np.arange(0, 400, 2))
    fixed = (ep.facts == world.facts[None]).all(0)
    assert fixed[world.fixed_facts].all()
    assert abs(world.fixed_facts.mean() - share) < 0.2
    if share < 1:
        assert not fixed[~world.fixed_facts].all()


def test_episode_answers_follow_their_chain_in_their_world() -> None:
    world = World(WorldConfig(hop_weights=(1.0, 1.0, 1.0)))
    ep = world.episodes(np.arange(0, 200, 2))
    for i in range(len(ep.ids)):
        e = ep.start[i]
        for r in ep.chain[i, : ep.hops[i]]:
            e = ep.facts[i, e, r]
        assert e == ep.answer[i]
    assert set(ep.hops) == {1, 2, 3}


def test_same_seed_same_fixed_world() -> None:
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
        (lambda: WorldConfig(parametric_share=1.5), "parametric_share"),
        (lambda: WorldConfig(parametric_share=float("nan")), "parametric_share"),
        (lambda: WorldConfig(kind="frozen"), "kind"),
        (lambda: WorldConfig(kind="fixed", held_out_frac=0.0), "held_out_frac"),
        (lambda: WorldConfig(seed=-1), "seed"),
        (lambda: TaskConfig(max_len=5), "max_len"),
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


def _play(tokens: list[int], task: TaskConfig = TASK, episode: int = 0):
    env = _env(TOKENS, task)
    env.reset(seed=0, options={"episode": episode})
    out = None
    for t in tokens:
        out = env.step(t)
        if out[2] or out[3]:
            break
    return env, out


def _env(env_id: str, config: TaskConfig) -> Any:
    """The environment itself (gymnasium's ``make`` is typed as returning a bare ``Env``)."""
    return gym.make(env_id, config=config).unwrapped


def _words(env, text: str) -> list[int]:
    return [env.core.vocab.ids[w] for w in text.split()]


@pytest.mark.parametrize("task", [TASK, FIXED])
def test_a_correct_episode_scores_one(task: TaskConfig) -> None:
    env = _env(TOKENS, task)
    env.reset(seed=0, options={"episode": 4})
    w, ep = env.core.world, env.core.ep
    e = int(ep.start[0])
    for r in ep.chain[0, : ep.hops[0]]:
        env.step(env.core.vocab.search_open)
        env.step(int(w.vocab.entity(e)))
        env.step(int(w.vocab.relation(r)))
        term = env.step(env.core.vocab.search_close)[2]
        assert not term and f"e{e} r{r} e{ep.facts[0, e, r]}" in env.render()  # this episode's fact
        e = int(ep.facts[0, e, r])
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


@pytest.mark.parametrize("action", [10**6, -1, 40])
def test_out_of_vocabulary_action_is_malformed_and_shown_as_invalid(action: int) -> None:
    env, _ = _play([])
    obs, _, _, _, info = env.step(action)
    assert info["invalid"] == 1
    assert env.observation_space.contains(obs)
    assert "<invalid> <information> <invalid> </information>" in env.render()


@pytest.mark.parametrize("env_id", [TOKENS, TABULAR])
def test_env_refuses_steps_after_the_end_and_non_integer_actions(env_id: str) -> None:
    env = _env(env_id, TASK)
    env.reset(seed=0)
    for bad in (3.7, "3", None):
        with pytest.raises(ValueError, match="action="):
            env.step(bad)
    env.step(np.int64(0))
    while True:
        out = env.step(env.action_space.n - 1 if env_id == TABULAR else env.core.vocab.search_close)
        if out[2] or out[3]:
            break
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(0)


def test_env_episode_option_is_checked() -> None:
    env = _env(TOKENS, FIXED)
    for bad in (-1, 10**6, "3"):
        with pytest.raises(ValueError, match="episode"):
            env.reset(options={"episode": bad})
    with pytest.raises(ValueError, match="split"):
        env.reset(options={"split": "held-out"})
    assert env.reset(options={"split": "eval"})[1]["episode"] in set(env.core.world.held_out)
    assert env.decode(env.encode("<search> e1 r2 </search>")) == "<search> e1 r2 </search>"
    tab = _env(TABULAR, TASK)
    state, _ = tab.reset(seed=0)
    assert tab.encode(**tab.decode(state)) == state


def test_answer_before_search_when_disallowed() -> None:
    task = TaskConfig(require_search=True)
    env = _env(TOKENS, task)
    env.reset(seed=0)
    info = env.step(env.core.vocab.answer_open)[4]
    assert info["invalid"] == 1


def test_format_penalty_and_max_turns() -> None:
    env = _env(TOKENS, TASK)
    env.reset(seed=0)
    close = env.core.vocab.search_close
    results = [env.step(close) for _ in range(4)]
    assert [r[3] for r in results] == [False, False, False, True]  # the 4th turn truncates
    assert results[-1][1] == pytest.approx(-0.2)
    assert results[-1][4]["turns"] == 3


def test_f1_reward_gives_partial_credit() -> None:
    task = TaskConfig(reward="f1", max_answer_len=2)
    env = _env(TOKENS, task)
    env.reset(seed=0, options={"episode": 0})
    gold = int(env.core.ep.answer[0])
    wrong = (gold + 1) % 24
    out = [env.step(t) for t in _words(env, f"<answer> e{gold} e{wrong} </answer>")]
    assert out[-1][1] == pytest.approx(2 * 0.5 / 1.5)


@settings(max_examples=60, deadline=None)
@given(actions=st.lists(st.integers(-3, 60), min_size=1, max_size=80), seed=st.integers(0, 2**16))
def test_arbitrary_token_sequences(actions: list[int], seed: int) -> None:
    """Never raise, never exceed max turns, rewards in range, env tokens flagged, replays match."""

    def play():
        env = _env(TOKENS, TASK)
        obs, _ = env.reset(seed=seed)
        trace, agent_tokens = [], []
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            agent_tokens.append(a if 0 <= a < env.core.vocab.size else env.core.vocab.invalid)
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
        env = _env(TABULAR, TASK)
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
