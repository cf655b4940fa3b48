"""Experiments as data: labelled sweeps run into one store, at a documented size or a smoke size,
each carrying the columns of its summary table, the group the others are compared with, and its
figure. The compare job, every ablation script and the paper figures run them the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from testbed.analysis import summary_table
from testbed.config import ConfigError, config_hash
from testbed.sweep.executors import BACKENDS, make_executor
from testbed.sweep.runner import RunsFailed, run_configs
from testbed.sweep.spec import SweepSpec
from testbed.sweep.store import ResultStore, StoreError

# The smoke size: tiny task and model, a couple of updates, one seed. Tests run every experiment so.
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

Figure = Callable[[pd.DataFrame, pd.DataFrame, Path], None]  # (rows, summaries, path without suffix)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """``parts`` maps a label (one ablation axis, one objective...) to its sweep; the summary
    table groups runs by ``columns`` and pairs every group with ``reference`` (a dict of
    ``columns`` values) where given; ``figure`` draws the experiment from its rows and summaries."""

    name: str
    parts: Mapping[str, SweepSpec]
    description: str = ""
    columns: Sequence[str] = ("part",)
    reference: Mapping[str, object] | None = None
    figure: Figure | None = None

    def at_size(self, smoke: bool) -> dict[str, SweepSpec]:
        if not smoke:
            return dict(self.parts)
        return {
            label: dataclasses.replace(
                spec,
                base={**spec.base, **SMOKE},
                grid={k: v for k, v in spec.grid.items() if k not in SMOKE},
                seeds=spec.seeds[:2],
            )
            for label, spec in self.parts.items()
        }


@dataclasses.dataclass
class Results:
    """An experiment's stored runs: tidy rows, one summary per run (both with ``part``), the table."""

    rows: pd.DataFrame
    summaries: pd.DataFrame
    table: pd.DataFrame


def store_for(name: str, root: Path | str = "runs/experiments", smoke: bool = False) -> ResultStore:
    return ResultStore(Path(root) / ("smoke" if smoke else "full") / name)


def run_experiment(
    exp: Experiment,
    store: ResultStore,
    smoke: bool = False,
    backend: str = "local",
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
    only_stored: bool = False,
) -> Results:
    """Run (or resume) every part into ``store``; return its rows, summaries and summary table.
    ``only_stored``: run nothing, and read the runs the store holds (the others are left out)."""
    labelled = [(label, cfg) for label, spec in exp.at_size(smoke).items() for cfg in spec.configs()]
    if only_stored:
        labelled = [(label, cfg) for label, cfg in labelled if store.has(config_hash(cfg))]
    else:
        executor = make_executor(backend, workers)
        try:
            run_configs([c for _, c in labelled], store, executor, progress=progress, force=force)
        finally:
            executor.shutdown()
    if not labelled:  # only_stored, nothing stored
        return Results(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    keys = [config_hash(c) for _, c in labelled]
    parts = dict(zip(keys, (label for label, _ in labelled), strict=True))
    summaries = store.summaries(keys)
    summaries.insert(0, "part", summaries["run"].map(parts))
    rows = store.rows(keys).copy()  # one block: the inserted column does not fragment it
    rows.insert(0, "part", rows["run"].map(parts))
    return Results(rows, summaries, summary_table(summaries, exp.columns, exp.reference))


def write_results(exp: Experiment, results: Results, out: Path) -> list[Path]:
    """results.csv (tidy rows), summaries.csv, table.csv / table.md and the figure (PNG, PDF)."""
    out.mkdir(parents=True, exist_ok=True)
    results.rows.to_csv(out / "results.csv", index=False)
    results.summaries.to_csv(out / "summaries.csv", index=False)
    results.table.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(results.table.to_markdown(index=False, floatfmt=".3g") + "\n")
    written = [out / n for n in ("results.csv", "summaries.csv", "table.csv", "table.md")]
    if exp.figure is not None:
        exp.figure(results.rows, results.summaries, out / exp.name)
        written.append(out / f"{exp.name}.png")
    return written


def experiment_main(exp: Experiment, argv: Sequence[str] | None = None) -> None:
    """The command line every experiment script shares."""
    parser = argparse.ArgumentParser(description=exp.description or exp.name)
    parser.add_argument("--smoke", action="store_true", help="tiny size, two seeds: checks the script runs")
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--backend", choices=BACKENDS, default="local")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="redo stored runs")
    args = parser.parse_args(argv)
    store = store_for(exp.name, args.root, args.smoke)
    try:
        results = run_experiment(exp, store, args.smoke, args.backend, args.workers, force=args.force)
    except (ConfigError, StoreError, RunsFailed) as err:
        parser.exit(2 if not isinstance(err, RunsFailed) else 1, f"{exp.name}: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{exp.name}: interrupted; finished runs are kept in {store.root}\n")
    written = write_results(exp, results, store.root)
    print(results.table.to_markdown(index=False, floatfmt=".3g"))
    print(f"wrote {', '.join(p.name for p in written)} in {store.root}", file=sys.stderr)
