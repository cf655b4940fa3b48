"""Results on disk, keyed by the config hash: per run, a CSV of update rows and a JSON record.

The record, written last, holds the run's summary, its resolved config, the CSV's row count and
SHA-256, and the provenance of the run (package version, git commit, torch version, threads, CPU
capability). A
run counts as stored only when its record parses and its CSV matches both: a truncated, empty or
garbage file, or a record of an older format, makes it "broken", and a sweep redoes it. A run
that failed leaves ``failed/<key>.json`` with its error; the next sweep tries it again.

Beside them, ``runs/<key>/`` holds what a run writes while it goes (see ``testbed.run.train_population``):
``config.yaml``, the streamed ``rows.csv`` / ``rows.parquet``, the tracker's files (``track``:
``tensorboard`` or ``wandb``) and, with ``save_policy``, the policy (``policy.pt``, or ``policy/`` and
``base/`` in the Hugging Face format). The store's ``track`` and ``save_policy`` say what its runs
keep; the sweep runner reads them.

Each file is written to a temporary name (created like any file, so the umask decides who may
read it) and renamed into place, so a killed sweep leaves either a finished file or none. A
process makes a run only while it holds the run's lock (``claim``: ``runs/.<key>.lock``, released
by the system if the process dies), so sweeps started together on one store never make, redo or
remove the same run at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.io import HOST as _HOST  # temporary names say which process writes them
from testbed.io import FileLock, atomic_write
from testbed.tracking import KINDS as TRACKERS

# The record layout and numerics; records of others (or none) are redone. 3: evaluations draw their
# episodes and sampling streams from (seed, update) alone, so older records' evaluations differ.
# 4: the Qwen2 engine's fused RMSNorm, one rotation of queries and keys and residual adds inside
# the matmuls (numbers differ from 3's in float rounding).
FORMAT = 4


class StoreError(Exception):
    """The store cannot be written, or a stored run is broken."""


class BrokenRun(StoreError):
    """A stored run's files are incomplete or do not match their record."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class ResultStore:
    def __init__(self, root: Path | str, track: str | None = None, save_policy: bool = False) -> None:
        if track not in TRACKERS:
            raise StoreError(f"track={track!r}: expected one of {TRACKERS}")
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.failed = self.root / "failed"
        self.track, self.save_policy = track, save_policy

    def folder(self, key: str) -> Path:
        """Run ``key``'s own folder: config, streamed table, tracker files, policy."""
        return self.runs / key

    def check_writable(self) -> None:
        """Fail now, with one line, if runs cannot be saved here (before any run is trained)."""
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.runs):
                pass
        except OSError as err:
            raise StoreError(
                f"output folder {self.root}: cannot write there ({err.strerror or err})"
            ) from err

    def claim(self, key: str, wait: bool = False) -> FileLock | None:
        """The lock under which this process alone makes, redoes or removes run ``key``; None when
        another process holds it (``wait``: block until it is released instead)."""
        self.runs.mkdir(parents=True, exist_ok=True)
        return FileLock.acquire(self.runs / f".{key}.lock", wait)

    def remove_stale_temporaries(self) -> None:
        """Remove the temporary files of writers on this host that were killed mid-write."""
        for tmp in self.runs.glob(f".*.{_HOST}.*.tmp"):
            pid = tmp.name.rsplit(".", 3)[-3]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------------
    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.runs / f"{key}.csv", self.runs / f"{key}.json"

    def record(self, key: str) -> tuple[dict[str, Any], bytes]:
        """The run's verified record and CSV bytes; KeyError if absent, BrokenRun if broken."""
        csv_path, json_path = self._paths(key)
        try:
            record = json.loads(json_path.read_text())
        except FileNotFoundError:
            raise KeyError(key) from None
        except (OSError, ValueError) as err:
            raise BrokenRun(f"{json_path}: unreadable record ({err})") from err
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise BrokenRun(f"{json_path}: written by an older version (no checksum)")
        try:
            data = csv_path.read_bytes()
        except OSError as err:
            raise BrokenRun(f"{csv_path}: unreadable ({err.strerror or err})") from err
        if _sha256(data) != record.get("csv_sha256"):
            raise BrokenRun(f"{csv_path}: does not match its recorded checksum (truncated or changed)")
        return record, data

    def problem(self, key: str) -> str | None:
        """Why the stored run ``key`` cannot be used; None when it is complete or simply absent."""
        try:
            self.record(key)
        except KeyError:
            return None
        except BrokenRun as err:
            return str(err)
        return None

    def has(self, key: str) -> bool:
        """Whether run ``key`` is stored and complete."""
        try:
            self.record(key)
        except (KeyError, BrokenRun):
            return False
        return True

    def keys(self) -> list[str]:
        """The complete runs in the store."""
        if not self.runs.exists():
            return []
        return sorted(p.stem for p in self.runs.glob("*.json") if self.has(p.stem))

    def broken(self) -> dict[str, str]:
        """The stored runs that cannot be used, each with why (a sweep redoes them)."""
        if not self.runs.exists():
            return {}
        found = {p.stem: self.problem(p.stem) for p in sorted(self.runs.glob("*.json"))}
        return {k: why for k, why in found.items() if why is not None}

    def _all_keys(self) -> list[str]:
        """``keys()``, with a warning naming the broken runs left out, and why."""
        broken = self.broken()
        if broken:
            shown = "; ".join(f"{k}: {why}" for k, why in list(broken.items())[:3])
            more = " ..." if len(broken) > 3 else ""
            warnings.warn(
                f"{self.root}: left out {len(broken)} broken run(s) ({shown}{more}); "
                "run the sweep again to redo them",
                stacklevel=3,
            )
        return self.keys()

    def _verified(self, key: str) -> tuple[dict[str, Any], bytes]:
        """``record(key)``, with one-line errors saying what to do."""
        try:
            return self.record(key)
        except KeyError:
            raise StoreError(f"run {key} is not in {self.root}: run the sweep that makes it") from None
        except BrokenRun as err:
            raise StoreError(f"{err}; run the sweep again to redo it") from err

    def _frame(self, key: str) -> pd.DataFrame:
        record, data = self._verified(key)
        frame = pd.read_csv(io.BytesIO(data), dtype={"run": str})  # an all-digit key stays a key
        if len(frame) != record["rows"]:
            raise StoreError(f"run {key}: {len(frame)} rows, its record says {record['rows']}")
        return frame

    def rows(self, keys: list[str] | None = None) -> pd.DataFrame:
        """One tidy frame: a row per (run, update), config fields as dotted columns; without
        ``keys``, every complete run (a warning names the broken ones left out)."""
        keys = self._all_keys() if keys is None else keys
        frames = [self._frame(k) for k in keys]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def summaries(self, keys: list[str] | None = None) -> pd.DataFrame:
        """A row per run: its summary and provenance (without ``keys``: as ``rows``)."""
        keys = self._all_keys() if keys is None else keys
        records = [self._verified(k)[0] for k in keys]
        return pd.DataFrame([{**r["summary"], **r["provenance"]} for r in records])

    def config(self, key: str) -> dict[str, Any]:
        """Run ``key``'s resolved config as a nested dict (``testbed.config.from_dict`` rebuilds it)."""
        config = self._verified(key)[0].get("config")
        if config is None:
            raise StoreError(f"run {key}: stored before configs were kept in records; its rows hold it")
        return config

    def failures(self) -> dict[str, dict[str, Any]]:
        """The failure records of runs that failed and have not succeeded since."""
        if not self.failed.exists():
            return {}
        paths = sorted(self.failed.glob("*.json"))
        return {p.stem: json.loads(p.read_text()) for p in paths if not self.has(p.stem)}

    # -- writing ---------------------------------------------------------------------------------
    def write(
        self,
        key: str,
        rows: list[dict],
        summary: Mapping[str, Any],
        provenance: Mapping[str, Any],
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Rows first, record last: a valid record marks the run finished."""
        csv_path, json_path = self._paths(key)
        data = pd.DataFrame(rows).to_csv(index=False).encode()
        atomic_write(csv_path, data)
        record = {
            "format": FORMAT,
            "key": key,
            "rows": len(rows),
            "csv_sha256": _sha256(data),
            "summary": dict(summary),
            "config": None if config is None else dict(config),
            "provenance": dict(provenance),
        }
        atomic_write(json_path, json.dumps(record, default=str))
        (self.failed / f"{key}.json").unlink(missing_ok=True)

    def write_failure(self, key: str, record: Mapping[str, Any]) -> None:
        atomic_write(self.failed / f"{key}.json", json.dumps(dict(record), default=str, indent=1))

    def discard(self, key: str) -> None:
        """Remove run ``key``'s files (a broken run, before it is redone)."""
        for path in self._paths(key):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.folder(key), ignore_errors=True)
