"""Run assembly: one base policy per study (shared and cached), the closed-book probe, HF runs."""

from __future__ import annotations

import pytest
from tiny import TINY, tiny

from testbed.run import build_trainer, train


def test_closed_book_stays_at_chance_during_grpo() -> None:
    """Procedural worlds: with random documents for retrieval no policy beats chance (~1/8 here)."""
    cfg = tiny(
        **{
            "trainer.n_updates": "4",
            "trainer.lr": "0.01",
            "trainer.eval_episodes": "400",
            "trainer.eval_every": "2",
        }
    )
    rows, summary = train(cfg)
    closed = [r["eval_em_closed_book"] for r in rows if "eval_em_closed_book" in r]
    assert len(closed) == 3
    assert max(closed) < 0.25  # chance 1/8 plus 4 standard errors of 400 episodes
    assert summary["max_em_closed_book"] == max(closed)
    assert all(
        r["eval_em_sampled_se"] > 0 or r["eval_em_sampled"] in (0, 1) for r in rows if "eval_em_sampled" in r
    )


def test_hf_policy_runs_through_the_one_assembly(tmp_path) -> None:
    pytest.importorskip("transformers")
    cfg = tiny(**{"policy.kind": "hf", "task.world.kind": "fixed", "task.world.n_questions": "16"})
    rows, summary = train(cfg)
    assert [r["update"] for r in rows] == [0, 1, 2] and 0 <= summary["final_em"] <= 1
    with pytest.raises(Exception, match=r"task\.world\.kind"):
        build_trainer([tiny(**{"policy.kind": "hf"})])


def test_hf_run_on_a_dataset_of_its_own_draws_its_questions() -> None:
    pytest.importorskip("transformers")
    from pathlib import Path

    from testbed.envs.text.qa_data import load_qa

    data = Path(__file__).parent / "data"
    qa = load_qa(data / "qa_train.parquet", data / "corpus.jsonl", test=data / "qa_test.jsonl")
    cfg = tiny(**{"policy.kind": "hf", "task.world.kind": "fixed"})
    trainer = build_trainer([cfg], qa=qa)
    assert set(trainer.world.eval_ids(512)) == set(qa.held_out)
    batch_ids = trainer.world.train_ids(__import__("numpy").random.default_rng(0), 50)
    assert set(batch_ids) <= set(qa.train)
    (row,) = trainer.update(trainer.collect())
    assert "loss" in row


def test_train_on_search_r1_files_from_the_command_line(tmp_path) -> None:
    pytest.importorskip("transformers")
    from pathlib import Path

    from testbed import cli

    data = Path(__file__).parent / "data"
    argv = ["train", "--out", str(tmp_path), "--data", str(data / "qa_train.parquet")]
    argv += ["--test-data", str(data / "qa_test.jsonl"), "--corpus", str(data / "corpus.jsonl")]
    argv += ["--set", *(f"{k}={v}" for k, v in TINY.items() if not k.startswith("task.world"))]
    cli.main(argv)  # trains one run of the tiny Qwen2 on the files
    assert len(list((tmp_path / "runs").glob("*.json"))) == 1
    with pytest.raises(SystemExit) as bad:
        cli.main(["train", "--out", str(tmp_path), "--set", f"task.qa_path={data / 'qa_train.parquet'}"])
    assert bad.value.code == 2  # a path without its corpus: one line, exit 2
