"""Sweeps: specs, every executor backend, and resuming after SIGKILL with nothing lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from testbed.config import ConfigError
from testbed.sweep import ResultStore, SweepSpec, load_spec, make_executor, run_configs, spec_from_overrides

TINY = {
    "policy.kind": "tabular",
    "warm_start.steps": "0",
    "trainer.n_updates": "2",
    "trainer.eval_every": "1",
}


def _frame(store: ResultStore) -> pd.DataFrame:
    rows = store.rows().drop(columns=["wall_time"])
    return rows.sort_values(["run", "update"]).reset_index(drop=True)


def test_spec_grid_random_and_seeds() -> None:
    spec = SweepSpec(
        base=TINY,
        grid={"objective.name": ["sapo"], "objective.tau": [0.5, 0.8]},
        random={"n": 3, "seed": 1, "space": {"trainer.lr": {"loguniform": [1e-3, 1e-2]}}},
        seeds=[0, 1],
    )
    configs = spec.configs()
    assert len(configs) == 2 * 3 * 2
    assert {c.objective.tau for c in configs} == {0.5, 0.8}
    assert all(1e-3 <= c.trainer.lr <= 1e-2 for c in configs)
    assert spec.configs() == configs  # random samples are seeded


def test_spec_files_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "base: {trainer.n_updates: 3}\ngrid: {objective.tau: [0.5, 0.9]}\nseeds: [0, 1]\n"
    )
    (tmp_path / "s.json").write_text(json.dumps({"grid": {"objective.tau": [0.5, 0.9]}, "seeds": [0, 1]}))
    a, b = load_spec(tmp_path / "s.yaml").configs(), load_spec(tmp_path / "s.json").configs()
    assert len(a) == len(b) == 4 and a[0].trainer.n_updates == 3
    spec = spec_from_overrides(["objective.tau=0.5,0.8", "trainer.lr=0.01"], [0])
    assert spec.grid == {"objective.tau": ["0.5", "0.8"]} and spec.base == {"trainer.lr": "0.01"}
    assert [c.objective.tau for c in spec.configs()] == [0.5, 0.8]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (lambda: SweepSpec(grid={"objective.tau": []}), r"grid\['objective.tau'\]"),
        (lambda: SweepSpec(random={"space": {"trainer.lr": {"normal": [0, 1]}}}), r"space\['trainer.lr'\]"),
        (lambda: SweepSpec(grid={"objective.tua": [1]}).configs(), r"objective.tua"),
        (lambda: SweepSpec(grid={"objective.tau": [-1]}).configs(), r"ObjectiveConfig.tau=-1"),
    ],
)
def test_bad_specs_name_the_field(spec, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        spec()


def _sweep_configs():
    return SweepSpec(base=TINY, grid={"objective.name": ["grpo", "sapo", "cispo"]}, seeds=[0, 1]).configs()


@pytest.mark.parametrize("backend", ["local", "submitit", "ray"])
def test_every_backend_gives_the_same_results(backend: str, tmp_path: Path) -> None:
    if backend == "submitit":
        pytest.importorskip("submitit")
        executor = make_executor("submitit", folder=tmp_path / "jobs", cluster="local", timeout_min=5)
    elif backend == "ray":
        pytest.importorskip("ray")
        executor = make_executor("ray", workers=2)
    else:
        executor = make_executor("local", workers=2)
    configs = _sweep_configs()[:2]
    try:
        run_configs(configs, ResultStore(tmp_path / backend), executor, progress=False)
    finally:
        executor.shutdown()
    reference = ResultStore(tmp_path / "serial")
    run_configs(configs, reference, make_executor("local", workers=1), progress=False)
    pd.testing.assert_frame_equal(_frame(ResultStore(tmp_path / backend)), _frame(reference))


def test_sigkill_midway_then_resume_loses_and_doubles_nothing(tmp_path: Path) -> None:
    grid = [
        "--grid",
        *(f"{k}={v}" for k, v in TINY.items()),
        "objective.name=grpo,sapo,cispo",
        "--seeds",
        "2",
    ]
    cmd = [sys.executable, "-m", "testbed.cli", "sweep", *grid, "--workers", "1"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(ResultStore(killed).keys()) < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = ResultStore(killed).keys()
    assert 2 <= len(finished) < 6, "the sweep should have been killed mid-way"
    before = {k: (killed / "runs" / f"{k}.csv").read_text() for k in finished}

    subprocess.run([*cmd, "--out", str(killed)], check=True, capture_output=True)
    whole = tmp_path / "whole"
    subprocess.run([*cmd, "--out", str(whole)], check=True, capture_output=True)

    assert len(ResultStore(killed).keys()) == 6
    assert all((killed / "runs" / f"{k}.csv").read_text() == v for k, v in before.items())  # not redone
    assert not list((killed / "runs").glob("*.tmp"))
    a, b = _frame(ResultStore(killed)), _frame(ResultStore(whole))
    assert not a.duplicated(["run", "update"]).any()
    pd.testing.assert_frame_equal(a, b)
