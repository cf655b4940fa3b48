"""Sweeps: specs, every executor backend, resuming after SIGKILL with nothing lost or doubled, a
failed run costing none of the others, Ctrl-C, and a store that checks what it holds."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from testbed.config import ConfigError
from testbed.sweep import (
    ResultStore,
    RunsFailed,
    StoreError,
    SweepSpec,
    load_spec,
    make_executor,
    run_configs,
    runner,
    spec_from_overrides,
)
from testbed.sweep.runner import usable_cache_dir

runner_train = runner.train_population

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
        grid={"objective.name": ["sapo"], "objective.sapo_tau": [0.5, 0.8]},
        random={"n": 3, "seed": 1, "space": {"trainer.lr": {"loguniform": [1e-3, 1e-2]}}},
        seeds=[0, 1],
    )
    configs = spec.configs()
    assert len(configs) == 2 * 3 * 2
    assert {c.objective.sapo_tau for c in configs} == {0.5, 0.8}
    assert all(1e-3 <= c.trainer.lr <= 1e-2 for c in configs)
    assert spec.configs() == configs  # random samples are seeded


def test_spec_files_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "base: {trainer.n_updates: 3}\ngrid: {objective.sapo_tau: [0.5, 0.9]}\nseeds: [0, 1]\n"
    )
    (tmp_path / "s.json").write_text(
        json.dumps({"grid": {"objective.sapo_tau": [0.5, 0.9]}, "seeds": [0, 1]})
    )
    a, b = load_spec(tmp_path / "s.yaml").configs(), load_spec(tmp_path / "s.json").configs()
    assert len(a) == len(b) == 4 and a[0].trainer.n_updates == 3
    spec = spec_from_overrides(["objective.sapo_tau=0.5,0.8", "trainer.lr=0.01"], [0])
    assert spec.grid == {"objective.sapo_tau": ["0.5", "0.8"]} and spec.base == {"trainer.lr": "0.01"}
    assert [c.objective.sapo_tau for c in spec.configs()] == [0.5, 0.8]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (lambda: SweepSpec(grid={"objective.sapo_tau": []}), r"grid\['objective.sapo_tau'\]"),
        (lambda: SweepSpec(random={"space": {"trainer.lr": {"normal": [0, 1]}}}), r"space\['trainer.lr'\]"),
        (lambda: SweepSpec(grid={"objective.tua": [1]}).configs(), r"objective.tua"),
        (lambda: SweepSpec(grid={"objective.sapo_tau": [-1]}).configs(), r"ObjectiveConfig.sapo_tau=-1"),
        (lambda: SweepSpec(grid={"objective.sapo_tau": "0.5"}), r"grid\['objective.sapo_tau'\]"),
        (lambda: SweepSpec(grid={"trainer.n_updates": [2.5]}).configs(), r"trainer.n_updates=2.5"),
        (lambda: SweepSpec(base={"trainer.lr": math.inf}).configs(), r"trainer.lr=inf: must be a finite"),
        (lambda: SweepSpec(seeds=3), r"SweepSpec.seeds=3"),  # type: ignore[arg-type]
        (lambda: SweepSpec(seeds=["a"]), r"SweepSpec.seeds"),  # type: ignore[list-item]
        (lambda: SweepSpec(random={"n": 0}), r"random.n=0"),
        (lambda: SweepSpec(random={"count": 3}), r"unknown key\(s\) \['count'\]"),
        (lambda: SweepSpec(random={"space": {"trainer.lr": {"loguniform": [0, 1]}}}), r"low > 0"),
        (lambda: SweepSpec(random={"space": {"trainer.lr": {"uniform": [1]}}}), r"two finite numbers"),
        (lambda: SweepSpec(random={"space": {"trainer.lr": {"uniform": [2, 1]}}}), r"low <= high"),
        (lambda: SweepSpec(random={"space": {"trainer.lr": {"uniform": ["a", 1]}}}), r"two finite"),
        (lambda: SweepSpec(random={"space": {"seed": {"randint": [0.5, 3]}}}), r"two integers"),
        (lambda: SweepSpec(random={"space": {"seed": {"choice": []}}}), r"non-empty list"),
        (
            lambda: spec_from_overrides(["objective.sapo_tau"], [0]),
            r"^--grid 'objective.sapo_tau': expected NAME=VALUE",
        ),
    ],
)
def test_bad_specs_name_the_field(spec, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        spec()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("s.txt", "grid: {objective.sapo_tau: [0.5]}", r"must end in \.yaml, \.yml, \.json"),
        ("s.yaml", "", r"empty, or not a mapping"),
        ("s.json", "", r"empty, or not a mapping"),
        ("s.yaml", "- 1\n- 2\n", r"empty, or not a mapping"),
        ("s.yaml", "grid: {objective.sapo_tau: [0.5\n", r"not valid YAML .* at line"),
        ("s.json", '{"grid": ', r"not valid JSON .* at line 1"),
        ("s.yaml", "grids: {}\n", r"unknown sweep keys \['grids'\]"),
        ("s.yaml", "random: {space: {trainer.lr: {loguniform: [0, 1]}}}\n", r"s\.yaml: .*low > 0"),
        ("missing.yaml", None, r"cannot read it \(No such file"),
    ],
)
def test_bad_spec_files_give_one_line(tmp_path: Path, name: str, text: str | None, match: str) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_spec(tmp_path / name)
    assert "\n" not in str(err.value)


def _sweep_configs():
    return SweepSpec(base=TINY, grid={"objective.name": ["grpo", "sapo", "cispo"]}, seeds=[0, 1]).configs()


# Ray's start-up alone takes a minute or more on a busy 2-core machine: its case runs with -m slow.
@pytest.mark.parametrize("backend", ["local", "submitit", pytest.param("ray", marks=pytest.mark.slow)])
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
    # one run per process, so that runs finish one by one (a population is stored all at once)
    cmd = [sys.executable, "-m", "testbed.cli", "sweep", "--scenario", "defaults", *grid, "--workers", "1"]
    cmd += ["--population", "1"]
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


# -- a failed run costs none of the others; the store checks what it holds -----------------------


def _tiny_configs(n: int = 3):
    return SweepSpec(base=TINY, grid={"objective.name": ["grpo", "sapo", "cispo"][:n]}).configs()


def _poisoned(cfg):
    """A config that passes validation's back door and raises inside training (Adam refuses it)."""
    object.__setattr__(cfg.trainer, "lr", math.nan)
    return cfg


