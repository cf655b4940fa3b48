"""Run many configs through any ``concurrent.futures`` executor, resumably, with a progress bar.

Configs that may train together (same task, policy, trainer and warm start: see
``testbed.run.split_populations``) go to the executor as populations of up to ``population``
members, one process each; every member is stored as its own run as soon as its population
finishes. The population is the unit of resumption: a killed population redoes all its members
(the finished populations are kept). A population that raises records each of its members as
failed (with the error) and costs none of the others; Ctrl-C keeps what finished and stops the
workers.
"""

from __future__ import annotations

import functools
import importlib.metadata
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from testbed.config import ConfigError, config_hash, to_dict
from testbed.run import RunConfig, split_populations, train_population
from testbed.sweep.store import BrokenRun, ResultStore

TORCH_THREADS = 1  # runs fill the cores, one each; results depend on the thread count


class RunOutput(NamedTuple):
    rows: list[dict]
    summary: dict
    provenance: dict


class RunsFailed(RuntimeError):
    """Some runs raised; every other run is stored, and each failure is recorded in the store."""

    def __init__(self, failures: Mapping[str, str], total: int, store: ResultStore) -> None:
        self.failures = dict(failures)
        shown = "; ".join(f"{k}: {e}" for k, e in list(self.failures.items())[:3])
        more = " ..." if len(self.failures) > 3 else ""
        super().__init__(
            f"{len(self.failures)} of {total} runs failed (the rest are stored; details in "
            f"{store.failed}/): {shown}{more}"
        )


def default_cache_dir() -> Path:
    """Where warm-started weights are cached: $SAPO_TESTBED_CACHE or ~/.cache/sapo-testbed."""
    return Path(os.environ.get("SAPO_TESTBED_CACHE", Path.home() / ".cache" / "sapo-testbed"))


@functools.cache
def code_version() -> dict[str, Any]:
    """The package version and, in a git checkout, its commit and whether files were edited."""
    try:
        version = importlib.metadata.version("sapo-testbed")
    except importlib.metadata.PackageNotFoundError:
        version = None
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"package_version": version, "git_commit": commit, "git_dirty": dirty}


