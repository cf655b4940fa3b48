"""Results on disk: one CSV of update rows and one JSON summary per run, keyed by the config hash.

Each file is written to a temporary name and renamed into place, so a killed sweep leaves either
a finished run or nothing: re-running skips what is there and redoes what is not.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class ResultStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"

    def has(self, key: str) -> bool:
        return (self.runs / f"{key}.json").exists()

    def write(self, key: str, rows: list[dict], summary: dict) -> None:
        """Rows first, summary last: the summary's presence marks the run finished."""
        atomic_write(self.runs / f"{key}.csv", pd.DataFrame(rows).to_csv(index=False))
        atomic_write(self.runs / f"{key}.json", json.dumps(summary, default=str))

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.runs.glob("*.json")) if self.runs.exists() else []

    def rows(self, keys: list[str] | None = None) -> pd.DataFrame:
        """One tidy frame: a row per (run, update), config fields as dotted columns."""
        keys = self.keys() if keys is None else keys
        frames = [pd.read_csv(self.runs / f"{k}.csv") for k in keys]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def summaries(self, keys: list[str] | None = None) -> pd.DataFrame:
        keys = self.keys() if keys is None else keys
        return pd.DataFrame([json.loads((self.runs / f"{k}.json").read_text()) for k in keys])
