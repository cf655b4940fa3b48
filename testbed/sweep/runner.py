"""Run many configs through any ``concurrent.futures`` executor, resumably, with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm.auto import tqdm

from testbed.config import config_hash
from testbed.sweep.store import ResultStore
from testbed.trainer import RunConfig, train


def default_cache_dir() -> Path:
    """Where warm-started weights are cached: $SAPO_TESTBED_CACHE or ~/.cache/sapo-testbed."""
    return Path(os.environ.get("SAPO_TESTBED_CACHE", Path.home() / ".cache" / "sapo-testbed"))


def train_one(cfg: RunConfig, cache_dir: Path) -> tuple[list[dict], dict]:
    """One run in a worker, whatever the executor: one torch thread, since runs fill the cores."""
    torch.set_num_threads(1)
    return train(cfg, cache_dir)


def local_executor(max_workers: int | None = None) -> Executor:
    """A process pool over the local cores (spawn context: no forked torch state)."""
    return ProcessPoolExecutor(
        max_workers=max_workers or os.cpu_count() or 1, mp_context=get_context("spawn")
    )


def run_configs(
    configs: Sequence[RunConfig],
    store: ResultStore,
    executor: Executor | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> list[str]:
    """Train every config not already in ``store``; save each as it finishes. Returns all keys."""
    keys = [config_hash(c) for c in configs]
    todo = [(k, c) for k, c in zip(keys, configs, strict=True) if not store.has(k)]
    todo = list(dict(todo).items())  # a config listed twice runs once
    cache_dir = cache_dir or default_cache_dir()
    own = executor is None
    executor = executor or local_executor(min(len(todo), os.cpu_count() or 1) or 1)
    try:
        args = [(c, cache_dir) for _, c in todo]
        if hasattr(executor, "submit_many"):  # e.g. one SLURM job array
            submitted = executor.submit_many(train_one, args)
        else:
            submitted = [executor.submit(train_one, *a) for a in args]
        futures = dict(zip(submitted, (k for k, _ in todo), strict=True))
        bar = tqdm(total=len(keys), initial=len(keys) - len(todo), desc="runs", disable=not progress)
        for fut in as_completed(futures):
            rows, summary = fut.result()
            store.write(futures[fut], rows, summary)
            bar.update()
        bar.close()
    finally:
        if own:
            executor.shutdown()
    return keys