def provenance() -> dict[str, Any]:
    """What produced a run, beyond its config: code version, torch and the CPU's kernel path."""
    return {
        **code_version(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def train_members(
    cfgs: Sequence[RunConfig],
    cache_dir: Path | None,
    runs_dir: Path | None = None,
    track: str | None = None,
    save_policy: bool = False,
    update_bar: bool = False,
) -> list[RunOutput]:
    """One population (or one run) in a worker, whatever the executor, on pinned torch threads.
    ``runs_dir``, ``track``, ``save_policy``: see ``testbed.run.train_population``; ``update_bar``:
    a progress bar over updates (on the worker's stderr, which a local worker shares)."""
    torch.set_num_threads(TORCH_THREADS)
    total = cfgs[0].trainer.n_updates + 1
    with tqdm(total=total, desc="updates", disable=not update_bar, leave=False) as bar:
        results = train_population(
            cfgs,
            cache_dir,
            threads=TORCH_THREADS,
            on_rows=functools.partial(_show_update, bar) if update_bar else None,
            track=track,
            runs_dir=runs_dir,
            save=save_policy,
        )
    prov = provenance()
    return [RunOutput(rows, summary, {**prov, "population_size": len(cfgs)}) for rows, summary in results]


def _show_update(bar: tqdm, rows: list[dict]) -> None:
    """Advance the update bar; its postfix shows the first member's reward, EM and pooled ratio p05."""
    row = rows[0]
    shown = {"reward": "train_reward", "EM": "eval_em_sampled", "ratio p05": "pooled_ratio_p05_pos"}
    bar.set_postfix({k: f"{row[v]:.3g}" for k, v in shown.items() if v in row}, refresh=False)
    bar.update(1)


def _exit_with_parent() -> None:
    """Exit this worker as soon as the process that started it dies (SIGKILL included)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _exit_with_parent()


class LocalExecutor(ProcessPoolExecutor):
    """A process pool over the local cores (spawn context: no forked torch state). Its workers
    ignore Ctrl-C (the main process stops them) and die with the main process."""

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or max_workers < 1):
            raise ConfigError(f"workers={max_workers!r}: must be >= 1")
        super().__init__(
            max_workers=max_workers or os.cpu_count() or 1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )

    def terminate_workers(self) -> None:
        """Stop every worker now (their current runs are lost), then release the pool."""
        processes = list((self._processes or {}).values())  # no public handle before Python 3.14
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self.shutdown(wait=False, cancel_futures=True)


def local_executor(max_workers: int | None = None) -> LocalExecutor:
    return LocalExecutor(max_workers)


def usable_cache_dir(cache_dir: Path | None) -> Path | None:
    """``cache_dir`` if warm starts can be cached there, else None with a warning (it is optional)."""
    if cache_dir is None:
        return None
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as err:
        warnings.warn(
            f"warm-start cache {cache_dir} cannot be written ({err.strerror or err}): "
            "warm starts will be computed and not cached (set SAPO_TESTBED_CACHE to change it)",
            stacklevel=3,
        )
        return None
    return Path(cache_dir)


def _plan(store: ResultStore, configs: Mapping[str, RunConfig], force: bool) -> dict[str, RunConfig]:
    """The runs to do: absent, broken (warned and discarded) or, with ``force``, all."""
    todo = {}
    for key, cfg in configs.items():
        try:
            store.record(key)
            complete = True
        except KeyError:
            complete = False
        except BrokenRun as err:
            warnings.warn(f"run {key} is broken ({err}): redoing it", stacklevel=3)
            complete = False
        if force or not complete:
            store.discard(key)
            todo[key] = cfg
    return todo


def _one_line(err: BaseException) -> str:
    err = getattr(err, "cause", None) or err  # Ray wraps the run's own exception
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _failure_record(cfg: RunConfig, err: BaseException) -> dict[str, Any]:
    return {
        "error": _one_line(err),
        "traceback": "".join(traceback.format_exception(err)),
        "config": to_dict(cfg),
        "provenance": code_version(),
    }


def run_configs(
    configs: Sequence[RunConfig],
    store: ResultStore,
    executor: Executor | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    force: bool = False,
    population: int = 16,
    update_bar: bool = False,
) -> list[str]:
    """Train every config not already complete in ``store`` (every one with ``force``), in
    populations of at most ``population`` members (1: one run per task), saving each as it
    finishes; each run also streams its rows, and keeps what the store asks (``store.track``,
    ``store.save_policy``), in ``store.folder(key)``. ``update_bar``: each worker shows a bar over
    its updates (for one run; several workers' bars would overwrite each other). Returns every
    key, in order; raises RunsFailed at the end if any run failed (the others are stored) and
    KeyboardInterrupt, workers stopped, on Ctrl-C."""
    if isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise ConfigError(f"population={population!r}: must be an int >= 1")
    keys = [config_hash(c) for c in configs]
    store.check_writable()  # before any work: a run is never trained for nowhere
    store.remove_stale_temporaries()
    todo = _plan(store, dict(zip(keys, configs, strict=True)), force)  # a repeated config runs once
    total = len(set(keys))
    if total > len(todo) and progress:
        print(
            f"{total - len(todo)} of {total} runs already in {store.root}: reused (--force redoes them)",
            file=sys.stderr,
        )
    if not todo:
        return keys
    cache_dir = usable_cache_dir(cache_dir or default_cache_dir())
    own = executor is None
    workers = getattr(executor, "_max_workers", None) or os.cpu_count() or 1
    groups = split_populations(list(todo.values()), population, min_populations=workers)
    executor = executor or local_executor(min(len(groups), os.cpu_count() or 1))
    bar = tqdm(total=total, initial=total - len(todo), desc="runs", disable=not progress)
    try:
        failures = _run(groups, store, executor, cache_dir, bar, update_bar)
    finally:
        if own:
            executor.shutdown()
    if failures:
        raise RunsFailed(failures, total, store)
    return keys


def _run(
    groups: Sequence[Sequence[RunConfig]],
    store: ResultStore,
    executor: Executor,
    cache_dir: Path | None,
    bar: tqdm,
    update_bar: bool = False,
) -> dict[str, str]:
    """Submit every population, store its members as it finishes; returns the one-line errors of
    failed runs."""
    options = (store.runs, store.track, store.save_policy, update_bar)
    args = [(list(g), cache_dir, *options) for g in groups]
    if hasattr(executor, "submit_many"):  # e.g. one SLURM job array
        submitted = executor.submit_many(train_members, args)
    else:
        submitted = [executor.submit(train_members, *a) for a in args]
    futures = dict(zip(submitted, groups, strict=True))
    failures: dict[str, str] = {}
    done: set[Future] = set()

    def collect(fut: Future) -> None:
        cfgs = futures[fut]
        try:
            outputs = fut.result()
        except Exception as err:  # the population's own error: record it, keep the others going
            for cfg in cfgs:
                key = config_hash(cfg)
                store.write_failure(key, _failure_record(cfg, err))
                failures[key] = _one_line(err)
        else:
            for cfg, (rows, summary, prov) in zip(cfgs, outputs, strict=True):
                store.write(config_hash(cfg), rows, summary, prov, config=to_dict(cfg))
        done.add(fut)
        bar.update(len(cfgs))

    try:
        for fut in as_completed(futures):
            collect(fut)
    except KeyboardInterrupt:
        for fut in futures:
            fut.cancel()
        for fut in futures:  # keep what finished before the interrupt
            if fut.done() and not fut.cancelled() and fut not in done:
                collect(fut)
        _stop(executor)
        raise
    finally:
        bar.close()
    return failures


def _stop(executor: Executor) -> None:
    """Stop the executor's running work now: kill local workers, cancel cluster jobs."""
    terminate = getattr(executor, "terminate_workers", None)
    if terminate is not None:
        terminate()
    else:
        executor.shutdown(wait=False, cancel_futures=True)
