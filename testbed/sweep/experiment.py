"""Named experiments: labelled sweeps run into one store, at a documented size or a smoke size."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from testbed.config import config_hash
from testbed.sweep.executors import BACKENDS, make_executor
from testbed.sweep.runner import run_configs
from testbed.sweep.spec import SweepSpec
from testbed.sweep.store import ResultStore

# The smoke size: tiny task and model, a couple of updates, one seed. Tests run every script so.
SMOKE = {
    "task.world.n_entities": 8,
    "task.world.n_questions": 16,
    "task.max_len": 40,
    "policy.d_model": 16,
    "policy.n_heads": 2,
    "policy.n_layers": 1,
    "warm_start.steps": 5,
    "warm_start.batch_size": 8,
    "trainer.n_updates": 2,
    "trainer.questions_per_batch": 2,
    "trainer.group_size": 4,
    "trainer.minibatches": 2,
    "trainer.eval_every": 1,
    "trainer.eval_episodes": 16,
}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """``parts`` maps a label (one ablation axis, one family member...) to its sweep."""

    name: str
    parts: Mapping[str, SweepSpec]
    description: str = ""

    def at_size(self, smoke: bool) -> dict[str, SweepSpec]:
        if not smoke:
            return dict(self.parts)
        return {
            label: dataclasses.replace(
                spec,
                base={**spec.base, **SMOKE},
                grid={k: v for k, v in spec.grid.items() if k not in SMOKE},
                seeds=spec.seeds[:1],
            )
            for label, spec in self.parts.items()
        }


def store_for(name: str, root: Path | str = "runs/experiments", smoke: bool = False) -> ResultStore:
    return ResultStore(Path(root) / ("smoke" if smoke else "full") / name)


def run_experiment(
    exp: Experiment,
    root: Path | str = "runs/experiments",
    smoke: bool = False,
    backend: str = "local",
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run (or resume) every part; return the summaries with a ``part`` column."""
    store = store_for(exp.name, root, smoke)
    parts = exp.at_size(smoke)
    labelled = [(label, cfg) for label, spec in parts.items() for cfg in spec.configs()]
    executor = make_executor(backend, workers)
    try:
        run_configs([c for _, c in labelled], store, executor, progress=progress)
    finally:
        executor.shutdown()
    summaries = store.summaries([config_hash(c) for _, c in labelled])
    summaries.insert(0, "part", [label for label, _ in labelled])
    return summaries


def experiment_main(exp: Experiment, table_columns: list[str]) -> None:
    """The command line every experiment script shares."""
    parser = argparse.ArgumentParser(description=exp.description or exp.name)
    parser.add_argument("--smoke", action="store_true", help="tiny size, one seed: checks the script runs")
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--backend", choices=BACKENDS, default="local")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    summaries = run_experiment(exp, args.root, args.smoke, args.backend, args.workers)
    table = summaries.groupby(table_columns, sort=False, dropna=False)[
        ["peak_em", "final_em", "collapsed"]
    ].mean()
    print(table.reset_index().to_markdown(index=False, floatfmt=".3f"))
    print(f"results in {store_for(exp.name, args.root, args.smoke).root}")
