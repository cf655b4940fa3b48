"""The episode driver: scripted agents' ceiling and floor, the closed-book probe, and one layout
for every agent (a demonstration is laid out as a policy's rollout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from testbed.envs import RetrieverConfig, TabularSearchBatch, TaskConfig, TokenSearchBatch, WorldConfig
from testbed.envs.agents import RandomAgent, TabularOracle, TokenOracle
from testbed.rollout import rollout


def _core(grain: str, task: TaskConfig, n: int, **kw):
    return (TokenSearchBatch if grain == "token" else TabularSearchBatch)(task, n, **kw)


@pytest.mark.parametrize("grain", ["token", "tabular"])
@pytest.mark.parametrize("kind", ["procedural", "fixed"])
def test_oracle_ceiling_and_random_floor(grain: str, kind: str) -> None:
    task = TaskConfig(world=WorldConfig(kind=kind))
    rng = np.random.default_rng(0)
    core = _core(grain, task, 96)
    eps = core.world.train_ids(rng, 96)
    oracle = TokenOracle if grain == "token" else TabularOracle
    best = rollout(oracle(0.0, rng), core, eps, np.arange(96), rng).rewards
    worst = rollout(RandomAgent(grain, rng), core, eps, np.arange(96), rng).rewards
    assert best.mean() == 1.0
    assert worst.mean() < 0.1


@pytest.mark.parametrize("grain", ["token", "tabular"])
def test_closed_book_oracle_is_at_chance(grain: str) -> None:
    """Random documents instead of retrieval: the oracle can only guess (procedural worlds)."""
    rng = np.random.default_rng(0)
    core = _core(grain, TaskConfig(), 2000, closed_book=True)
    oracle = TokenOracle if grain == "token" else TabularOracle
    em = rollout(oracle(0.0, rng), core, core.world.eval_ids(2000), np.arange(2000), rng).rewards.mean()
    assert em < 3 / 24


def test_demonstrations_have_the_layout_of_a_policy_rollout() -> None:
    """One driver for every agent: a policy replaying an oracle's tokens lays them out identically."""
    import torch

    from testbed.policies import TransformerPolicy
    from testbed.rollout import PolicyAgent
    from testbed.warmstart import demonstrations

    task = TaskConfig()
    core = TokenSearchBatch(task, 8)
    assert core.world is not None  # the simulated task
    eps = core.world.train_ids(np.random.default_rng(1), 8)
    demo = rollout(
        TokenOracle(0.25, np.random.default_rng(3)), core, eps, np.arange(8), np.random.default_rng(2)
    )
    assert demonstrations(core, eps, 0.25, np.random.default_rng(2)).tokens.shape[0] == 8

    class Replay(PolicyAgent):  # proposes the demonstration's token at each position
        def begin(self, core):
            self.pos, self.feeds = 0, False  # asked at every position, the forced ones too

        def propose(self, inputs):
            self.pos += 1
            tok = (
                demo.tokens[:, self.pos]
                if self.pos < demo.tokens.shape[1]
                else torch.zeros(8, dtype=torch.long)
            )
            return tok, torch.zeros(8)

    policy = TransformerPolicy(core.vocab.size, core.capacity, 1, 8, 2)
    replay = rollout(Replay(policy, torch.Generator()), core, eps, np.arange(8), np.random.default_rng(2))
    for field in ("tokens", "mask", "rewards", "searches", "segment"):
        assert torch.equal(getattr(replay, field), getattr(demo, field)), field
    assert (
        (demo.segment[demo.mask == 0] == 0).all() and (demo.segment == 1).any() and (demo.segment == 2).any()
    )


