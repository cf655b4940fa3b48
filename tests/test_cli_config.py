"""Config files: printed, read back to the same config; ``config``, ``train`` and ``sweep`` start
from a scenario (the compare job's by default); runs keep their config, stream their rows, log to
TensorBoard and save their policy when asked."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

from testbed import cli, sweep
from testbed.config import config_hash, from_dict, to_dict, with_overrides
from testbed.run import RunConfig, load_policy
from testbed.studies import DEFAULT_SCENARIO, compare_experiment
from testbed.studies.scenarios import get_scenario
from testbed.sweep import ResultStore, executors, runner
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
    given = {"objective.name": "sapo", "task.world.hop_weights": "0.5+0.5"}
    expected = with_overrides(RunConfig(), {**get_scenario(DEFAULT_SCENARIO).overrides, **given})
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
    code, text, _ = _cli(["config", "--scenario", "defaults", "--set", *TINY], capsys)
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


class _Started(Exception):
    """Raised in place of training: the configs a command would run are captured."""


def test_config_train_and_sweep_start_from_the_scenario(tmp_path: Path, capsys, monkeypatch) -> None:
    """With no ``--scenario``, the compare job's default: ``train --set objective.name=sapo`` is its
    SAPO arm's seed 0; ``--scenario NAME`` another one; ``defaults``: RunConfig's own."""

    def arm(objective: str, seed: int = 0, scenario: str = DEFAULT_SCENARIO) -> str:
        exp = compare_experiment((objective,), (seed,), scenario)
        return config_hash(exp.arms[objective].configs()[0])

    def printed(*argv: str) -> str:
        code, out, err = _cli(["config", *argv], capsys)
        assert code == 0, err
        return config_hash(from_dict(RunConfig, yaml.safe_load(out)))

    assert printed("--set", "objective.name=sapo") == arm("sapo")
    assert printed("--scenario", "isdd", "--set", "objective.name=sapo", "seed=3") == arm("sapo", 3, "isdd")
    assert printed("--scenario", "defaults") == config_hash(RunConfig())
    _, explained, _ = _cli(["config", "--scenario", "isdd", "--explain"], capsys)
    assert "\n  lr: 0.003\n" in explained and "\n  minibatches: 6\n" in explained  # the scenario's values

    started: list[str] = []

    def run_configs(cfgs, *args, **kwargs):
        started.extend(config_hash(c) for c in cfgs)
        raise _Started

    monkeypatch.setattr(sweep, "run_configs", run_configs)
    monkeypatch.setattr(executors, "local_executor", lambda n=None: ThreadPoolExecutor(n or 1))
    for argv, expected in (
        (["train", "--set", "objective.name=sapo"], {arm("sapo")}),
        (["train", "--scenario", "isdd"], {arm("grpo", scenario="isdd")}),
        (
            ["sweep", "--grid", "objective.name=grpo,sapo", "--seeds", "2"],
            {arm(o, s) for o in ("grpo", "sapo") for s in (0, 1)},
        ),
    ):
        started.clear()
        with pytest.raises(_Started):
            cli.main([*argv, "--out", str(tmp_path)])
        assert set(started) == expected and len(started) == len(expected), argv


def test_the_help_names_the_default_scenario() -> None:
    assert f"default {DEFAULT_SCENARIO}," in cli.SCENARIO_HELP
