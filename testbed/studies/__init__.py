"""Studies declared as data: the scenarios' baselines, the ablations of the paper figures and the
scale ladder. ``CATALOG`` maps a study's name to a function building its ``Experiment`` (seeds as
an argument, None for the study's own); ``sapo-testbed experiment NAME`` runs one, ``sapo-testbed
figures [NAME ...]`` draws their figures and RESULTS.md, ``sapo-testbed report SCENARIO`` reads a
scenario's baselines study, ``sapo-testbed export [NAME ...]`` ships their stored runs
(``shipped.py``).

Registering a study is one act: add its function to ``CATALOG`` below (a scenario's baselines
study is registered by giving the scenario ``baselines`` in ``scenarios.SCENARIOS``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from testbed.config import ConfigError
from testbed.studies.ablations import drift_phase, family, sapo_grid, scenario_search
from testbed.studies.compare import compare_experiment
from testbed.studies.figures import arm_curves
from testbed.studies.scenarios import DEFAULT_SCENARIO, SCENARIOS, get_scenario, scenario_experiment
from testbed.studies.shipped import stored_or_shipped
from testbed.studies.worlds import worlds
from testbed.sweep.experiment import Experiment, Results, store_for

Study = Callable[[int | None], Experiment]  # seeds per arm (None: the study's own) -> its Experiment


def baselines(scenario: str, seeds: int | None = None) -> Experiment:
    """The scenario's baselines (its objectives, GRPO first) and GRPO on its control, 32 paired seeds."""
    sc = get_scenario(scenario)
    if not sc.baselines:
        raise ConfigError(f"scenario={scenario!r}: declares no baselines study")
    return scenario_experiment(scenario, sc.baselines, range(seeds or 32), figure=arm_curves)


def _own_seeds(make: Callable[..., Experiment]) -> Study:
    """``make`` at ``seeds``, or at its own default when None."""

    def study(seeds: int | None = None) -> Experiment:
        return make(seeds) if seeds else make()

    return study


CATALOG: dict[str, Study] = {
    **{f"{s.name}_baselines": partial(baselines, s.name) for s in SCENARIOS.values() if s.baselines},
    "sapo_grid": _own_seeds(sapo_grid),
    "drift_phase": _own_seeds(drift_phase),
    "family": _own_seeds(family),
    "scenario_search": scenario_search,
    "worlds": _own_seeds(worlds),
}


def get_study(name: str, seeds: int | None = None) -> Experiment:
    if name not in CATALOG:
        raise ConfigError(f"study {name!r}: unknown; known: {sorted(CATALOG)}")
    return CATALOG[name](seeds)


def study_store(name: str) -> str:
    """The store a catalog study's runs go to: its name, or the store its scenario names."""
    scenario = name.removesuffix("_baselines")
    return (scenario in SCENARIOS and SCENARIOS[scenario].store) or name


def stored_scenario_runs(
    scenario: str, root: Path, seeds: int = 32, smoke: bool = False, shipped: Path | None = None
) -> tuple[Results, Path | None]:
    """What the store of ``scenario``'s baselines study holds (nothing is trained); when it holds
    nothing, the study's runs shipped under ``shipped`` (``testbed.studies.shipped``), with the
    folder they came from (None: the store)."""
    name = f"{scenario}_baselines"
    if name not in CATALOG:
        known = [n.removesuffix("_baselines") for n in CATALOG if n.endswith("_baselines")]
        raise ConfigError(f"scenario={scenario!r}: no baselines study; known: {known}")
    store = store_for(study_store(name), root, smoke)
    return stored_or_shipped(get_study(name, seeds), store, smoke, CATALOG[name], shipped)


__all__ = [
    "CATALOG",
    "DEFAULT_SCENARIO",
    "SCENARIOS",
    "baselines",
    "compare_experiment",
    "get_study",
    "stored_scenario_runs",
    "study_store",
]
