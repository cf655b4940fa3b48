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
    one = sub.add_parser("train", help="one run; prints its summary")
    one.add_argument("--out", type=Path, default=Path("runs/train"))
    one.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    try:
        overrides = _overrides(args.set)
        if args.command == "compare":
            _compare(args, overrides)
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