def test_a_failing_run_is_recorded_and_every_other_run_is_stored(tmp_path: Path) -> None:
    good = _tiny_configs(2)
    bad = _poisoned(_tiny_configs(3)[2])
    store = ResultStore(tmp_path)
    with (
        ThreadPoolExecutor(2) as ex,
        pytest.raises(RunsFailed, match=r"^1 of 3 runs failed .*Invalid learning rate") as err,
    ):
        run_configs([good[0], bad, good[1]], store, ex, progress=False)
    assert "\n" not in str(err.value)
    good_keys, bad_key = run_configs(good, store, progress=False), next(iter(err.value.failures))
    assert store.keys() == sorted(good_keys)  # nothing to redo: both good runs were kept
    failure = store.failures()[bad_key]
    assert failure["error"].startswith("ValueError") and "Traceback" in failure["traceback"]
    assert failure["config"]["trainer"]["lr"] is None or math.isnan(failure["config"]["trainer"]["lr"])


def _one_run(tmp_path: Path) -> tuple[ResultStore, str, pd.DataFrame]:
    store = ResultStore(tmp_path)
    with ThreadPoolExecutor(1) as ex:
        (key,) = run_configs(_tiny_configs(1), store, ex, progress=False)
    return store, key, _frame(store)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda csv, js: csv.write_bytes(csv.read_bytes()[: len(csv.read_bytes()) // 2]), "checksum"),
        (lambda csv, js: csv.unlink(), "unreadable"),
        (lambda csv, js: js.write_text(""), "unreadable record"),
        (lambda csv, js: js.write_text("{garbage"), "unreadable record"),
        (lambda csv, js: js.write_text(json.dumps({"run": "x"})), "older version"),
    ],
)
def test_a_broken_run_is_detected_and_redone(tmp_path: Path, damage, why: str) -> None:
    store, key, original = _one_run(tmp_path)
    damage(store.runs / f"{key}.csv", store.runs / f"{key}.json")
    assert not store.has(key) and why in (store.problem(key) or "")
    assert store.keys() == []
    with pytest.raises(StoreError, match=f"{why}.*run the sweep again"):
        store.rows([key])
    with pytest.warns(UserWarning, match=f"run {key} is broken .*{why}.*redoing it"):
        run_configs(_tiny_configs(1), store, ThreadPoolExecutor(1), progress=False)
    assert store.has(key)
    pd.testing.assert_frame_equal(_frame(store), original)


