"""The scale ladder (testbed/studies/ladder.py): GRPO vs SAPO on the isdd scenario with Qwen2 policies
of growing size, each from a base model of our own, plus the bf16/fp16 rollout mismatch per size.

    python experiments/scale_ladder.py --rungs 0.1m --seeds 4                 # the CPU rung
    python experiments/scale_ladder.py --rungs 1m 10m 80m --device cuda --workers 12
    python experiments/scale_ladder.py --smoke                                # tiny, checks the script

Per rung: the base model is trained once (cached; all rungs' bases in parallel), then every run
(rungs x seeds x {grpo, sapo, grpo on the control}) goes to one worker pool, each saved as it
finishes into one store (``--root``/full/ladder: rerunning resumes). Writes, in --out:
``ladder.md`` (per rung: device, parameters, seeds, wall times, the paired table, the mismatch),
``ladder.csv`` (one row per rung and arm), ``ladder_mismatch.csv`` and ``ladder.png`` / ``.pdf``
(fresh-episode EM over updates per rung, mean and 95% CI band, thin per-seed lines).
"""

from __future__ import annotations

import argparse
import platform
import time
from concurrent.futures import Future
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from testbed.run import RunConfig, build_trainer
from testbed.studies.compare import save_figure
from testbed.studies.ladder import RUNGS, ladder, n_parameters, rollout_mismatch
from testbed.sweep.experiment import Experiment, run_experiment, store_for
from testbed.sweep.runner import LocalExecutor, RunsFailed, default_cache_dir, run_configs


def first_config(exp: Experiment, smoke: bool) -> RunConfig:
    return next(iter(exp.at_size(smoke).values())).configs()[0]


def make_base(cfg: RunConfig, cache_dir: Path) -> float:
    """Train (or find) ``cfg``'s base model in the cache; returns the seconds it took."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    build_trainer([cfg], cache_dir)
    return time.perf_counter() - start


def ladder_figure(rows: pd.DataFrame, path: Path) -> None:
    rungs = list(dict.fromkeys(rows["rung"]))
    fig, axes = plt.subplots(1, len(rungs), figsize=(4.2 * len(rungs), 3.4), squeeze=False, sharey=True)
    for ax, rung in zip(axes[0], rungs, strict=True):
        sub = rows[(rows["rung"] == rung) & rows["eval_em_sampled"].notna()]
        palette = dict(zip(dict.fromkeys(rows["part"]), sns.color_palette(), strict=False))
        sns.lineplot(
            data=sub,
            x="update",
            y="eval_em_sampled",
            hue="part",
            palette=palette,
            errorbar=("ci", 95),
            seed=0,
            ax=ax,
        )
        for (part, _), g in sub.groupby(["part", "seed"]):
            ax.plot(g["update"], g["eval_em_sampled"], color=palette[part], lw=0.4, alpha=0.3)
        first = sub.iloc[0]
        ax.set_title(f"rung {rung} ({first['params_m']:.2g} M parameters), RL lr {first['rl_lr']:g}")
        ax.set_xlabel("update (rollout batch)")
        ax.set_ylabel("fresh-episode EM (sampled)")
    save_figure(fig, path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", nargs="+", choices=list(RUNGS), default=["0.1m"])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per arm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr", type=float, default=None, help="RL learning rate (default: the scenario's)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--out", type=Path, default=Path("runs/experiments/ladder"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = default_cache_dir()
    exps = {rung: ladder(rung, args.seeds, args.device, args.lr) for rung in args.rungs}
    firsts = {rung: first_config(exp, args.smoke) for rung, exp in exps.items()}

    with LocalExecutor(args.workers) as pool:  # every rung's base at once, before any run needs it
        jobs: dict[str, Future] = {rung: pool.submit(make_base, cfg, cache) for rung, cfg in firsts.items()}
        base_s = {rung: job.result() for rung, job in jobs.items()}

    # One pool for every rung's runs, the largest rung first (it takes longest), seed by seed, so
    # that a run cut short by a time limit leaves whole paired seeds behind.
    store = store_for("ladder", args.root, args.smoke)
    params = {rung: n_parameters(cfg) / 1e6 for rung, cfg in firsts.items()}
    order = sorted(exps, key=lambda r: -params[r])
    cfgs = [c for r in order for spec in exps[r].at_size(args.smoke).values() for c in spec.configs()]
    cfgs.sort(key=lambda c: c.seed)  # stable: the rung order kept within a seed
    start = time.perf_counter()
    try:
        with LocalExecutor(args.workers) as pool:
            run_configs(cfgs, store, pool, cache, population=1)
    except RunsFailed as err:  # the others are stored: report them with the failures named
        print(err, flush=True)
    wall = time.perf_counter() - start

    rows, summaries, tables, mismatch = [], [], [], []
    for rung, exp in exps.items():
        results = run_experiment(exp, store, args.smoke, only_stored=True)
        extra = {
            "rung": rung,
            "params_m": params[rung],
            "device": args.device,
            "rl_lr": firsts[rung].trainer.lr,
        }
        rows.append(results.rows.assign(**extra))
        summaries.append(results.summaries.assign(**extra))
        tables.append(
            results.table.assign(**extra, base_s=round(base_s[rung], 1), all_runs_wall_s=round(wall))
        )
        for dtype in ("bfloat16", "float16"):
            mismatch.append({**extra, **rollout_mismatch(firsts[rung], dtype, cache)})
        print(f"rung {rung}: {params[rung]:.3g} M parameters, base {base_s[rung]:.0f} s", flush=True)

    table, mis = pd.concat(tables), pd.DataFrame(mismatch)
    table.to_csv(args.out / "ladder.csv", index=False)
    mis.to_csv(args.out / "ladder_mismatch.csv", index=False)
    pd.concat(summaries).to_csv(args.out / "ladder_summaries.csv", index=False)
    all_rows = pd.concat(rows)
    all_rows.to_csv(args.out / "ladder_rows.csv", index=False)
    ladder_figure(all_rows, args.out / "ladder")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    text = [
        "# Scale ladder",
        "",
        f"Device: {device or platform.machine()} ({args.device}); torch {torch.__version__}; "
        f"{table['seeds'].max()} paired seeds per arm{' (smoke size)' if args.smoke else ''}.",
        "",
        table.to_markdown(index=False, floatfmt=".3g"),
        "",
        "## Rollout/trainer mismatch (one training batch sampled in dtype, scored in float32)",
        "",
        mis.to_markdown(index=False, floatfmt=".3g"),
        "",
    ]
    (args.out / "ladder.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
