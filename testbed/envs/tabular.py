"""The tabular search task, batched: the same world and retriever, with abstract discrete actions.

Actions (``n_relations + 2``): ``j < R`` searches relation ``j`` of the entity the agent currently
believes in (the question's start entity at first); ``R`` answers that entity; ``R + 1`` answers a
random entity (a guess). Any other integer is a malformed action: a wasted turn and the format
penalty, never an exception.

A search whose document comes back moves the belief along the relation; it advances the
question's chain only when it was the chain's next relation and the belief was still on the path.
The observation is one integer encoding what the agent knows: the turn, the question's number of
hops, the hops done, the next relation of the chain (or "done") and whether the last search found
its document. What the agent has read is carried by the belief: the entity its last found document
named, which the answer action ``R`` says. So the task stays solvable when every episode draws its
own facts (procedural worlds): a state never needs to name an entity, only where the chain stands.
Reward: EM of the answered entity; the episode truncates at the action past
``max_turns``. Rewards lie in [-format_penalty, 1].
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from testbed.envs.retriever import Retriever, SimulatedRetriever
from testbed.envs.streams import Streams, member_draw, member_parts
from testbed.envs.task import TaskConfig
from testbed.envs.world import Episodes, World


class TabularSearchBatch:
    """B independent episodes of the tabular task, stepped together."""

    grain: Literal["tabular"] = "tabular"

    def __init__(
        self,
        config: TaskConfig,
        batch_size: int,
        world: World | None = None,
        retriever: Retriever | None = None,
        closed_book: bool = False,
    ) -> None:
        """``closed_book``: every search returns random documents (see ``TokenSearchBatch``)."""
        self.config = config
        self.world = world or World(config.world)
        self.retriever = retriever or SimulatedRetriever(self.world, config.retriever)
        self.closed_book = closed_book
        self.ep: Episodes | None = None
        self.batch_size = batch_size
        wc = self.world.config
        self.n_actions = wc.n_relations + 2
        self.dims = (config.max_turns + 1, wc.max_hops, wc.max_hops + 1, wc.n_relations + 1, 2)
        self.n_states = int(np.prod(self.dims))
        b = batch_size
        self.question = np.zeros(b, dtype=np.int64)
        self.belief = np.zeros(b, dtype=np.int64)
        self.hops_done = np.zeros(b, dtype=np.int64)
        self.on_path = np.ones(b, dtype=bool)
        self.found = np.zeros(b, dtype=np.int64)
        self.turns = np.zeros(b, dtype=np.int64)
        self.searches = np.zeros(b, dtype=np.int64)
        self.invalid = np.zeros(b, dtype=np.int64)
        self.done = np.ones(b, dtype=bool)

    def reset(self, episodes: np.ndarray) -> np.ndarray:
        """Start one episode per environment on the given episode ids; returns the states."""
        episodes = np.asarray(episodes, dtype=np.int64)
        if episodes.shape != (self.batch_size,):
            raise ValueError(f"episodes: expected shape ({self.batch_size},), got {episodes.shape}")
        self.question[:] = episodes
        self.ep = self.world.episodes(episodes)
        self.belief[:] = self.ep.start
        self.hops_done[:] = 0
        self.on_path[:] = True
        self.found[:] = 0
        self.turns[:] = 0
        self.searches[:] = 0
        self.invalid[:] = 0
        self.done[:] = False
        return self.observe()

    def observe(self) -> np.ndarray:
        """State index per environment."""
        ep = self.ep
        assert ep is not None, "reset() first"
        hops = ep.hops
        nxt = np.where(
            self.hops_done < hops,
            ep.chain[np.arange(self.batch_size), np.minimum(self.hops_done, ep.chain.shape[1] - 1)],
            self.world.config.n_relations,
        )
        idx = (np.minimum(self.turns, self.config.max_turns), hops - 1, self.hops_done, nxt, self.found)
        return np.ravel_multi_index(idx, self.dims)

    def step(
        self, actions: np.ndarray, rng: Streams
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(observation, reward, terminated, truncated) per environment. ``rng``: one generator, or
        one per population member (``testbed.envs.streams``)."""
        n_r = self.world.config.n_relations
        a = np.asarray(actions, dtype=np.int64)
        live = ~self.done
        search = live & (a >= 0) & (a < n_r)
        answer = live & ((a == n_r) | (a == n_r + 1))
        invalid = live & ~search & ~answer
        turn_acts = search | invalid
        over = turn_acts & (self.turns >= self.config.max_turns)
        self.turns += turn_acts & ~over
        self.invalid += invalid
        self.searches += search & ~over
        self._search(search & ~over, a, rng)

        n_e = self.world.config.n_entities
        guess = member_draw(self.batch_size, rng, lambda stream, n: stream.integers(0, n_e, n))
        said = np.where(a == n_r, self.belief, guess)
        assert self.ep is not None, "reset() first"
        gold = self.ep.answer
        reward = (answer & (said == gold)).astype(float)
        truncated = over & ~answer
        ended = answer | truncated
        reward[ended] -= self.config.format_penalty * (self.invalid[ended] > 0)
        self.done |= ended
        return self.observe(), reward, answer, truncated

    def _search(self, rows_mask: np.ndarray, actions: np.ndarray, rng: Streams) -> None:
        rows = np.flatnonzero(rows_mask)
        self.found[rows] = 0
        for part, stream in member_parts(rows, self.batch_size, rng):
            self._search_rows(part, actions, stream)

    def _search_rows(self, rows: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> None:
        vocab, world = self.world.vocab, self.world
        rel = actions[rows]
        queries = np.stack([vocab.entity(self.belief[rows]), vocab.relation(rel)], axis=1)
        if self.closed_book:
            docs = rng.integers(0, world.n_docs, (len(rows), self.retriever.top_k))
        else:
            docs = self.retriever.retrieve(queries, rng)
        hit = (docs == world.doc_id(self.belief[rows], rel)[:, None]).any(1)
        ep = self.ep
        assert ep is not None, "reset() first"
        step = np.minimum(self.hops_done[rows], ep.chain.shape[1] - 1)
        on_chain = (self.hops_done[rows] < ep.hops[rows]) & (ep.chain[rows, step] == rel)
        hit_rows = rows[hit]
        self.on_path[hit_rows] &= on_chain[hit]
        self.hops_done[hit_rows] += on_chain[hit] & self.on_path[hit_rows]
        self.belief[hit_rows] = ep.facts[hit_rows, self.belief[hit_rows], rel[hit]]
        self.found[hit_rows] = 1
