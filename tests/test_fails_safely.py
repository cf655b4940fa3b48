"""Failing safely: concurrent sweeps on one store, a full disk, broken runs said aloud, absurd
values, malformed input files, checkpoints and data, seeds by name, and ids out of range. Each
bad input ends in one line that names it (docs/TROUBLESHOOTING.md lists every line)."""

from __future__ import annotations

import dataclasses
import errno
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from testbed.config import ConfigError, config_hash, with_overrides
from testbed.envs import World, WorldConfig
from testbed.envs.text.qa_data import gold_answers, load_corpus, read_qa
from testbed.run import RunConfig, config_file, load_policy
from testbed.sweep import (
    ResultStore,
    RunsFailed,
    StoreError,
    SweepSpec,
    load_spec,
    run_configs,
    runner,
    spec_from_overrides,
)
from testbed.sweep.spec import parse_seeds

TINY = {
    "policy.kind": "tabular",
    "warm_start.steps": "0",
    "trainer.n_updates": "2",
    "trainer.eval_every": "1",
}


def _configs(n: int = 3):
    return SweepSpec(base=TINY, grid={"objective.name": ["grpo", "sapo", "cispo"][:n]}).configs()


def _frame(store: ResultStore) -> pd.DataFrame:
    rows = store.rows().drop(columns=["wall_time"])
    return rows.sort_values(["run", "update"]).reset_index(drop=True)


runner_train = runner.train_population


# -- 1. sweeps started together on one store ----------------------------------------------------


