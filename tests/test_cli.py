"""The command line: bad input ends with one line naming it, before any work; a failed run is
reported (exit 1) with the others kept; a cached rerun says so; submitit parameters are typed; a
missing Ray cluster or package is one line; the compare job's table.csv holds numbers."""

from __future__ import annotations

import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pandas as pd
import pytest

from testbed import cli, run
from testbed.analysis import summary_numbers
from testbed.config import ConfigError
from testbed.studies import compare
from testbed.sweep import ResultStore, executors, runner, submitit_parameters

# on RunConfig's own defaults (the default scenario's Qwen2 recipe pre-trains, which a table cannot)
TINY = ["policy.kind=tabular", "warm_start.steps=0", "trainer.n_updates=2", "trainer.eval_every=1"]
DEFAULTS = ["--scenario", "defaults"]


def _run(argv: list[str], capsys) -> tuple[int | str | None, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.fixture
def in_process(monkeypatch):
    """Runs on threads of this process (no worker start-up); fails if a run is started."""
    monkeypatch.setattr(runner, "local_executor", lambda n=None: ThreadPoolExecutor(n or 1))
    monkeypatch.setattr(executors, "local_executor", lambda n=None: ThreadPoolExecutor(n or 1))


@pytest.fixture
def no_runs(monkeypatch):
    def refuse(*args):
        raise AssertionError("a run started although the input was bad")

    monkeypatch.setattr(run, "build_trainer", refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--set", "trainer.lr=nan"], "config error: trainer.lr='nan': must be a finite number"),
        (["train", "--set", "trainer.max_grad_norm=inf"], "trainer.max_grad_norm='inf': must be a finite"),
        (["train", "--set", "objective=sapo"], "objective='sapo': objective is a section, not a value"),
        (
            ["train", "--set", "trainer.n_updates=abc"],
            "trainer.n_updates='abc': cannot read it as an integer",
        ),
        (["train", "--set", "lr"], "--set 'lr': expected NAME=VALUE"),
        (["compare", "--set", "objective.nme=sapo"], "ObjectiveConfig has no field 'nme'"),
        (
            ["sweep", "--grid", "trainer.n_updates=2,abc"],
            "trainer.n_updates='abc': cannot read it as an integer",
        ),
        (["sweep", "--grid", "trainer.lr"], "--grid 'trainer.lr': expected NAME=VALUE"),
        (["sweep", "spec.txt"], "spec.txt: a sweep file must end in .yaml, .yml, .json"),
        (["sweep", "empty.yaml"], "empty.yaml: empty, or not a mapping"),
        (["sweep", "bad.yaml"], "bad.yaml: not valid YAML"),
        (
            ["sweep", "--slurm", "timeout_min=60"],
            "--slurm ['timeout_min=60']: only used with --backend submitit",
        ),
        (
            ["sweep", "--backend", "submitit", "--slurm", "timeout_min=1h"],
            "--slurm timeout_min='1h': cannot read",
        ),
        (["sweep", "--backend", "submitit", "--slurm", "slurm_colour=red"], "Unknown argument 'colour'"),
        (["train", "--out", "file/out"], "output error: output folder file/out: cannot write there"),
        (
            ["train", "--set", "policy.kind=tabular"],  # the default scenario's Qwen2 recipe pre-trains
            "config error: WarmStartConfig.pretrain_steps=300: language modelling needs the token grain",
        ),
        (
            ["train", "--scenario", "nope"],
            "config error: scenario='nope': unknown; known: ['defaults', 'isdd',",
        ),
        (
            ["sweep", "--scenario", "nope"],
            "config error: scenario='nope': unknown; known: ['defaults', 'isdd',",
        ),
    ],
)
def test_bad_input_ends_with_one_line_before_any_work(
    argv: list[str], message: str, tmp_path: Path, capsys, monkeypatch, no_runs
) -> None:
    if "submitit" in argv:
        pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.txt").write_text("grid: {objective.tau: [0.5]}\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "bad.yaml").write_text("grid: [\n")
    (tmp_path / "file").write_text("")
    code, out, err = _run([*argv, *([] if "--out" in argv else ["--out", "runs"])], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs" / "runs").exists() or not any((tmp_path / "runs" / "runs").iterdir())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["experiment", "nope"], "config error: study 'nope': unknown; known: ['drift_phase', 'family',"),
        (["figures", "family", "nope"], "config error: study 'nope': unknown; known: ['drift_phase',"),
        (["report", "nope"], "config error: scenario='nope': no baselines study; known: ['isdd',"),
        (["compare", "--scenario", "nope"], "config error: scenario='nope': unknown; known: ['defaults',"),
        (["ladder", "--rungs", "2m"], "config error: rung='2m': unknown; known: ['0.1m', '1m', '10m',"),
        (["experiment", "family", "--set", "trainer.lr=0"], "error: TrainerConfig.lr=0.0: must be > 0"),
    ],
)
def test_study_commands_name_a_bad_input_in_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys, no_runs
) -> None:
    code, out, err = _run([*argv, *([] if argv[0] == "compare" else ["--root", str(tmp_path)])], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--seeds", "0"], "--seeds: seeds '0': expected a count N"),
        (["compare", "--workers", "-1"], "--workers: expected an integer >= 1"),
        (["sweep", "--workers", "0"], "--workers: expected an integer >= 1"),
        (["sweep", "--seeds", "x"], "--seeds: seeds 'x': expected a count N"),
    ],
)
def test_counts_must_be_positive(argv: list[str], message: str, capsys) -> None:
    code, _, err = _run(argv, capsys)
    assert code == 2 and f"argument {message}" in err


