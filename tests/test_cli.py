"""The command line: bad input ends with one line naming it, before any work; a failed run is
reported (exit 1) with the others kept; a cached rerun says so; submitit parameters are typed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from testbed import cli, run
from testbed.config import ConfigError
from testbed.sweep import ResultStore, executors, runner, submitit_parameters

TINY = ["policy.kind=tabular", "warm_start.steps=0", "trainer.n_updates=2", "trainer.eval_every=1"]


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
    argv = ["train", "--out", str(tmp_path / "out"), "--set", *TINY[:2], "--set", *TINY[2:]]  # both apply
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
    argv = ["sweep", "--grid", *TINY[:2], TINY[3], "trainer.n_updates=2,3", "--out", str(tmp_path)]
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
