"""The headline comparison: objectives (GRPO vs SAPO by default) on a named scenario, paired by
seed (every seed starts from the study's one base policy and draws the same first episodes).

``sapo-testbed compare`` writes ``results.csv`` (tidy rows: one per run and update, config columns
included), ``summaries.csv``, ``table.md`` (start, peak and final EM with 95% bootstrap CIs,
collapse rate with its Wilson interval, paired tests against the first objective, Holm-corrected)
and ``table.csv`` (the same as numbers, one column per quantity: ``final_em``,
``final_em_ci_low``, ``p_final_holm``, ...: ``testbed.analysis.summary_numbers``) and
``compare.png`` / ``.pdf`` (metrics over updates: median and interquartile band, one thin line per seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from testbed.studies.figures import arm_curves
from testbed.studies.scenarios import DEFAULT_SCENARIO, scenario_experiment
from testbed.sweep.experiment import Experiment


def compare_experiment(
    objectives: Sequence[str] = ("grpo", "sapo"),
    seeds: Sequence[int] = tuple(range(16)),
    scenario: str = DEFAULT_SCENARIO,
    overrides: Mapping[str, object] | None = None,
    control: bool = False,
) -> Experiment:
    """One arm per objective on ``scenario`` (plus ``overrides``), the first objective the
    reference; with ``control``, GRPO on the scenario's control as arm ``grpo_control``."""
    seeds = tuple(seeds)
    return scenario_experiment(
        scenario,
        objectives,
        seeds,
        overrides,
        control=control,
        name="compare",
        description=f"{', '.join(objectives)} on the {scenario!r} scenario, {len(seeds)} paired seeds",
        figure=arm_curves,
    )
