"""Writes the tiny Search-R1-format sample beside this file (made-up facts, written for these tests).

- ``corpus.jsonl``: Search-R1's corpus lines, ``{"id", "contents"}`` with ``contents = '"title"\\ntext'``.
- ``qa_train.parquet``: rows as Search-R1's ``scripts/data_process/nq_search.py`` writes them
  (FlashRAG's ``id``/``question``/``golden_answers`` plus ``data_source``, ``prompt``, ``ability``,
  ``reward_model``, ``extra_info``).
- ``qa_test.jsonl``: FlashRAG's own JSONL records (``id``, ``question``, ``golden_answers``).

Run ``python tests/data/make_sample.py`` to rewrite them.
"""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent

CORPUS = [
    ("Veloria", "Veloria is an island kingdom whose capital is Pellmar ."),
    ("Pellmar", "Pellmar is a harbour city founded by the navigator Idra Quenn ."),
    ("Ostrava Reach", "Ostrava Reach is a desert republic whose capital is Sundhal ."),
    ("Idra Quenn", "Idra Quenn was a navigator born in the mountain town of Karsk ."),
    ("Karsk", "Karsk is a mountain town known for its copper mines ."),
    ("Sundhal", "Sundhal is a city on the river Amevy ."),
    ("Amevy", "The Amevy is a slow river that flows into the Glass Sea ."),
    ("Tessaly Moor", "Tessaly Moor is a wetland where the blue heron nests ."),
]

TRAIN = [
    ("what is the capital of Veloria", ["Pellmar", "Pellmar City"]),
    ("who founded Pellmar", ["Idra Quenn", "Quenn"]),
    ("where was Idra Quenn born", ["Karsk"]),
    ("what is the capital of Ostrava Reach", ["Sundhal"]),
    ("which river runs through Sundhal", ["Amevy", "the Amevy river"]),
    ("which bird nests in Tessaly Moor", ["blue heron", "heron"]),
]
TEST = [
    ("into which sea does the Amevy flow", ["Glass Sea"]),
    ("what is Karsk known for", ["copper mines", "copper"]),
]

INSTRUCTION = (
    "Answer the given question. You can search with <search> query </search>; results come back"
    " between <information> and </information>. Give the answer inside <answer> and </answer>."
)


def main() -> None:
    with open(HERE / "corpus.jsonl", "w") as f:
        for i, (title, text) in enumerate(CORPUS):
            f.write(json.dumps({"id": str(i), "contents": f'"{title}"\n{text}'}) + "\n")
    rows = []
    for i, (question, gold) in enumerate(TRAIN):
        question = question + " ?"  # nq_search.py appends a '?' when missing
        rows.append(
            {
                "id": f"train_{i}",
                "question": question,
                "golden_answers": gold,
                "data_source": "made_up",
                "prompt": [{"role": "user", "content": f"{INSTRUCTION} Question: {question}\n"}],
                "ability": "fact-reasoning",
                "reward_model": {"style": "rule", "ground_truth": {"target": gold}},
                "extra_info": {"split": "train", "index": i},
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), HERE / "qa_train.parquet")
    with open(HERE / "qa_test.jsonl", "w") as f:
        for i, (question, gold) in enumerate(TEST):
            f.write(
                json.dumps({"id": f"test_{i}", "question": question + " ?", "golden_answers": gold}) + "\n"
            )


if __name__ == "__main__":
    main()
