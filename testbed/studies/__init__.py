"""Studies declared as data: the headline comparison and the ablations of the paper figures.
``CATALOG`` maps a name to a function building its ``Experiment`` (seeds as an argument);
``sapo-testbed experiment NAME`` and the scripts in ``experiments/`` run them."""

from collections.abc import Callable
from pathlib import Path

from testbed.config import ConfigError
from testbed.studies.ablations import (
    drift_phase,
    family,
    isdd_baselines,
    isdd_qwen2_150_baselines,
    sapo_grid,
    scenario_search,
)
from testbed.studies.compare import compare_experiment
from testbed.studies.ladder import ladder
from testbed.sweep.experiment import Experiment, Results, run_experiment, store_for

CATALOG = {
    "isdd_baselines": isdd_baselines,
    "isdd_qwen2_150_baselines": isdd_qwen2_150_baselines,
    "sapo_grid": sapo_grid,
    "drift_phase": drift_phase,
    "family": family,
    "scenario_search": scenario_search,
}


# scenario -> (the study holding its GRPO runs beside its control, as parts ``grpo`` and
# ``grpo_control``, given seeds; the name of that study's store)
SCENARIO_STUDIES: dict[str, tuple[Callable[[int], Experiment], str]] = {
    "isdd": (isdd_baselines, "isdd_baselines"),
    # the ladder's 0.1 M rung (the scenario's policy) at the scenario's RL lr
    "isdd_qwen2": (lambda seeds: ladder("0.1m", seeds, lr=1e-3), "ladder"),
    "isdd_qwen2_150": (isdd_qwen2_150_baselines, "isdd_qwen2_150_baselines"),
}


def scenario_study(scenario: str, seeds: int = 32) -> tuple[Experiment, str]:
    """The study of ``SCENARIO_STUDIES[scenario]`` at ``seeds``, and its store's name."""
    if scenario not in SCENARIO_STUDIES:
        raise ConfigError(
            f"scenario={scenario!r}: no study holds its control; known: {list(SCENARIO_STUDIES)}"
        )
    make, store = SCENARIO_STUDIES[scenario]
    return make(seeds), store


def stored_scenario_runs(scenario: str, root: Path, seeds: int = 32) -> Results:
    """What the store of ``scenario_study(scenario)`` holds (nothing is trained)."""
    exp, store = scenario_study(scenario, seeds)
    return run_experiment(exp, store_for(store, root), only_stored=True)


__all__ = ["CATALOG", "SCENARIO_STUDIES", "compare_experiment", "scenario_study", "stored_scenario_runs"]
