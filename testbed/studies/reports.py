"""Does a scenario show ISDD, by which mechanism, and which signal warns of it? Read from the stored
runs of the scenario's baselines study (nothing is trained); ``sapo-testbed report SCENARIO``.

1. ``criteria``: the scenario's criteria (rise, collapse rate, onset, control), its GRPO arm (or
   several arms pooled) against GRPO on its control (``testbed.analysis.criteria_table``);
2. ``mechanisms``: the mechanism signals by update range, per arm (``mechanism_table``);
3. ``alarms``: each early-warning candidate scored on GRPO's collapses and on the control's runs
   (``alarm_table``): fired before collapse, median lead, false alarms.
"""

from __future__ import annotations

from collections.abc import Sequence

from testbed.analysis import CRITERIA_TEXT, alarm_table, criteria_table, mechanism_table
from testbed.config import ConfigError
from testbed.diagnostics import Alarm
from testbed.studies.scenarios import CONTROL, get_scenario
from testbed.sweep.experiment import Results

TABLES = ("criteria", "mechanisms", "alarms")

# Thresholds fixed before looking at the scenario's runs: a quarter of the ratio scale, the
# penalised share SAPO would act on, an entropy floor, a likelihood drop of one nat per response.
CANDIDATES = (
    Alarm("pooled_ratio_p05_pos", 0.5, below=True, patience=2),
    Alarm("pooled_ratio_p05_pos", 0.25, below=True, patience=2),
    Alarm("pooled_low_ratio_frac_nonneg", 0.2, below=False, patience=2),
    Alarm("lld_mean_nonneg", -1.0, below=True, patience=2),
    Alarm("entropy", 0.3, below=True, patience=2),
    Alarm("zero_grad_frac_all", 0.9, below=False, patience=2),
    Alarm("grad_norm", 1.0, below=False, patience=2),
)


def scenario_report(
    scenario: str,
    results: Results,
    arms: Sequence[str] = ("grpo",),
    tables: Sequence[str] = TABLES,
    from_seed: int = 0,
) -> str:
    """The ``tables`` of ``scenario`` from its stored ``results`` (seeds >= ``from_seed``: e.g. the
    seeds a threshold never saw), as Markdown; ``arms``: the arms whose runs the criteria pool."""
    if unknown := [t for t in tables if t not in TABLES]:
        raise ConfigError(f"tables={unknown}: unknown; known: {list(TABLES)}")
    stored = not results.summaries.empty
    rows = results.rows[results.rows["seed"] >= from_seed] if stored else results.rows
    summaries = results.summaries[results.summaries["seed"] >= from_seed] if stored else results.summaries
    if summaries.empty:
        raise ConfigError(
            f"scenario={scenario!r}: no stored runs (seeds >= {from_seed}); run its study first"
        )
    if unknown := [a for a in arms if a not in set(summaries["arm"])]:
        raise ConfigError(f"arms={unknown}: no stored runs; known arms: {sorted(set(summaries['arm']))}")
    counts = summaries.groupby("arm", sort=False).size().to_dict()
    out = [f"{scenario}: {counts} stored runs"]
    if "criteria" in tables:
        crit = criteria_table(summaries, arms, CONTROL, get_scenario(scenario).criteria)[CRITERIA_TEXT]
        out += ["## Criteria", crit.to_markdown(index=False)]
    if "mechanisms" in tables:
        mech = mechanism_table(rows, list(dict.fromkeys(rows["arm"])))
        out += ["## Mechanism signals by update range", mech.to_markdown(index=False, floatfmt=".3f")]
    if "alarms" in tables:
        alarms = alarm_table(rows, summaries, CANDIDATES, arms[0], CONTROL)
        out += [f"## Early-warning candidates ({arms[0]} against {CONTROL})", alarms.to_markdown(index=False)]
    return "\n\n".join(out) + "\n"
