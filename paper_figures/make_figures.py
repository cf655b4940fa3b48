"""Regenerate every figure and RESULTS.md from stored results, running any sweep that is missing.

    python paper_figures/make_figures.py            # documented size (about 40 min on 2 cores)
    python paper_figures/make_figures.py --smoke --out /tmp/figs   # tiny, checks the pipeline

Figures (PNG and PDF): ISDD anatomy (GRPO vs SAPO over updates), the SAPO ablation, the drift
phase diagram, the clipping family and policy scale. RESULTS.md gets every table with 95%
bootstrap CIs over seeds and a one-sided Mann-Whitney U test for each "higher than GRPO" claim;
the hand-written reading in ``reading.md`` beside this script is appended.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from testbed.analysis import claim, mean_ci_text
from testbed.compare import plot, run_compare
from testbed.sweep.experiment import SMOKE, run_experiment, store_for

HERE = Path(__file__).resolve().parent
EXPERIMENTS = HERE.parent / "experiments"
ANATOMY = {
    "train_reward": "train reward (EM)",
    "eval_em_sampled": "fresh-episode EM (sampled)",
    "ratio_p05_pos": "5th pct. ratio, A > 0 tokens",
    "ratio_p50_pos": "median ratio, A > 0 tokens",
    "low_ratio_frac_pos": "share of A > 0 tokens with r <= tau",
    "entropy": "entropy (nats / token)",
    "zero_grad_frac_all": "share of tokens with zero gradient",
    "approx_kl": "KL(pi_old || pi_theta), k3",
    "grad_norm": "gradient norm (before clipping)",
}


def load_experiment_module(name: str):
    """An experiment script as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary_table(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: seeds, peak and final EM as mean [95% bootstrap CI], collapse rate."""
    rows = []
    for key, g in df.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "seeds": len(g),
                "peak EM": mean_ci_text(g["peak_em"]),
                "final EM": mean_ci_text(g["final_em"]),
                "collapse rate": f"{g['collapsed'].mean():.2f}",
            }
        )
    return pd.DataFrame(rows)


def save(fig: plt.Figure, out: Path, name: str) -> None:
    fig.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)


def anatomy(root: Path, out: Path, smoke: bool, lines: list[str]) -> None:
    seeds = (0,) if smoke else (0, 1, 2, 3)
    overrides = {k: str(v) for k, v in SMOKE.items()} if smoke else None
    run_compare(root / "compare", ("grpo", "sapo"), seeds, overrides, progress=not smoke)
    store_rows = pd.read_csv(root / "compare" / "results.csv")
    plot(store_rows, out / "isdd_anatomy.png", ANATOMY)
    summaries = pd.read_csv(root / "compare" / "table.csv")
    lines += ["## ISDD anatomy: GRPO vs SAPO (`sapo-testbed compare`)", "", "![](isdd_anatomy.png)", ""]
    lines += [summaries.to_markdown(index=False, floatfmt=".3f"), ""]


def claims_vs_grpo(df: pd.DataFrame, label_col: str, lines: list[str]) -> None:
    grpo = df[df[label_col] == "grpo"]["final_em"]
    if len(grpo) < 2:
        return
    for label, g in df.groupby(label_col, sort=False):
        if label != "grpo" and len(g) >= 2:
            lines.append(f"- {claim(str(label), g['final_em'], 'GRPO', grpo, 'final fresh-episode EM')}")
    lines.append("")


def sapo_ablation(df: pd.DataFrame, out: Path, lines: list[str]) -> None:
    knobs = {
        "tau": "objective.sapo_tau",
        "w": "objective.sapo_w",
        "adv_condition": "objective.sapo_adv_condition",
        "token_selection": "objective.sapo_token_selection",
        "kl": "objective.sapo_kl",
        "norm": "objective.sapo_norm",
    }
    grpo = df[df["part"] == "grpo"]["final_em"].mean()
    fig, axes = plt.subplots(1, len(knobs), figsize=(3 * len(knobs), 3), sharey=True)
    for ax, (part, col) in zip(axes, knobs.items(), strict=True):
        sub = df[df["part"] == part].assign(value=lambda d, c=col: d[c].astype(str))
        sns.pointplot(data=sub, x="value", y="final_em", errorbar=("ci", 95), ax=ax, linestyle="none")
        ax.axhline(grpo, color="grey", ls="--", lw=1, label="GRPO")
        ax.set_title(part)
        ax.set_xlabel(col.split(".")[-1])
    axes[0].set_ylabel("final fresh-episode EM")
    axes[0].legend()
    save(fig, out, "sapo_ablation")
    df = df.assign(
        setting=df.apply(
            lambda r: "grpo" if r["part"] == "grpo" else f"{r['part']}={r[knobs[r['part']]]}", axis=1
        )
    )
    lines += ["## SAPO ablation (`experiments/sapo_ablation.py`)", "", "![](sapo_ablation.png)", ""]
    lines += [summary_table(df, ["setting"]).to_markdown(index=False), ""]
    claims_vs_grpo(df, "setting", lines)


def drift_phase(df: pd.DataFrame, out: Path, lines: list[str]) -> None:
    grid = df[df["part"] == "lr_x_steps"]
    means = grid.groupby(["objective.name", "trainer.lr", "trainer.minibatches"])["final_em"].mean().unstack()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), gridspec_kw={"wspace": 0.45})
    if {"grpo", "sapo"} <= set(means.index.get_level_values(0)):
        g, s = means.loc["grpo"], means.loc["sapo"]
        sns.heatmap(g, annot=True, fmt=".2f", cmap="viridis", ax=axes[0], vmin=0)
        sns.heatmap(s - g, annot=True, fmt=".2f", cmap="RdBu", center=0, ax=axes[1])
        axes[0].set_title("GRPO final fresh-episode EM")
        axes[1].set_title("SAPO minus GRPO, final EM")
        for ax in axes[:2]:
            ax.set_xlabel("optimizer steps per rollout batch")
            ax.set_ylabel("learning rate")
    other = df[df["part"] != "lr_x_steps"].copy()
    other["knob"] = other.apply(
        lambda r: (
            f"mismatch {r['trainer.mismatch_std']}"
            if r["part"] == "mismatch"
            else f"stale {r['trainer.staleness']}"
        ),
        axis=1,
    )
    sns.pointplot(
        data=other, x="knob", y="final_em", hue="objective.name", errorbar=("ci", 95), ax=axes[2], dodge=0.3
    )
    axes[2].set_title("rollout/trainer mismatch and staleness")
    axes[2].set_ylabel("final fresh-episode EM")
    axes[2].tick_params(axis="x", rotation=30)
    save(fig, out, "drift_phase")
    lines += ["## Drift sources (`experiments/drift_phase.py`)", "", "![](drift_phase.png)", ""]
    table = summary_table(df, load_experiment_module("drift_phase").COLUMNS)
    lines += [table.to_markdown(index=False), ""]
    for (part, lr, mb, mm, st), g in df.groupby(
        ["part", "trainer.lr", "trainer.minibatches", "trainer.mismatch_std", "trainer.staleness"]
    ):
        a, b = g[g["objective.name"] == "sapo"]["final_em"], g[g["objective.name"] == "grpo"]["final_em"]
        if len(a) >= 2 and len(b) >= 2:
            where = f"{part} (lr {lr}, {mb} steps, mismatch {mm}, staleness {st})"
            lines.append(f"- {where}: {claim('SAPO', a, 'GRPO', b, 'final EM')}")
    lines.append("")


def family(df: pd.DataFrame, out: Path, lines: list[str]) -> None:
    long = df.melt(
        id_vars=["part", "seed"], value_vars=["peak_em", "final_em"], var_name="metric", value_name="EM"
    )
    fig, ax = plt.subplots(figsize=(11, 3.6))
    sns.barplot(data=long, x="part", y="EM", hue="metric", errorbar=("ci", 95), ax=ax)
    rate = df.groupby("part", sort=False)["collapsed"].mean()
    for i, (_, r) in enumerate(rate.items()):
        ax.text(i, ax.get_ylim()[1] * 0.95, f"collapse {r:.0%}", ha="center", fontsize=8)
    ax.set_xlabel("objective")
    ax.set_ylabel("fresh-episode EM")
    ax.tick_params(axis="x", rotation=30)
    save(fig, out, "family")
    lines += ["## The clipping family (`experiments/family.py`)", "", "![](family.png)", ""]
    lines += [summary_table(df, ["part"]).to_markdown(index=False), ""]
    claims_vs_grpo(df, "part", lines)


def policy_scale(df: pd.DataFrame, out: Path, lines: list[str]) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.4))
    sns.pointplot(
        data=df, x="part", y="final_em", hue="objective.name", errorbar=("ci", 95), ax=ax, dodge=0.3
    )
    ax.set_xlabel("policy")
    ax.set_ylabel("final fresh-episode EM")
    save(fig, out, "policy_scale")
    lines += ["## Policy scale (`experiments/policy_scale.py`)", "", "![](policy_scale.png)", ""]
    lines += [summary_table(df, ["part", "objective.name"]).to_markdown(index=False), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.root / ("smoke" if args.smoke else "full")
    lines = [
        "# Results",
        "",
        f"Generated by `python paper_figures/make_figures.py{' --smoke' if args.smoke else ''}`.",
        "",
    ]
    anatomy(root, args.out, args.smoke, lines)
    for name, draw in (
        ("sapo_ablation", sapo_ablation),
        ("drift_phase", drift_phase),
        ("family", family),
        ("policy_scale", policy_scale),
    ):
        df = run_experiment(
            load_experiment_module(name).EXPERIMENT,
            args.root,
            args.smoke,
            workers=args.workers,
            progress=not args.smoke,
        )
        draw(df, args.out, lines)
        print(f"{name}: {len(df)} runs in {store_for(name, args.root, args.smoke).root}")
    reading = HERE / "reading.md"
    if reading.exists() and not args.smoke:
        lines += [reading.read_text()]
    (args.out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print(f"wrote figures and RESULTS.md to {args.out}")


if __name__ == "__main__":
    main()
