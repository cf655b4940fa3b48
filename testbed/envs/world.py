"""A seeded synthetic knowledge world: entities, functional relations, one document per fact, and
multi-hop questions whose answers are entities.

Entity ``e7`` and relation ``r2`` are single words of a small vocabulary shared by every grain.
A fact is (subject, relation, object) with ``object = facts[subject, relation]``; its document is
the three words ``subject relation object``. A question of h hops is a start entity and a chain of
h relations, written ``r_h ... r_1 e`` ("the r_h of ... the r_1 of e"); its answer follows the chain.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from testbed.config import check_positive, check_range, fail

# Special tokens, in id order; words follow them.
SPECIALS = (
    "<pad>",
    "<bos>",
    "<search>",
    "</search>",
    "<answer>",
    "</answer>",
    "<information>",
    "</information>",
    ";",
    "<invalid>",
)


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Size and shape of the synthetic world. Same config and seed, same world."""

    n_entities: int = 24
    n_relations: int = 4
    hop_weights: tuple[float, ...] = (0.0, 1.0)  # P(h = 1), P(h = 2), ...
    n_questions: int = 96
    held_out_frac: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "n_relations", "n_questions")
        if self.n_entities < 2:
            fail(self, "n_entities", self.n_entities, "must be >= 2")
        if not self.hop_weights or min(self.hop_weights) < 0 or sum(self.hop_weights) <= 0:
            fail(self, "hop_weights", self.hop_weights, "must be non-negative with a positive sum")
        check_range(self, "held_out_frac", 0.0, 0.9)

    @property
    def max_hops(self) -> int:
        return len(self.hop_weights)


class Vocab:
    """Token ids: the specials, then entity words ``e0..``, then relation words ``r0..``."""

    def __init__(self, n_entities: int, n_relations: int) -> None:
        self.words = [
            *SPECIALS,
            *(f"e{i}" for i in range(n_entities)),
            *(f"r{j}" for j in range(n_relations)),
        ]
        self.ids = {w: i for i, w in enumerate(self.words)}
        for name in SPECIALS:
            setattr(self, _attr(name), self.ids[name])
        self.entity0 = len(SPECIALS)
        self.relation0 = self.entity0 + n_entities
        self.size = len(self.words)

    def entity(self, e: np.ndarray | int) -> np.ndarray | int:
        return e + self.entity0

    def relation(self, r: np.ndarray | int) -> np.ndarray | int:
        return r + self.relation0

    def is_entity(self, tok: np.ndarray) -> np.ndarray:
        return (tok >= self.entity0) & (tok < self.relation0)

    def is_relation(self, tok: np.ndarray) -> np.ndarray:
        return (tok >= self.relation0) & (tok < self.size)

    def is_word(self, tok: np.ndarray) -> np.ndarray:
        return (tok >= self.entity0) & (tok < self.size)

    def decode(self, ids) -> str:
        return " ".join(self.words[int(i)] for i in ids)


def _attr(special: str) -> str:
    named = {"<pad>": "pad", "<bos>": "bos", ";": "sep", "<invalid>": "invalid"}
    if special in named:
        return named[special]
    return special.strip("<>/").replace("information", "info") + (
        "_close" if special.startswith("</") else "_open"
    )


class World:
    """Facts, documents and questions drawn from ``WorldConfig``."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        n_e, n_r = config.n_entities, config.n_relations
        # facts[e, r]: a different entity, so no chain loops on the spot.
        offset = rng.integers(1, n_e, size=(n_e, n_r))
        self.facts = (np.arange(n_e)[:, None] + offset) % n_e
        self.vocab = Vocab(n_e, n_r)
        self.docs = np.stack(  # doc id d = e * n_r + r; [n_docs, 3] = (subject, relation, object)
            [np.repeat(np.arange(n_e), n_r), np.tile(np.arange(n_r), n_e), self.facts.reshape(-1)], axis=1
        )
        self.questions = self._draw_questions(rng)
        n_held = round(config.held_out_frac * config.n_questions)
        self.held_out = np.arange(config.n_questions - n_held, config.n_questions)
        self.train = np.arange(config.n_questions - n_held)

    def _draw_questions(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        cfg = self.config
        p = np.asarray(cfg.hop_weights, dtype=float)
        hops = rng.choice(np.arange(1, cfg.max_hops + 1), size=cfg.n_questions, p=p / p.sum())
        start = rng.integers(0, cfg.n_entities, size=cfg.n_questions)
        chain = rng.integers(0, cfg.n_relations, size=(cfg.n_questions, cfg.max_hops))
        chain[np.arange(cfg.max_hops)[None, :] >= hops[:, None]] = -1
        answer = start.copy()
        for h in range(cfg.max_hops):
            live = chain[:, h] >= 0
            answer[live] = self.facts[answer[live], chain[live, h]]
        return {"hops": hops, "start": start, "chain": chain, "answer": answer}

    def doc_id(self, subject: np.ndarray, relation: np.ndarray) -> np.ndarray:
        return subject * self.config.n_relations + relation

    def question_tokens(self, q: int) -> list[int]:
        """``<bos> r_h ... r_1 e``: the prompt of question ``q``."""
        hops = int(self.questions["hops"][q])
        chain = self.questions["chain"][q, :hops]
        words = [int(self.vocab.relation(r)) for r in chain[::-1]]
        return [self.vocab.bos, *words, int(self.vocab.entity(self.questions["start"][q]))]

    def doc_text(self, d: int) -> str:
        s, r, o = self.docs[d]
        return f"e{s} r{r} e{o}"
