"""A seeded synthetic knowledge world: entities, functional relations, one document per fact, and
multi-hop questions whose answers are entities.

Entity ``e7`` and relation ``r2`` are single words of a small vocabulary shared by every grain.
A fact is (subject, relation, object) with ``object = facts[subject, relation]``; its document is
the three words ``subject relation object``. A question of h hops is a start entity and a chain of
h relations, written ``r_h ... r_1 e`` ("the r_h of ... the r_1 of e"); its answer follows the chain.
"""

from __future__ import annotations

import dataclasses
import numbers
import operator
from typing import overload

import numpy as np

from testbed.config import check_choice, check_positive, check_range, check_seed, fail, field

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
WORLD_KINDS = ("procedural", "fixed")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Size and shape of the synthetic world, and whether facts are redrawn per episode.

    ``kind="procedural"`` (default): every episode draws its own facts and question from its episode
    id, so no answer can be memorised and only search solves the task; a share
    ``parametric_share`` of the facts stays fixed across episodes (knowledge a model can hold "by
    heart"). ``kind="fixed"``: one world of ``n_questions`` questions split into training and
    held-out ones, the case of facts the model may memorise. Same config and seed, same episodes.
    """

    kind: str = field(
        "procedural",
        help="procedural: each episode draws its own facts and question from its id (only search "
        "solves it); fixed: one world of n_questions questions, split into training and held-out.",
    )
    n_entities: int = field(24, help="Entities e0, e1, ... (words of the vocabulary); >= 2.")
    n_relations: int = field(
        4, help="Functional relations r0, r1, ...: each maps every entity to one entity; > 0."
    )
    hop_weights: tuple[float, ...] = field(
        (0.0, 1.0),
        help="Relative frequency of 1-, 2-, ... hop questions (P(h = 1), P(h = 2), ...); non-negative, "
        "positive sum; its length is the longest chain. On the command line: 0.5+0.5.",
    )
    parametric_share: float = field(
        0.0,
        help="kind procedural: share of facts that stay the same in every episode, knowledge a model can "
        "hold by heart rather than search for; in [0, 1].",
    )
    n_questions: int = field(96, help="kind fixed: questions in the one world, training plus held-out; > 0.")
    held_out_frac: float = field(
        0.25,
        help="kind fixed: share of the questions held out for evaluation; in [0, 0.9], leaving at least "
        "one question on each side.",
    )
    seed: int = field(
        0, help="Seed of the world's facts and questions (not of training: that is the run's seed)."
    )

    def __post_init__(self) -> None:
        check_choice(self, "kind", WORLD_KINDS)
        check_positive(self, "n_relations", "n_questions")
        check_seed(self, "seed")
        if self.n_entities < 2:
            fail(self, "n_entities", self.n_entities, "must be >= 2")
        check_buildable(self)
        if not self.hop_weights or min(self.hop_weights) < 0 or sum(self.hop_weights) <= 0:
            fail(self, "hop_weights", self.hop_weights, "must be non-negative with a positive sum")
        check_range(self, "parametric_share", 0.0, 1.0)
        check_range(self, "held_out_frac", 0.0, 0.9)
        if self.kind == "fixed":
            n_held = round(self.held_out_frac * self.n_questions)
            if n_held < 1 or n_held >= self.n_questions:
                fail(
                    self,
                    "held_out_frac",
                    self.held_out_frac,
                    "must leave >= 1 held-out and >= 1 training question",
                )

    @property
    def max_hops(self) -> int:
        return len(self.hop_weights)


# The largest world that can be built: every word is a row of the policy's embedding and output
# layers, and a procedural episode draws all n_entities x n_relations facts of its own world.
MAX_WORDS = 2**16
MAX_FACTS = 2**20


def check_buildable(cfg: WorldConfig) -> None:
    """ConfigError naming the larger of n_entities and n_relations when the world is too big."""
    n_e, n_r = cfg.n_entities, cfg.n_relations
    name = "n_relations" if n_r >= n_e else "n_entities"
    words = len(SPECIALS) + n_e + n_r
    if words > MAX_WORDS:
        why = f"{len(SPECIALS)} specials + {n_e} entities + {n_r} relations = {words} words"
        fail(cfg, name, getattr(cfg, name), f"the vocabulary ({why}) must stay <= {MAX_WORDS} words")
    if n_e * n_r > MAX_FACTS:
        why = f"{n_e} entities x {n_r} relations = {n_e * n_r} facts per world"
        fail(cfg, name, getattr(cfg, name), f"{why}; must stay <= {MAX_FACTS}")


class Vocab:
    """Token ids: the specials, then entity words ``e0..``, then relation words ``r0..``."""

    # the specials' ids, set in __init__ under the names of ``_attr``
    pad: int
    bos: int
    search_open: int
    search_close: int
    answer_open: int
    answer_close: int
    info_open: int
    info_close: int
    sep: int
    invalid: int

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

    @overload
    def entity(self, e: int) -> int: ...
    @overload
    def entity(self, e: np.ndarray) -> np.ndarray: ...
    def entity(self, e: np.ndarray | int) -> np.ndarray | int:
        return e + self.entity0

    @overload
    def relation(self, r: int) -> int: ...
    @overload
    def relation(self, r: np.ndarray) -> np.ndarray: ...
    def relation(self, r: np.ndarray | int) -> np.ndarray | int:
        return r + self.relation0

    def is_entity(self, tok: np.ndarray) -> np.ndarray:
        return (tok >= self.entity0) & (tok < self.relation0)

    def is_relation(self, tok: np.ndarray) -> np.ndarray:
        return (tok >= self.relation0) & (tok < self.size)

    def is_word(self, tok: np.ndarray) -> np.ndarray:
        return (tok >= self.entity0) & (tok < self.size)

    def decode(self, ids) -> str:
        """The words of token ids; a ValueError names an id outside the vocabulary."""
        ids = [operator.index(i) for i in ids]  # an integer of any kind; a float is refused
        bad = [i for i in ids if not 0 <= i < self.size]
        if bad:
            raise ValueError(f"token id {bad[0]}: not in the vocabulary (ids 0..{self.size - 1})")
        return " ".join(self.words[i] for i in ids)


def episode_ids(ids: object) -> np.ndarray:
    """``ids`` as int64 episode ids; a ValueError names the first that is not an int in
    [0, 2**63) (checked before conversion, which would wrap ``2**63`` round to a negative id)."""
    raw = np.asarray(ids)
    if raw.dtype.kind == "O" and all(isinstance(v, numbers.Integral) for v in raw.flat):
        bad = [int(v) for v in raw.flat if not 0 <= int(v) < 2**63]  # Python ints: no wrap-around
    elif raw.dtype.kind == "u":
        bad = [int(v) for v in raw[raw >= np.uint64(2**63)]]
    elif raw.dtype.kind == "i":
        bad = [int(v) for v in raw[raw < 0]]
    else:
        raise ValueError(f"episode ids: expected integers, got {raw.dtype} values")
    if bad:
        raise ValueError(f"episode id {bad[0]}: must be an int in [0, 2**63)")
    return raw.astype(np.int64)


def _attr(special: str) -> str:
    named = {"<pad>": "pad", "<bos>": "bos", ";": "sep", "<invalid>": "invalid"}
    if special in named:
        return named[special]
    return special.strip("<>/").replace("information", "info") + (
        "_close" if special.startswith("</") else "_open"
    )


def _follow_chain(facts: np.ndarray, start: np.ndarray, chain: np.ndarray) -> np.ndarray:
    """Where each row's relation chain (-1 past its hops) leads from its start, in its own world
    ``facts[row]``: the answer of its question."""
    answer = start.copy()
    rows = np.arange(len(start))
    for h in range(chain.shape[1]):
        live = chain[:, h] >= 0
        answer[live] = facts[rows[live], answer[live], chain[live, h]]
    return answer


@dataclasses.dataclass
class Episodes:
    """The worlds and questions of B episodes (rows may repeat: a GRPO group shares its episode).

    ``facts[b, e, r]`` is the r-relative of entity e in row b's world; ``chain[b]`` holds the
    question's relations in order, -1 past ``hops[b]``; ``answer[b]`` follows the chain from ``start[b]``.
    """

    ids: np.ndarray
    facts: np.ndarray
    start: np.ndarray
    chain: np.ndarray
    hops: np.ndarray
    answer: np.ndarray


class World:
    """The facts, documents and questions that episodes are drawn from (see ``WorldConfig``).

    An episode is named by an int id. Fixed world: the id is a question index, ``train`` and
    ``held_out`` are the two splits. Procedural world: the id seeds the episode's own facts and
    question; training ids are even and evaluation ids odd, so evaluation episodes are never
    trained on. ``facts`` and ``docs`` are the fixed world (in a procedural world, the facts that
    stay fixed are those where ``fixed_facts`` is True). Document id d = e * n_relations + r is
    the fact (e, r, facts[e, r]) of the episode's world.
    """

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        n_e, n_r = config.n_entities, config.n_relations
        # facts[e, r]: a different entity, so no chain loops on the spot.
        self.facts = self._draw_facts(rng)
        self.vocab = Vocab(n_e, n_r)
        self.n_docs = n_e * n_r
        self.docs = np.stack(  # [n_docs, 3] = (subject, relation, object) of the fixed world
            [np.repeat(np.arange(n_e), n_r), np.tile(np.arange(n_r), n_e), self.facts.reshape(-1)], axis=1
        )
        self.questions = self._draw_questions(rng, config.n_questions)
        n_held = round(config.held_out_frac * config.n_questions)
        self.held_out = np.arange(config.n_questions - n_held, config.n_questions)
        self.train = np.arange(config.n_questions - n_held)
        self.fixed_facts = rng.random((n_e, n_r)) < config.parametric_share

    @property
    def procedural(self) -> bool:
        return self.config.kind == "procedural"

    def _draw_facts(self, rng: np.random.Generator) -> np.ndarray:
        n_e, n_r = self.config.n_entities, self.config.n_relations
        return (np.arange(n_e)[:, None] + rng.integers(1, n_e, size=(n_e, n_r))) % n_e

    def _draw_questions(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """``n`` questions of the fixed world."""
        cfg = self.config
        p = np.asarray(cfg.hop_weights, dtype=float)
        hops = rng.choice(np.arange(1, cfg.max_hops + 1), size=n, p=p / p.sum())
        start = rng.integers(0, cfg.n_entities, size=n)
        chain = rng.integers(0, cfg.n_relations, size=(n, cfg.max_hops))
        chain[np.arange(cfg.max_hops)[None, :] >= hops[:, None]] = -1
        answer = _follow_chain(np.broadcast_to(self.facts, (n, *self.facts.shape)), start, chain)
        return {"hops": hops, "start": start, "chain": chain, "answer": answer}

    # -- episodes --------------------------------------------------------------------------------
    def episodes(self, ids: np.ndarray) -> Episodes:
        """The world and question of each episode id (drawn once per distinct id)."""
        ids = episode_ids(ids)
        if not self.procedural:
            bad = ids[(ids < 0) | (ids >= self.config.n_questions)]
            if bad.size:
                raise ValueError(
                    f"episode id {int(bad[0])}: a fixed world has questions 0..{self.config.n_questions - 1}"
                )
            q = self.questions
            facts = np.broadcast_to(self.facts, (len(ids), *self.facts.shape))
            return Episodes(ids, facts, q["start"][ids], q["chain"][ids], q["hops"][ids], q["answer"][ids])
        unique, inverse = np.unique(ids, return_inverse=True)
        cfg = self.config
        n_e, n_r, h = cfg.n_entities, cfg.n_relations, cfg.max_hops
        u = self._uniforms(unique, n_e * n_r + 1 + 1 + h)  # one stream of uniforms per episode
        offset = 1 + (u[:, : n_e * n_r] * (n_e - 1)).astype(np.int64).reshape(-1, n_e, n_r)
        drawn = (np.arange(n_e)[None, :, None] + offset) % n_e
        facts = np.where(self.fixed_facts[None], self.facts[None], drawn)
        p = np.asarray(cfg.hop_weights, dtype=float)
        cum = np.cumsum(p / p.sum())
        hops = 1 + np.minimum(np.searchsorted(cum, u[:, n_e * n_r], side="right"), h - 1)
        start = (u[:, n_e * n_r + 1] * n_e).astype(np.int64)
        chain = (u[:, n_e * n_r + 2 :] * n_r).astype(np.int64)
        chain[np.arange(h)[None, :] >= hops[:, None]] = -1
        answer = _follow_chain(facts, start, chain)
        return Episodes(ids, facts[inverse], start[inverse], chain[inverse], hops[inverse], answer[inverse])

    def _uniforms(self, episodes: np.ndarray, n: int) -> np.ndarray:
        """[len(episodes), n] uniforms in [0, 1), a pure function of (world seed, episode id, slot):
        SplitMix64 over a counter, vectorised over episodes (a Generator per episode is 100x slower)."""
        with np.errstate(over="ignore"):
            x = episodes.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15)
            x ^= np.uint64(self.config.seed) * np.uint64(0xD1B54A32D192ED03)
            x = x + np.arange(n, dtype=np.uint64)[None, :] * np.uint64(0xBF58476D1CE4E5B9)
            for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
                x = (x ^ (x >> np.uint64(shift))) * np.uint64(mult)
            x ^= x >> np.uint64(31)
        return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def train_ids(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` training episode ids: training questions, or fresh even episode seeds."""
        if not self.procedural:
            return rng.choice(self.train, n)
        return 2 * rng.integers(0, 2**61, n)

    def eval_ids(self, n: int) -> np.ndarray:
        """The evaluation episodes: every held-out question (fixed), or the first ``n`` odd seeds."""
        if not self.procedural:
            return self.held_out.copy()
        return 2 * np.arange(n, dtype=np.int64) + 1

    def question_tokens(self, ep: Episodes, row: int) -> list[int]:
        """``<bos> r_h ... r_1 e``: the prompt of row ``row``'s question."""
        chain = ep.chain[row, : ep.hops[row]]
        words = [int(self.vocab.relation(r)) for r in chain[::-1]]
        return [self.vocab.bos, *words, int(self.vocab.entity(ep.start[row]))]

    @overload
    def doc_id(self, subject: int, relation: int) -> int: ...
    @overload
    def doc_id(self, subject: np.ndarray, relation: np.ndarray) -> np.ndarray: ...
    def doc_id(self, subject: np.ndarray | int, relation: np.ndarray | int) -> np.ndarray | int:
        """The id of the document of fact (subject, relation): one id per pair."""
        return subject * self.config.n_relations + relation

    def doc_triples(self, ep: Episodes, rows: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """(subject, relation, object) [n, k, 3] of documents ``docs`` [n, k] in the worlds of ``rows``."""
        n_r = self.config.n_relations
        subject, relation = docs // n_r, docs % n_r
        obj = ep.facts[np.asarray(rows)[:, None], subject, relation]
        return np.stack([subject, relation, obj], axis=-1)

    def doc_text(self, d: int) -> str:
        s, r, o = self.docs[d]
        return f"e{s} r{r} e{o}"
