"""Command line: ``sapo-testbed compare`` (the headline job), ``experiment`` (a study of
``testbed.studies.CATALOG``), ``report`` (a scenario's criteria, mechanisms and alarms from stored
runs), ``figures`` (the paper figures and RESULTS.md), ``export`` (ships the studies' stored runs
for a fresh clone: ``figures --only-stored`` and ``report`` read them), ``ladder`` (the scale
ladder), ``sweep``, ``train`` (one run) and ``config`` (prints the resolved config as YAML). The
study commands share one set of flags: ``--seeds N`` (per arm), ``--smoke`` (tiny size, two
seeds), ``--root`` (the stores, one per study), ``--workers``.

``compare``, ``train``, ``sweep`` and ``config`` start from a scenario (``--scenario NAME``, one of
``testbed/studies/scenarios.py``): by default ``DEFAULT_SCENARIO``, the headline's setting, so
``sapo-testbed train --set objective.name=sapo`` is one run of the compare job's SAPO arm (seed 0);
``--scenario defaults`` is RunConfig's own defaults.

Overrides are dotted config fields: ``--set trainer.lr=0.005 objective.sapo_tau=0.5``; ``--config
FILE.yaml`` reads nested fields from a file (``--set`` applies on top). ``--track tensorboard|wandb``
logs every run; ``--save-policy`` keeps each run's policy (``testbed.run.load_policy``). Every input is
checked before any work starts; a bad one ends the command with one line naming it (exit 2). A
run that fails is recorded and the others are kept (exit 1); Ctrl-C stops the workers and keeps
the finished runs (exit 130).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testbed.config import POPULATION, ConfigError, parse_overrides


def _count(text: str) -> int:
    """An argparse type: an integer >= 1 (seeds, workers)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return n


