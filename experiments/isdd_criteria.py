"""Does a scenario show ISDD? The issue's criteria (rise, collapse rate, onset, control) measured on
stored runs: GRPO's part against its on-policy control. Trains nothing.

    python experiments/isdd_criteria.py                          # the isdd scenario (isdd_baselines)
    python experiments/isdd_criteria.py --rung 0.1m --lr 1e-3    # a scale-ladder rung's runs

Reads ``--root``/full/isdd_baselines or ``--root``/full/ladder (run those studies first).
"""

import argparse
from pathlib import Path

from testbed.analysis import criteria_table
from testbed.studies import CATALOG
from testbed.studies.ladder import ladder
from testbed.sweep.experiment import run_experiment, store_for

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--rung", help="a scale-ladder rung (default: the isdd scenario's own runs)")
    parser.add_argument("--lr", type=float, default=None, help="the rung's RL lr (as scale_ladder.py --lr)")
    args = parser.parse_args()
    if args.rung is None:
        exp = CATALOG["isdd_baselines"](args.seeds)
        store = store_for(exp.name, args.root)
    else:
        exp = ladder(args.rung, args.seeds, lr=args.lr)
        store = store_for("ladder", args.root)
    summaries = run_experiment(exp, store, only_stored=True).summaries
    if summaries.empty:
        parser.exit(1, f"no stored runs of {exp.name} in {store.root}\n")
    print(f"{exp.description}: {summaries.groupby('part').size().to_dict()} stored runs")
    print(criteria_table(summaries, "grpo", "grpo_control").to_markdown(index=False))
