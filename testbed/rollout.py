"""The episode driver: any agent (a policy, the oracle, the random agent) plays a batch of episodes
in a batched environment core, and the result is a ``Batch`` with one layout for all of them.

Token grain: every episode advances one position per step, so one KV-cached forward serves the
whole batch. A position holds either a token the agent writes or a *forced* token (the prompt, or
a retrieved ``<information>`` block queued by the environment) that the agent sees with mask 0.
Tabular grain: one action per step from the current state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import numpy as np
import torch

from testbed.batch import ANSWER, OTHER, SEARCH_CALL, Batch
from testbed.envs import TabularSearchBatch, TokenSearchBatch
from testbed.envs.streams import Streams
from testbed.envs.tokens import ANSWER as PHASE_ANSWER
from testbed.envs.tokens import FREE, SEARCH
from testbed.policies import Policy

Core = TokenSearchBatch | TabularSearchBatch
# Tokens (rows x positions) per ``feed`` call at most on a CPU: past a few thousand a block's
# activations leave the cache and a pass costs more per token than decoding steps (2-core AMD EPYC)
FEED_TOKENS = 2048


class Agent(Protocol):
    """What the driver asks of whoever plays: see ``testbed.envs.agents`` and ``PolicyAgent``."""

    grain: str

    def begin(self, core: Any) -> None: ...

    def propose(
        self, inputs: torch.Tensor
    ) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]: ...

    def commit(self, tokens: np.ndarray, wrote: np.ndarray) -> None: ...


def _sampler(gen: torch.Generator, device: torch.device | str) -> torch.Generator:
    """A generator for one rollout, seeded by one draw from ``gen``: ``gen`` advances by the same
    amount however long the rollout runs (a population's rollout runs as long as its longest member)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return torch.Generator(device=device).manual_seed(seed)


class PolicyAgent:
    """A policy sampled (or decoded greedily); each member's rows sample with that member's generator.

    Sampling draws a token as argmax(p / noise), noise ~ Exp(1): ATen's one-sample path of
    ``torch.multinomial(p, 1)``, spelled out so that one tensor holds every member's noise and a
    position can be skipped exactly. ``feeds``: the policy takes a block of known tokens at once
    (``feed``), so the driver hands it the positions where no row writes (the prompt, retrieved
    blocks) in one call; each member's generator still draws every skipped position's noise, so
    the samples are those of a position-by-position rollout.
    """

    def __init__(
        self, policy: Policy, gens: torch.Generator | Sequence[torch.Generator], greedy: bool = False
    ) -> None:
        self.policy, self.greedy, self.grain = policy, greedy, policy.grain
        gens = [gens] if isinstance(gens, torch.Generator) else list(gens)
        if len(gens) != policy.members:
            raise ValueError(f"{len(gens)} generators for a policy of {policy.members} members")
        self.member_gens = gens
        self.feeds = hasattr(policy, "feed")
        self.device = torch.device(getattr(policy, "device", "cpu"))
        # on a CPU a block's activations must stay in cache (FEED_TOKENS); a GPU takes any block
        self.max_feed = FEED_TOKENS if self.device.type == "cpu" else 2**31

    def begin(self, core: Core) -> None:
        # a policy with a fixed-size cache (HFPolicy's static decode) is told the longest rollout
        max_len = cast(TokenSearchBatch, core).capacity if self.grain == "token" else None
        self.state = self.policy.start(core.batch_size, max_len)
        self.gens = [_sampler(g, self.device) for g in self.member_gens]

    def propose(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(self.policy.next_logits(inputs, self.state).float(), -1)
        if self.greedy:
            tok = logp.argmax(-1)
        else:
            probs = logp.exp()
            tok = (probs / self._noise(probs.shape)).argmax(-1)
        return tok.cpu(), logp.gather(-1, tok[:, None]).squeeze(-1).cpu()

    def feed(self, inputs: torch.Tensor) -> None:
        """Take ``inputs`` [rows, t] (known tokens) into the policy's state: t positions without
        a proposal."""
        self.policy.feed(inputs, self.state)  # type: ignore[attr-defined]
        if not self.greedy:
            for _ in range(inputs.shape[1]):
                self._noise((len(inputs), self.policy.vocab_size))  # type: ignore[attr-defined]

    def _noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        """One step's noise [rows, V], each member's rows drawn from that member's generator."""
        noise = torch.empty(shape, device=self.device)
        for part, g in zip(noise.chunk(len(self.gens)), self.gens, strict=True):
            part.exponential_(1, generator=g)
        return noise

    def commit(self, tokens: np.ndarray, wrote: np.ndarray) -> None:
        pass


@torch.no_grad()
def rollout(agent: Agent, core: Core, episodes: np.ndarray, group_ids: np.ndarray, rng: Streams) -> Batch:
    """One episode per row on ``episodes`` (ids repeat G times for GRPO groups); ``rng`` drives the
    environment (retrieval noise): one generator, or one per population member, the rows
    member-major (``testbed.envs.streams``: each member's episodes draw from its own stream).

    A batch of one stream (warm-start demonstrations, scripted agents) is cut after its last
    written position; a batch of member streams (every trainer's, a single run's included) keeps
    the whole capacity, so that one member's episode lengths never change another's tensor shapes.
    """
    if core.grain == "tabular":
        return _rollout_tabular(agent, core, episodes, group_ids, rng)
    return _rollout_tokens(agent, core, episodes, group_ids, rng)


def _segment(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Segment of each written token from the phase before and after it (tags belong inside)."""
    phase = np.where(before != FREE, before, after)
    return np.select([phase == SEARCH, phase == PHASE_ANSWER], [SEARCH_CALL, ANSWER], OTHER)


def _known_span(done: np.ndarray, queued: np.ndarray, limit: int) -> int:
    """How many positions from now on no row writes: every live row has that many tokens queued
    (a done row writes nothing; when all are done, as long as any row has tokens queued)."""
    live = ~done
    span = int(queued[live].min()) if live.any() else int(queued.max())
    return min(max(span, 0), limit)


def _rollout_tokens(agent: Agent, core: TokenSearchBatch, episodes, group_ids, rng: Streams) -> Batch:
    b = len(episodes)
    prompts = core.reset(episodes)
    agent.begin(core)
    cap = core.capacity
    qcap = max(core.info_len, *(len(p) for p in prompts))
    queue = np.zeros((b, qcap), dtype=np.int64)
    for i, p in enumerate(prompts):
        queue[i, : len(p)] = p
    q_len = np.array([len(p) for p in prompts])
    q_pos = np.ones(b, dtype=np.int64)  # position 0 (<bos>) is written below
    tokens = torch.full((b, cap), core.vocab.pad, dtype=torch.long)
    tokens[:, 0] = torch.as_tensor(queue[:, 0])
    mask = torch.zeros(b, cap)
    blp = torch.zeros(b, cap)
    segment = np.zeros((b, cap), dtype=np.int8)
    rewards = np.zeros(b)
    rows = np.arange(b)
    end = cap
    feeder = agent if isinstance(agent, PolicyAgent) and agent.feeds else None
    pos = 1
    while pos < cap:
        forced = q_pos < q_len
        if core.done.all() and not forced.any():
            end = pos if isinstance(rng, np.random.Generator) else cap  # see the docstring
            break
        span = _known_span(core.done, q_len - q_pos, min(cap - pos, feeder.max_feed // b)) if feeder else 0
        if feeder and span > 1:  # no row writes at pos .. pos + span - 1: take them in one call
            ahead = q_pos[:, None] + np.arange(span)
            known = queue[rows[:, None], np.minimum(ahead, qcap - 1)]
            tokens[:, pos : pos + span] = torch.as_tensor(
                np.where(ahead < q_len[:, None], known, core.vocab.pad)
            )
            feeder.feed(tokens[:, pos - 1 : pos + span - 1])
            q_pos = np.minimum(q_pos + span, np.maximum(q_pos, q_len))
            pos += span
            continue
        proposed, logp = agent.propose(tokens[:, pos - 1])
        writes = ~forced & ~core.done
        queued = queue[rows, np.minimum(q_pos, qcap - 1)]
        tok = np.where(forced, queued, np.where(writes, np.asarray(proposed), core.vocab.pad))
        q_pos += forced
        before = np.array(core.phase)
        out = core.step(tok, rng, active=writes)
        agent.commit(tok, writes)
        rewards += out.reward
        w = torch.as_tensor(writes)
        tokens[:, pos] = torch.as_tensor(tok)
        mask[:, pos] = w.float()
        blp[:, pos] = torch.where(w, torch.as_tensor(logp, dtype=torch.float32), 0.0)
        segment[:, pos] = np.where(writes, _segment(before, core.phase), OTHER)
        got = out.obs_len > 0
        queue[got] = out.obs[got]
        q_len[got] = out.obs_len[got]
        q_pos[got] = 0
        pos += 1
    return Batch(
        tokens=tokens[:, :end],
        mask=mask[:, :end],
        behaviour_log_probs=blp[:, :end],
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        group_ids=torch.as_tensor(group_ids),
        searches=torch.as_tensor(core.searches.copy()),
        segment=torch.as_tensor(segment[:, :end]),
    )


def _rollout_tabular(agent: Agent, core: TabularSearchBatch, episodes, group_ids, rng: Streams) -> Batch:
    b = len(episodes)
    obs = core.reset(episodes)
    agent.begin(core)
    horizon = core.config.max_turns + 1
    assert core.world is not None, "a tabular core has its world"
    n_r = core.world.config.n_relations
    states = torch.zeros(b, horizon, dtype=torch.long)
    actions = torch.zeros(b, horizon, dtype=torch.long)
    mask = torch.zeros(b, horizon)
    blp = torch.zeros(b, horizon)
    rewards = np.zeros(b)
    for t in range(horizon):
        live = ~core.done
        if not live.any():
            break
        s = torch.as_tensor(obs)
        act, logp = agent.propose(s)
        act = np.asarray(act)
        obs, reward, _, _ = core.step(act, rng)
        agent.commit(act, live)
        rewards += reward
        states[:, t], actions[:, t] = s, torch.as_tensor(act)
        mask[:, t] = torch.as_tensor(live, dtype=torch.float32)
        blp[:, t] = torch.where(torch.as_tensor(live), torch.as_tensor(logp, dtype=torch.float32), 0.0)
    search = (actions >= 0) & (actions < n_r)
    answer = (actions == n_r) | (actions == n_r + 1)
    segment = torch.where(search, SEARCH_CALL, torch.where(answer, ANSWER, OTHER)).to(torch.int8) * (mask > 0)
    return Batch(
        tokens=actions,
        mask=mask,
        behaviour_log_probs=blp,
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        group_ids=torch.as_tensor(group_ids),
        searches=torch.as_tensor(core.searches.copy()),
        segment=segment,
        states=states,
    )
