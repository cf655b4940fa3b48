"""The token-level search task, batched: the agent writes one token per step, numpy over the batch.

Protocol (Search-R1's, on the world's small vocabulary)::

    <bos> r1 r0 e5 | <search> e5 r0 </search> <information> e5 r0 e9 ; ... </information>
                     <search> e9 r1 </search> <information> ... </information> <answer> e2 </answer>

Left of ``|`` is the prompt. A closed ``<search>`` segment calls the retriever; its documents come
back wrapped in ``<information>`` (environment tokens, to be masked from the loss). Words outside
tags are free "thinking". ``<answer> ... </answer>`` ends the episode with the reward.

Malformed actions are part of the simulation, never an exception: a closing tag with no opening
one, a tag inside a segment (nesting), an empty or over-long query or answer, a special token that
is not a tag, ``<information>`` written by the agent, or an answer before any search when
``require_search``. Each gets the corrective observation ``<information> <invalid> </information>``,
uses a turn, and (once per episode) costs ``format_penalty``. A turn is a closed search or an
invalid action; the action that would exceed ``max_turns`` truncates the episode, as does reaching
``max_len`` tokens. Rewards lie in [-format_penalty, 1].
"""

from __future__ import annotations

import dataclasses

import numpy as np

from testbed.envs.retriever import Retriever, SimulatedRetriever
from testbed.envs.task import TaskConfig
from testbed.envs.world import Episodes, World

FREE, SEARCH, ANSWER = 0, 1, 2


@dataclasses.dataclass
class TokenStep:
    """What the batch returns for one agent token per environment."""

    obs: np.ndarray  # [B, info_len] environment tokens to append (padded with <pad>)
    obs_len: np.ndarray  # [B] how many of them are real (0: nothing appended)
    reward: np.ndarray  # [B] float, non-zero only when an episode ends
    terminated: np.ndarray  # [B] bool: answered this step
    truncated: np.ndarray  # [B] bool: hit max_turns or max_len this step


