"""The family of worlds: worlds that cannot be built, collapses told apart by kind, the study's
worlds one axis away from the default scenario, its table (Holm over the family) and figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from testbed.analysis import collapse_kinds, criteria_table
from testbed.config import ConfigError, with_overrides
from testbed.run import RunConfig, flat_config
from testbed.studies import get_study
from testbed.studies.worlds import CALIBRATION, WORLDS, worlds_figure, worlds_table


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task.world.n_relations": "70000"}, "WorldConfig.n_relations=70000: the vocabulary (10 specials"),
        (
            {"task.world.n_entities": "2000", "task.world.n_relations": "1000"},
            "WorldConfig.n_entities=2000: 2000 entities x 1000 relations = 2000000 facts per world",
        ),
    ],
)
def test_a_world_that_cannot_be_built_is_one_line(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        with_overrides(RunConfig(), overrides)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def _run(arm: str, seed: int, warm: float, peak: float, final: float, step: float | None) -> dict:
    return {
        "arm": arm,
        "seed": seed,
        "warm_em": warm,
        "warm_em_greedy": 0.4,
        "peak_em": peak,
        "final_em": final,
        "collapsed": step is not None,
        "collapse_step": step,
    }


def test_collapses_are_told_apart_by_kind() -> None:
    runs = pd.DataFrame(
        [
            _run("grpo", 0, 0.12, 0.35, 0.0, 70),  # rose, then fell: drift
            _run("grpo", 1, 0.12, 0.12, 0.0, 10),  # fell by update 10 without a rise: a blow-up
            _run("grpo", 2, 0.12, 0.30, 0.0, 10),  # fell early, but after a rise: drift
            _run("grpo", 3, 0.05, 0.05, 0.0, None),  # near chance, decayed to 0 under the floor
            _run("grpo", 4, 0.12, 0.30, 0.28, None),  # kept its level
            _run("grpo", 5, 0.12, 0.14, 0.0, 40),  # never rose, fell later: a decline, not drift
            _run("grpo_control", 0, 0.05, 0.06, 0.05, None),
        ]
    )
    assert collapse_kinds(runs).tolist() == [
        "drift",
        "early_blowup",
        "drift",
        "decay_from_low",
        "none",
        "decline_no_rise",
        "none",
    ]
    table = criteria_table(runs, "grpo", "grpo_control").set_index("criterion")["measured"]
    assert table["collapse rate"].startswith("4/6")  # the existing rows are unchanged by the kinds
    assert table["collapsing arm: drift collapses (after a rise)"].startswith("2/6")
    assert table["collapsing arm: early blow-ups (collapsed by update 10, no rise)"].startswith("1/6")
    assert table["collapsing arm: declines without a rise (collapsed after update 10)"].startswith("1/6")
    assert table["collapsing arm: decays from a low start (peak under the detector's floor)"].startswith(
        "1/6"
    )
    assert table["control: decays from a low start (peak under the detector's floor)"].startswith("0/1")


def test_each_world_is_one_axis_away_from_the_default_scenario() -> None:
    exp = get_study("worlds", 2)
    assert list(exp.arms) == [f"{w}/{a}" for w in WORLDS for a in ("grpo", "sapo", "grpo_control")]
    default = {
        a: flat_config(c)
        for a in ("grpo", "sapo", "grpo_control")
        for c in exp.arms[f"default/{a}"].configs()[:1]
    }
    for world, axis in WORLDS.items():
        for arm in ("grpo", "sapo", "grpo_control"):
            (cfg, _) = exp.arms[f"{world}/{arm}"].configs()
            flat = flat_config(cfg)
            assert cfg.warm_start.calibrated and cfg.warm_start.steps == CALIBRATION["warm_start.steps"]
            changed = {k for k, v in flat.items() if default[arm][k] != v}
            assert changed == {k for k in axis}, world
    # at smoke size every world keeps its axis where SMOKE leaves it, and calibrates to the whole range
    smoke = exp.at_size(True)
    (cfg, _) = smoke["relations_6/sapo"].configs()
    assert cfg.task.world.n_relations == 6 and cfg.warm_start.target_em_sampled == (0.0, 1.0)


def test_worlds_table_and_figure(tmp_path: Path) -> None:
    runs = []
    for world, lift in (("default", 0.2), ("entities_48", 0.0)):
        for seed in range(6):
            runs.append(_run(f"{world}/grpo", seed, 0.12, 0.35, 0.05, 60 + seed))
            runs.append(_run(f"{world}/sapo", seed, 0.12, 0.35, 0.05 + lift * (1 + 0.05 * seed), None))
            runs.append(_run(f"{world}/grpo_control", seed, 0.12, 0.3, 0.3, None))
    table = worlds_table(pd.DataFrame(runs)).set_index("world")
    assert list(table.index) == ["default", "entities_48"]
    row = table.loc["default"]
    assert row["GRPO collapse rate"].startswith("6/6") and row["control collapse rate"].startswith("0/6")
    assert row["ISDD criteria met (rise, rate, onset, control)"] == "yes yes yes yes"
    assert row["GRPO drift / early blow-up / decline without rise / decay from low"] == "6/0/0/0"
    assert row["SAPO - GRPO final EM (paired)"].startswith("+0.225") and row["SAPO collapse rate"].startswith(
        "0/6"
    )
    # Holm over the family: the default's p doubled (two worlds, the other's p is 1)
    assert row["p (Holm, family)"] == pytest.approx(2 * row["p (Wilcoxon)"])
    assert table.loc["entities_48", "p (Holm, family)"] == 1.0
    worlds_figure(pd.DataFrame(), pd.DataFrame(runs), tmp_path / "worlds")
    assert (tmp_path / "worlds.png").stat().st_size > 10_000 and (tmp_path / "worlds.pdf").exists()
