"""Search-R1's data formats on the shipped sample: load -> TextQA -> BM25 -> a scored episode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from testbed.envs import TaskConfig
from testbed.envs.text.bm25 import BM25Retriever
from testbed.envs.text.qa_data import Document, TextQA, load_corpus, load_qa, read_qa
from testbed.envs.text.task import corpus_words, em_f1, text_task_config

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def qa() -> TextQA:
    return load_qa(DATA / "qa_train.parquet", DATA / "corpus.jsonl", test=DATA / "qa_test.jsonl")


def test_search_r1_files_load_with_every_gold_answer(qa) -> None:
    assert len(qa.questions) == 8 and qa.train.tolist() == list(range(6)) and qa.held_out.tolist() == [6, 7]
    assert qa.questions[0] == "what is the capital of Veloria ?"
    assert qa.answers[0] == ["Pellmar", "Pellmar City"] and qa.answers[7] == ["copper mines", "copper"]
    assert qa.corpus[0] == '"Veloria"\nVeloria is an island kingdom whose capital is Pellmar .'
    docs = load_corpus(DATA / "corpus.jsonl")
    assert (docs[3].id, docs[3].title) == ("3", "Idra Quenn")
    assert docs[3].text.startswith("Idra Quenn was a navigator")


def test_gold_answers_fall_back_to_reward_model_target_and_split_is_seeded(tmp_path) -> None:
    path = tmp_path / "qa.jsonl"
    records = [
        {"question": f"q{i}", "reward_model": {"ground_truth": {"target": [f"a{i}", f"b{i}"]}}}
        for i in range(10)
    ]
    path.write_text("\n".join(json.dumps(r) for r in records))
    assert read_qa(path)[1][3] == ["a3", "b3"]
    a, b = (load_qa(path, [Document("0", "text")], held_out_frac=0.3, seed=1) for _ in range(2))
    assert a.held_out.tolist() == b.held_out.tolist() and len(a.held_out) == 3
    assert sorted([*a.train, *a.held_out]) == list(range(10))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"golden_answers": ["x"]}', r"qa\.jsonl:1: a QA record needs a 'question' string"),
        ('{"question": "q"}', r"qa\.jsonl:1: a QA record needs 'golden_answers'"),
        ('{"question": "q", "golden_answers": []}', r"qa\.jsonl:1: golden_answers is empty"),
        ("[1, 2]", r"qa\.jsonl:1: not a JSON object"),
    ],
)
def test_bad_qa_records_name_the_file_line_and_field(tmp_path, line, message) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        read_qa(path)


def test_corpus_accepts_text_with_title_and_refuses_records_without_text(tmp_path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "a", "title": "Karsk", "text": "copper mines"}\n{"text": "no title"}\n')
    docs = load_corpus(path)
    assert docs[0].contents == '"Karsk"\ncopper mines' and (docs[1].id, docs[1].title) == ("1", "")
    path.write_text('{"id": "a", "body": "x"}\n')
    with pytest.raises(ValueError, match=r"corpus\.jsonl:1: a corpus record needs a 'text' field"):
        load_corpus(path)


def test_em_and_f1_take_the_best_gold_answer() -> None:
    assert em_f1("Quenn", ["Idra Quenn", "Quenn"]) == (1.0, 1.0)
    em, f1 = em_f1("the Amevy", ["Amevy river", "Glass Sea"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="answers: question 1 has no gold answer"):
        TextQA(["q0", "q1"], [["a"], []], ["doc"], np.arange(1), np.arange(1, 2))


def test_bm25_reads_search_r1_corpus_and_finds_the_fact(qa) -> None:
    bm25 = BM25Retriever.from_jsonl(DATA / "corpus.jsonl", top_k=2)
    assert bm25.texts == qa.corpus
    ids, scores = bm25.search_with_scores(["capital of Veloria", "born Idra Quenn"])
    assert ids[:, 0].tolist() == [0, 3] and (scores[:, 0] >= scores[:, 1]).all()


def scripted_episode(core, tokenizer, question: int, query: str, answer: str) -> tuple[str, float]:
    """Search once, answer; returns the decoded observation and the reward."""
    pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    core.reset(np.array([question]))

    def write(text: str):
        out = None
        for tok in tokenizer(text, add_special_tokens=False)["input_ids"]:
            out = core.step(np.array([tok]), rng)
        return out

    out = write(f"<search> {query} </search>")
    info = tokenizer.decode(out.obs[0, : out.obs_len[0]].tolist())
    out = write(f"<answer> {answer} </answer>")
    assert out.terminated[0]
    return info, float(out.reward[0])


def test_sample_data_runs_the_whole_text_task_path(qa) -> None:
    pytest.importorskip("transformers")
    from testbed.envs.text.task import text_core
    from testbed.policies.hf_tiny import train_tokenizer

    tokenizer = train_tokenizer(corpus_words(qa))
    core = text_core(text_task_config(TaskConfig()), 1, tokenizer, qa)
    info, reward = scripted_episode(core, tokenizer, 1, "who founded Pellmar", "Idra Quenn")
    assert info.startswith("<information>") and "founded by the navigator Idra Quenn" in info
    assert reward == 1.0
    assert scripted_episode(core, tokenizer, 1, "Pellmar", "Quenn")[1] == 1.0  # the second gold answer
    assert scripted_episode(core, tokenizer, 1, "Pellmar", "Karsk")[1] == 0.0
