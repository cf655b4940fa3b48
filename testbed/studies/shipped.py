"""Shipped runs: a study's stored runs, exported to ``paper_figures/data/<study>/`` so that a fresh
clone redraws the figures, RESULTS.md and the reports in minutes, without training
(``sapo-testbed export``; ``figures --only-stored`` and ``report`` read them when a study's store
holds no run).

A study's folder holds ``summaries.parquet`` (a row per run and arm: summary, config, provenance, at
full precision), ``rows.parquet`` (a row per run and update: only the columns the figures and
reports read, ``ROW_SIGNALS``, as float32 where that loses no bit; the config columns join back
from the summaries) and ``MANIFEST.json``: each file's sha256, the run count, the store format,
the size (full or smoke), the seeds asked for and the (arm, key) of every run. Runs are read only
when every file matches its sha256 (else one error naming the file) and every key is one the study
names now (else one warning that they are of other settings, and none is used). ``DATA`` stays
under ``BUDGET_MB`` (a test checks the shipped runs of the repository: current, verified, small).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testbed.analysis import MECHANISM_SIGNALS
from testbed.config import config_hash
from testbed.diagnostics import ALARM
from testbed.io import atomic_write
from testbed.studies.figures import PANELS
from testbed.studies.reports import CANDIDATES
from testbed.sweep.experiment import Experiment, Results, run_experiment
from testbed.sweep.store import FORMAT, ResultStore, StoreError

DATA = Path("paper_figures/data")
BUDGET_MB = 20.0  # the whole of paper_figures/data, so that a clone stays light
LAYOUT = 1  # the shipped folder's own layout; MANIFEST.json of another is refused
FILES = ("summaries.parquet", "rows.parquet")

# The per-update columns the figures and reports read (with ``run`` and ``update``); the other logged
# columns stay in the local store.
ROW_SIGNALS = tuple(
    dict.fromkeys(
        [
            *PANELS,
            *MECHANISM_SIGNALS,
            *(alarm.signal for alarm in (*CANDIDATES, ALARM)),
            "eval_em_greedy",
            "isdd_alarm",
        ]
    )
)


class ShippedError(StoreError):
    """A shipped file is missing, unreadable or does not match its checksum."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


def _float32_exact(column: pd.Series) -> bool:
    """Whether ``column`` holds float64 values that float32 keeps bit for bit (EM over 256 episodes,
    shares of a power-of-two count): only those are narrowed, so that the figures drawn from shipped
    runs are the very bytes drawn from the store."""
    if column.dtype != np.float64:
        return False
    values = column.to_numpy()
    return bool(np.array_equal(values.astype(np.float32).astype(np.float64), values, equal_nan=True))


def _keys(exp: Experiment, smoke: bool) -> list[tuple[str, str]]:
    """(arm, config hash) of every run ``exp`` names at its size."""
    return [(arm, config_hash(c)) for arm, spec in exp.at_size(smoke).items() for c in spec.configs()]


def _size(smoke: bool) -> str:
    return "smoke" if smoke else "full"


