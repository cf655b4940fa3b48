"""Full-size checks of the headline claims (``python -m pytest -m slow``; minutes each)."""

from __future__ import annotations

import pytest
from scipy import stats

from testbed.config import with_overrides
from testbed.run import RunConfig, train, train_population
from testbed.studies.scenarios import get_scenario

pytestmark = pytest.mark.slow


def test_on_policy_grpo_improves_the_base_policy() -> None:
    cfg = with_overrides(
        RunConfig(), {"trainer.minibatches": "1", "trainer.lr": "0.003", "trainer.n_updates": "40"}
    )
    _, summary = train(cfg)
    assert summary["peak_em"] > summary["warm_em"] + 0.1
    assert summary["max_em_closed_book"] < 0.15  # procedural worlds: nothing to memorise


def test_population_and_single_runs_agree_over_16_seeds() -> None:
    """Final EM of 16 seeds trained as one population against the same 16 as single runs: the
    distributions agree (two-sided Mann-Whitney U, p reported in the assertion message)."""
    over = {"trainer.n_updates": 20, "trainer.eval_every": 20, "trainer.eval_episodes": 256}
    cfgs = [with_overrides(RunConfig(), {**over, "seed": s}) for s in range(16)]
    pop = [s["final_em"] for _, s in train_population(cfgs)]
    single = [train(c)[1]["final_em"] for c in cfgs]
    p = stats.mannwhitneyu(pop, single).pvalue
    assert p > 0.05, f"population and single runs differ: Mann-Whitney p = {p:.3f}"


def test_isdd_scenario_grpo_rises_then_collapses_and_its_control_does_not() -> None:
    scenario = get_scenario("isdd")
    base = with_overrides(RunConfig(), dict(scenario.overrides))
    grpo = [s for _, s in train_population([with_overrides(base, {"seed": s}) for s in range(8)])]
    control = with_overrides(base, dict(scenario.control))
    ctrl = [s for _, s in train_population([with_overrides(control, {"seed": s}) for s in range(8)])]
    assert sum(s["collapsed"] for s in grpo) >= 5
    assert sum(s["peak_em"] - s["warm_em"] >= 0.1 for s in grpo) >= 5
    assert sum(s["collapsed"] for s in ctrl) <= 2
