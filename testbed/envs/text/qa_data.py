"""Search-R1's data formats: QA files of ``question`` + ``golden_answers``, and its corpus JSONL.

Matched against Search-R1 (github.com/PeterGriffinJin/Search-R1):

- QA: ``scripts/data_process/nq_search.py`` maps FlashRAG's records (``id``, ``question``,
  ``golden_answers``: a list of strings) to rows that keep those fields and add ``data_source``,
  ``prompt`` (the chat prompt with its instruction template), ``ability``, ``reward_model``
  (``{"style": "rule", "ground_truth": {"target": golden_answers}}``) and ``extra_info``
  (``{"split", "index"}``), saved as ``train.parquet`` / ``test.parquet``. Its reward
  (``verl/utils/reward_score/qa_em.py``) is normalised EM against any of the targets. We read
  ``question`` (the bare question, not the templated prompt) and ``golden_answers``, falling back
  to ``reward_model.ground_truth.target``; from Parquet or from JSONL (FlashRAG's own files).
- Corpus: README "Corpora": one JSON object per line with ``id`` and ``contents``, where
  ``contents`` is ``'"' + title + '"\\n' + text`` (e.g. ``example/corpus.jsonl``); its retrieval
  server splits a title off the first line the same way. We also accept ``{"id", "text"}``
  (with an optional ``title``), the format ``BM25Retriever.from_jsonl`` read before.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testbed.config import shown
from testbed.envs.world import World


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
        answers = [[f"e{a}"] for a in q["answer"]]
        corpus = [world.doc_text(d) for d in range(len(world.docs))]
        return cls(texts, answers, corpus, world.train, world.held_out)


@dataclasses.dataclass(frozen=True)
class Document:
    """One passage: ``contents`` is what is indexed and shown (Search-R1's ``"title"\\ntext``)."""

    id: str
    contents: str

    @property
    def title(self) -> str:
        """The first line without its quotes when there is a second line, as Search-R1 splits it."""
        head, sep, _ = self.contents.partition("\n")
        return head.strip('"') if sep else ""

    @property
    def text(self) -> str:
        head, sep, rest = self.contents.partition("\n")
        return rest if sep else head

    def record(self) -> dict[str, str]:
        """The document as Search-R1's server returns it (``id``, ``contents``, ``title``, ``text``)."""
        return {"id": self.id, "contents": self.contents, "title": self.title, "text": self.text}


def read_records(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a ``.parquet`` file or of JSON lines (``.jsonl``, ``.json``, anything else)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except pa.ArrowInvalid as e:
            raise ValueError(f"{path}: not a Parquet file ({str(e).splitlines()[0]})") from e
    records = []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{n}: not UTF-8 text (byte {raw[e.start]:#04x})") from None
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from e
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{n}: not a JSON object")
            records.append(record)
    return records


def document(record: Mapping[str, Any], default_id: str, where: str = "") -> Document:
    """A corpus record (``contents``, or ``text`` with an optional ``title``) as a ``Document``."""
    for name in ("contents", "text", "title"):
        value = record.get(name)
        if name in record and not isinstance(value, str) and not (name == "title" and value is None):
            raise ValueError(f"{where}'{name}' must be text, got {shown(value)}")
    if "contents" in record:
        contents = record["contents"]
    elif "text" in record:
        title = record.get("title")
        contents = f'"{title}"\n{record["text"]}' if title else record["text"]
    else:
        raise ValueError(f"{where}a corpus record needs a 'text' field (or Search-R1's 'contents')")
    doc_id = record.get("id")
    return Document(default_id if doc_id is None else str(doc_id), contents)


def load_corpus(path: Path | str) -> list[Document]:
    """A corpus file (JSONL or Parquet) of ``{"id", "contents"}`` or ``{"id", "text"}`` records."""
    docs = [document(r, str(n), f"{path}:{n + 1}: ") for n, r in enumerate(read_records(path))]
    if not docs:
        raise ValueError(f"{path}: the corpus is empty")
    return docs


def gold_answers(record: Mapping[str, Any], where: str = "") -> list[str]:
    """``golden_answers``, else ``reward_model.ground_truth.target``; a single string is one answer."""
    gold = record.get("golden_answers")
    if gold is None:
        gold = ((record.get("reward_model") or {}).get("ground_truth") or {}).get("target")
    if gold is None:
        raise ValueError(f"{where}a QA record needs 'golden_answers' (or reward_model.ground_truth.target)")
    answers = [gold] if isinstance(gold, str) else gold
    if not isinstance(answers, list | tuple | np.ndarray) or not all(_is_answer(a) for a in answers):
        raise ValueError(f"{where}golden_answers: expected a string or a list of them, got {shown(gold)}")
    if not len(answers):
        raise ValueError(f"{where}golden_answers is empty")
    return [str(a) for a in answers]


def _is_answer(value: Any) -> bool:
    """Text, or a number (a year, a count) read as its text; not null, a list or blank."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def read_qa(path: Path | str) -> tuple[list[str], list[list[str]]]:
    """Questions and their gold-answer lists from a Search-R1 / FlashRAG file."""
    questions, answers = [], []
    for n, record in enumerate(read_records(path), 1):
        where = f"{path}:{n}: "
        if not isinstance(record.get("question"), str):
            raise ValueError(f"{where}a QA record needs a 'question' string")
        questions.append(record["question"].strip())
        answers.append(gold_answers(record, where))
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions, answers


def load_qa(
    data: Path | str,
    corpus: Path | str | Sequence[Document],
    test: Path | str | None = None,
    held_out_frac: float = 0.2,
    seed: int = 0,
) -> TextQA:
    """A ``TextQA`` from Search-R1 data: train on ``data``, hold out ``test`` (or a seeded share of ``data``).

    ``TextQA.corpus`` holds each document's ``contents``, in file order: BM25 doc id i is line i.
    """
    questions, answers = read_qa(data)
    n_train = len(questions)
    if test is not None:
        test_q, test_a = read_qa(test)
        questions, answers = questions + test_q, answers + test_a
        train, held_out = np.arange(n_train), np.arange(n_train, len(questions))
    else:
        if not 0 < held_out_frac < 1:
            raise ValueError(f"held_out_frac: expected a share in (0, 1), got {held_out_frac}")
        order = np.random.default_rng(seed).permutation(n_train)
        cut = max(1, round(held_out_frac * n_train))
        held_out, train = np.sort(order[:cut]), np.sort(order[cut:])
        if not len(train):
            raise ValueError(f"{data}: {n_train} question(s) leave none to train on after the held-out share")
    docs = load_corpus(corpus) if isinstance(corpus, str | Path) else list(corpus)
    return TextQA(questions, answers, [d.contents for d in docs], train, held_out)
