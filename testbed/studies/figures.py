"""The studies' figures, each drawn from a study's tidy rows and run summaries (PNG and PDF,
byte-stable across reruns), and ``paper_figures``: every figure plus ``RESULTS.md`` (the tables,
then the hand-written reading), which ``sapo-testbed figures`` runs.

Curves over updates show the median over seeds and its interquartile band, with one thin line per
seed; each panel's y-axis spans the seeds' 10-90% range (so one seed's spike cannot flatten the
others) and a seed's line is clipped where it leaves it. Every legend, tick and title names an
arm or objective by ``display_name``.
"""

from __future__ import annotations

import math
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from testbed.analysis import wilson_ci
from testbed.objectives.registry import ObjectiveConfig

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

_DEFAULTS = ObjectiveConfig()

# Display names of objectives, arms and worlds: every legend, tick and title goes through
# ``display_name`` (a name missing here is drawn raw; a test checks every catalog arm is covered).
DISPLAY: dict[str, str] = {
    "grpo": "GRPO",
    "grpo_control": "GRPO, on-policy control",
    "sapo": f"SAPO (tau {_DEFAULTS.sapo_tau:g}, w {_DEFAULTS.sapo_w:g})",
    "llds": "LLDS",
    "tis": "TIS (truncated IS)",
    "mis": "MIS (masked IS)",
    "cispo": "CISPO",
    "clip_cov": "Clip-Cov",
    "kl_cov": "KL-Cov",
    "dual_clip": "dual-clip PPO",
    "gppo": "GPPO",
    "gspo": "GSPO",
    "gspo_token": "GSPO-token",
    "opsm": "OPSM",
    "reinforce": "REINFORCE",
    "soft_adaptive_gate": "soft adaptive gate",
    "two_sided_clip": "two-sided clip",
    "clip_higher": "GRPO, clip-higher (eps_high 0.28)",
    "lr_x_steps": "learning rate x optimizer steps per batch",
    # the worlds study's worlds
    "default": "default world",
    "entities_16": "16 entities",
    "entities_48": "48 entities",
    "relations_6": "6 relations",
    "documents_5": "5 documents per search",
    "hops_1_and_2": "1- and 2-hop questions",
}
# The scenario search's arms: ``[control_]lr<LR>_(mb<STEPS>|<EPOCHS>x<STEPS>)_u<UPDATES>``.
_SEARCH_ARM = re.compile(r"(control_)?lr([0-9.e-]+)_(?:mb(\d+)|(\d+)x(\d+))_u(\d+)")


def display_name(name: str) -> str:
    """The name a reader sees for an arm, objective or world (``WORLD/ARM``: both parts named)."""
    if name in DISPLAY:
        return DISPLAY[name]
    if "/" in name:
        world, arm = name.split("/", 1)
        return f"{display_name(world)}: {display_name(arm)}"
    if m := _SEARCH_ARM.fullmatch(name):
        control, lr, mb, epochs, steps, updates = m.groups()
        per_batch = (
            f"{mb} step{'' if mb == '1' else 's'}/batch" if mb else f"{epochs} epochs x {steps} steps/batch"
        )
        text = f"lr {lr}, {per_batch}, {updates} updates"
        return f"on-policy control, {text}" if control else text
    return name


def robust_limits(data: pd.DataFrame, y: str, by: Sequence[str], pad: float = 0.05) -> tuple[float, float]:
    """Y-limits spanning, over the groups ``by`` (an arm's update), the seeds' 10th to 90th
    percentile and the median, padded by ``pad`` of the span. The percentiles are order statistics
    taken inwards (``higher`` / ``lower``), so with 2 to 11 seeds one seed's extreme never sets a
    limit; the median does with fewer than 3."""
    g = data.groupby(list(by))[y]
    median = g.median()
    lo = min(g.quantile(0.1, interpolation="higher").min(), median.min())
    hi = max(g.quantile(0.9, interpolation="lower").max(), median.max())
    margin = pad * (hi - lo) or pad * max(abs(hi), 1.0)
    return float(lo - margin), float(hi + margin)


def _colors(names: Sequence[str]) -> dict[str, Any]:
    palette = sns.color_palette("tab10" if len(names) <= 10 else "tab20", len(names))
    return dict(zip(names, palette, strict=True))


def _axes(n: int, width: float = 3.6, height: float = 2.6) -> tuple[plt.Figure, list[plt.Axes]]:
    """``n`` panels in a near-square grid (at most 3 columns, no empty row), constrained layout."""
    rows = math.ceil(n / 3)
    cols = math.ceil(n / rows)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained"
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _curve_panel(
    ax: plt.Axes, data: pd.DataFrame, y: str, hue: str, colors: Mapping[str, Any], seed_lines: bool
) -> None:
    """``y`` over updates per ``hue``: median over seeds, interquartile band, thin per-seed lines
    (clipped at the robust limits)."""
    data = data[["update", hue, "seed", y]].dropna()
    for name, g in data.groupby(hue, sort=False):
        color = colors[name]
        if seed_lines:
            for _, s in g.groupby("seed"):
                ax.plot(s["update"], s[y], color=color, lw=0.4, alpha=0.2)
        q = g.groupby("update")[y].quantile([0.25, 0.5, 0.75]).unstack()
        ax.fill_between(q.index, q[0.25], q[0.75], color=color, alpha=0.25, lw=0)
        ax.plot(q.index, q[0.5], color=color, lw=1.6)
    if len(data):
        ax.set_ylim(robust_limits(data, y, [hue, "update"]))


