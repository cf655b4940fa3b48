"""The studies' figures, each drawn from a study's tidy rows and run summaries (PNG and PDF,
byte-stable across reruns), and ``paper_figures``: every figure plus ``RESULTS.md`` (the tables,
then the hand-written reading), which ``sapo-testbed figures`` runs.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

PANELS = {
    "eval_em_sampled": "fresh-episode EM (sampled)",
    "eval_em_closed_book": "closed-book EM (random documents)",
    "train_reward": "train reward (EM)",
    "pooled_ratio_p05_pos": "5th pct. ratio, A > 0 tokens (pooled)",
    "pooled_low_ratio_frac_nonneg": "share of A >= 0 tokens with r <= 0.8",
    "entropy": "entropy (nats / token)",
    "lld_mean_nonneg": "log-likelihood change, A >= 0 responses",
    "zero_grad_frac_all": "share of tokens with zero gradient",
    "grad_norm": "gradient norm (before clipping)",
}


def curves(rows: pd.DataFrame, path: Path, panels: Mapping[str, str] = PANELS, hue: str = "arm") -> None:
    """Metrics over updates, one panel each: mean and 95% CI band across seeds, thin per-seed lines."""
    panels = {k: v for k, v in panels.items() if k in rows}
    long = rows.melt(id_vars=["update", hue, "seed"], value_vars=list(panels), var_name="metric").dropna()
    long["metric"] = long["metric"].map(panels)
    grid = _panels(
        long, "metric", hue, "value", col_wrap=3, facet_kws={"sharey": False}, height=2.6, aspect=1.4
    )
    grid.set_titles("{col_name}")
    grid.set_axis_labels("update (rollout batch)", "")
    save_figure(grid.figure, path, dpi=110)


def _panels(long: pd.DataFrame, col: str, hue: str, y: str, **kwargs: Any) -> sns.FacetGrid:
    """One panel per value of ``col``: ``y`` over updates per ``hue``, mean and 95% CI band across
    seeds (bootstrapped from a fixed seed: the same figure from the same runs), one thin line per seed."""
    grid = sns.relplot(
        data=long, x="update", y=y, hue=hue, col=col, kind="line", errorbar=("ci", 95), seed=0, **kwargs
    )
    palette = dict(zip(long[hue].unique(), sns.color_palette(n_colors=long[hue].nunique()), strict=True))
    for value, ax in grid.axes_dict.items():
        for (label, _), g in long[long[col] == value].groupby([hue, "seed"]):
            ax.plot(g["update"], g[y], color=palette[label], lw=0.4, alpha=0.25)
    return grid


def save_figure(fig: plt.Figure, path: Path, dpi: int = 120) -> None:
    """``path`` as PNG and PDF, byte-stable across reruns (no creation date in the PDF), then closed."""
    fig.savefig(path.with_suffix(".png"), dpi=dpi, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)


def arm_curves(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    """The compare job's and the baselines studies' figure: every panel, one colour per arm."""
    curves(rows, path)


def search_figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    curves(rows, path, {"eval_em_sampled": "fresh-episode EM (sampled)", "entropy": "entropy"})


def grid_figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    """SAPO's final EM over tau x w, and its paired difference to GRPO."""
    sapo = summaries[summaries["objective.name"] == "sapo"]
    grpo = summaries[summaries["objective.name"] == "grpo"].set_index("seed")["final_em"]
    sapo = sapo.assign(diff=sapo["final_em"].values - grpo.reindex(sapo["seed"]).values)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"wspace": 0.35})
    final = sapo.pivot_table(index="objective.sapo_tau", columns="objective.sapo_w", values="final_em")
    diff = sapo.pivot_table(index="objective.sapo_tau", columns="objective.sapo_w", values="diff")
    sns.heatmap(final, annot=True, fmt=".2f", cmap="viridis", ax=axes[0], vmin=0)
    sns.heatmap(diff, annot=True, fmt="+.2f", cmap="RdBu", center=0, ax=axes[1])
    axes[0].set_title("SAPO final fresh-episode EM")
    axes[1].set_title("SAPO minus GRPO (paired by seed)")
    for ax in axes:
        ax.set_xlabel("w (penalty weight)")
        ax.set_ylabel("tau (ratio threshold)")
    save_figure(fig, path)


def phase_figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    """Collapse rate over learning rate x optimizer steps per batch, one heatmap per objective."""
    rate = summaries.pivot_table(
        index=["objective.name", "trainer.lr"],
        columns="trainer.minibatches",
        values="collapsed",
        aggfunc="mean",
    )
    names = list(dict.fromkeys(summaries["objective.name"]))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), gridspec_kw={"wspace": 0.35})
    for ax, name in zip(axes, names, strict=True):
        sns.heatmap(rate.loc[name], annot=True, fmt=".2f", cmap="magma_r", vmin=0, vmax=1, ax=ax)
        ax.set_title(f"{name}: collapse rate")
        ax.set_xlabel("optimizer steps per rollout batch")
        ax.set_ylabel("learning rate")
    save_figure(fig, path)


def family_figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    """Peak and final EM per arm, mean and 95% CI."""
    long = summaries.melt(id_vars=["arm", "seed"], value_vars=["peak_em", "final_em"], var_name="metric")
    long["metric"] = long["metric"].map({"peak_em": "peak EM", "final_em": "final EM"})
    fig, ax = plt.subplots(figsize=(11, 3.6))
    sns.pointplot(
        data=long,
        x="arm",
        y="value",
        hue="metric",
        errorbar=("ci", 95),
        seed=0,
        linestyle="none",
        dodge=0.3,
        ax=ax,
    )
    ax.set_xlabel("objective")
    ax.set_ylabel("fresh-episode EM")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(title="", loc="upper right")
    save_figure(fig, path)


def ladder_figure(rows: pd.DataFrame, path: Path) -> None:
    """Fresh-episode EM over updates, one panel per rung (rows carry ``rung``, ``params_m``, ``rl_lr``)."""
    rows = rows[rows["eval_em_sampled"].notna()]
    grid = _panels(rows, "rung", "arm", "eval_em_sampled", height=3.4, aspect=1.2)
    for rung, ax in grid.axes_dict.items():
        first = rows[rows["rung"] == rung].iloc[0]
        ax.set_title(f"rung {rung} ({first['params_m']:.2g} M parameters), RL lr {first['rl_lr']:g}")
    grid.set_axis_labels("update (rollout batch)", "fresh-episode EM (sampled)")
    save_figure(grid.figure, path, dpi=110)


def results_header(command: Sequence[str]) -> list[str]:
    """RESULTS.md's opening: the command that wrote it, the machine, how to read the tables."""
    import torch

    return [
        "# Results",
        "",
        f"Generated by `{' '.join(command)}` on {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, CPU kernels {torch.backends.cpu.get_cpu_capability()}, one torch thread per "
        "run. Tables: mean [95% bootstrap CI] over seeds, collapse rate [95% Wilson], paired tests "
        "(Wilcoxon on final EM, exact McNemar on collapse) against the reference row, Holm-corrected; "
        "(!) marks fewer than 5 seeds.",
        "",
    ]