class TokenSearchBatch:
    """B independent episodes of the token-level task, stepped together."""

    grain = "token"

    def __init__(
        self,
        config: TaskConfig,
        batch_size: int,
        world: World | None = None,
        retriever: Retriever | None = None,
        closed_book: bool = False,
    ) -> None:
        """``closed_book``: every search returns random documents of the episode's world (the
        probe of what the policy answers without searching)."""
        self.config = config
        self.world = world or World(config.world)
        self.vocab = self.world.vocab
        self.retriever = retriever or SimulatedRetriever(self.world, config.retriever)
        self.closed_book = closed_book
        self.info_len = config.info_len
        self.ep: Episodes | None = None
        self._alloc(batch_size)

    @property
    def capacity(self) -> int:
        """Longest context an episode can reach: max_len plus one last observation."""
        return self.config.max_len + self.info_len

    def _alloc(self, batch_size: int) -> None:
        cfg = self.config
        self.batch_size = b = batch_size
        self.question = np.zeros(b, dtype=np.int64)
        self.phase = np.zeros(b, dtype=np.int8)
        self.seg = np.full((b, max(cfg.max_query_len, cfg.max_answer_len) + 1), -1, dtype=np.int64)
        self.seg_len = np.zeros(b, dtype=np.int64)
        self.turns = np.zeros(b, dtype=np.int64)
        self.searches = np.zeros(b, dtype=np.int64)
        self.invalid = np.zeros(b, dtype=np.int64)
        self.length = np.zeros(b, dtype=np.int64)
        self.done = np.ones(b, dtype=bool)
        self.last_docs = np.full((b, cfg.retriever.top_k), -1, dtype=np.int64)

    def prompt_tokens(self, row: int) -> list[int]:
        return self.world.question_tokens(self.ep, row)

    def load_episodes(self, ids: np.ndarray) -> None:
        self.ep = self.world.episodes(ids)

    def reset(self, episodes: np.ndarray) -> list[list[int]]:
        """Start one episode per environment on the given episode ids; returns the prompts."""
        episodes = np.asarray(episodes, dtype=np.int64)
        if episodes.shape != (self.batch_size,):
            raise ValueError(f"episodes: expected shape ({self.batch_size},), got {episodes.shape}")
        self.question[:] = episodes
        self.load_episodes(episodes)
        self.phase[:] = FREE
        self.seg[:] = -1
        self.seg_len[:] = 0
        self.turns[:] = 0
        self.searches[:] = 0
        self.invalid[:] = 0
        self.done[:] = False
        self.last_docs[:] = -1
        prompts = [self.prompt_tokens(i) for i in range(self.batch_size)]
        self.length[:] = [len(p) for p in prompts]
        return prompts

    def step(
        self, tokens: np.ndarray, rng: np.random.Generator, active: np.ndarray | None = None
    ) -> TokenStep:
        """Append one agent token per environment; ignored where the episode is over or not ``active``."""
        cfg, v = self.config, self.vocab
        b = self.batch_size
        tok = np.asarray(tokens, dtype=np.int64)
        live = ~self.done if active is None else ~self.done & active
        self.length += live
        word = v.is_word(tok)
        free, in_search, in_answer = (
            (self.phase == FREE) & live,
            (self.phase == SEARCH) & live,
            (self.phase == ANSWER) & live,
        )
        segment = in_search | in_answer

        answer_early = cfg.require_search & (self.searches == 0)
        open_search = free & (tok == v.search_open)
        open_answer = free & (tok == v.answer_open) & ~answer_early
        append = segment & word
        seg_cap = np.where(in_search, cfg.max_query_len, cfg.max_answer_len)
        overflow = append & (self.seg_len >= seg_cap)
        close_search = in_search & (tok == v.search_close) & (self.seg_len > 0)
        close_answer = in_answer & (tok == v.answer_close) & (self.seg_len > 0)
        invalid = live & ~(
            (free & word) | open_search | open_answer | (append & ~overflow) | close_search | close_answer
        )

        rows = np.flatnonzero(append & ~overflow)
        self.seg[rows, self.seg_len[rows]] = tok[rows]
        self.seg_len[rows] += 1
        self.phase[open_search] = SEARCH
        self.phase[open_answer] = ANSWER
        opened = open_search | open_answer
        self.seg_len[opened] = 0
        self.seg[opened] = -1

        obs = np.full((b, self.info_len), v.pad, dtype=np.int64)
        obs_len = np.zeros(b, dtype=np.int64)
        acts = close_search | invalid
        over_turns = acts & (self.turns >= cfg.max_turns)
        acts &= ~over_turns
        self.turns += acts
        searched = np.flatnonzero(close_search & acts)
        self.searches[searched] += 1
        if searched.size:
            self._retrieve(searched, obs, obs_len, rng)
        bad = invalid & acts
        obs[bad, :3] = (v.info_open, v.invalid, v.info_close)
        obs_len[bad] = 3
        self.invalid += invalid
        self.phase[close_search | invalid | close_answer] = FREE
        self.length += obs_len

        reward = np.zeros(b)
        reward[close_answer] = self._score(close_answer)
        truncated = live & ~close_answer & (over_turns | (self.length >= cfg.max_len))
        ended = close_answer | truncated
        reward[ended] -= cfg.format_penalty * (self.invalid[ended] > 0)
        self.done |= ended
        obs_len[ended] = 0
        return TokenStep(obs, obs_len, reward, close_answer, truncated)

    def _retrieve(
        self, rows: np.ndarray, obs: np.ndarray, obs_len: np.ndarray, rng: np.random.Generator
    ) -> None:
        """Write the retrieval observation of each searching row into ``obs``/``obs_len``."""
        v, k = self.vocab, self.config.retriever.top_k
        queries = self.seg[rows, : self.config.max_query_len]
        if self.closed_book:
            docs = rng.integers(0, self.world.n_docs, (len(rows), k))
        else:
            docs = self.retriever.retrieve(queries, rng)
        self.last_docs[rows] = docs
        triples = self.world.doc_triples(self.ep, rows, docs)  # [n, k, 3]
        words = np.stack(
            [
                v.entity(triples[..., 0]),
                v.relation(triples[..., 1]),
                v.entity(triples[..., 2]),
                np.full(triples.shape[:2], v.sep),
            ],
            axis=-1,
        ).reshape(len(rows), 4 * k)[:, :-1]
        obs[rows, 0] = v.info_open
        obs[rows, 1 : 1 + words.shape[1]] = words
        obs[rows, -1] = v.info_close
        obs_len[rows] = self.info_len

    def _score(self, rows_mask: np.ndarray) -> np.ndarray:
        """EM or F1 of the closed answers against the single-word gold answers."""
        rows = np.flatnonzero(rows_mask)
        gold = self.vocab.entity(self.ep.answer[rows])
        seg = self.seg[rows, : self.config.max_answer_len]
        n = self.seg_len[rows]
        if self.config.reward == "em":
            return ((n == 1) & (seg[:, 0] == gold)).astype(float)
        hits = ((seg == gold[:, None]) & (np.arange(seg.shape[1])[None, :] < n[:, None])).any(1)
        precision = hits / np.maximum(n, 1)
        return np.where(hits, 2 * precision / (precision + 1), 0.0)