def test_a_claimed_run_is_refused_to_others_until_released(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    lock = store.claim("k")
    assert lock is not None and store.claim("k") is None  # another claimant (a second sweep)
    got = []
    waiter = threading.Thread(target=lambda: got.append(store.claim("k", wait=True)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive(), "wait=True should block while the run is claimed"
    lock.release()
    waiter.join(30)
    assert got and got[0] is not None
    got[0].release()
    assert not list(store.runs.glob(".*.lock")), "released claims leave no files"


def test_sweeps_started_together_make_each_run_once_and_keep_its_files(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            with ThreadPoolExecutor(1) as ex:
                run_configs(_configs(), ResultStore(tmp_path), ex, progress=False, population=1)
        except BaseException as err:  # reported below
            errors.append(err)

    sweeps = [threading.Thread(target=sweep) for _ in range(3)]
    for t in sweeps:
        t.start()
    for t in sweeps:
        t.join()
    assert errors == []
    keys = store.keys()
    assert len(keys) == 3 and store.failures() == {} and store.broken() == {}
    for key in keys:
        assert {"config.yaml", "rows.csv", "rows.parquet"} <= {p.name for p in store.folder(key).iterdir()}
    assert not list(store.runs.glob(".*.lock"))


def test_a_sweep_waits_for_the_run_another_is_making_and_makes_it_if_that_one_did_not(
    tmp_path: Path, monkeypatch
) -> None:
    store = ResultStore(tmp_path)
    (cfg,) = _configs(1)
    (key,) = run_configs([cfg], store, ThreadPoolExecutor(1), progress=False)
    reference = _frame(store)
    store.discard(key)
    made = []
    monkeypatch.setattr(runner, "train_population", lambda *a, **k: made.append(1) or runner_train(*a, **k))  # type: ignore[func-returns-value]
    for stored_by_the_other in (False, True):
        other = store.claim(key)  # another sweep is making it
        assert other is not None
        second = threading.Thread(
            target=run_configs,
            args=([cfg], ResultStore(tmp_path), ThreadPoolExecutor(1)),
            kwargs={"progress": False},
        )
        second.start()
        second.join(0.5)
        assert second.is_alive() and len(made) == stored_by_the_other, "the run is claimed: the sweep waits"
        other.release()  # stored or not, the other sweep is done: this one makes only what is missing
        second.join(120)
        assert made == [1] and store.has(key)  # made once, by the sweep that found it missing
        pd.testing.assert_frame_equal(_frame(store), reference)


# -- 2. a full disk mid-sweep -------------------------------------------------------------------


def test_a_full_disk_stops_the_sweep_in_one_line_and_the_resume_is_identical(
    tmp_path: Path, monkeypatch
) -> None:
    configs = _configs()
    whole = ResultStore(tmp_path / "whole")
    run_configs(configs, whole, ThreadPoolExecutor(1), progress=False, population=1)
    full = ResultStore(tmp_path / "full")
    written: list[Any] = []

    def write(self, key, *args, **kwargs):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(key)
        return store_write(self, key, *args, **kwargs)

    store_write = ResultStore.write
    monkeypatch.setattr(ResultStore, "write", write)
    monkeypatch.setattr(ResultStore, "write_failure", lambda *a: write(*a[:2], None, None, None))
    with pytest.raises(
        StoreError, match=r"cannot store run \w+ \(No space left on device\); the runs stored"
    ):
        run_configs(configs, full, ThreadPoolExecutor(1), progress=False, population=1)
    assert full.keys() == written and full.failures() == {}
    monkeypatch.undo()
    run_configs(configs, full, ThreadPoolExecutor(1), progress=False, population=1)
    pd.testing.assert_frame_equal(_frame(full), _frame(whole))


# -- 5. broken runs are said aloud --------------------------------------------------------------


def test_rows_say_which_broken_runs_they_leave_out(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    for key in ("a", "b"):
        store.write(key, [{"run": key, "update": 0}], {"run": key}, {})
    (store.runs / "b.csv").write_text("garbage")
    with pytest.warns(UserWarning, match=r"left out 1 broken run\(s\) \(b: .*checksum.*run the sweep again"):
        assert store.rows()["run"].tolist() == ["a"]
    with pytest.warns(UserWarning, match="left out 1 broken"):
        assert store.summaries()["run"].tolist() == ["a"]


# -- 7. absurd values are refused; a loss that stops being a number stops its run ---------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("warm_start.lr", "1e30"),
        ("trainer.lr", "1e300"),
        ("objective.ref_kl_coef", "1e300"),
        ("trainer.entropy_coef", "1e300"),
        ("objective.sapo_w", "1e300"),
        ("objective.log_ratio_clamp", "89"),
        ("objective.sapo_tau", "1e-300"),
        ("objective.dual_clip_c", "1e300"),
        ("policy.d_model", "1000000"),
    ],
)
def test_absurd_values_are_refused_naming_the_field(field: str, value: str) -> None:
    name = field.rsplit(".", 1)[-1]
    with pytest.raises(ConfigError, match=rf"^\w+Config\.{name}=.*: must (be <=|lie in)"):
        with_overrides(RunConfig(), {field: value})


def test_every_study_config_stays_within_the_bounds() -> None:
    from testbed.studies import CATALOG, get_study

    for name in CATALOG:
        for spec in get_study(name, None).arms.values():
            assert dataclasses.replace(spec, seeds=spec.seeds[:1]).configs()  # seeds do not matter here


def test_a_loss_that_becomes_non_finite_fails_its_run_naming_the_update_and_field(tmp_path: Path) -> None:
    (cfg,) = SweepSpec(base={**TINY, "objective.name": "sapo"}).configs()
    object.__setattr__(cfg.objective, "sapo_w", 1e300)  # past validation, as a stale config could be
    store = ResultStore(tmp_path)
    with pytest.raises(
        RunsFailed,
        match=r"NonFiniteLoss: the loss became (nan|inf) at update 1 \(seed 0\); "
        r"likely objective\.sapo_w=1e\+300",
    ) as err:
        run_configs([cfg], store, ThreadPoolExecutor(1), progress=False)
    assert "\n" not in str(err.value)
    assert store.keys() == [] and list(store.failures()) == [config_hash(cfg)]  # never stored as a success


# -- 8. input files -------------------------------------------------------------------------------


def test_a_config_file_that_is_not_utf8_is_named_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"trainer:\n  lr: 0.1 \xff\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: not UTF-8 text \(byte 0xff at position 19\)$"):
        config_file(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("s.yaml", "grid:\n  objective.name: [grpo, sapo]\ngrid:\n  trainer.lr: [0.1]\n"),
        ("s.yaml", "grid:\n  trainer.lr: [0.1]\n  trainer.lr: [0.2]\n"),
        ("s.json", '{"grid": {"trainer.lr": [0.1]}, "grid": {"trainer.lr": [0.2]}}'),
    ],
)
def test_a_key_written_twice_in_a_sweep_file_is_refused(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=r"key '(grid|trainer\.lr)' written twice"):
        load_spec(tmp_path / name)


def test_yaml_merge_keys_may_still_override(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("base:\n  <<: {trainer.lr: 0.1}\n  trainer.lr: 0.2\n")
    assert load_spec(path).base == {"trainer.lr": 0.2}


def _alias_bomb(head: str) -> str:
    lines, prev = ["  - &a [x, x, x, x, x, x, x, x, x]"], "a"
    for name in "bcdefg":  # 9**7 leaves: expanded, a line of some 28 MB
        lines.append(f"  - &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = name
    return head + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("kind", "head"), [("sweep", "seeds:\n"), ("sweep", "base:\n task:\n"), ("config", "task:\n")]
)
def test_a_yaml_alias_bomb_is_refused_quickly_in_one_short_line(tmp_path: Path, kind: str, head: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(head))
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_spec(path).configs() if kind == "sweep" else config_file(path)
    assert len(str(err.value).replace(str(path), "")) < 500 and "\n" not in str(err.value)
    assert time.monotonic() - start < 10


# -- 9. the retrieval server's command line -------------------------------------------------------


def test_the_retrieval_server_says_one_line_for_a_missing_corpus_and_a_taken_port(
    tmp_path: Path, capsys
) -> None:
    from testbed.envs.text.retrieval_server import main

    with pytest.raises(SystemExit) as exit_:
        main(["--corpus", str(tmp_path / "missing.jsonl")])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr().err.strip().endswith("missing.jsonl: cannot read it (No such file or directory)")
    )
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "1", "contents": "a document"}\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit) as exit_:
            main(["--corpus", str(corpus), "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "Address already in use" in err, err


# -- 10. data loaders -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            b'{"question": "q", "golden_answers": ["a"]}\n{"question": "\xff"}\n',
            r"qa\.jsonl:2: not UTF-8 text",
        ),
        (b'{"question": "q", "golden_answers": 5}\n', r"qa\.jsonl:1: golden_answers: expected a string"),
        (b'{"question": "q", "golden_answers": [null]}\n', r"qa\.jsonl:1: golden_answers: expected a string"),
        (b'{"question": "q", "golden_answers": [" "]}\n', r"qa\.jsonl:1: golden_answers: expected a string"),
    ],
)
def test_bad_qa_records_are_named_by_file_and_line(tmp_path: Path, text: bytes, match: str) -> None:
    (tmp_path / "qa.jsonl").write_bytes(text)
    with pytest.raises(ValueError, match=match):
        read_qa(tmp_path / "qa.jsonl")


