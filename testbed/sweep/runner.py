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

import contextlib
import functools
import importlib.metadata
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from testbed.config import POPULATION, ConfigError, config_hash, to_dict
from testbed.io import FileLock
from testbed.run import (
    RunConfig,
    check_savable,
    default_cache_dir,
    split_populations,
    train_population,
    usable_cache_dir,
)
from testbed.sweep.store import BrokenRun, ResultStore, StoreError

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
    # a bar's default lock is a named semaphore that a terminated worker would leave behind
    tqdm.set_lock(threading.RLock())
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
        """Stop every worker now (their current runs are lost), then release the pool. Its futures
        are left to the pool's own thread, which cancels the queued ones and fails the running ones
        (a future cancelled from outside would make that thread raise)."""
        processes = list((self._processes or {}).values())  # no public handle before Python 3.14
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self.shutdown(wait=False, cancel_futures=True)
        thread: threading.Thread | None = getattr(self, "_executor_manager_thread", None)
        if thread is not None:
            thread.join(timeout=10)  # it closes the pool's queues: no semaphore is left behind


def local_executor(max_workers: int | None = None) -> LocalExecutor:
    return LocalExecutor(max_workers)


def _plan(
    store: ResultStore,
    configs: Mapping[str, RunConfig],
    force: bool,
    locks: dict[str, FileLock],
    wait: bool = False,
) -> tuple[dict[str, RunConfig], dict[str, RunConfig]]:
    """The runs to do, each claimed into ``locks``: absent, broken (warned and discarded) or, with
    ``force``, all; and the runs another process is making now (``wait``: wait for it instead)."""
    todo, elsewhere = {}, {}
    for key, cfg in configs.items():
        lock = store.claim(key, wait)
        if lock is None:
            elsewhere[key] = cfg
            continue
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
            todo[key], locks[key] = cfg, lock
        else:
            lock.release()
    return todo, elsewhere


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
    population: int = POPULATION,
    update_bar: bool = False,
) -> list[str]:
    """Train every config not already complete in ``store`` (every one with ``force``), in
    populations of at most ``population`` members (1: one run per task), saving each as it
    finishes; each run also streams its rows, and keeps what the store asks (``store.track``,
    ``store.save_policy``), in ``store.folder(key)``. ``update_bar``: each worker shows a bar over
    its updates (for one run; several workers' bars would overwrite each other). A run that
    another process is making in the same store (a sweep started alongside) is waited for, and
    made here only if that process did not store it. Returns every key, in order; raises
    RunsFailed at the end if any run failed (the others are stored), StoreError (workers
    stopped, stored runs kept) if the store cannot be written, and KeyboardInterrupt, workers
    stopped, on Ctrl-C."""
    if isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise ConfigError(f"population={population!r}: must be an int >= 1")
    keys = [config_hash(c) for c in configs]
    store.check_writable()  # before any work: a run is never trained for nowhere
    if store.save_policy:  # before any work: a run is never trained for a save that then fails
        for cfg in configs:
            check_savable(cfg)
    store.remove_stale_temporaries()
    unique = dict(zip(keys, configs, strict=True))  # a repeated config runs once
    total, own = len(unique), executor is None
    locks: dict[str, FileLock] = {}
    failures: dict[str, str] = {}

    def make(todo: Mapping[str, RunConfig], bar: tqdm) -> None:
        nonlocal executor
        workers = getattr(executor, "_max_workers", None) or os.cpu_count() or 1
        groups = split_populations(list(todo.values()), population, min_populations=workers)
        executor = executor or local_executor(min(len(groups), os.cpu_count() or 1))
        failures.update(_run(groups, store, executor, cache_dir, bar, locks, update_bar))

    try:
        todo, elsewhere = _plan(store, unique, force, locks)
        reused = total - len(todo) - len(elsewhere)
        kept = [w for w, on in (("tracked", store.track), ("saved", store.save_policy)) if on]
        if reused and kept:  # what a stored run's folder holds is what its own run kept
            warnings.warn(
                f"{reused} of {total} runs already stored: not trained again, so not {' or '.join(kept)} "
                "(--force reruns them)",
                stacklevel=2,
            )
        if reused and progress:
            print(
                f"{reused} of {total} runs already in {store.root}: reused (--force redoes them)",
                file=sys.stderr,
            )
        if elsewhere and progress:
            print(
                f"{len(elsewhere)} of {total} runs are being made by another process in {store.root}: "
                "waiting for them after the rest",
                file=sys.stderr,
            )
        if not todo and not elsewhere:
            return keys
        cache_dir = usable_cache_dir(cache_dir or default_cache_dir())
        with tqdm(total=total, initial=reused, desc="runs", disable=not progress) as bar:
            if todo:
                make(todo, bar)
            if elsewhere:  # wait for the other process; make what it did not store
                todo, _ = _plan(store, elsewhere, False, locks, wait=True)
                bar.update(len(elsewhere) - len(todo))
                if todo:
                    make(todo, bar)
    finally:
        for lock in locks.values():
            lock.release()
        if own and executor is not None:
            executor.shutdown()
    if failures:
        raise RunsFailed(failures, total, store)
    return keys