def test_a_rerun_says_cached_and_force_redoes(tmp_path: Path, capsys, monkeypatch, in_process) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SAPO_TESTBED_CACHE", str(tmp_path / "file" / "cache"))
    argv = ["train", *DEFAULTS, "--out", str(tmp_path / "out"), "--set", *TINY[:2], "--set", *TINY[2:]]
    cli.main(argv)
    out, err = capsys.readouterr()
    assert out.rstrip().splitlines()[-1].startswith("wrote ")
    assert '"trainer.n_updates": 2' in out and '"policy.kind": "tabular"' in out
    assert "sapo-testbed: warning: warm-start cache" in err  # one line, no source file
    assert all("warnings.warn" not in line for line in err.splitlines())
    cli.main(argv)
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("cached: ")
    cli.main([*argv, "--force"])
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("wrote ")


def test_a_failed_run_exits_1_and_the_others_are_kept(
    tmp_path: Path, capsys, monkeypatch, in_process
) -> None:
    real = run.build_trainer

    def build_trainer(cfgs, *args, **kwargs):
        if any(c.trainer.n_updates == 3 for c in cfgs):
            raise FloatingPointError("poisoned")
        return real(cfgs, *args, **kwargs)

    monkeypatch.setattr(run, "build_trainer", build_trainer)
    argv = ["sweep", *DEFAULTS, "--grid", *TINY[:2], TINY[3], "trainer.n_updates=2,3", "--out", str(tmp_path)]
    code, _, err = _run(argv, capsys)
    assert code == 1
    assert "1 of 2 runs failed" in err and "FloatingPointError: poisoned" in err
    store = ResultStore(tmp_path)
    assert len(store.keys()) == 1 and len(store.failures()) == 1


def test_slurm_values_are_typed() -> None:
    pytest.importorskip("submitit")
    params = submitit_parameters(
        ["timeout_min=60", "mem_gb=4", "slurm_partition=cpu", "slurm_exclusive=true"]
    )
    assert params == {"timeout_min": 60, "mem_gb": 4.0, "slurm_partition": "cpu", "slurm_exclusive": True}
    assert type(params["timeout_min"]) is int
    with pytest.raises(ConfigError, match=r"^--slurm 'timeout_min': given twice"):
        submitit_parameters(["timeout_min=1", "timeout_min=2"])


def test_submitit_without_slurm_says_it_runs_locally(tmp_path: Path, recwarn) -> None:
    pytest.importorskip("submitit")
    params = submitit_parameters(["timeout_min=60"])  # docs/STUDIES.md's example
    executor = executors.make_executor("submitit", folder=tmp_path, **params)
    if cast(Any, executor)._ex.cluster == "slurm":
        pytest.skip("a SLURM cluster is here")
    assert any("no SLURM cluster found" in str(w.message) for w in recwarn)
    recwarn.clear()
    executors.make_executor("submitit", folder=tmp_path, cluster="local", **params)
    assert not [w for w in recwarn if "SLURM" in str(w.message)]


