"""A real lexical retriever: BM25 (the ``bm25s`` package) over any corpus of texts.

It answers both protocols: ``search(texts, k)`` for text queries (the Hugging Face search agent)
and ``retrieve(queries, rng)`` for the simulated task's word-id queries (``Retriever``), so it can
replace the simulated retriever over the synthetic world's corpus.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


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
        k = min(k or self.top_k, len(self.texts))
        docs, _ = self._index.retrieve(self._tokenize(queries), k=k, show_progress=False)
        return np.asarray(docs, dtype=np.int64)

    def retrieve(self, queries: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._decode is None:
            raise ValueError("decode: this BM25Retriever was built without a way to read word-id queries")
        return self.search([self._decode(q[q >= 0]) for q in queries])

    @classmethod
    def from_jsonl(cls, path: Path | str, top_k: int = 3) -> BM25Retriever:
        """A corpus file of one ``{"id": ..., "text": ...}`` object per line."""
        texts = []
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if line.strip():
                record = json.loads(line)
                if "text" not in record:
                    raise ValueError(f"{path}:{n}: a corpus record needs a 'text' field")
                texts.append(str(record["text"]))
        return cls(texts, top_k)
