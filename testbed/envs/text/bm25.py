"""A real lexical retriever: BM25 (the ``bm25s`` package) over any corpus of texts.

It answers both protocols: ``search(texts, k)`` for text queries (the Hugging Face search agent,
``TextRetriever``) and ``retrieve(queries, rng)`` for the simulated task's word-id queries
(``Retriever``), so it can replace the simulated retriever over the synthetic world's corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from testbed.envs.text.qa_data import load_corpus


class TextRetriever(Protocol):
    """What the text search task reads: doc ids per query (-1 pads a short list) and their texts."""

    top_k: int

    @property
    def texts(self) -> Sequence[str]: ...

    def search(self, queries: Sequence[str], k: int | None = None) -> np.ndarray: ...


class BM25Retriever:
    def __init__(
        self, texts: Sequence[str], top_k: int = 3, decode: Callable[[np.ndarray], str] | None = None
    ):
        import bm25s

        if not texts:
            raise ValueError("texts: the corpus is empty")
        self._bm25s = bm25s
        self.texts = list(texts)
        self.top_k = top_k
        self._decode = decode
        self._index = bm25s.BM25()
        self._index.index(self._tokenize(self.texts), show_progress=False)

    def _tokenize(self, texts: Sequence[str]):
        return self._bm25s.tokenize(list(texts), stopwords=None, show_progress=False)

    def search(self, queries: Sequence[str], k: int | None = None) -> np.ndarray:
        """Doc ids [len(queries), k], best first (arbitrary documents for a query with no known word)."""
        return self.search_with_scores(queries, k)[0]

    def search_with_scores(
        self, queries: Sequence[str], k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Doc ids and their BM25 scores, both [len(queries), k], best first."""
        k = min(k or self.top_k, len(self.texts))
        if not len(queries):  # bm25s fails on an empty batch
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
        docs, scores = self._index.retrieve(self._tokenize(queries), k=k, show_progress=False)
        return np.asarray(docs, dtype=np.int64), np.asarray(scores, dtype=np.float64)

    def retrieve(self, queries: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._decode is None:
            raise ValueError("decode: this BM25Retriever was built without a way to read word-id queries")
        return self.search([self._decode(q[q >= 0]) for q in queries])

    @classmethod
    def from_jsonl(cls, path: Path | str, top_k: int = 3) -> BM25Retriever:
        """A corpus file of ``{"id", "text"}`` or Search-R1's ``{"id", "contents"}`` records (doc id = line).

        JSON lines, or Parquet by its suffix; ``testbed.envs.text.qa_data.load_corpus`` reads it.
        """
        return cls([d.contents for d in load_corpus(path)], top_k)
