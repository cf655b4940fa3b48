"""Experiments as data: labelled sweeps (arms) run into one store, at a documented size or a smoke
size, each carrying the columns of its summary table, the group the others are compared with, and
its figure. The compare job, every study of ``testbed.studies`` and the paper figures run them the
same way (``sapo-testbed compare|experiment|figures``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.analysis import summary_numbers, summary_table
from testbed.config import POPULATION, config_hash
from testbed.run import base_id, base_record
from testbed.sweep.executors import make_executor
from testbed.sweep.runner import run_configs
from testbed.sweep.spec import SweepSpec
from testbed.sweep.store import ResultStore
from testbed.warmstart import describe_task

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
    """``arms`` maps a label (one ablation axis, one objective...) to its sweep; the summary
    table groups runs by ``columns`` and pairs every group with ``reference`` (a dict of
    ``columns`` values) where given, or is ``table(summaries)`` when the study has its own (and
    ``table_numbers(summaries)`` the same as numbers, for ``table.csv``);
    ``figure`` draws the experiment from its rows and summaries; ``smoke``: the study's own
    overrides at smoke size, over ``SMOKE``."""

    name: str
    arms: Mapping[str, SweepSpec]
    description: str = ""
    columns: Sequence[str] = ("arm",)
    reference: Mapping[str, object] | None = None
    figure: Figure | None = None
    table: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    table_numbers: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    smoke: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def at_size(self, smoke: bool) -> dict[str, SweepSpec]:
        if not smoke:
            return dict(self.arms)
        return {
            label: dataclasses.replace(
                spec,
                base={**spec.base, **SMOKE, **self.smoke},
                grid={k: v for k, v in spec.grid.items() if k not in {**SMOKE, **self.smoke}},
                seeds=spec.seeds[:2],
            )
            for label, spec in self.arms.items()
        }

    def tabulate(self, summaries: pd.DataFrame) -> pd.DataFrame:
        """The summary table of ``summaries``: the study's own ``table``, or grouped by ``columns``."""
        return self.table(summaries) if self.table else summary_table(summaries, self.columns, self.reference)

    def numbers(self, summaries: pd.DataFrame) -> pd.DataFrame:
        """The summary table as numbers, one column per quantity (``table.csv``): grouped by
        ``columns`` (``testbed.analysis.summary_numbers``), or the study's own ``table_numbers``."""
        if self.table:
            return (self.table_numbers or self.table)(summaries)
        return summary_numbers(summaries, self.columns, self.reference)


@dataclasses.dataclass
class Results:
    """An experiment's stored runs: tidy rows, one summary per run (both with ``arm``), the table."""

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
    population: int = POPULATION,
) -> Results:
    """Run (or resume) every arm into ``store``, in populations of at most ``population`` members;
    return its rows, summaries and summary table. ``only_stored``: run nothing, and read the runs
    the store holds (the others are left out)."""
    labelled = [(label, cfg) for label, spec in exp.at_size(smoke).items() for cfg in spec.configs()]
    if only_stored:
        labelled = [(label, cfg) for label, cfg in labelled if store.has(config_hash(cfg))]
    else:
        executor = make_executor(backend, workers)
        try:
            run_configs(
                [c for _, c in labelled],
                store,
                executor,
                progress=progress,
                force=force,
                population=population,
            )
        finally:
            executor.shutdown()
    if not labelled:  # only_stored, nothing stored
        return Results(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    # A run two arms share (e.g. GRPO and its control at smoke size) is read once for each arm.
    keys = [config_hash(c) for _, c in labelled]
    arms = [label for label, _ in labelled]
    summaries = store.summaries(keys)
    summaries.insert(0, "arm", arms)
    rows = store.rows(keys).copy()  # one block per key, in order; the insert does not fragment it
    per_run = rows.groupby("run", sort=False).size() // pd.Series(keys).value_counts()
    rows.insert(0, "arm", np.repeat(arms, [per_run[k] for k in keys]))
    return Results(rows, summaries, exp.tabulate(summaries))


def base_records(exp: Experiment, smoke: bool = False, cache_dir: Path | None = None) -> pd.DataFrame:
    """One row per base policy of ``exp``'s arms found in the cache: its arms, world, the steps and
    seconds its warm start took, and its last calibration check (sampled and greedy EM); or, for a
    calibration that missed its target, ``failed``: its one-line error."""
    records: dict[str, dict[str, object]] = {}
    keep = ("pretrain_steps", "imitation_steps", "seconds", "cpu_seconds", "threads", "failed")
    for label, spec in exp.at_size(smoke).items():
        cfg = spec.configs()[0]  # every seed of an arm shares its base
        key = base_id(cfg)
        if key in records:
            records[key]["arms"] = f"{records[key]['arms']} {label}"
        elif (record := base_record(cfg, cache_dir)) is not None:
            last = (record.get("checks") or [{}])[-1]
            records[key] = {
                "arms": label,
                "task": describe_task(cfg.task),
                **{k: record.get(k) for k in keep},
            }
            records[key] |= {"check_em_sampled": last.get("sampled"), "check_em_greedy": last.get("greedy")}
    return pd.DataFrame(list(records.values()))


def write_results(exp: Experiment, results: Results, out: Path, smoke: bool = False) -> list[Path]:
    """results.csv (tidy rows), summaries.csv, table.csv / table.md, bases.csv (``base_records``,
    where the cache holds them) and the figure (PNG, PDF)."""
    out.mkdir(parents=True, exist_ok=True)
    results.rows.to_csv(out / "results.csv", index=False)
    results.summaries.to_csv(out / "summaries.csv", index=False)
    exp.numbers(results.summaries).to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(results.table.to_markdown(index=False, floatfmt=".3g") + "\n")
    written = [out / n for n in ("results.csv", "summaries.csv", "table.csv", "table.md")]
    bases = base_records(exp, smoke)
    if not bases.empty:
        bases.to_csv(out / "bases.csv", index=False)
        written.append(out / "bases.csv")
    if exp.figure is not None:
        exp.figure(results.rows, results.summaries, out / exp.name)
        written.append(out / f"{exp.name}.png")
    return written
