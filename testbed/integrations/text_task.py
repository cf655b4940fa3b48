"""The search task in real text, for Hugging Face tokenizers and models.

The same batched state machine as the simulated token task (``TokenSearchBatch``), with three
things replaced: prompts are tokenized questions, a closed ``<search>`` segment is decoded and sent
to BM25 (its documents tokenized into ``<information> ... </information>``, cut to
``max_obs_len`` tokens), and a closed ``<answer>`` is decoded and scored by normalised EM or F1.
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

from testbed.envs.bm25 import BM25Retriever
from testbed.envs.tokens import TaskConfig, TokenSearchBatch
from testbed.envs.world import World

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


@dataclasses.dataclass
class TextQA:
    """Questions, gold answers, a train/held-out split and the corpus to search.

    ``answers[i]`` lists every accepted answer of question i (Search-R1's ``golden_answers``); an
    answer scores the best EM/F1 over them. A plain string is taken as a list of one.
    """

    questions: list[str]
    answers: list[list[str]]
    corpus: list[str]
    train: np.ndarray
    held_out: np.ndarray

    def __post_init__(self) -> None:
        self.answers = [[a] if isinstance(a, str) else list(a) for a in self.answers]
        if len(self.answers) != len(self.questions):
            raise ValueError(f"answers: {len(self.answers)} for {len(self.questions)} questions")
        empty = [i for i, a in enumerate(self.answers) if not a]
        if empty:
            raise ValueError(f"answers: question {empty[0]} has no gold answer")

    @classmethod
    def from_world(cls, world: World) -> TextQA:
        q = world.questions
        texts = []
        for i in range(len(q["hops"])):
            chain = [f"r{r}" for r in q["chain"][i, : q["hops"][i]]]
            texts.append("question : " + " of ".join([*chain[::-1], f"e{q['start'][i]}"]) + " ?")
        answers = [f"e{a}" for a in q["answer"]]
        corpus = [world.doc_text(d) for d in range(len(world.docs))]
        return cls(texts, answers, corpus, world.train, world.held_out)


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


class TextSearchBatch(TokenSearchBatch):
    """B episodes of the text search task, stepped one token at a time like the simulated one."""

    def __init__(
        self,
        config: TaskConfig,
        batch_size: int,
        tokenizer,
        qa: TextQA,
        retriever: BM25Retriever | None = None,
        max_obs_len: int = 64,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.qa = qa
        self.vocab = TextVocab(tokenizer)
        self.retriever = retriever or BM25Retriever(qa.corpus, config.retriever.top_k)
        self.info_len = max_obs_len + 2
        self._alloc(batch_size)

    def prompt_tokens(self, question: int) -> list[int]:
        ids = self.tokenizer(self.qa.questions[question], add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + list(ids)

    def _decode_segments(self, rows: np.ndarray, cap: int) -> list[str]:
        return [self.tokenizer.decode(self.seg[r, : min(self.seg_len[r], cap)].tolist()) for r in rows]

    def _retrieve(
        self, rows: np.ndarray, obs: np.ndarray, obs_len: np.ndarray, rng: np.random.Generator
    ) -> None:
        docs = self.retriever.search(self._decode_segments(rows, self.config.max_query_len))
        self.last_docs[rows, : docs.shape[1]] = docs
        v = self.vocab
        for row, row_docs in zip(rows, docs, strict=True):
            # The retriever's own texts: a server client learns its documents as they come back.
            text = " ; ".join(self.retriever.texts[d] for d in row_docs if d >= 0)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.info_len - 2]
            tokens = [v.info_open, *ids, v.info_close]
            obs[row, : len(tokens)] = tokens
            obs_len[row] = len(tokens)

    def _score(self, rows_mask: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(rows_mask)
        said = self._decode_segments(rows, self.config.max_answer_len)
        scores = [em_f1(s, self.qa.answers[self.question[r]]) for s, r in zip(said, rows, strict=True)]
        return np.array([em if self.config.reward == "em" else f1 for em, f1 in scores], dtype=float)


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
