"""Does a scenario show ISDD, and by which mechanism? From stored runs (nothing is trained):

1. the scenario's criteria (rise, collapse rate, onset, control), GRPO against its on-policy control;
2. the mechanism signals by update range (ratio quantile of A > 0 tokens, low-ratio share, LLD,
   search share of collapsed tokens, entropy, zero-gradient share, gradient norm), per arm.

    python experiments/isdd_report.py                          # the isdd scenario (isdd_baselines)
    python experiments/isdd_report.py --scenario isdd_qwen2    # the scale ladder's 0.1 M rung, lr 1e-3
    python experiments/isdd_report.py --scenario isdd_qwen2_150 --seeds 48 --arms grpo tis
        # criteria of GRPO and TIS pooled (TIS is GRPO up to rounding there: a second sample)

Reads the store of the scenario's study under ``--root``/full (``SCENARIO_STUDIES``: run it first).
"""

import argparse
from pathlib import Path

from testbed.analysis import criteria_table, mechanism_table
from testbed.studies import SCENARIO_STUDIES, stored_scenario_runs

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--scenario", choices=list(SCENARIO_STUDIES), default="isdd")
    parser.add_argument("--arms", nargs="+", default=["grpo"], help="parts whose runs the criteria pool")
    args = parser.parse_args()
    results = stored_scenario_runs(args.scenario, args.root, args.seeds)
    if results.summaries.empty:
        parser.exit(1, f"no stored runs of the {args.scenario} scenario under {args.root}\n")
    known = set(results.summaries["part"])
    if unknown := [a for a in args.arms if a not in known]:
        parser.error(f"--arms {' '.join(unknown)}: no stored runs; known parts: {sorted(known)}")
    print(f"{args.scenario}: {results.summaries.groupby('part').size().to_dict()} stored runs\n")
    print(criteria_table(results.summaries, args.arms, "grpo_control").to_markdown(index=False))
    parts = list(dict.fromkeys(results.rows["part"]))
    print()
    print(mechanism_table(results.rows, parts).to_markdown(index=False, floatfmt=".3f"))