def test_each_run_records_its_provenance_and_force_redoes_it(tmp_path: Path, capsys, monkeypatch) -> None:
    store, key, _ = _one_run(tmp_path)
    summary = store.summaries([key]).iloc[0]
    for column in ("package_version", "git_commit", "torch_version", "torch_threads", "cpu_capability"):
        assert column in summary.index
    assert summary["torch_threads"] == 1 and summary["package_version"]
    calls = []
    monkeypatch.setattr(runner, "train_population", lambda *a, **k: calls.append(a) or runner_train(*a, **k))  # type: ignore[func-returns-value]
    with ThreadPoolExecutor(1) as ex:
        run_configs(_tiny_configs(1), store, ex)
        assert calls == [] and "1 of 1 runs already in" in capsys.readouterr().err
        run_configs(_tiny_configs(1), store, ex, progress=False, force=True)
    assert len(calls) == 1 and store.has(key)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        ResultStore(tmp_path).write("k", [{"update": 0}], {"final_em": 0.0}, {})
    finally:
        os.umask(old)
    for path in (tmp_path / "runs").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


class _NoWork(Executor):
    def submit(self, fn, /, *args, **kwargs):
        raise AssertionError("work started before the output folder was checked")


def test_output_folder_is_checked_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(
        StoreError, match=r"^output folder .*file/out: cannot write there \(Not a directory\)$"
    ):
        run_configs(_tiny_configs(1), ResultStore(tmp_path / "file" / "out"), _NoWork())
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(StoreError, match="Permission denied"):
            run_configs(_tiny_configs(1), ResultStore(tmp_path / "ro"), _NoWork())


def test_an_unwritable_warm_start_cache_is_skipped_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.warns(UserWarning, match="warm-start cache .* cannot be written .*not cached"):
        assert usable_cache_dir(tmp_path / "file" / "cache") is None
    assert usable_cache_dir(tmp_path / "ok") == tmp_path / "ok"


def test_workers_must_be_positive() -> None:
    for workers in (0, -1):
        with pytest.raises(ConfigError, match=f"workers={workers}: must be >= 1"):
            make_executor("local", workers)


# -- Ctrl-C and a killed main process ----------------------------------------------------------


LIMIT = 900  # seconds: only a hung process reaches it, however loaded the machine