def _legend(fig: plt.Figure, rows: pd.DataFrame, hue: str, colors: Mapping[str, Any], one_row: bool) -> None:
    """One legend: each arm's display name and seed count, right of a single row of panels (the
    figure made tall enough for it), else below them."""
    seeds = rows.groupby(hue, sort=False)["seed"].nunique()
    labels = [f"{display_name(name)} (n={seeds[name]})" for name in colors]
    handles = [plt.Line2D([], [], color=c, lw=2) for c in colors.values()]
    how = ("median over seeds (line)", "interquartile range (band)", "single seeds (thin lines, clipped)")
    width = 0.075 * max(map(len, labels)) + 0.5  # inches a label takes at font size 8
    style: dict[str, Any] = {
        "handles": handles,
        "labels": labels,
        "frameon": False,
        "fontsize": 8,
        "title_fontsize": 8,
    }
    if one_row:  # the figure grows by the legend: the panels keep their size
        fig.set_size_inches(
            fig.get_figwidth() + width, max(fig.get_figheight(), 0.17 * (len(labels) + len(how) + 1))
        )
        fig.legend(loc="outside right upper", title="\n".join(how), **style)
    else:
        ncol = max(1, min(len(labels), int(fig.get_figwidth() / width)))
        fig.legend(loc="outside lower center", ncol=ncol, title="; ".join(how), **style)


def curves(
    rows: pd.DataFrame,
    path: Path,
    panels: Mapping[str, str] = PANELS,
    hue: str = "arm",
    seed_lines: bool = True,
) -> None:
    """Metrics over updates, one panel each (see the module docstring for what is drawn)."""
    panels = {k: v for k, v in panels.items() if k in rows and rows[k].notna().any()}
    colors = _colors(list(dict.fromkeys(rows[hue])))
    fig, axes = _axes(len(panels))
    for ax, (metric, title) in zip(axes, panels.items(), strict=True):
        _curve_panel(ax, rows, metric, hue, colors, seed_lines)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("update (rollout batch)")
    _legend(fig, rows, hue, colors, one_row=len(panels) <= 3)
    save_figure(fig, path, dpi=110)


def save_figure(fig: plt.Figure, path: Path, dpi: int = 120) -> None:
    """``path`` as PNG and PDF, byte-stable across reruns (no creation date in the PDF), then closed."""
    fig.savefig(path.with_suffix(".png"), dpi=dpi, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)


def arm_curves(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    """The compare job's and the baselines studies' figure: every panel, one colour per arm."""
    curves(rows, path)


def search_figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    """The scenario search's figure: fresh-episode EM and entropy, one colour per setting."""
    curves(rows, path, {"eval_em_sampled": "fresh-episode EM (sampled)", "entropy": "entropy (nats / token)"})


# Significance marks on Holm-adjusted p-values.
MARKS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


def _mark(p: float) -> str:
    return next((mark for bound, mark in MARKS if p < bound), "")


def _seeds_text(counts: pd.Series) -> str:
    lo, hi = int(counts.min()), int(counts.max())
    return f"n = {lo} seeds per cell" if lo == hi else f"n = {lo}-{hi} seeds per cell"


def grid_figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path, table: pd.DataFrame) -> None:
    """SAPO's final EM over tau x w, and its paired difference to GRPO, each cell marked by the
    study table's (``table``, its numbers) Holm-adjusted Wilcoxon p on final EM against GRPO; seed
    counts in the titles."""
    cells = ["objective.sapo_tau", "objective.sapo_w"]
    sapo = summaries[summaries["objective.name"] == "sapo"]
    grpo = summaries[summaries["objective.name"] == "grpo"].set_index("seed")["final_em"]
    sapo = sapo.assign(diff=sapo["final_em"].values - grpo.reindex(sapo["seed"]).values)
    final = sapo.pivot_table(index=cells[0], columns=cells[1], values="final_em")
    diff = sapo.pivot_table(index=cells[0], columns=cells[1], values="diff")
    paired_n = sapo.dropna(subset=["diff"]).groupby(cells).size()
    p = table[table["objective.name"] == "sapo"].set_index(cells)["p_final_holm"]
    marks = p.map(_mark).unstack().reindex(index=diff.index, columns=diff.columns).fillna("")
    annot = diff.map(lambda v: f"{v:+.2f}") + marks.map(lambda m: f" {m}" if m else "")

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0), layout="constrained")
    sns.heatmap(final, annot=True, fmt=".2f", cmap="viridis", ax=axes[0], vmin=0)
    sns.heatmap(diff, annot=annot, fmt="", cmap="RdBu", center=0, ax=axes[1])
    n = _seeds_text(sapo.groupby(cells).size())
    axes[0].set_title(
        f"SAPO final fresh-episode EM (mean, {n})\nGRPO: {grpo.mean():.2f} (n = {len(grpo)})", fontsize=10
    )
    axes[1].set_title(
        f"SAPO minus GRPO, paired by seed\n(mean difference, {_seeds_text(paired_n)})", fontsize=10
    )
    for ax in axes:
        ax.set_xlabel("w (penalty weight)")
        ax.set_ylabel("tau (ratio threshold)")
    fig.text(
        0.5,
        0,
        "* p < 0.05, ** p < 0.01, *** p < 0.001: Wilcoxon signed-rank test on final EM against GRPO, "
        "paired by seed, Holm-adjusted over the study table's tests",
        ha="center",
        va="top",
        fontsize=8,
    )
    save_figure(fig, path)