@pytest.mark.parametrize("grain", ["token", "tabular"])
@pytest.mark.parametrize("closed_book", [False, True])
def test_one_core_with_member_streams_draws_what_member_cores_draw(grain: str, closed_book: bool) -> None:
    """A core of 2 x n rows stepped with two streams (every trainer's) plays each member's episodes
    exactly as that member's own core with its own stream would (testbed.envs.streams)."""
    task, n = TaskConfig(retriever=RetrieverConfig(recall=0.6, rank_noise=0.5)), 48
    eps = _core(grain, task, n).world.train_ids(np.random.default_rng(1), 2 * n)
    oracle = TokenOracle if grain == "token" else TabularOracle
    both = rollout(
        oracle(0.0, np.random.default_rng(2)),
        _core(grain, task, 2 * n, closed_book=closed_book),
        eps,
        np.arange(2 * n),
        [np.random.default_rng(10), np.random.default_rng(11)],
    )
    for k, seed in enumerate((10, 11)):
        alone = rollout(
            oracle(0.0, np.random.default_rng(2)),
            _core(grain, task, n, closed_book=closed_book),
            eps[k * n : (k + 1) * n],
            np.arange(n),
            [np.random.default_rng(seed)],
        )
        rows = slice(k * n, (k + 1) * n)
        assert torch.equal(both.rewards[rows], alone.rewards)
        assert torch.equal(both.searches[rows], alone.searches)
        assert torch.equal(both.tokens[rows], alone.tokens)


def test_sampling_draws_what_torch_multinomial_draws() -> None:
    """The agent samples argmax(p / Exp(1) noise), ATen's one-sample path of ``torch.multinomial``,
    each member's rows with its own generator: the same tokens as ``multinomial`` on each member's
    rows with its generator, and the generators left where it leaves them."""
    from testbed.policies.qwen2 import Qwen2Policy, qwen2_shape
    from testbed.rollout import PolicyAgent

    policy = Qwen2Policy(qwen2_shape(38, 8, 1, 2, 16), members=2)
    agent = PolicyAgent(policy, [torch.Generator().manual_seed(s) for s in (5, 6)])
    agent.begin(TokenSearchBatch(TaskConfig(), 2 * 32))
    probs = torch.softmax(3 * torch.randn(64, 38, generator=torch.Generator().manual_seed(0)), -1)
    theirs = [torch.Generator().manual_seed(g.initial_seed()) for g in agent.gens]
    for _ in range(5):
        drawn = (probs / agent._noise(probs.shape)).argmax(-1)
        expected = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs.chunk(2), theirs, strict=True)]
        assert torch.equal(drawn, torch.cat(expected).squeeze(-1))
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(agent.gens, theirs, strict=True))


@pytest.mark.parametrize("greedy", [False, True])
@pytest.mark.parametrize("kind", ["qwen2", "transformer"])
def test_a_rollout_that_feeds_known_tokens_equals_one_that_steps(greedy: bool, kind: str) -> None:
    """The driver hands a feeding policy every position where no row writes (prompts, retrieved
    blocks) in blocks; the batch, and the generators after it, are those of one position at a time."""
    from testbed.policies import TransformerPolicy
    from testbed.policies.qwen2 import Qwen2Policy, qwen2_shape
    from testbed.rollout import PolicyAgent

    task = TaskConfig(retriever=RetrieverConfig(recall=0.6, rank_noise=0.5))
    core = TokenSearchBatch(task, 2 * 24)
    torch.manual_seed(0)
    v, cap = core.vocab.size, core.capacity
    policy: Qwen2Policy | TransformerPolicy = (
        Qwen2Policy(qwen2_shape(v, 16, 1, 2, cap), members=2, std=0.5)
        if kind == "qwen2"
        else TransformerPolicy(v, cap, 1, 16, 2, members=2)
    )
    assert core.world is not None  # the simulated task
    eps = core.world.train_ids(np.random.default_rng(1), 48)
    out = {}
    for feeds in (True, False):
        gens = [torch.Generator().manual_seed(s) for s in (7, 8)]
        agent = PolicyAgent(policy, gens, greedy=greedy)
        agent.feeds = feeds
        streams = [np.random.default_rng(10), np.random.default_rng(11)]
        out[feeds] = (rollout(agent, core, eps, np.arange(48), streams), [g.get_state() for g in gens])
    (fed, fed_gens), (stepped, stepped_gens) = out[True], out[False]
    for field in ("tokens", "mask", "behaviour_log_probs", "rewards", "searches", "segment"):
        assert torch.equal(getattr(fed, field), getattr(stepped, field)), field
    assert all(torch.equal(a, b) for a, b in zip(fed_gens, stepped_gens, strict=True))
    assert (fed.mask.sum(0) == 0).sum() > 5  # positions no row writes: there were blocks to feed
