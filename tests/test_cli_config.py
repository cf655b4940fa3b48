"""Config files: printed, read back to the same config; runs keep their config, stream their rows,
log to TensorBoard and save their policy when asked."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

from testbed import cli
from testbed.config import config_hash, from_dict, to_dict, with_overrides
from testbed.run import RunConfig, load_policy
from testbed.sweep import ResultStore, runner
from testbed.tracking import run_names

TINY = ["policy.kind=tabular", "warm_start.steps=0", "trainer.n_updates=2", "trainer.eval_every=1"]


def _cli(argv: list[str], capsys) -> tuple[int | str | None, str, str]:
    try:
        cli.main(argv)
        code: int | str | None = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_printed_config_reads_back_to_the_same_config(tmp_path: Path, capsys) -> None:
    code, out, _ = _cli(["config", "--set", "objective.name=sapo", "task.world.hop_weights=0.5+0.5"], capsys)
    assert code == 0
    expected = with_overrides(RunConfig(), {"objective.name": "sapo", "task.world.hop_weights": "0.5+0.5"})
    assert config_hash(from_dict(RunConfig, yaml.safe_load(out))) == config_hash(expected)
    (tmp_path / "run.yaml").write_text(out)
    code, again, _ = _cli(["config", "--config", str(tmp_path / "run.yaml")], capsys)
    assert code == 0 and again == out
    code, over, _ = _cli(["config", "--config", str(tmp_path / "run.yaml"), "--set", "seed=3"], capsys)
    assert yaml.safe_load(over)["seed"] == 3 and yaml.safe_load(over)["objective"]["name"] == "sapo"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trainer:\n  lr: fast\n", "run.yaml: trainer.lr='fast': cannot read it as a number"),
        ("objective:\n  nme: sapo\n", "run.yaml: objective: unknown field(s) ['nme']"),
        ("objective: sapo\n", "run.yaml: objective='sapo': objective is a section"),
        ("- 1\n", "run.yaml: empty, or not a mapping"),
        ("a: [\n", "run.yaml: not valid YAML"),
    ],
)
def test_a_bad_config_file_fails_in_one_line_naming_the_field(
    text: str, message: str, tmp_path: Path, capsys
) -> None:
    (tmp_path / "run.yaml").write_text(text)
    code, out, err = _cli(["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_train_from_a_config_file_tracks_streams_and_saves(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    monkeypatch.setattr(runner, "local_executor", lambda n=None: ThreadPoolExecutor(n or 1))
    monkeypatch.setenv("SAPO_TESTBED_CACHE", str(tmp_path / "cache"))
    code, text, _ = _cli(["config", "--set", *TINY], capsys)
    (tmp_path / "run.yaml").write_text(text)
    argv = [
        "train",
        "--config",
        str(tmp_path / "run.yaml"),
        "--set",
        "seed=2",
        "--out",
        str(tmp_path / "out"),
    ]
    code, _, err = _cli([*argv, "--track", "tensorboard", "--save-policy"], capsys)
    assert code == 0, err
    cfg = with_overrides(RunConfig(), {k: v for k, v in (t.split("=") for t in [*TINY, "seed=2"])})
    key = config_hash(cfg)
    store = ResultStore(tmp_path / "out")
    assert store.keys() == [key]
    assert config_hash(from_dict(RunConfig, store.config(key))) == key  # the config beside its rows
    folder = store.folder(key)
    assert config_hash(from_dict(RunConfig, yaml.safe_load((folder / "config.yaml").read_text()))) == key
    streamed = pd.read_parquet(folder / "rows.parquet")
    assert streamed["update"].tolist() == [0, 1, 2]  # update 0 included
    assert streamed["train_reward"].tolist()[1:] == store.rows([key])["train_reward"].tolist()[1:]
    (events,) = (store.runs / "tensorboard").glob("*/events.out.tfevents.*")  # one run, by its name
    assert events.parent.name == run_names(to_dict(cfg))[0]
    loaded_cfg, _ = load_policy(folder / "policy.pt")
    assert config_hash(loaded_cfg) == key
