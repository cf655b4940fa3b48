"""The headline experiment: objectives (GRPO vs SAPO by default) on the default task, several seeds.

Writes to an output folder: ``results.csv`` (tidy rows: one per run and update, config columns
included), ``table.csv`` / ``table.md`` (peak and final held-out EM, collapse rate and step per
objective) and ``compare.png`` (reward, held-out EM, ratio quantiles and entropy over updates, mean
and 95% confidence band across seeds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from testbed.config import with_overrides
from testbed.sweep import ResultStore, run_configs
from testbed.run import RunConfig

PANELS = {
    "train_reward": "train reward (EM)",
    "eval_em_sampled": "held-out EM (sampled)",
    "ratio_p05_pos": "5th pct. ratio, A > 0 tokens",
    "low_ratio_frac_pos": "share of A > 0 tokens with r <= tau",
    "entropy": "entropy (nats / token)",
    "zero_grad_frac_all": "share of tokens with zero gradient",
}


def compare_configs(
    objectives: Sequence[str], seeds: Sequence[int], overrides: Mapping[str, str] | None = None
) -> list[RunConfig]:
    """One config per (objective, seed), objective-major so the seeds' warm starts are cached early."""
    base = with_overrides(RunConfig(), dict(overrides or {}))
    return [with_overrides(base, {"objective.name": o, "seed": s}) for o in objectives for s in seeds]


def summary_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """Per objective: seeds, warm/peak/final held-out EM (mean and std), collapse rate and step."""
    g = summaries.groupby("objective.name", sort=False)
    table = pd.DataFrame(
        {
            "seeds": g.size(),
            "warm_em": g["warm_em"].mean(),
            "peak_em": g["peak_em"].mean(),
            "peak_em_std": g["peak_em"].std(),
            "final_em": g["final_em"].mean(),
            "final_em_std": g["final_em"].std(),
            "collapse_rate": g["collapsed"].mean(),
            "collapse_step_mean": g["collapse_step"].mean(),
        }
    )
    return table.rename_axis("objective").reset_index()


def plot(rows: pd.DataFrame, path: Path, panels: Mapping[str, str] = PANELS) -> None:
    """Metrics over updates, one panel each, hue = objective, mean and 95% CI across seeds (PNG and PDF)."""
    long = rows.melt(id_vars=["update", "objective.name", "seed"], value_vars=list(panels), var_name="metric")
    long = long.dropna(subset=["value"])
    long["metric"] = long["metric"].map(panels)
    grid = sns.relplot(
        data=long,
        x="update",
        y="value",
        hue="objective.name",
        col="metric",
        col_wrap=3,
        kind="line",
        errorbar=("ci", 95),
        facet_kws={"sharey": False},
        height=2.8,
        aspect=1.3,
    )
    grid.set_titles("{col_name}")
    grid.set_axis_labels("update (rollout batch)", "")
    grid.legend.set_title("objective")
    grid.savefig(path, dpi=120)
    grid.savefig(path.with_suffix(".pdf"))
    plt.close(grid.figure)


def run_compare(
    out: Path,
    objectives: Sequence[str] = ("grpo", "sapo"),
    seeds: Sequence[int] = (0, 1, 2, 3),
    overrides: Mapping[str, str] | None = None,
    executor: Executor | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run (or resume) the comparison into ``out`` and write its results, table and figure."""
    out = Path(out)
    store = ResultStore(out)
    keys = run_configs(compare_configs(objectives, seeds, overrides), store, executor, progress=progress)
    rows = store.rows(keys)
    rows.to_csv(out / "results.csv", index=False)
    table = summary_table(store.summaries(keys))
    table.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
    plot(rows, out / "compare.png")
    return table