@contextlib.contextmanager
def _sweep_process(out: Path, long_runs: int = 1) -> Iterator[subprocess.Popen]:
    """A CLI sweep of one short run and ``long_runs`` runs too long to ever finish, on two
    workers; its process group is killed after."""
    updates = ",".join(["2", *(str(100_000 + i) for i in range(long_runs))])
    grid = [f"{k}={v}" for k, v in {**TINY, "trainer.n_updates": updates}.items()]
    cmd = [sys.executable, "-m", "testbed.cli", "sweep", "--scenario", "defaults", "--grid", *grid]
    cmd += ["--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _until(proc: subprocess.Popen, event, what: str) -> None:
    """Wait (at most LIMIT seconds) until ``event()`` holds while ``proc`` runs."""
    deadline = time.monotonic() + LIMIT
    while not event():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {proc.stderr and proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {LIMIT} s")
        time.sleep(0.05)


def _training(out: Path) -> int:
    """How many runs have begun training (each worker has set itself up and logged a row)."""
    return len(list(out.glob("runs/*/rows.csv")))


def _workers(proc: subprocess.Popen) -> list:
    psutil = pytest.importorskip("psutil")
    kids = psutil.Process(proc.pid).children()
    return [p for p in kids if "resource_tracker" not in " ".join(p.cmdline())]


def test_ctrl_c_keeps_finished_runs_says_one_line_and_leaves_no_worker(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    # three long runs on two workers: one of them still waits in the queue when Ctrl-C comes
    with _sweep_process(tmp_path, long_runs=3) as proc:
        store = ResultStore(tmp_path)
        _until(proc, lambda: bool(store.keys()), "stored run")  # the short run; the long ones go on
        _until(proc, lambda: _training(tmp_path) == 3, "two long runs under way")
        workers = _workers(proc)
        for _ in range(2):  # as Ctrl-C does, pressed twice: the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.05)
        assert proc.wait(timeout=LIMIT) == 130  # the long runs could never finish: it did not wait
        _, alive = psutil.wait_procs(workers, timeout=LIMIT)
        assert not alive, "workers outlived the interrupted sweep"
        err = proc.stderr.read() if proc.stderr else ""
        assert len(store.keys()) == 1
        assert "Traceback" not in err and "leaked" not in err and "Error" not in err, err
        assert err.strip().splitlines()[-1] == (
            "sapo-testbed: interrupted; finished runs are stored, the same command resumes"
        )


def test_workers_die_with_a_killed_main_process(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    with _sweep_process(tmp_path, long_runs=2) as proc:
        _until(proc, lambda: _training(tmp_path) == 3, "two long runs under way")
        workers = _workers(proc)
        os.kill(proc.pid, signal.SIGKILL)  # the main process only
        proc.wait()
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline and any(_running(psutil, w) for w in workers):
            time.sleep(0.1)
        assert not any(_running(psutil, w) for w in workers), "workers outlived their main process"


def _running(psutil, proc) -> bool:
    """Alive and not a zombie (an orphan's zombie stays until PID 1 reaps it, which some
    containers' PID 1 never does)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    from testbed.sweep.store import _HOST

    dead = subprocess.Popen(["true"])
    dead.wait()
    store = ResultStore(tmp_path)
    store.check_writable()
    stale = store.runs / f".k.csv.{_HOST}.{dead.pid}.ab12.tmp"
    live = store.runs / f".k.csv.{_HOST}.{os.getpid()}.cd34.tmp"
    other_host = store.runs / f".k.csv.elsewhere.{dead.pid}.ef56.tmp"
    for p in (stale, live, other_host):
        p.write_text("")
    store.remove_stale_temporaries()
    assert not stale.exists() and live.exists() and other_host.exists()


def test_rows_keep_all_digit_run_keys_as_text(tmp_path: Path) -> None:
    # a config hash can be all digits ("959331047840"): read back as an int, its rows lost their run
    store = ResultStore(tmp_path)
    for key in ("959331047840", "00a95851c0cf"):
        store.write(key, [{"run": key, "update": 0}, {"run": key, "update": 1}], {"run": key}, {})
    rows = store.rows(["959331047840", "00a95851c0cf"])
    assert rows["run"].tolist() == ["959331047840"] * 2 + ["00a95851c0cf"] * 2
    assert set(rows["run"]) == set(store.summaries(["959331047840", "00a95851c0cf"])["run"])