def phase_figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    """Collapse rate over optimizer steps per rollout batch, one panel per learning rate, one bar
    per objective: the rate with its 95% Wilson interval, k/n collapsed runs above each bar."""
    names = list(dict.fromkeys(summaries["objective.name"]))
    lrs = sorted(summaries["trainer.lr"].unique())
    steps = sorted(summaries["trainer.minibatches"].unique())
    colors = _colors(names)
    fig, axes = plt.subplots(
        1, len(lrs), figsize=(3.6 * len(lrs), 3.4), sharey=True, squeeze=False, layout="constrained"
    )
    width = 0.8 / len(names)
    for ax, lr in zip(axes[0], lrs, strict=True):
        for i, name in enumerate(names):
            x = np.arange(len(steps)) + (i - (len(names) - 1) / 2) * width
            for xi, step in zip(x, steps, strict=True):
                runs = summaries[
                    (summaries["objective.name"] == name)
                    & (summaries["trainer.lr"] == lr)
                    & (summaries["trainer.minibatches"] == step)
                ]["collapsed"].astype(bool)
                if not len(runs):
                    continue
                k, n = int(runs.sum()), len(runs)
                lo, hi = wilson_ci(k, n)
                rate = k / n
                ax.bar(xi, rate, width, color=colors[name], label=display_name(name))
                ax.errorbar(xi, rate, yerr=[[rate - lo], [hi - rate]], color="black", capsize=2, lw=0.8)
                ax.annotate(
                    f"{k}/{n}", (xi, hi), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7
                )
        ax.set_xticks(np.arange(len(steps)), [str(s) for s in steps])
        ax.set_xlabel("optimizer steps per rollout batch")
        ax.set_title(f"learning rate {lr:g}", fontsize=10)
        ax.set_ylim(0, 1.12)
    axes[0][0].set_ylabel("collapse rate [95% Wilson interval]")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(
        unique.values(),
        unique.keys(),
        loc="outside lower center",
        ncol=len(unique),
        frameon=False,
        fontsize=8,
        title="k/n: runs collapsed of n seeds",
        title_fontsize=8,
    )
    save_figure(fig, path)


def family_figure(rows: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    """Peak and final EM per arm, mean and 95% CI (bootstrapped from a fixed seed)."""
    long = summaries.melt(id_vars=["arm", "seed"], value_vars=["peak_em", "final_em"], var_name="metric")
    long["metric"] = long["metric"].map({"peak_em": "peak EM", "final_em": "final EM"})
    seeds = summaries.groupby("arm", sort=False)["seed"].nunique()
    long["arm"] = long["arm"].map(lambda a: f"{display_name(a)} (n={seeds[a]})")
    fig, ax = plt.subplots(figsize=(11, 3.8), layout="constrained")
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
    ax.set_xlabel("")
    ax.set_ylabel("fresh-episode EM [mean, 95% CI]")
    ax.tick_params(axis="x", rotation=30)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.legend(title="", loc="upper right")
    save_figure(fig, path)


def ladder_figure(rows: pd.DataFrame, path: Path) -> None:
    """Fresh-episode EM over updates, one panel per rung (rows carry ``rung``, ``params_m``, ``rl_lr``)."""
    rows = rows[rows["eval_em_sampled"].notna()]
    colors = _colors(list(dict.fromkeys(rows["arm"])))
    rungs = list(dict.fromkeys(rows["rung"]))
    fig, axes = _axes(len(rungs), width=4.0, height=3.2)
    for ax, rung in zip(axes, rungs, strict=True):
        part = rows[rows["rung"] == rung]
        _curve_panel(ax, part, "eval_em_sampled", "arm", colors, seed_lines=True)
        first = part.iloc[0]
        ax.set_title(
            f"rung {rung} ({first['params_m']:.2g} M parameters), RL lr {first['rl_lr']:g}", fontsize=10
        )
        ax.set_xlabel("update (rollout batch)")
        ax.set_ylabel("fresh-episode EM (sampled)")
    _legend(fig, rows, "arm", colors, one_row=len(rungs) <= 3)
    save_figure(fig, path, dpi=110)


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
