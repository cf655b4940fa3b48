"""The headline comparison: objectives (GRPO vs SAPO by default) on a named scenario, paired by
seed (every seed starts from the study's one base policy and draws the same first episodes).

Writes ``results.csv`` (tidy rows: one per run and update, config columns included),
``summaries.csv``, ``table.csv`` / ``table.md`` (start, peak and final EM with 95% bootstrap CIs,
collapse rate with its Wilson interval, paired tests against the first objective, Holm-corrected)
and ``compare.png`` / ``.pdf`` (metrics over updates: mean and 95% CI band, one thin line per seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from testbed.scenarios import DEFAULT_SCENARIO, get_scenario
from testbed.sweep.experiment import Experiment
from testbed.sweep.spec import SweepSpec

PANELS = {
    "eval_em_sampled": "fresh-episode EM (sampled)",
    "eval_em_closed_book": "closed-book EM (random documents)",
    "train_reward": "train reward (EM)",
    "pooled_ratio_p05_pos": "5th pct. ratio, A > 0 tokens (pooled)",
    "pooled_low_ratio_frac_nonneg": "share of A >= 0 tokens with r <= tau",
    "entropy": "entropy (nats / token)",
    "lld_mean_nonneg": "log-likelihood change, A >= 0 responses",
    "zero_grad_frac_all": "share of tokens with zero gradient",
    "grad_norm": "gradient norm (before clipping)",
}


def curves(
    rows: pd.DataFrame, path: Path, panels: Mapping[str, str] = PANELS, hue: str = "objective.name"
) -> None:
    """Metrics over updates, one panel each: mean and 95% CI band across seeds, thin per-seed lines."""
    panels = {k: v for k, v in panels.items() if k in rows}
    long = rows.melt(id_vars=["update", hue, "seed"], value_vars=list(panels), var_name="metric").dropna()
    long["metric"] = long["metric"].map(panels)
    grid = sns.relplot(
        data=long,
        x="update",
        y="value",
        hue=hue,
        col="metric",
        col_wrap=3,
        kind="line",
        errorbar=("ci", 95),
        seed=0,  # the CI bands' bootstrap: same figure from the same runs
        facet_kws={"sharey": False, "legend_out": True},
        height=2.6,
        aspect=1.4,
    )
    palette = dict(zip(long[hue].unique(), sns.color_palette(n_colors=long[hue].nunique()), strict=True))
    for metric, ax in grid.axes_dict.items():
        sub = long[long["metric"] == metric]
        for (label, _), g in sub.groupby([hue, "seed"]):
            ax.plot(g["update"], g["value"], color=palette[label], lw=0.4, alpha=0.25)
    grid.set_titles("{col_name}")
    grid.set_axis_labels("update (rollout batch)", "")
    grid.legend.set_title("objective" if hue in ("objective.name", "part") else hue)
    save_figure(grid.figure, path, dpi=110)


def save_figure(fig: plt.Figure, path: Path, dpi: int = 120) -> None:
    """``path`` as PNG and PDF, byte-stable across reruns (no creation date in the PDF), then closed."""
    fig.savefig(path.with_suffix(".png"), dpi=dpi, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)


def _figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    curves(rows, path)


def compare_experiment(
    objectives: Sequence[str] = ("grpo", "sapo"),
    seeds: Sequence[int] = tuple(range(16)),
    scenario: str = DEFAULT_SCENARIO,
    overrides: Mapping[str, object] | None = None,
) -> Experiment:
    """One part per objective on ``scenario`` (plus ``overrides``), the first objective the reference."""
    base = {**get_scenario(scenario).overrides, **(overrides or {})}
    parts = {o: SweepSpec(base={**base, "objective.name": o}, seeds=tuple(seeds)) for o in objectives}
    return Experiment(
        name="compare",
        parts=parts,
        description=f"{', '.join(objectives)} on the {scenario!r} scenario, {len(seeds)} paired seeds",
        columns=("objective.name",),
        reference={"objective.name": objectives[0]},
        figure=_figure,
    )
