"""Command line: ``sapo-testbed compare`` (the headline job) and ``sapo-testbed train`` (one run).

Overrides are dotted config fields: ``--set trainer.lr=0.005 objective.tau=0.5``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.config import ConfigError


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: expected FIELD=VALUE, e.g. trainer.lr=0.005")
        k, v = p.split("=", 1)
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sapo-testbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser("compare", help="objectives x seeds on the default task: results, table, figure")
    cmp_.add_argument("--objectives", nargs="+", default=["grpo", "sapo"])
    cmp_.add_argument("--seeds", type=int, default=4, help="number of seeds (0..N-1)")
    cmp_.add_argument("--out", type=Path, default=Path("runs/compare"))
    cmp_.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    cmp_.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    swp = sub.add_parser("sweep", help="a resumable sweep: a spec file and/or FIELD=V1,V2 axes")
    swp.add_argument("spec", nargs="?", type=Path, help="YAML or JSON sweep file")
    swp.add_argument("--grid", nargs="*", default=[], metavar="FIELD=V1,V2")
    swp.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (overrides the file's)")
    swp.add_argument("--out", type=Path, default=Path("runs/sweep"))
    swp.add_argument("--backend", choices=["local", "submitit", "ray"], default="local")
    swp.add_argument("--workers", type=int, default=None, help="local processes or Ray CPUs")
    swp.add_argument("--ray-address", default=None, help="'auto' or host:port; none starts Ray locally")
    swp.add_argument("--submitit-cluster", default=None, help="slurm (default when available), local, debug")
    swp.add_argument("--slurm", nargs="*", default=[], metavar="KEY=VALUE", help="e.g. slurm_partition=cpu")
    one = sub.add_parser("train", help="one run; prints its summary")
    one.add_argument("--out", type=Path, default=Path("runs/train"))
    one.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    try:
        overrides = _overrides(getattr(args, "set", []))
        if args.command == "compare":
            _compare(args, overrides)
        elif args.command == "sweep":
            _sweep(args)
        else:
            _train(args, overrides)
    except ConfigError as err:
        parser.exit(2, f"sapo-testbed: config error: {err}\n")


def _compare(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    from testbed.compare import compare_configs, run_compare
    from testbed.sweep import local_executor

    compare_configs(args.objectives, [0], overrides)  # fail fast on a bad field before any work
    executor = local_executor(args.workers)
    try:
        table = run_compare(args.out, args.objectives, range(args.seeds), overrides, executor)
    finally:
        executor.shutdown()
    print(table.to_markdown(index=False, floatfmt=".3f"))
    print(f"\nwrote {args.out}/results.csv, table.md, table.csv, compare.png")


def _sweep(args: argparse.Namespace) -> None:
    import dataclasses

    from testbed.sweep import (
        ResultStore,
        SweepSpec,
        load_spec,
        make_executor,
        run_configs,
        spec_from_overrides,
    )

    spec = load_spec(args.spec) if args.spec else SweepSpec()
    extra = spec_from_overrides(args.grid, spec.seeds)
    seeds = range(args.seeds) if args.seeds is not None else spec.seeds
    spec = dataclasses.replace(
        spec, base={**spec.base, **extra.base}, grid={**spec.grid, **extra.grid}, seeds=tuple(seeds)
    )
    configs = spec.configs()  # every bad field fails here, before any work
    executor = make_executor(
        args.backend,
        args.workers,
        folder=args.out / "submitit",
        cluster=args.submitit_cluster,
        address=args.ray_address,
        **_overrides(args.slurm),
    )
    try:
        keys = run_configs(configs, ResultStore(args.out), executor)
    finally:
        executor.shutdown()
    print(f"{len(keys)} runs in {args.out}/runs")
    print(f"load them with: testbed.sweep.ResultStore({str(args.out)!r}).rows()")


def _train(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    from testbed.config import with_overrides
    from testbed.sweep import ResultStore, run_configs
    from testbed.trainer import RunConfig

    cfg = with_overrides(RunConfig(), overrides)
    store = ResultStore(args.out)
    (key,) = run_configs([cfg], store)
    print(json.dumps(store.summaries([key]).iloc[0].to_dict(), indent=1, default=str))
    print(f"wrote {args.out}/runs/{key}.csv")


if __name__ == "__main__":
    main()
