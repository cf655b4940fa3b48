"""The early-warning detector: which pooled signal crosses its threshold before GRPO's collapse on
the isdd scenario, by how many updates, and how often it fires on the on-policy control.

Reads the runs the ``isdd_baselines`` study's store holds (``--scenario isdd_qwen2``: the scale
ladder's; run it first; nothing is trained here); prints one row per candidate alarm.

    python experiments/isdd_detector.py [--root runs/experiments]
    python experiments/isdd_detector.py --from-seed 16   # out of sample: seeds the threshold never saw
    python experiments/isdd_detector.py --scenario isdd_qwen2   # another policy (the ladder's 0.1 M)

The default alarm's threshold (lld_mean_nonneg < -1) was set after looking at the mean curves of
seeds 0-15; ``--from-seed 16`` scores every alarm on the later seeds only.
"""

import argparse
from pathlib import Path

from testbed.analysis import alarm_table
from testbed.diagnostics import Alarm
from testbed.studies import SCENARIO_STUDIES, stored_scenario_runs

# Thresholds fixed before looking at the scenario's runs: a quarter of the ratio scale, the
# penalised share SAPO would act on, an entropy floor, a likelihood drop of one nat per response.
CANDIDATES = [
    Alarm("pooled_ratio_p05_pos", 0.5, below=True, patience=2),
    Alarm("pooled_ratio_p05_pos", 0.25, below=True, patience=2),
    Alarm("pooled_low_ratio_frac_nonneg", 0.2, below=False, patience=2),
    Alarm("lld_mean_nonneg", -1.0, below=True, patience=2),
    Alarm("entropy", 0.3, below=True, patience=2),
    Alarm("zero_grad_frac_all", 0.9, below=False, patience=2),
    Alarm("grad_norm", 1.0, below=False, patience=2),
]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--from-seed", type=int, default=0, help="score only seeds >= this one")
    parser.add_argument("--scenario", choices=list(SCENARIO_STUDIES), default="isdd")
    args = parser.parse_args()
    results = stored_scenario_runs(args.scenario, args.root, args.seeds)
    rows = results.rows[results.rows["seed"] >= args.from_seed]
    summaries = results.summaries[results.summaries["seed"] >= args.from_seed]
    table = alarm_table(rows, summaries, CANDIDATES, "grpo", "grpo_control")
    print(table.to_markdown(index=False))