def _seeds(text: str) -> tuple[int, ...]:
    """An argparse type: seeds by name (``16`` is 0..15, ``1000-1015``, ``3,7,9``)."""
    from testbed.sweep.spec import parse_seeds

    try:
        return parse_seeds(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# DEFAULT_SCENARIO by name: importing testbed.studies to parse the command line would cost seconds
# (tests/test_cli.py checks the two agree)
SCENARIO_HELP = (
    "the scenario the run's config starts from, --config and --set on top "
    "(testbed/studies/scenarios.py; default isdd_qwen2_150, the headline's setting; "
    "'defaults': RunConfig's own)"
)


def _add_workers(p: argparse.ArgumentParser, workers: str = "processes (default: all cores)") -> None:
    p.add_argument("--workers", type=_count, default=None, help=workers)
    p.add_argument(
        "--population",
        type=_count,
        default=POPULATION,
        help=f"runs trained together in one process (1: one each; default {POPULATION})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sapo-testbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser("compare", help="objectives x paired seeds on a scenario: results, table, figure")
    cmp_.add_argument("--objectives", nargs="+", default=["grpo", "sapo"])
    cmp_.add_argument("--seeds", type=_seeds, default=range(16), help="N (0..N-1), A-B or A,B,C; default 16")
    cmp_.add_argument("--control", action="store_true", help="add GRPO on the scenario's control")
    cmp_.add_argument("--out", type=Path, default=Path("runs/compare"))
    _add_workers(cmp_)
    exp = sub.add_parser("experiment", help="run a study (testbed/studies): its table and figure")
    exp.add_argument("name", help="a study of testbed.studies.CATALOG (an unknown name lists them)")
    rep = sub.add_parser("report", help="a scenario's criteria, mechanisms and alarms, from stored runs")
    rep.add_argument("scenario", help="a scenario with a baselines study (an unknown name lists them)")
    rep.add_argument("--arms", nargs="+", default=["grpo"], help="arms whose runs the criteria pool")
    rep.add_argument("--tables", nargs="+", default=None, help="criteria, mechanisms, alarms (default: all)")
    rep.add_argument("--from-seed", type=int, default=0, help="score only seeds >= this one")
    fig = sub.add_parser("figures", help="the paper figures and RESULTS.md, running any missing run")
    fig.add_argument("names", nargs="*", help="studies of testbed.studies.CATALOG (default: all)")
    fig.add_argument("--out", type=Path, default=Path("paper_figures"))
    fig.add_argument("--only-stored", action="store_true", help="train nothing: draw from the stored runs")
    shp = sub.add_parser("export", help="ship studies' stored runs (Parquet, checksums) for a fresh clone")
    shp.add_argument("names", nargs="*", help="studies of testbed.studies.CATALOG (default: all)")
    shp.add_argument("--out", type=Path, default=Path("paper_figures/data"), help="a folder per study")
    for p in (rep, fig):
        p.add_argument(
            "--shipped",
            type=Path,
            default=Path("paper_figures/data"),
            help="shipped runs (sapo-testbed export), read for a study whose store holds none",
        )
    lad = sub.add_parser("ladder", help="the scale ladder: Qwen2 policies of growing size, per rung")
    lad.add_argument("--rungs", nargs="+", default=["0.1m"], help="0.1m, 1m, 10m, 80m")
    lad.add_argument("--device", default="cpu")
    lad.add_argument("--lr", type=float, default=None, help="RL learning rate (default: the scenario's)")
    lad.add_argument("--out", type=Path, default=Path("runs/experiments/ladder"))
    for p, default in ((exp, None), (rep, 32), (fig, None), (shp, None), (lad, 4)):
        p.add_argument("--seeds", type=_count, default=default, help="seeds per arm (default: the study's)")
        p.add_argument("--smoke", action="store_true", help="tiny size, two seeds: checks it runs")
        p.add_argument("--root", type=Path, default=Path("runs/experiments"), help="the studies' stores")
        if p in (exp, fig):
            _add_workers(p)
        elif p is lad:
            p.add_argument("--workers", type=_count, default=None, help="processes (default: all cores)")
    swp = sub.add_parser("sweep", help="a resumable sweep: a spec file and/or FIELD=V1,V2 axes")
    swp.add_argument("spec", nargs="?", type=Path, help="YAML or JSON sweep file")
    swp.add_argument("--grid", nargs="+", action="extend", default=[], metavar="FIELD=V1,V2")
    swp.add_argument("--seeds", type=_seeds, default=None, help="N (0..N-1), A-B or A,B,C (over the file's)")
    swp.add_argument("--out", type=Path, default=Path("runs/sweep"))
    swp.add_argument("--backend", choices=["local", "submitit", "ray"], default="local")
    _add_workers(swp, "local processes or Ray CPUs")
    swp.add_argument("--ray-address", default=None, help="'auto' or host:port; none starts Ray locally")
    swp.add_argument("--submitit-cluster", default=None, help="slurm (default when available), local, debug")
    swp.add_argument(
        "--slurm",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. slurm_partition=cpu",
    )
    one = sub.add_parser("train", help="one run (of --scenario's setting); prints its summary")
    one.add_argument("--out", type=Path, default=Path("runs/train"))
    one.add_argument("--model", default=None, help="a local Hugging Face model directory (policy.kind=hf)")
    one.add_argument("--data", default=None, help="Search-R1 QA file, Parquet or JSONL (task.qa_path)")
    one.add_argument("--test-data", default=None, help="its held-out questions (task.qa_test_path)")
    one.add_argument("--corpus", default=None, help="Search-R1 corpus JSONL (task.corpus_path)")
    cfg = sub.add_parser("config", help="print the resolved run config (of --scenario's setting) as YAML")
    cfg.add_argument("--explain", action="store_true", help="each field's help as a comment above it")
    for p in (cmp_, swp, one, cfg):
        p.add_argument("--scenario", default=None, help=SCENARIO_HELP)
    for p in (cmp_, one, exp, cfg):
        p.add_argument("--set", nargs="+", action="extend", default=[], metavar="FIELD=VALUE")
    for p in (cmp_, swp, one, exp, cfg):
        p.add_argument("--config", type=Path, default=None, metavar="FILE.yaml", help="RunConfig fields")
    for p in (cmp_, swp, one, exp):
        p.add_argument("--force", action="store_true", help="redo runs already in the store")
        p.add_argument("--track", choices=["tensorboard", "wandb"], default=None, help="log every run")
        p.add_argument("--save-policy", action="store_true", help="keep each run's trained and base policy")
    return parser


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings as ``sapo-testbed: warning: ...`` lines, without source file and line."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_args, **_kw: print(
            f"sapo-testbed: warning: {message}", file=sys.stderr
        )
        yield


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    import torch

    from testbed.sweep import RunsFailed, StoreError
    from testbed.sweep.runner import TORCH_THREADS

    torch.set_num_threads(TORCH_THREADS)  # anything trained in this process matches the workers
    commands = {
        "compare": _compare,
        "experiment": _experiment,
        "report": _report,
        "figures": _figures,
        "export": _export,
        "ladder": _ladder,
        "sweep": _sweep,
        "train": _train,
        "config": _config,
    }
    try:
        with _one_line_warnings():
            commands[args.command](args)
    except ConfigError as err:
        parser.exit(2, f"sapo-testbed: config error: {err}\n")
    except StoreError as err:
        parser.exit(2, f"sapo-testbed: output error: {err}\n")
    except RunsFailed as err:
        parser.exit(1, f"sapo-testbed: {err}\n")
    except KeyboardInterrupt:
        # a Ctrl-C pressed again while the interpreter shuts down would kill it mid-exit (SIGINT's
        # default action returns once Python's handler is gone) or print a traceback from atexit
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        parser.exit(130, "sapo-testbed: interrupted; finished runs are stored, the same command resumes\n")


def _scenario(args: argparse.Namespace) -> str:
    from testbed.studies import DEFAULT_SCENARIO

    return args.scenario or DEFAULT_SCENARIO


def _scenario_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--scenario``'s fields (an unknown name fails here, naming the known ones)."""
    from testbed.studies.scenarios import get_scenario

    return dict(get_scenario(_scenario(args)).overrides)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's fields (if any), ``--set`` on top, as dotted overrides."""
    from testbed.run import config_file

    from_file = config_file(args.config) if args.config else {}
    return {**from_file, **parse_overrides(getattr(args, "set", []))}


def _hf_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``train --model/--data/--corpus``: the Hugging Face adapter on a model and data of your own."""
    fields = {
        "policy.model_path": args.model,
        "task.qa_path": args.data,
        "task.qa_test_path": args.test_data,
        "task.corpus_path": args.corpus,
    }
    given = {k: v for k, v in fields.items() if v is not None}
    if given:
        given.update({"policy.kind": "hf", "task.world.kind": "fixed"})
    return given


def _store(root: Path, args: argparse.Namespace):
    from testbed.sweep import ResultStore

    return ResultStore(root, track=args.track, save_policy=args.save_policy)


def _config(args: argparse.Namespace) -> None:
    from testbed.config import explained_yaml, with_overrides
    from testbed.run import RunConfig, config_yaml

    cfg = with_overrides(RunConfig(), {**_scenario_overrides(args), **_overrides(args)})
    print(explained_yaml(cfg) if args.explain else config_yaml(cfg), end="")


def _compare(args: argparse.Namespace) -> None:
    from testbed.studies import compare_experiment

    exp = compare_experiment(args.objectives, args.seeds, _scenario(args), _overrides(args), args.control)
    for spec in exp.arms.values():
        spec.configs()  # every bad field fails here, before any work
    _run_and_write(exp, _store(args.out, args), args, smoke=False)


def _experiment(args: argparse.Namespace) -> None:
    from testbed.studies import get_study, study_store
    from testbed.sweep.experiment import store_for

    exp = get_study(args.name, args.seeds)
    user = _overrides(args)
    if user:  # under each arm's axes, over the study's base
        arms = {k: dataclasses.replace(v, base={**v.base, **user}) for k, v in exp.arms.items()}
        exp = dataclasses.replace(exp, arms=arms)
    for spec in exp.arms.values():
        spec.configs()  # every bad field fails here, before any work
    root = store_for(study_store(args.name), args.root, args.smoke).root
    _run_and_write(exp, _store(root, args), args, smoke=args.smoke)


def _report(args: argparse.Namespace) -> None:
    from testbed.studies import stored_scenario_runs
    from testbed.studies.reports import TABLES, scenario_report

    results, shipped = stored_scenario_runs(args.scenario, args.root, args.seeds, args.smoke, args.shipped)
    if shipped is not None:  # on stderr: stdout is the report
        note = f"none stored under {args.root}; using the runs shipped in {shipped}"
        print(f"sapo-testbed: {note}", file=sys.stderr)
    print(scenario_report(args.scenario, results, args.arms, args.tables or TABLES, args.from_seed), end="")


def _figures(args: argparse.Namespace) -> None:
    from testbed.studies import CATALOG, get_study, study_store
    from testbed.studies.figures import results_header
    from testbed.studies.shipped import stored_or_shipped
    from testbed.sweep.experiment import run_experiment, store_for

    names = args.names or list(CATALOG)
    studies = {name: get_study(name, args.seeds) for name in names}  # an unknown name fails here
    flags = [*args.names, *(["--seeds", str(args.seeds)] if args.seeds else [])]
    flags += ["--smoke"] * args.smoke + ["--only-stored"] * args.only_stored
    lines = results_header(["sapo-testbed figures", *flags])
    args.out.mkdir(parents=True, exist_ok=True)
    for name, exp in studies.items():
        store = store_for(study_store(name), args.root, args.smoke)
        if args.only_stored:
            results, shipped = stored_or_shipped(exp, store, args.smoke, CATALOG[name], args.shipped)
        else:
            results, shipped = (
                run_experiment(exp, store, args.smoke, workers=args.workers, population=args.population),
                None,
            )
        if results.summaries.empty:
            print(f"{name}: no stored runs, skipped")
            continue
        lines += [f"## {exp.description} (`{name}`)", ""]
        if exp.figure is not None:
            exp.figure(results.rows, results.summaries, args.out / name)
            lines += [f"![]({name}.png)", ""]
        lines += [results.table.to_markdown(index=False, floatfmt=".3g"), ""]
        source = f", shipped in {shipped} (none stored)" if shipped else ""
        print(f"{name}: {len(results.summaries)} runs{source}")
    reading = args.out / "reading.md"
    if reading.exists() and not args.smoke:
        lines += [reading.read_text()]
    (args.out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print(f"wrote figures and RESULTS.md to {args.out}")


def _export(args: argparse.Namespace) -> None:
    from testbed.studies import CATALOG, get_study, study_store
    from testbed.studies.shipped import export_study
    from testbed.sweep.experiment import store_for

    studies = {name: get_study(name, args.seeds) for name in args.names or CATALOG}  # unknown: fails here
    for name, exp in studies.items():
        store = store_for(study_store(name), args.root, args.smoke)
        print(export_study(exp, store, args.out / name, args.seeds, args.smoke))


def _ladder(args: argparse.Namespace) -> None:
    from testbed.studies.ladder import run_ladder

    text = run_ladder(
        args.rungs, args.seeds, args.root, args.out, args.device, args.lr, args.workers, args.smoke
    )
    print(text)


def _run_and_write(exp, store, args: argparse.Namespace, smoke: bool) -> None:
    from testbed.sweep.experiment import run_experiment, write_results

    store.check_writable()
    results = run_experiment(
        exp, store, smoke, workers=args.workers, force=args.force, population=args.population
    )
    written = write_results(exp, results, store.root, smoke)
    print(results.table.to_markdown(index=False, floatfmt=".3g"))
    print(f"\nwrote {', '.join(str(p) for p in written)}")


def _sweep(args: argparse.Namespace) -> None:
    from testbed.sweep import (
        SweepSpec,
        load_spec,
        make_executor,
        run_configs,
        spec_from_overrides,
        submitit_parameters,
    )

    spec = load_spec(args.spec) if args.spec else SweepSpec()
    extra = spec_from_overrides(args.grid, spec.seeds)
    seeds = args.seeds if args.seeds is not None else spec.seeds
    spec = dataclasses.replace(
        spec,
        base={**_scenario_overrides(args), **_overrides(args), **spec.base, **extra.base},
        grid={**spec.grid, **extra.grid},
        seeds=tuple(seeds),
    )
    configs = spec.configs()  # every bad field fails here, before any work
    params = submitit_parameters(args.slurm) if args.slurm else {}
    if params and args.backend != "submitit":
        raise ConfigError(f"--slurm {args.slurm}: only used with --backend submitit")
    store = _store(args.out, args)
    store.check_writable()
    executor = make_executor(
        args.backend,
        args.workers,
        folder=args.out / "submitit",
        cluster=args.submitit_cluster,
        address=args.ray_address,
        **params,
    )
    try:
        keys = run_configs(configs, store, executor, force=args.force, population=args.population)
    finally:
        executor.shutdown()
    print(f"{len(set(keys))} runs in {args.out}/runs")
    print(f"load them with: testbed.sweep.ResultStore({str(args.out)!r}).rows()")


def _train(args: argparse.Namespace) -> None:
    from testbed.config import config_hash, with_overrides
    from testbed.run import RunConfig
    from testbed.sweep import run_configs

    cfg = with_overrides(RunConfig(), {**_scenario_overrides(args), **_hf_flags(args), **_overrides(args)})
    store = _store(args.out, args)
    key = config_hash(cfg)
    cached = not args.force and store.has(key)
    run_configs([cfg], store, force=args.force, progress=not cached, update_bar=not cached)
    print(json.dumps(store.summaries([key]).iloc[0].to_dict(), indent=1, default=str))
    if cached:
        print(f"cached: {args.out}/runs/{key}.csv was stored by an earlier run (--force reruns it)")
    else:
        print(f"wrote {args.out}/runs/{key}.csv and {store.folder(key)}/")


if __name__ == "__main__":
    main()
