"""Executors behind one seam, the ``concurrent.futures.Executor`` interface.

``local`` (default): a process pool over the local cores. ``submitit``: SLURM job arrays (or
submitit's local/debug executors, which need no cluster). ``ray``: a Ray cluster at an address
(``auto`` for the one this node belongs to) or a local instance. The last two are optional
extras: ``pip install -c constraints.txt -e ".[cluster]"``.
"""

from __future__ import annotations

import importlib
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import yaml

from testbed.config import ConfigError, coerce, parse_overrides
from testbed.sweep.runner import local_executor

BACKENDS = ("local", "submitit", "ray")


class SubmititExecutor(Executor):
    """submitit jobs as futures; ``submit_many`` submits one SLURM job array."""

    def __init__(
        self, folder: Path | str, cluster: str | None = None, poll_s: float = 0.5, **params: Any
    ) -> None:
        submitit = _optional("submitit")
        try:
            self._ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
            if params:
                self._ex.update_parameters(**params)
        except (AssertionError, NameError, TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(
                f"submitit cluster={cluster!r} parameters {params}: {_first_line(err)}"
            ) from err
        if cluster is None and self._ex.cluster != "slurm":
            warnings.warn(
                f"no SLURM cluster found (no sbatch here): submitit runs every job on this machine "
                f"with its {self._ex.cluster!r} executor; pass --submitit-cluster local to say so",
                stacklevel=2,
            )
        self._poll_s = poll_s
        self._pending: list[tuple[Any, Future]] = []
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        return self._track([self._ex.submit(fn, *args, **kwargs)])[0]

    def submit_many(self, fn: Callable, args: Sequence[tuple]) -> list[Future]:
        with self._ex.batch():  # one job array
            jobs = [self._ex.submit(fn, *a) for a in args]
        return self._track(jobs)

    def _track(self, jobs: list[Any]) -> list[Future]:
        futures: list[Future] = [Future() for _ in jobs]
        with self._lock:
            self._pending.extend(zip(jobs, futures, strict=True))
            if self._poller is None or not self._poller.is_alive():
                self._poller = threading.Thread(target=self._poll, daemon=True)
                self._poller.start()
        return futures

    def _poll(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                done = [(j, f) for j, f in self._pending if j.done()]
                self._pending = [(j, f) for j, f in self._pending if not j.done()]
            for job, fut in done:
                try:
                    fut.set_result(job.result())
                except Exception as err:  # the job's own error, re-raised where the future is read
                    fut.set_exception(err)
            time.sleep(self._poll_s)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:  # Ctrl-C: cancel the jobs still queued or running
            with self._lock:
                pending, self._pending = self._pending, []
            for job, fut in pending:
                job.cancel(check=False)
                fut.cancel()
        while wait and self._poller is not None and self._poller.is_alive():
            time.sleep(self._poll_s)


class RayExecutor(Executor):
    """Ray tasks (one CPU each) as futures."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        ray = _optional("ray")
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            if address is not None:
                _answers(address)
            try:
                ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            except (OSError, ValueError, RuntimeError) as err:  # ConnectionError: no cluster at 'auto'
                where = f"--ray-address {address!r}" if address else "--backend ray (a local Ray instance)"
                raise ConfigError(
                    f"{where}: cannot reach or start Ray (ray says: {_first_line(err)})"
                ) from None
        self._remotes: dict[Callable, Any] = {}

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        remote = self._remotes.setdefault(fn, self._ray.remote(num_cpus=1)(fn))
        return remote.remote(*args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()  # stops this session's workers, running tasks included


def _answers(address: str) -> None:
    """A ConfigError now when nothing listens at a ``host:port`` address (``ray.init`` would go on
    retrying: still at it after 6 minutes in a trial); ``auto`` and other forms are left to it."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise ConfigError(f"--ray-address {address!r}: nothing answers there ({err})") from None


def _optional(package: str) -> Any:
    """An optional extra's package, or a ConfigError naming it and how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ConfigError(
            f"--backend {package}: needs the {package!r} package ({err}); "
            f'pip install -c constraints.txt -e ".[cluster]"'
        ) from None


def _first_line(err: BaseException) -> str:
    """A library's message, often several lines that blame its internals: the first, or the type."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def submitit_parameters(pairs: Sequence[str]) -> dict[str, Any]:
    """``--slurm KEY=VALUE`` pairs as typed submitit parameters (``timeout_min=60`` is the int 60).

    submitit's shared parameters take their declared types; any other value is read as a YAML
    scalar (``true``, ``4``, ``cpu``, ``[a, b]``).
    """
    submitit = _optional("submitit")
    # name -> type (timeout_min -> int); a private helper, so a submitit without it reads YAML
    typed: dict[str, Any] = getattr(submitit.AutoExecutor, "_typed_parameters", dict)()
    out = {}
    for key, text in parse_overrides(pairs, "--slurm").items():
        tp = typed.get(key)
        if tp is None:
            try:
                out[key] = yaml.safe_load(text)
            except yaml.YAMLError:
                out[key] = text
        else:
            out[key] = coerce(f"--slurm {key}", text, tp)
    return out


def make_executor(
    backend: str = "local",
    workers: int | None = None,
    folder: Path | str = "runs/submitit",
    cluster: str | None = None,
    address: str | None = None,
    **params: Any,
) -> Executor:
    """The executor for ``backend``; ``params`` go to submitit's ``update_parameters``."""
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ConfigError(f"workers={workers!r}: must be >= 1")
    if backend == "local":
        return local_executor(workers)
    if backend == "submitit":
        return SubmititExecutor(folder, cluster=cluster, **params)
    if backend == "ray":
        return RayExecutor(address=address, num_cpus=workers)
    raise ConfigError(f"backend={backend!r}: must be one of {list(BACKENDS)}")