def test_ray_without_a_cluster_or_without_ray_is_one_line(
    tmp_path: Path, capsys, monkeypatch, no_runs
) -> None:
    def init(**kwargs):  # what ray.init(address="auto") raises where no cluster runs
        raise ConnectionError(
            "Could not find any running Ray instance. Please specify the one\nto connect to"
        )

    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: False, init=init))
    argv = [
        "sweep",
        "--backend",
        "ray",
        "--ray-address",
        "auto",
        "--grid",
        *TINY,
        "--out",
        str(tmp_path),
        *DEFAULTS,
    ]
    code, out, err = _run(argv, capsys)
    assert (code, out) == (2, "")
    assert err == (
        "sapo-testbed: config error: --ray-address 'auto': cannot reach or start Ray (ray says: Could not "
        "find any running Ray instance. Please specify the one)\n"
    )
    with socket.socket() as free:  # a port nothing listens at: refused at once (Ray would retry for minutes)
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    at_port = [*argv[:4], f"127.0.0.1:{port}", *argv[5:]]
    code, out, err = _run(at_port, capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith(
        f"sapo-testbed: config error: --ray-address '127.0.0.1:{port}': nothing answers there ("
    )
    monkeypatch.setitem(sys.modules, "ray", None)  # not installed
    code, out, err = _run(argv, capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("sapo-testbed: config error: --backend ray: needs the 'ray' package (")
    assert err.endswith('; pip install -c constraints.txt -e ".[cluster]"\n')


def test_compare_writes_numbers_to_table_csv_and_a_shared_run_to_each_arm(
    tmp_path: Path, capsys, monkeypatch, in_process
) -> None:
    """GRPO and its control coincide at one minibatch: each arm still has its own row of 2 seeds;
    table.csv holds one number per column (table.md the same, as text)."""
    monkeypatch.setenv("SAPO_TESTBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compare, "arm_curves", lambda *args: None)  # tables only (figures: test_figures.py)
    argv = ["compare", *DEFAULTS, "--objectives", "grpo", "sapo", "--control", "--seeds", "2"]
    cli.main([*argv, "--out", str(tmp_path), "--set", *TINY, "trainer.minibatches=1"])
    capsys.readouterr()
    table = pd.read_csv(tmp_path / "table.csv")
    assert table["arm"].tolist() == ["grpo", "sapo", "grpo_control"] and table["seeds"].tolist() == [2, 2, 2]
    numeric = table.drop(columns="arm")
    assert all(pd.api.types.is_numeric_dtype(numeric[c]) for c in numeric), numeric.dtypes
    for column in (
        "final_em",
        "final_em_ci_low",
        "final_em_ci_high",
        "collapse_rate_ci_high",
        "p_final_holm",
    ):
        assert column in table
    summaries = pd.read_csv(tmp_path / "summaries.csv")
    expected = summary_numbers(summaries, ["arm"], {"arm": "grpo"})
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, check_exact=False, atol=1e-12)
    md = (tmp_path / "table.md").read_text()
    assert f"{table['final_em'][1]:.3f} [{table['final_em_ci_low'][1]:.3f}, " in md


def test_every_study_tabulates_numbers_for_its_csv() -> None:
    """Each catalog study's ``table.csv`` (``Experiment.numbers``) holds a number per cell, beside
    the columns that name its groups; on synthetic summaries (nothing is trained)."""
    import numpy as np

    from testbed.run import flat_config
    from testbed.studies import CATALOG, get_study

    rng = np.random.default_rng(0)
    for name in CATALOG:
        exp = get_study(name, 6)
        runs = []
        for arm, spec in exp.arms.items():
            for cfg in spec.configs():
                collapsed = bool(rng.random() < 0.5)
                runs.append(
                    {
                        "arm": arm,
                        **flat_config(cfg),
                        "seed": cfg.seed,
                        "warm_em": 0.1,
                        "warm_em_greedy": 0.4,
                        "peak_em": 0.1 + rng.random() / 2,
                        "final_em": rng.random() / 2,
                        "collapsed": collapsed,
                        "collapse_step": float(rng.integers(1, 100)) if collapsed else np.nan,
                    }
                )
        numbers = exp.numbers(pd.DataFrame(runs))
        cells = numbers.drop(columns=[c for c in (*exp.columns, "world") if c in numbers])
        text = [c for c in cells if not pd.api.types.is_numeric_dtype(cells[c])]
        assert len(numbers) and not text, (name, text)
