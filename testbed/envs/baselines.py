"""Oracle and random agents for both grains: the ceiling and the floor of every figure.

The token oracle reads the environment's state (it is an oracle): it searches each hop of the
chain from its current belief, re-searches when the document did not come back, then answers.
With ``error_rate`` > 0 each word it writes is replaced, with that probability, by a random word of
the same kind, and it goes on from the wrong fact without noticing: the imperfect demonstrations
the transformer is warm-started on (one search per hop when retrieval is perfect).
"""

from __future__ import annotations

import numpy as np

from testbed.envs.tabular import TabularSearchBatch
from testbed.envs.tokens import TokenSearchBatch


class TokenOracle:
    """Scripted agent for a ``TokenSearchBatch``; call ``reset`` after the batch's reset."""

    def __init__(self, core: TokenSearchBatch, error_rate: float = 0.0) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate={error_rate!r}: must lie in [0, 1]")
        self.core = core
        self.error_rate = error_rate
        b = core.batch_size
        self.plan = np.zeros((b, 4), dtype=np.int64)
        self.plan_len = np.zeros(b, dtype=np.int64)
        self.pos = np.zeros(b, dtype=np.int64)
        self.belief = np.zeros(b, dtype=np.int64)
        self.hops_done = np.zeros(b, dtype=np.int64)
        self.query = np.zeros((b, 2), dtype=np.int64)

    def reset(self) -> None:
        self.belief[:] = self.core.world.questions["start"][self.core.question]
        self.hops_done[:] = 0
        self.plan_len[:] = 0
        self.pos[:] = 0

    def act(self, rng: np.random.Generator) -> np.ndarray:
        """Next token per environment."""
        empty = self.pos >= self.plan_len
        if empty.any():
            self._make_plans(np.flatnonzero(empty), rng)
        tok = self.plan[np.arange(len(self.pos)), self.pos]
        self.pos += 1
        return tok

    def observe(self, tokens: np.ndarray) -> None:
        """Update beliefs from the documents returned for searches closed by ``tokens``."""
        core, v, world = self.core, self.core.vocab, self.core.world
        rows = np.flatnonzero((tokens == v.search_close) & (core.last_docs[:, 0] >= 0))
        if rows.size == 0:
            return
        subject, relation = self.query[rows, 0], self.query[rows, 1]
        hit = (core.last_docs[rows] == world.doc_id(subject, relation)[:, None]).any(1)
        # a hop is done once its query's document came back, right or (with errors) wrong
        self.belief[rows[hit]] = world.facts[subject[hit], relation[hit]]
        self.hops_done[rows[hit]] += 1
        core.last_docs[rows] = -1

    def _make_plans(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        core, v, world = self.core, self.core.vocab, self.core.world
        wc = world.config
        q = world.questions
        hops = q["hops"][core.question[rows]]
        searching = self.hops_done[rows] < hops
        rel = q["chain"][core.question[rows], np.minimum(self.hops_done[rows], wc.max_hops - 1)]
        ent = self.belief[rows].copy()
        err = rng.random((len(rows), 2)) < self.error_rate
        ent[err[:, 0]] = rng.integers(0, wc.n_entities, err[:, 0].sum())
        rel[err[:, 1]] = rng.integers(0, wc.n_relations, err[:, 1].sum())
        self.query[rows] = np.stack([ent, rel], axis=1)
        search_plan = np.stack(
            [
                np.full(len(rows), v.search_open),
                v.entity(ent),
                v.relation(rel),
                np.full(len(rows), v.search_close),
            ],
            1,
        )
        answer_plan = np.stack(
            [
                np.full(len(rows), v.answer_open),
                v.entity(ent),
                np.full(len(rows), v.answer_close),
                np.zeros(len(rows)),
            ],
            1,
        )
        self.plan[rows] = np.where(searching[:, None], search_plan, answer_plan)
        self.plan_len[rows] = np.where(searching, 4, 3)
        self.pos[rows] = 0


def tabular_oracle(core: TabularSearchBatch) -> np.ndarray:
    """Search the chain's next relation until every hop is done, then answer the belief."""
    q = core.world.questions
    hops = q["hops"][core.question]
    nxt = q["chain"][core.question, np.minimum(core.hops_done, q["chain"].shape[1] - 1)]
    return np.where(core.hops_done < hops, nxt, core.world.config.n_relations)


def run_token_episodes(
    core: TokenSearchBatch, questions: np.ndarray, rng: np.random.Generator, oracle_error: float | None
) -> np.ndarray:
    """Rewards of one episode per environment: the oracle with that error rate, or uniform tokens if None."""
    core.reset(questions)
    oracle = TokenOracle(core, oracle_error) if oracle_error is not None else None
    if oracle:
        oracle.reset()
    rewards = np.zeros(core.batch_size)
    while not core.done.all():
        tok = oracle.act(rng) if oracle else rng.integers(0, core.vocab.size, core.batch_size)
        out = core.step(tok, rng)
        if oracle:
            oracle.observe(tok)
        rewards += out.reward
    return rewards


def run_tabular_episodes(
    core: TabularSearchBatch, questions: np.ndarray, rng: np.random.Generator, oracle: bool
) -> np.ndarray:
    """Rewards of one episode per environment, for the oracle or the uniform random agent."""
    core.reset(questions)
    rewards = np.zeros(core.batch_size)
    while not core.done.all():
        act = tabular_oracle(core) if oracle else rng.integers(0, core.n_actions, core.batch_size)
        rewards += core.step(act, rng)[1]
    return rewards
