"""Retrievers: a query of words in, the ids of the top-k documents of the world's corpus out.

Every retriever answers a whole batch at once: ``retrieve(queries, rng) -> doc ids [B, k]`` where
``queries`` is an int array [B, L] of word ids padded with -1. The simulated retriever reads the
query as a bag of words; a lexical retriever (BM25) plugs into the same protocol.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Protocol

import numpy as np

from testbed.config import added_field, check_positive, check_range, fail, field
from testbed.envs.world import World


class Retriever(Protocol):
    top_k: int

    def retrieve(self, queries: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class RetrieverConfig:
    """Noise knobs of the simulated retriever.

    recall: P(the queried fact's document is in the top k), when the query names one entity and
    one relation. rank_noise: P(that document's rank is uniform in the k slots rather than first).
    distractor_rate: P(a remaining slot holds a look-alike, a fact sharing the subject or the
    relation) rather than a random document.
    """

    top_k: int = field(
        3,
        help="Documents each search returns (the observation's length grows with it); > 0.",
        source="Search-R1 (arXiv 2503.09516), retriever.topk=3",
    )
    recall: float = field(
        1.0,
        help="P(the queried fact's document is among the top k) for a query naming one entity and one "
        "relation; in [0, 1].",
    )
    rank_noise: float = field(
        1.0, help="P(that document's rank is uniform over the k slots rather than first); in [0, 1]."
    )
    distractor_rate: float = field(
        0.8,
        help="P(each other slot holds a look-alike, a fact sharing the subject or the relation, rather "
        "than a random document); in [0, 1].",
    )
    url: str | None = added_field(
        None,
        help="The text task (policy.kind='hf') searches this retrieval server (Search-R1's POST "
        "/retrieve, e.g. http://127.0.0.1:8000/retrieve) for top_k documents; None: BM25 in-process "
        "over the task's corpus.",
        source="Search-R1's retriever.url",
    )
    timeout: float = added_field(
        10.0,
        help="Seconds the retrieval server at url has to answer one batch of searches, all in (connect, "
        "send, read); in (0, 3600].",
    )

    def __post_init__(self) -> None:
        check_positive(self, "top_k")
        for f in ("recall", "rank_noise", "distractor_rate"):
            check_range(self, f, 0.0, 1.0)
        check_range(self, "timeout", 1e-3, 3600.0)
        if self.url is not None and not re.fullmatch(r"https?://[^/\s:]+(:\d+)?(/\S*)?", self.url):
            fail(self, "url", self.url, "expected http://host:port/path, e.g. http://127.0.0.1:8000/retrieve")


class SimulatedRetriever:
    """Vectorised simulated search over the world's one-fact documents."""

    def __init__(self, world: World, config: RetrieverConfig | None = None) -> None:
        self.world = world
        self.config = config = config or RetrieverConfig()
        self.top_k = config.top_k

    def parse(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(subject, relation, well_formed) per query: exactly one entity and one relation word."""
        vocab = self.world.vocab
        is_e = vocab.is_entity(queries)
        is_r = vocab.is_relation(queries)
        ok = (is_e.sum(1) == 1) & (is_r.sum(1) == 1)
        subject = np.where(is_e, queries - vocab.entity0, 0).sum(1)
        relation = np.where(is_r, queries - vocab.relation0, 0).sum(1)
        return subject, relation, ok

    def retrieve(self, queries: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg, world = self.config, self.world
        n_e, n_r = world.config.n_entities, world.config.n_relations
        b, k = queries.shape[0], cfg.top_k
        subject, relation, ok = self.parse(queries)
        # Look-alikes share the subject (other relation) or the relation (other subject).
        share_subject = rng.random((b, k)) < 0.5
        other_r = (relation[:, None] + rng.integers(1, max(n_r, 2), (b, k))) % n_r
        other_e = (subject[:, None] + rng.integers(1, n_e, (b, k))) % n_e
        lookalike = np.where(
            share_subject, world.doc_id(subject[:, None], other_r), world.doc_id(other_e, relation[:, None])
        )
        random_doc = rng.integers(0, len(world.docs), (b, k))
        use_lookalike = ok[:, None] & (rng.random((b, k)) < cfg.distractor_rate)
        docs = np.where(use_lookalike, lookalike, random_doc)
        hit = ok & (rng.random(b) < cfg.recall)
        slot = np.where(rng.random(b) < cfg.rank_noise, rng.integers(0, k, b), 0)
        rows = np.flatnonzero(hit)
        docs[rows, slot[rows]] = world.doc_id(subject[rows], relation[rows])
        return docs
