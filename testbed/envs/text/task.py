"""The search task in real text, for Hugging Face tokenizers and models.

The same batched state machine as the simulated token task (``TokenSearchBatch``), with its
parts (``TextTask``) replaced: prompts are tokenized questions, a closed ``<search>`` segment is
decoded and sent to BM25 (its documents tokenized into ``<information> ... </information>``, cut
to ``max_obs_len`` tokens), and a closed ``<answer>`` is decoded and scored by normalised EM or F1.
The tags must be single tokens of the tokenizer: ``add_tags`` adds any that are missing (as
ordinary tokens, so decoding with ``skip_special_tokens`` keeps them) and resizes the model.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

from testbed.envs.task import TaskConfig
from testbed.envs.text.bm25 import BM25Retriever, TextRetriever
from testbed.envs.text.qa_data import TextQA
from testbed.envs.tokens import TokenSearchBatch

TAGS = ("<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>", "<invalid>")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace (SQuAD / Search-R1 style)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation) or ch in "<>")
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def em_f1(prediction: str, gold: str | Sequence[str]) -> tuple[float, float]:
    """Normalised EM and token F1 against the gold answer, or the best over a list of them."""
    if not isinstance(gold, str):
        scores = [em_f1(prediction, g) for g in gold]
        return max(em for em, _ in scores), max(f1 for _, f1 in scores)
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    em = float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if not common:
        return em, 0.0
    precision, recall = common / len(p), common / len(g)
    return em, 2 * precision * recall / (precision + recall)


def add_tags(tokenizer, model=None) -> None:
    """Make every tag one ordinary token of ``tokenizer`` (and resize ``model``'s embeddings)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in TAGS if t not in vocab]
    if missing:
        tokenizer.add_tokens(missing)
    if model is not None and model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))


class TextVocab:
    """The tag ids and the word test that the token state machine needs, for a HF tokenizer."""

    def __init__(self, tokenizer) -> None:
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in TAGS}
        unk = tokenizer.unk_token_id
        absent = [t for t, i in ids.items() if i is None or (unk is not None and i == unk)]
        if absent:
            raise ValueError(
                f"tokenizer: tags {absent} are not single tokens; call add_tags(tokenizer, model)"
            )
        self.search_open, self.search_close = ids["<search>"], ids["</search>"]
        self.answer_open, self.answer_close = ids["<answer>"], ids["</answer>"]
        self.info_open, self.info_close, self.invalid = (
            ids["<information>"],
            ids["</information>"],
            ids["<invalid>"],
        )
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.size = len(tokenizer)
        self.special = np.array(sorted(set(ids.values()) | set(tokenizer.all_special_ids)), dtype=np.int64)

    def is_word(self, tok: np.ndarray) -> np.ndarray:
        return (tok >= 0) & (tok < self.size) & ~np.isin(tok, self.special)


class TextTask:
    """The parts (``TokenTask``) of the search task in real text: tokenized questions as prompts,
    searches decoded and sent to a text retriever (BM25, or a retrieval server's client), its
    documents tokenized into ``<information> ... </information>`` (cut to ``max_obs_len``), answers
    decoded and scored by normalised EM or F1 against any gold answer. Episode ids are question
    indices of ``qa``."""

    def __init__(
        self,
        config: TaskConfig,
        tokenizer,
        qa: TextQA,
        retriever: TextRetriever | None = None,
        max_obs_len: int = 64,
    ) -> None:
        self.config, self.tokenizer, self.qa = config, tokenizer, qa
        self.vocab = TextVocab(tokenizer)
        self.retriever = retriever or BM25Retriever(qa.corpus, config.retriever.top_k)
        self.info_len, self.top_k = max_obs_len + 2, config.retriever.top_k
        self.question = np.zeros(0, dtype=np.int64)

    def load(self, episodes: np.ndarray) -> list[list[int]]:
        bad = episodes[(episodes < 0) | (episodes >= len(self.qa.questions))]
        if bad.size:
            raise ValueError(
                f"episode id {int(bad[0])}: the data has questions 0..{len(self.qa.questions) - 1}"
            )
        self.question = episodes.copy()
        bos = self.tokenizer.bos_token_id
        prompts = []
        for q in episodes:
            ids = self.tokenizer(self.qa.questions[q], add_special_tokens=False)["input_ids"]
            prompts.append(([bos] if bos is not None else []) + list(ids))
        return prompts

    def _decode(self, seg: np.ndarray, seg_len: np.ndarray, cap: int) -> list[str]:
        return [self.tokenizer.decode(s[: min(n, cap)].tolist()) for s, n in zip(seg, seg_len, strict=True)]

    def search(
        self,
        rows: np.ndarray,
        seg: np.ndarray,
        seg_len: np.ndarray,
        closed_book: bool,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if closed_book:  # random documents of the corpus: the closed-book probe
            docs = rng.integers(0, len(self.qa.corpus), (len(rows), self.top_k))
            texts = [[self.qa.corpus[d] for d in row] for row in docs]
        else:
            docs = self.retriever.search(self._decode(seg, seg_len, self.config.max_query_len))
            # the retriever's own texts: a server client learns its documents as they come back
            texts = [[self.retriever.texts[d] for d in row if d >= 0] for row in docs]
        v = self.vocab
        obs = np.full((len(rows), self.info_len), v.pad, dtype=np.int64)
        obs_len = np.zeros(len(rows), dtype=np.int64)
        for i, row_texts in enumerate(texts):
            ids = self.tokenizer(" ; ".join(row_texts), add_special_tokens=False)["input_ids"][
                : self.info_len - 2
            ]
            tokens = [v.info_open, *ids, v.info_close]
            obs[i, : len(tokens)] = tokens
            obs_len[i] = len(tokens)
        return obs, obs_len, docs

    def score(self, rows: np.ndarray, seg: np.ndarray, seg_len: np.ndarray, reward: str) -> np.ndarray:
        said = self._decode(seg, seg_len, self.config.max_answer_len)
        scores = [em_f1(s, self.qa.answers[self.question[r]]) for s, r in zip(said, rows, strict=True)]
        return np.array([em if reward == "em" else f1 for em, f1 in scores], dtype=float)


def text_core(
    config: TaskConfig,
    batch_size: int,
    tokenizer,
    qa: TextQA,
    retriever: TextRetriever | None = None,
    max_obs_len: int = 64,
    closed_book: bool = False,
) -> TokenSearchBatch:
    """B episodes of the text search task: the token state machine over a ``TextTask``."""
    task = TextTask(config, tokenizer, qa, retriever, max_obs_len)
    return TokenSearchBatch(config, batch_size, closed_book=closed_book, task=task)


def text_task_config(
    base: TaskConfig, max_query_len: int = 16, max_answer_len: int = 8, max_len: int = 256
) -> TaskConfig:
    """The simulated task's turns, reward and penalties with text-sized segments and context."""
    return dataclasses.replace(
        base, max_query_len=max_query_len, max_answer_len=max_answer_len, max_len=max_len
    )


def corpus_words(qa: TextQA) -> Sequence[str]:
    """Every text a tokenizer for this task should know: corpus, questions and answers."""
    return [*qa.corpus, *qa.questions, *(a for golds in qa.answers for a in golds)]
