"""Studies declared as data: the headline comparison and the ablations of the paper figures.
``CATALOG`` maps a name to a function building its ``Experiment`` (seeds as an argument);
``sapo-testbed experiment NAME`` and the scripts in ``experiments/`` run them."""

from pathlib import Path

from testbed.config import ConfigError
from testbed.studies.ablations import drift_phase, family, isdd_baselines, sapo_grid, scenario_search
from testbed.studies.compare import compare_experiment
from testbed.studies.ladder import ladder
from testbed.sweep.experiment import Experiment, Results, run_experiment, store_for

CATALOG = {
    "isdd_baselines": isdd_baselines,
    "sapo_grid": sapo_grid,
    "drift_phase": drift_phase,
    "family": family,
    "scenario_search": scenario_search,
}


def scenario_study(scenario: str, seeds: int = 32) -> tuple[Experiment, str]:
    """The study holding a scenario's GRPO runs beside its control (part names ``grpo`` and
    ``grpo_control``), and the name of its store."""
    if scenario == "isdd":
        return isdd_baselines(seeds), "isdd_baselines"
    if scenario == "isdd_qwen2":
        return ladder("0.1m", seeds, lr=1e-3), "ladder"
    raise ConfigError(f"scenario={scenario!r}: no study holds its control; known: ['isdd', 'isdd_qwen2']")


def stored_scenario_runs(scenario: str, root: Path, seeds: int = 32) -> Results:
    """What the store of ``scenario_study(scenario)`` holds (nothing is trained)."""
    exp, store = scenario_study(scenario, seeds)
    return run_experiment(exp, store_for(store, root), only_stored=True)


__all__ = ["CATALOG", "compare_experiment", "scenario_study", "stored_scenario_runs"]
