"""The search task both grains share: its world, retriever, turns and reward (``TaskConfig``)."""

from __future__ import annotations

import dataclasses

from testbed.config import check_at_most, check_choice, check_positive, check_range, fail, field
from testbed.envs.retriever import RetrieverConfig
from testbed.envs.world import WorldConfig

REWARDS = ("em", "f1")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The search task shared by both grains: world, retriever, turns and reward."""

    world: WorldConfig = field(
        default_factory=WorldConfig, help="The synthetic world: entities, relations, questions."
    )
    retriever: RetrieverConfig = field(
        default_factory=RetrieverConfig, help="The simulated retriever's top k and noise."
    )
    max_turns: int = field(
        4,
        help="Most turns per episode (a turn: a closed search or an invalid action); the action that "
        "would exceed it truncates the episode; > 0.",
        verl="actor_rollout_ref.rollout.multi_turn.max_assistant_turns",
    )
    max_len: int = field(
        64,
        help="Most tokens per episode (token grain), prompt, written and retrieved tokens together; "
        "reaching it truncates the episode; at least the longest prompt plus 3.",
    )
    max_query_len: int = field(
        3, help="Most words in one search query (token grain); a longer query is an invalid action; > 0."
    )
    max_answer_len: int = field(
        2, help="Most words in an answer (token grain); a longer answer is an invalid action; > 0."
    )
    reward: str = field(
        "em", help="em: 1 when the answer matches exactly, else 0; f1: word F1 with the gold answer."
    )
    format_penalty: float = field(
        0.0,
        help="Subtracted once from the reward of an episode with any invalid action (malformed tags, "
        "over-long query, ...); in [0, 1]; rewards then lie in [-format_penalty, 1].",
    )
    require_search: bool = field(False, help="Whether an answer before any search is an invalid action.")
    # Your own data (text task, policy.kind="hf" only): Search-R1 QA files and a corpus.
    qa_path: str | None = field(
        None,
        keyed_by_content=True,
        help="policy.kind=hf only: a Search-R1 QA file (Parquet or JSONL) to train on; needs corpus_path.",
        verl="data.train_files",
    )
    qa_test_path: str | None = field(
        None,
        keyed_by_content=True,
        help="Held-out questions of qa_path, in the same format; None holds out a seeded share of qa_path.",
        verl="data.val_files",
    )
    corpus_path: str | None = field(
        None,
        keyed_by_content=True,
        help="A Search-R1 corpus (JSONL, one document a line) that BM25 searches; needs qa_path.",
    )

    def __post_init__(self) -> None:
        check_positive(self, "max_turns", "max_len", "max_query_len", "max_answer_len")
        check_at_most(self, 1000, "max_turns")
        check_at_most(self, 1e6, "max_len", "max_query_len", "max_answer_len")
        check_range(self, "format_penalty", 0.0, 1.0)
        check_choice(self, "reward", REWARDS)
        if (self.qa_path is None) != (self.corpus_path is None):
            fail(self, "qa_path", self.qa_path, "needs corpus_path too (and corpus_path needs qa_path)")
        if self.qa_test_path is not None and self.qa_path is None:
            fail(self, "qa_test_path", self.qa_test_path, "needs qa_path")
        # the longest prompt (<bos>, the relations, the entity) plus a shortest answer must fit
        need = self.world.max_hops + 2 + 3
        if self.max_len < need:
            fail(self, "max_len", self.max_len, f"must be >= {need} (longest prompt plus an answer)")

    @property
    def info_len(self) -> int:
        """Tokens of one retrieval observation: tags, k documents of 3 words, separators."""
        return 2 + 4 * self.retriever.top_k - 1
