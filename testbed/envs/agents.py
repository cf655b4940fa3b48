"""Scripted agents for both grains, the ceiling and the floor of every figure: the oracle (with an
optional error rate, the demonstrations of the warm start) and the uniform random agent.

Every agent speaks the episode driver's protocol (``testbed.rollout.Agent``): ``begin(core)`` after
the core's reset, ``propose(inputs)`` gives a token (or action) and its log-prob for every row,
``commit(tokens, wrote)`` tells the agent which proposals the environment took. The driver calls
``propose`` at every position, forced ones included (a sequence model must see every token).

The token oracle reads the environment's state (it is an oracle): it searches each hop of the
chain from its current belief, re-searches when the document did not come back, then answers.
With ``error_rate`` > 0 each word it writes is replaced, with that probability, by a random word of
the same kind, and it goes on from the wrong fact without noticing: the imperfect demonstrations
the transformer is warm-started on (one search per hop when retrieval is perfect).
"""

from __future__ import annotations

from typing import cast

import numpy as np

from testbed.envs.tabular import TabularSearchBatch
from testbed.envs.tokens import TokenSearchBatch
from testbed.envs.world import Episodes, World


def _check_error_rate(error_rate: float) -> None:
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate={error_rate!r}: must lie in [0, 1]")


class TokenOracle:
    """Scripted agent for a ``TokenSearchBatch``."""

    grain = "token"

    def __init__(self, error_rate: float, rng: np.random.Generator) -> None:
        _check_error_rate(error_rate)
        self.error_rate, self.rng = error_rate, rng

    def begin(self, core: TokenSearchBatch) -> None:
        self.core = core
        b = core.batch_size
        self.plan = np.zeros((b, 4), dtype=np.int64)
        self.plan_len = np.zeros(b, dtype=np.int64)
        self.pos = np.zeros(b, dtype=np.int64)
        self.belief = self._world_ep()[1].start.copy()
        self.hops_done = np.zeros(b, dtype=np.int64)
        self.query = np.zeros((b, 2), dtype=np.int64)

    def _world_ep(self) -> tuple[World, Episodes]:
        world, ep = self.core.world, self.core.ep
        assert world is not None and ep is not None, "the oracle reads the simulated task's world"
        return world, ep

    def propose(self, inputs: object) -> tuple[np.ndarray, np.ndarray]:
        empty = self.pos >= self.plan_len
        if empty.any():
            self._make_plans(np.flatnonzero(empty))
        tok = self.plan[np.arange(len(self.pos)), self.pos]
        return tok, np.zeros(len(tok))

    def commit(self, tokens: np.ndarray, wrote: np.ndarray) -> None:
        self.pos += wrote
        self._observe(np.where(wrote, tokens, -1))

    def _observe(self, tokens: np.ndarray) -> None:
        """Update beliefs from the documents returned for searches closed by ``tokens``."""
        core, v, (world, ep) = self.core, self.core.vocab, self._world_ep()
        rows = np.flatnonzero((tokens == v.search_close) & (core.last_docs[:, 0] >= 0))
        if rows.size == 0:
            return
        subject, relation = self.query[rows, 0], self.query[rows, 1]
        hit = (core.last_docs[rows] == world.doc_id(subject, relation)[:, None]).any(1)
        # a hop is done once its query's document came back, right or (with errors) wrong
        hit_rows = rows[hit]
        self.belief[hit_rows] = ep.facts[hit_rows, subject[hit], relation[hit]]
        self.hops_done[hit_rows] += 1
        core.last_docs[rows] = -1

    def _make_plans(self, rows: np.ndarray) -> None:
        (world, ep), rng = self._world_ep(), self.rng
        v, wc = world.vocab, world.config  # the simulated task's vocab is its world's
        searching = self.hops_done[rows] < ep.hops[rows]
        rel = ep.chain[rows, np.minimum(self.hops_done[rows], wc.max_hops - 1)]
        ent = self.belief[rows].copy()
        err = rng.random((len(rows), 2)) < self.error_rate
        ent[err[:, 0]] = rng.integers(0, wc.n_entities, err[:, 0].sum())
        rel[err[:, 1]] = rng.integers(0, wc.n_relations, err[:, 1].sum())
        self.query[rows] = np.stack([ent, rel], axis=1)
        n = len(rows)
        search_plan = np.stack(
            [np.full(n, v.search_open), v.entity(ent), v.relation(rel), np.full(n, v.search_close)], 1
        )
        answer_plan = np.stack(
            [np.full(n, v.answer_open), v.entity(ent), np.full(n, v.answer_close), np.zeros(n)], 1
        )
        self.plan[rows] = np.where(searching[:, None], search_plan, answer_plan)
        self.plan_len[rows] = np.where(searching, 4, 3)
        self.pos[rows] = 0


class TabularOracle:
    """Search the chain's next relation until every hop is done, then answer the belief; each
    action is replaced by a uniform one with probability ``error_rate``."""

    grain = "tabular"

    def __init__(self, error_rate: float, rng: np.random.Generator) -> None:
        _check_error_rate(error_rate)
        self.error_rate, self.rng = error_rate, rng

    def begin(self, core: TabularSearchBatch) -> None:
        self.core = core

    def propose(self, inputs: object) -> tuple[np.ndarray, np.ndarray]:
        core, ep = self.core, self.core.ep
        assert ep is not None, "begin() after the core's reset"
        nxt = ep.chain[np.arange(core.batch_size), np.minimum(core.hops_done, ep.chain.shape[1] - 1)]
        act = np.where(core.hops_done < ep.hops, nxt, core.world.config.n_relations)
        noisy = self.rng.random(core.batch_size) < self.error_rate
        act[noisy] = self.rng.integers(0, core.n_actions, noisy.sum())
        return act, np.zeros(core.batch_size)

    def commit(self, tokens: np.ndarray, wrote: np.ndarray) -> None:
        pass


class RandomAgent:
    """Uniform tokens (token grain) or actions (tabular grain)."""

    def __init__(self, grain: str, rng: np.random.Generator) -> None:
        self.grain, self.rng = grain, rng

    def begin(self, core: TokenSearchBatch | TabularSearchBatch) -> None:
        # the agent's grain names its core's
        if self.grain == "token":
            self.n = cast(TokenSearchBatch, core).vocab.size
        else:
            self.n = cast(TabularSearchBatch, core).n_actions
        self.b = core.batch_size

    def propose(self, inputs: object) -> tuple[np.ndarray, np.ndarray]:
        return self.rng.integers(0, self.n, self.b), np.full(self.b, -np.log(self.n))

    def commit(self, tokens: np.ndarray, wrote: np.ndarray) -> None:
        pass
