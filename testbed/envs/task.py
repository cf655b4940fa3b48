"""The search task both grains share: its world, retriever, turns and reward (``TaskConfig``)."""

from __future__ import annotations

import dataclasses

from testbed.config import check_choice, check_positive, check_range, fail
from testbed.envs.retriever import RetrieverConfig
from testbed.envs.world import WorldConfig

REWARDS = ("em", "f1")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The search task shared by both grains: world, retriever, turns and reward."""

    world: WorldConfig = dataclasses.field(default_factory=WorldConfig)
    retriever: RetrieverConfig = dataclasses.field(default_factory=RetrieverConfig)
    max_turns: int = 4
    max_len: int = 64
    max_query_len: int = 3
    max_answer_len: int = 2
    reward: str = "em"
    format_penalty: float = 0.0
    require_search: bool = False
    # Your own data (text task, policy.kind="hf" only): Search-R1 QA files and a corpus.
    qa_path: str | None = None
    qa_test_path: str | None = None
    corpus_path: str | None = None

    def __post_init__(self) -> None:
        check_positive(self, "max_turns", "max_len", "max_query_len", "max_answer_len")
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
