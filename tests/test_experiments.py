"""Experiment scripts and the figure pipeline at their smoke size; the statistics helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.analysis import bootstrap_ci, claim, greater_test

ROOT = Path(__file__).resolve().parents[1]


def test_an_experiment_script_runs_at_smoke_size(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "family.py"), "--smoke", "--root", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "sapo" in out.stdout and (tmp_path / "smoke" / "family" / "runs").is_dir()


def test_paper_figures_pipeline_at_smoke_size(tmp_path: Path) -> None:
    """Runs every experiment (smoke size) and the compare job, then draws every figure."""
    out = tmp_path / "figs"
    cmd = [sys.executable, str(ROOT / "paper_figures" / "make_figures.py"), "--smoke"]
    subprocess.run(
        [*cmd, "--root", str(tmp_path / "runs"), "--out", str(out)], check=True, capture_output=True
    )
    for name in ("isdd_anatomy", "sapo_ablation", "drift_phase", "family", "policy_scale"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert (out / f"{name}.pdf").exists()
    text = (out / "RESULTS.md").read_text()
    assert "## SAPO ablation" in text and "## The clipping family" in text


def test_bootstrap_ci_brackets_the_mean() -> None:
    lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lo < 0.3 < hi
    assert bootstrap_ci([0.2, 0.2]) == (0.2, 0.2)


def test_rank_test_and_claim_sentence() -> None:
    t = greater_test([0.5, 0.6, 0.7, 0.8], [0.0, 0.1, 0.2, 0.3])
    assert t["p"] == pytest.approx(1 / 70) and t["n_a"] == 4
    assert "is higher than" in claim("SAPO", [0.5, 0.6, 0.7, 0.8], "GRPO", [0.0, 0.1, 0.2, 0.3], "final EM")
    assert "not significantly" in claim("SAPO", [0.1, 0.3], "GRPO", [0.2, 0.0], "final EM")