def _keep(store: ResultStore, locks: dict[str, FileLock], key: str, write: Callable[[], None]) -> None:
    """Store run ``key``'s result or failure with ``write``, then release its claim. A store that
    cannot be written (a full disk) stops the sweep with one line; stored runs are kept."""
    try:
        write()
    except OSError as err:
        raise StoreError(
            f"{store.root}: cannot store run {key} ({err.strerror or err}); the runs stored so far are "
            "kept: free space (or fix the folder) and run the same command to resume"
        ) from err
    locks.pop(key).release()


def _run(
    groups: Sequence[Sequence[RunConfig]],
    store: ResultStore,
    executor: Executor,
    cache_dir: Path | None,
    bar: tqdm,
    locks: dict[str, FileLock],
    update_bar: bool = False,
) -> dict[str, str]:
    """Submit every population, store its members as it finishes, releasing their claims in
    ``locks``; returns the one-line errors of failed runs."""
    options = (store.runs, store.track, store.save_policy, update_bar)
    args = [(list(g), cache_dir, *options) for g in groups]
    futures: dict[Future, Sequence[RunConfig]] = {}
    failures: dict[str, str] = {}
    done: set[Future] = set()

    def collect(fut: Future) -> None:
        done.add(fut)
        cfgs = futures[fut]
        try:
            outputs = fut.result()
        except Exception as err:  # the population's own error: record it, keep the others going
            for cfg in cfgs:
                key = config_hash(cfg)
                _keep(
                    store, locks, key, functools.partial(store.write_failure, key, _failure_record(cfg, err))
                )
                failures[key] = _one_line(err)
        else:
            for cfg, (rows, summary, prov) in zip(cfgs, outputs, strict=True):
                key = config_hash(cfg)
                write = functools.partial(store.write, key, rows, summary, prov, config=to_dict(cfg))
                _keep(store, locks, key, write)
        bar.update(len(cfgs))

    try:
        if hasattr(executor, "submit_many"):  # e.g. one SLURM job array
            submitted = executor.submit_many(train_members, args)
        else:
            submitted = [executor.submit(train_members, *a) for a in args]
        futures.update(zip(submitted, groups, strict=True))
        for fut in as_completed(futures):
            collect(fut)
    except BaseException as err:  # Ctrl-C, or a store that cannot be written: stop the work
        with _no_interrupt():
            if isinstance(err, KeyboardInterrupt):
                for fut in futures:  # keep what finished before the interrupt
                    if fut.done() and not fut.cancelled() and fut not in done:
                        collect(fut)
            _stop(executor)
        raise
    return failures


@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Ignore a second Ctrl-C while the first one's clean-up runs (signals reach the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(executor: Executor) -> None:
    """Stop the executor's running work now: kill local workers, cancel queued and cluster jobs."""
    terminate = getattr(executor, "terminate_workers", None)
    if terminate is not None:
        terminate()
    else:
        executor.shutdown(wait=False, cancel_futures=True)