def export_study(
    exp: Experiment, store: ResultStore, folder: Path, seeds: int | None = None, smoke: bool = False
) -> str:
    """Write the runs of ``exp`` (the study at ``seeds`` per arm; None: its own) that ``store`` holds
    to ``folder``; a line saying what was written (or that nothing is stored). A warning when the
    data folder (``folder``'s parent) outgrows ``BUDGET_MB``."""
    results = run_experiment(exp, store, smoke, only_stored=True)
    if results.summaries.empty:
        return f"{exp.name}: no stored runs in {store.root}, nothing exported"
    summaries, rows = results.summaries, results.rows
    config = [c for c in rows.columns if c in summaries.columns and c not in ("arm", "run")]
    rows = rows.drop_duplicates(["run", "update"])  # a run two arms share is shipped once
    rows = rows[["run", "update", *(c for c in rows.columns if c in ROW_SIGNALS)]]
    rows = rows.astype({c: np.float32 for c in rows.columns if _float32_exact(rows[c])})
    data = {"summaries.parquet": _parquet(summaries), "rows.parquet": _parquet(rows)}
    for name, content in data.items():
        atomic_write(folder / name, content)
    manifest = {
        "study": exp.name,
        "layout": LAYOUT,
        "store_format": FORMAT,
        "size": _size(smoke),
        "seeds": seeds,
        "runs": len(summaries),
        "files": {name: {"sha256": _sha256(c), "bytes": len(c)} for name, c in data.items()},
        "config_columns": config,
        "keys": summaries[["arm", "run"]].values.tolist(),
    }
    atomic_write(folder / "MANIFEST.json", json.dumps(manifest, indent=1) + "\n")  # last: marks it whole
    expected = len(_keys(exp, smoke))
    total = sum(p.stat().st_size for p in folder.parent.rglob("*") if p.is_file()) / 2**20
    if total > BUDGET_MB:
        warnings.warn(
            f"{folder.parent}: {total:.1f} MB in all, over the {BUDGET_MB:g} MB budget of shipped runs",
            stacklevel=2,
        )
    kb = sum(len(c) for c in data.values()) / 1024
    return f"{exp.name}: exported {len(summaries)} of its {expected} runs to {folder} ({kb:.0f} KiB)"


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / "MANIFEST.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ShippedError(f"{path}: unreadable ({err}); restore it or export the study again") from err
    fields = ("store_format", "size", "seeds", "files", "config_columns", "keys")
    if (
        not isinstance(manifest, dict)
        or manifest.get("layout") != LAYOUT
        or any(f not in manifest for f in fields)
        or any(f not in manifest["files"] for f in FILES)
    ):
        raise ShippedError(f"{path}: not a manifest of layout {LAYOUT}; export the study again")
    return manifest


def _verified(folder: Path, manifest: dict[str, Any], name: str) -> pd.DataFrame:
    path = folder / name
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ShippedError(f"{path}: unreadable ({err.strerror or err}); restore it") from err
    if _sha256(data) != manifest["files"][name]["sha256"]:
        raise ShippedError(
            f"{path}: does not match the sha256 in its MANIFEST.json (changed or truncated); "
            "restore it (git checkout) or export the study again"
        )
    return pd.read_parquet(io.BytesIO(data))


def read_shipped(
    folder: Path, exp: Experiment, smoke: bool, study: Callable[[int | None], Experiment]
) -> Results | None:
    """The runs of ``exp`` (the study as asked) shipped in ``folder``; None when none is shipped at
    this size, or (with a warning) when the shipped runs are not the study's now: another store
    format, or keys ``study(seeds)`` (the study at the seeds they were exported with) does not name."""
    if not (folder / "MANIFEST.json").exists():
        return None
    manifest = _manifest(folder)
    if manifest["size"] != _size(smoke):
        return None
    shipped = [tuple(k) for k in manifest["keys"]]
    stale = set(shipped) - set(_keys(study(manifest["seeds"]), smoke))
    if manifest["store_format"] != FORMAT or stale:
        why = (
            f"store format {manifest['store_format']}, this version's is {FORMAT}"
            if manifest["store_format"] != FORMAT
            else f"{len(stale)} of {len(shipped)} keys are not the study's now, e.g. {'/'.join(min(stale))}"
        )
        warnings.warn(
            f"{folder}: the shipped runs are of other settings ({why}); not used: export the study again",
            stacklevel=2,
        )
        return None
    have = set(shipped)
    wanted = [k for k in _keys(exp, smoke) if k in have]
    if not wanted:
        return None
    summaries = _verified(folder, manifest, "summaries.parquet")
    rows = _verified(folder, manifest, "rows.parquet")
    summaries = summaries.set_index(["arm", "run"]).loc[wanted].reset_index()
    joined = summaries[["arm", "run", *manifest["config_columns"]]].merge(rows, on="run", sort=False)
    joined = joined.astype({c: np.float64 for c in joined.columns if joined[c].dtype == np.float32})
    return Results(joined, summaries, exp.tabulate(summaries))


def stored_or_shipped(
    exp: Experiment,
    store: ResultStore,
    smoke: bool,
    study: Callable[[int | None], Experiment],
    data: Path | None = None,
) -> tuple[Results, Path | None]:
    """The runs of ``exp`` that ``store`` holds; when it holds none, those shipped under ``data``
    (``data / exp.name``; None: none read). With the shipped folder they came from, or None."""
    results = run_experiment(exp, store, smoke, only_stored=True)
    if not results.summaries.empty or data is None:
        return results, None
    shipped = read_shipped(data / exp.name, exp, smoke, study)
    return (results, None) if shipped is None else (shipped, data / exp.name)
