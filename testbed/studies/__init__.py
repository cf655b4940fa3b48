"""Studies declared as data: the headline comparison and the ablations of the paper figures.
``CATALOG`` maps a name to a function building its ``Experiment`` (seeds as an argument);
``sapo-testbed experiment NAME`` and the scripts in ``experiments/`` run them."""

from testbed.studies.ablations import drift_phase, family, isdd_baselines, sapo_grid, scenario_search
from testbed.studies.compare import compare_experiment

CATALOG = {
    "isdd_baselines": isdd_baselines,
    "sapo_grid": sapo_grid,
    "drift_phase": drift_phase,
    "family": family,
    "scenario_search": scenario_search,
}

__all__ = ["CATALOG", "compare_experiment"]
