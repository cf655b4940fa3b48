"""Small ideas built once: atomic file writes (``testbed.io``), quantiles and shares
(``testbed.objectives.common``); and the type checker's reach (every Python file)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from testbed.io import atomic_path, atomic_write
from testbed.objectives.common import quantiles, share

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "record.json"
    atomic_write(path, "old")
    atomic_write(path, b"new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "policy.pt"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as tmp:
        tmp.write_text("half of")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["policy.pt"]


def test_quantiles_are_numpys_to_the_last_bit() -> None:
    rng = np.random.default_rng(0)
    qs = (0.05, 0.5, 0.95)
    for n in [1, 2, 3, 7, 20, 101, 4096]:
        for _ in range(5):
            x = rng.lognormal(size=n)
            assert quantiles(torch.tensor(x), qs).tolist() == np.quantile(x, qs).tolist(), n
    assert quantiles(torch.zeros(0, dtype=torch.float64), qs).isnan().all()


def test_share_of_an_empty_set_is_nan() -> None:
    selected = torch.tensor([True, False, True, False])
    assert share(selected, torch.tensor([True, True, False, False])) == 0.5
    assert np.isnan(share(selected, torch.zeros(4, dtype=torch.bool)))


def test_mypy_checks_every_python_file_of_the_repository() -> None:
    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    python = [
        p.relative_to(ROOT)
        for p in ROOT.rglob("*.py")
        if not any(part.startswith(".") or part in ("build", "runs") for part in p.relative_to(ROOT).parts)
    ]
    left_out = [str(p) for p in python if p.parts[0] not in files]
    assert not left_out, "add their folder to [tool.mypy] files in pyproject.toml"