def test_qa_answers_may_be_numbers() -> None:
    assert gold_answers({"golden_answers": [1990, "nineteen ninety"]}) == ["1990", "nineteen ninety"]


@pytest.mark.parametrize(
    "record",
    ['{"id": "1", "contents": null}', '{"id": "1", "text": 5}', '{"id": "1", "text": "t", "title": 3}'],
)
def test_a_corpus_record_without_text_is_refused(tmp_path: Path, record: str) -> None:
    (tmp_path / "c.jsonl").write_text(record + "\n")
    with pytest.raises(ValueError, match=r"c\.jsonl:1: '(contents|text|title)' must be text"):
        load_corpus(tmp_path / "c.jsonl")


# -- 11. checkpoints --------------------------------------------------------------------------------


def test_a_broken_policy_file_is_named_in_one_line(tmp_path: Path) -> None:
    import torch

    good = tmp_path / "good.pt"
    torch.save({"format": 1, "state": {"w": torch.zeros(1000)}}, good)
    data = good.read_bytes()
    for name, content in (("garbage.pt", b"not a policy" * 10), ("truncated.pt", data[: len(data) // 2])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(
            ValueError, match=rf"^{tmp_path / name}: not a policy file \(truncated, or garbage"
        ):
            load_policy(tmp_path / name)
    with pytest.raises(ValueError, match=r"missing\.pt: cannot read it \(No such file or directory\)$"):
        load_policy(tmp_path / "missing.pt")


# -- 12. seeds by name ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("3", (0, 1, 2)), ("1000-1002", (1000, 1001, 1002)), ("3,7,9", (3, 7, 9)), ("5-5", (5,))],
)
def test_seeds_by_count_range_or_list(text: str, seeds: tuple[int, ...]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "-3", "5-2", "a", "1,1", "1,-2", "0-100000000", ""])
def test_bad_seeds_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a count N"):
        parse_seeds(text)


def test_a_grid_over_seed_is_refused_rather_than_silently_replaced() -> None:
    with pytest.raises(ConfigError, match=r"SweepSpec\.grid\['seed'\]: seeds are named by seeds .*--seeds"):
        spec_from_overrides(["seed=1000,1001,1002"], (0,))
    with pytest.raises(ConfigError, match=r"SweepSpec\.base\['seed'\]"):
        SweepSpec(base={"seed": 3})


def test_the_command_line_names_seeds(tmp_path: Path, capsys) -> None:
    from testbed.cli import main

    tiny = [f"{k}={v}" for k, v in TINY.items()]
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--grid", "seed=1000,1001", *tiny, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "SweepSpec.grid['seed']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--seeds", "5-2"])
    assert "argument --seeds: seeds '5-2': expected a count N" in capsys.readouterr().err


# -- 13. environments -------------------------------------------------------------------------------


def test_episode_ids_past_int64_are_refused_not_wrapped() -> None:
    import gymnasium as gym

    import testbed  # noqa: F401 (registers the environments)
    from testbed.envs.vector import TabularSearchVectorEnv

    env = gym.make("testbed/SearchTokens-v0").unwrapped
    for bad in (2**63, 2**64 + 5):
        with pytest.raises(ValueError, match=rf"episode id {bad}: must be an int in \[0, 2\*\*63\)"):
            env.reset(options={"episode": bad})
    assert env.reset(options={"episode": 2**63 - 1})[1]["episode"] == 2**63 - 1
    vec = TabularSearchVectorEnv(2)
    with pytest.raises(ValueError, match=r"episode id 9223372036854775808"):
        vec.reset(options={"episode": np.array([1, 2**63], dtype=np.uint64)})


def test_decode_names_a_token_id_outside_the_vocabulary() -> None:
    vocab = World(WorldConfig()).vocab
    assert vocab.decode([vocab.bos]) == "<bos>"
    for bad in (-1, vocab.size):
        with pytest.raises(
            ValueError, match=rf"token id {bad}: not in the vocabulary \(ids 0\.\.{vocab.size - 1}\)"
        ):
            vocab.decode([vocab.bos, bad])
