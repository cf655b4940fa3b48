"""The token-level search task, batched: the agent writes one token per step, numpy over the batch.

Protocol (Search-R1's, on the world's small vocabulary)::

    <bos> r1 r0 e5 | <search> e5 r0 </search> <information> e5 r0 e9 ; ... </information>
                     <search> e9 r1 </search> <information> ... </information> <answer> e2 </answer>

Left of ``|`` is the prompt. A closed ``<search>`` segment calls the retriever; its documents come
back wrapped in ``<information>`` (environment tokens, to be masked from the loss). Words outside
tags are free "thinking". ``<answer> ... </answer>`` ends the episode with the reward.

The state machine (``TokenSearchBatch``) is the same for every token-level task; what a task
supplies is a ``TokenTask``: its vocabulary's tags, the prompts of a batch of episodes, the
observation of a search and the score of an answer. ``SimulatedTask`` is the synthetic world with
its retriever; ``testbed.envs.text.task.TextTask`` is real text with BM25 or a server.

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
from typing import Literal, Protocol

import numpy as np

from testbed.envs.retriever import Retriever, SimulatedRetriever
from testbed.envs.streams import Streams, member_parts
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


class TagVocab(Protocol):
    """What the state machine asks of a task's vocabulary: the tag ids, ``<pad>``, ``<invalid>``,
    the size and the word test (``testbed.envs.world.Vocab``, or a tokenizer's ``TextVocab``)."""

    pad: int
    search_open: int
    search_close: int
    answer_open: int
    answer_close: int
    info_open: int
    info_close: int
    invalid: int
    size: int

    def is_word(self, tok: np.ndarray) -> np.ndarray: ...


class TokenTask(Protocol):
    """The parts of a token-level task (see the module docstring). ``search`` and ``score`` get
    the rows concerned and their segments (``seg`` [n, L] token ids, ``seg_len`` [n])."""

    @property
    def vocab(self) -> TagVocab: ...

    info_len: int
    top_k: int

    def load(self, episodes: np.ndarray) -> list[list[int]]: ...

    def search(
        self,
        rows: np.ndarray,
        seg: np.ndarray,
        seg_len: np.ndarray,
        closed_book: bool,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def score(self, rows: np.ndarray, seg: np.ndarray, seg_len: np.ndarray, reward: str) -> np.ndarray: ...


class SimulatedTask:
    """The synthetic world's task: prompts ``<bos> r_h ... r_1 e``, the retriever's documents
    rendered from each episode's own facts, answers scored against the single-word gold entity."""

    def __init__(
        self, config: TaskConfig, world: World | None = None, retriever: Retriever | None = None
    ) -> None:
        self.config = config
        self.world = world or World(config.world)
        self.vocab = self.world.vocab
        self.retriever = retriever or SimulatedRetriever(self.world, config.retriever)
        self.info_len, self.top_k = config.info_len, config.retriever.top_k
        self.ep: Episodes | None = None

    def load(self, episodes: np.ndarray) -> list[list[int]]:
        self.ep = self.world.episodes(episodes)
        return [self.world.question_tokens(self.ep, i) for i in range(len(episodes))]

    def search(
        self,
        rows: np.ndarray,
        seg: np.ndarray,
        seg_len: np.ndarray,
        closed_book: bool,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(observation tokens [n, info_len], their lengths [n], document ids [n, k])."""
        v, k = self.vocab, self.top_k
        assert self.ep is not None, "load() the episodes first"
        if closed_book:
            docs = rng.integers(0, self.world.n_docs, (len(rows), k))
        else:
            docs = self.retriever.retrieve(seg[:, : self.config.max_query_len], rng)
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
        obs = np.concatenate(
            [np.full((len(rows), 1), v.info_open), words, np.full((len(rows), 1), v.info_close)], axis=1
        )
        return obs, np.full(len(rows), self.info_len), docs

    def score(self, rows: np.ndarray, seg: np.ndarray, seg_len: np.ndarray, reward: str) -> np.ndarray:
        """EM or F1 of the closed answers against the single-word gold answers."""
        assert self.ep is not None, "load() the episodes first"
        gold = self.vocab.entity(self.ep.answer[rows])
        seg = seg[:, : self.config.max_answer_len]
        if reward == "em":
            return ((seg_len == 1) & (seg[:, 0] == gold)).astype(float)
        hits = ((seg == gold[:, None]) & (np.arange(seg.shape[1])[None, :] < seg_len[:, None])).any(1)
        precision = hits / np.maximum(seg_len, 1)
        return np.where(hits, 2 * precision / (precision + 1), 0.0)


class TokenSearchBatch:
    """B independent episodes of a token-level task, stepped together."""

    grain: Literal["token"] = "token"

    def __init__(
        self,
        config: TaskConfig,
        batch_size: int,
        world: World | None = None,
        retriever: Retriever | None = None,
        closed_book: bool = False,
        task: TokenTask | None = None,
    ) -> None:
        """``task``: the task's parts (default: the simulated task over ``world`` and
        ``retriever``). ``closed_book``: every search returns random documents of the episode's
        world (the probe of what the policy answers without searching)."""
        self.config = config
        self.task = task or SimulatedTask(config, world, retriever)
        self.vocab = self.task.vocab
        self.closed_book = closed_book
        self.info_len = self.task.info_len
        b = self.batch_size = batch_size
        self.question = np.zeros(b, dtype=np.int64)
        self.phase = np.zeros(b, dtype=np.int8)
        self.seg = np.full((b, max(config.max_query_len, config.max_answer_len) + 1), -1, dtype=np.int64)
        self.seg_len = np.zeros(b, dtype=np.int64)
        self.turns = np.zeros(b, dtype=np.int64)
        self.searches = np.zeros(b, dtype=np.int64)
        self.invalid = np.zeros(b, dtype=np.int64)
        self.length = np.zeros(b, dtype=np.int64)
        self.done = np.ones(b, dtype=bool)
        self.last_docs = np.full((b, self.task.top_k), -1, dtype=np.int64)

    @property
    def world(self) -> World | None:
        return getattr(self.task, "world", None)

    @property
    def ep(self) -> Episodes | None:
        return getattr(self.task, "ep", None)

    @property
    def capacity(self) -> int:
        """Longest context an episode can reach: max_len plus one last observation."""
        return self.config.max_len + self.info_len

    def reset(self, episodes: np.ndarray) -> list[list[int]]:
        """Start one episode per environment on the given episode ids; returns the prompts."""
        episodes = np.asarray(episodes, dtype=np.int64)
        if episodes.shape != (self.batch_size,):
            raise ValueError(f"episodes: expected shape ({self.batch_size},), got {episodes.shape}")
        self.question[:] = episodes
        prompts = self.task.load(episodes)
        self.phase[:] = FREE
        self.seg[:] = -1
        self.seg_len[:] = 0
        self.turns[:] = 0
        self.searches[:] = 0
        self.invalid[:] = 0
        self.done[:] = False
        self.last_docs[:] = -1
        self.length[:] = [len(p) for p in prompts]
        return prompts

    def step(self, tokens: np.ndarray, rng: Streams, active: np.ndarray | None = None) -> TokenStep:
        """Append one agent token per environment; ignored where the episode is over or not
        ``active``. ``rng``: one generator, or one per population member (``testbed.envs.streams``)."""
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
        for part, stream in member_parts(searched, b, rng):
            found, found_len, docs = self.task.search(
                part, self.seg[part], self.seg_len[part], self.closed_book, stream
            )
            obs[part, : found.shape[1]] = found
            obs_len[part] = found_len
            self.last_docs[part, : docs.shape[1]] = docs
        bad = invalid & acts
        obs[bad, :3] = (v.info_open, v.invalid, v.info_close)
        obs_len[bad] = 3
        self.invalid += invalid
        self.phase[close_search | invalid | close_answer] = FREE
        self.length += obs_len

        reward = np.zeros(b)
        answered = np.flatnonzero(close_answer)
        reward[answered] = self.task.score(answered, self.seg[answered], self.seg_len[answered], cfg.reward)
        truncated = live & ~close_answer & (over_turns | (self.length >= cfg.max_len))
        ended = close_answer | truncated
        reward[ended] -= cfg.format_penalty * (self.invalid[ended] > 0)
        self.done |= ended
        obs_len[ended] = 0
        return TokenStep(obs, obs_len, reward, close_answer, truncated)
