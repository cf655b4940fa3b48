"""Experiment scripts and the figure pipeline at their smoke size; the statistics helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.analysis import (
    ScenarioCriteria,
    bootstrap_ci,
    criteria_table,
    holm,
    mcnemar_p,
    summary_table,
    wilcoxon_p,
    wilson_ci,
)

ROOT = Path(__file__).resolve().parents[1]


def test_an_experiment_script_runs_at_smoke_size(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "family.py"), "--smoke", "--root", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    store = tmp_path / "smoke" / "family"
    assert "sapo" in out.stdout and (store / "runs").is_dir()
    assert (store / "family.png").exists() and (store / "table.md").exists()


def test_paper_figures_pipeline_at_smoke_size(tmp_path: Path) -> None:
    """Runs every experiment (smoke size) and the compare job, then draws every figure."""
    out = tmp_path / "figs"
    cmd = [sys.executable, str(ROOT / "paper_figures" / "make_figures.py"), "--smoke"]
    subprocess.run(
        [*cmd, "--root", str(tmp_path / "runs"), "--out", str(out)], check=True, capture_output=True
    )
    for name in ("isdd_baselines", "sapo_grid", "drift_phase", "family"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert (out / f"{name}.pdf").exists()
    text = (out / "RESULTS.md").read_text()
    assert "(`sapo_grid`)" in text and "(`family`)" in text and "Wilson" in text


def test_bootstrap_ci_brackets_the_mean() -> None:
    lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lo < 0.3 < hi
    assert bootstrap_ci([0.2, 0.2]) == (0.2, 0.2)


def test_paired_tests_wilson_and_holm() -> None:
    assert wilcoxon_p([0.5, 0.6, 0.7, 0.8, 0.9, 0.95], [0.0, 0.1, 0.2, 0.3, 0.4, 0.45]) < 0.05
    assert wilcoxon_p([0.1, 0.2], [0.1, 0.2]) == 1.0
    assert mcnemar_p([True] * 10, [False] * 10) < 0.01 and mcnemar_p([True, False], [True, False]) == 1.0
    lo, hi = wilson_ci(8, 10)
    assert lo < 0.8 < hi and lo > 0 and hi < 1
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_summary_table_pairs_by_seed() -> None:
    import pandas as pd

    seeds = list(range(6))
    a = pd.DataFrame(
        {
            "arm": "a",
            "seed": seeds,
            "warm_em": 0.1,
            "peak_em": 0.3,
            "final_em": 0.0,
            "collapsed": True,
            "collapse_step": 20,
        }
    )
    b = a.assign(arm="b", final_em=[0.2, 0.25, 0.3, 0.22, 0.21, 0.24], collapsed=False)
    table = summary_table(pd.concat([a, b]), ["arm"], reference={"arm": "a"})
    row = table[table["arm"] == "b"].iloc[0]
    assert row["final EM - ref (paired)"].startswith("+0.2") and row["p final (Wilcoxon)"] < 0.05
    assert row["p collapse (McNemar)"] < 0.05 and row["p final (Holm)"] >= row["p final (Wilcoxon)"]
    assert table.iloc[0]["collapse rate"].startswith("1.00 [")


def _criteria_runs(rise: list[float], steps: list[float | None], control_collapsed: list[bool]):
    import pandas as pd

    n = len(rise)
    grpo = pd.DataFrame(
        {
            "part": "grpo",
            "seed": range(n),
            "warm_em": 0.1,
            "peak_em": [0.1 + r for r in rise],
            "collapsed": [s is not None for s in steps],
            "collapse_step": steps,
        }
    )
    ctrl = grpo.assign(part="ctrl", collapsed=control_collapsed[:n], collapse_step=None)
    return pd.concat([grpo, ctrl])


def test_criteria_table_meets_and_misses_each_criterion() -> None:
    met = criteria_table(_criteria_runs([0.2] * 8, [30] * 6 + [None] * 2, [False] * 8), "grpo", "ctrl")
    assert list(met["met"][:4]) == ["yes"] * 4
    assert met["measured"][5].startswith("6/8")  # rose by 0.15, then collapsed
    # each criterion goes red on its own: a small rise, few collapses, an early onset, a failing control
    cases = [
        ([0.1] * 8, [30] * 6 + [None] * 2, [False] * 8, 0),
        ([0.2] * 8, [30] * 5 + [None] * 3, [False] * 8, 1),
        ([0.2] * 8, [10] * 6 + [None] * 2, [False] * 8, 2),
        ([0.2] * 8, [30] * 6 + [None] * 2, [True] + [False] * 7, 3),
    ]
    for rise, steps, ctrl, red in cases:
        table = criteria_table(_criteria_runs(rise, steps, ctrl), "grpo", "ctrl")
        assert [i for i in range(4) if table["met"][i] == "no"] == [red]
    strict = ScenarioCriteria(rise=0.25)
    assert (
        criteria_table(_criteria_runs([0.2] * 8, [30] * 8, [False] * 8), "grpo", "ctrl", strict)["met"][0]
        == "no"
    )


def test_criteria_table_pools_several_parts_as_one_process() -> None:
    import pandas as pd

    first = _criteria_runs([0.2] * 8, [30] * 8, [False] * 8)  # 8 of 8 collapse
    second = first[first["part"] == "grpo"].assign(part="tis", collapsed=False, collapse_step=None)
    runs = pd.concat([first, second])
    assert criteria_table(runs, "grpo", "ctrl")["measured"][1].startswith("8/8")
    pooled = criteria_table(runs, ["grpo", "tis"], "ctrl")
    assert pooled["measured"][1].startswith("8/16") and pooled["met"][1] == "no"


def test_mechanism_table_means_each_run_over_each_range() -> None:
    import pandas as pd

    from testbed.analysis import mechanism_table

    rows = pd.DataFrame(
        {
            "part": ["a"] * 6 + ["b"] * 3,
            "run": ["r1", "r1", "r1", "r2", "r2", "r2", "r3", "r3", "r3"],
            "update": [0, 1, 2, 1, 2, 3, 1, 2, 3],
            "entropy": [9.0, 1.0, 3.0, 5.0, float("nan"), 7.0, 1.0, 1.0, 1.0],
        }
    )
    table = mechanism_table(rows, ["a", "b"], ["entropy"], edges=(1, 3, 4))
    got = {(r.part, r.updates): r.entropy for r in table.itertuples()}
    # a, 1-2: runs r1 (mean of 1, 3 = 2) and r2 (5; NaN left out) -> 3.5; update 0 left out
    assert got == {("a", "1-2"): 3.5, ("a", "3-3"): 7.0, ("b", "1-2"): 1.0, ("b", "3-3"): 1.0}
    with pytest.raises(ValueError, match="signals=\\['nope'\\]"):
        mechanism_table(rows, ["a"], ["nope"])


def test_criteria_script_with_nothing_stored_says_so(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "experiments" / "isdd_report.py"
    out = subprocess.run(
        [sys.executable, str(script), "--root", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1 and "no stored runs of the isdd scenario" in out.stderr


def test_only_stored_with_nothing_stored_is_empty(tmp_path: Path) -> None:
    from testbed.studies import CATALOG
    from testbed.sweep.experiment import run_experiment, store_for

    results = run_experiment(CATALOG["family"](), store_for("family", tmp_path), only_stored=True)
    assert results.summaries.empty and results.rows.empty


def test_each_scenario_study_holds_grpo_and_its_control() -> None:
    from testbed.config import ConfigError, config_hash
    from testbed.scenarios import DEFAULT_SCENARIO, SCENARIOS
    from testbed.studies import SCENARIO_STUDIES, compare_experiment, scenario_study

    assert DEFAULT_SCENARIO in SCENARIO_STUDIES  # the default's criteria can be checked from its study
    for name in SCENARIO_STUDIES:
        exp, _ = scenario_study(name, seeds=2)
        parts = exp.at_size(smoke=False)
        assert name in SCENARIOS and {"grpo", "grpo_control"} <= set(parts)
        # its GRPO runs are the scenario's own (what `compare --scenario NAME` runs)
        grpo = compare_experiment(("grpo",), seeds=(0, 1), scenario=name).at_size(smoke=False)["grpo"]
        assert [config_hash(c) for c in parts["grpo"].configs()] == [config_hash(c) for c in grpo.configs()]
        control = SCENARIOS[name].control
        for field, value in control.items():  # the control is the scenario with its drift removed
            section, attr = field.split(".")
            assert {getattr(getattr(c, section), attr) for c in parts["grpo_control"].configs()} == {value}
    with pytest.raises(ConfigError, match=r"scenario='nope'.*known"):
        scenario_study("nope")


def test_figures_are_byte_stable(tmp_path: Path) -> None:
    """The same rows draw the same PNG and PDF bytes: CI bands bootstrap from a fixed seed and the
    PDF carries no creation date, so regenerated figures change only when results do."""
    import numpy as np
    import pandas as pd

    from testbed.studies.compare import curves

    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "update": np.tile(np.arange(6), 8),
            "seed": np.repeat(np.arange(8), 6),
            "objective.name": np.repeat(["grpo", "sapo"], 24),
            "eval_em_sampled": rng.random(48),
        }
    )
    drawn = []
    for name in ("a", "b"):
        curves(rows, tmp_path / name)
        drawn.append([(tmp_path / name).with_suffix(s).read_bytes() for s in (".png", ".pdf")])
    assert drawn[0] == drawn[1]
    assert b"CreationDate" not in drawn[0][1]  # two PDFs drawn in one second would share a date
