"""The one place that assembles runs: ``RunConfig``, the parts built from it, and ``train``.

A run's config holds everything that changes its result (hence its key). From a config this
module builds the world, the environment cores, the study's base policy (cached), the policy and
the ``Trainer``, and runs it. A population is several configs that share ``STUDY_FIELDS`` (task,
policy, trainer, warm start) and differ in seed and objective: they train together in one
``Trainer`` (``train_population``); ``train`` is a population of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from testbed.config import ConfigError, check_seed, config_hash, to_dict
from testbed.diagnostics import ALARM
from testbed.envs import TabularSearchBatch, TaskConfig, TokenSearchBatch, World
from testbed.objectives import ObjectiveConfig
from testbed.policies import PolicyConfig, build_policy, population_state
from testbed.trainer import Member, RunResult, Trainer, TrainerConfig
from testbed.warmstart import WarmStartConfig, base_policy

STUDY_FIELDS = ("task", "policy", "trainer", "warm_start")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on; its hash keys the run's results."""

    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    warm_start: WarmStartConfig = dataclasses.field(default_factory=WarmStartConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self, "seed")


# -- populations -------------------------------------------------------------------------------
def study_key(cfg: RunConfig) -> str:
    """The hash of what a population's members must share."""
    return config_hash({f: getattr(cfg, f) for f in STUDY_FIELDS})


def check_population(cfgs: Sequence[RunConfig]) -> None:
    """ConfigError naming the first field in which two members differ where they may not."""
    if not cfgs:
        raise ConfigError("a population needs at least one run config")
    first = flat_config(cfgs[0])
    for cfg in cfgs[1:]:
        for name, value in flat_config(cfg).items():
            if name.split(".")[0] in STUDY_FIELDS and first[name] != value:
                raise ConfigError(
                    f"population: members differ in {name} ({first[name]!r} vs {value!r}); "
                    f"only seed and objective may differ (split_populations groups them)"
                )
    seeds = [(c.seed, c.objective) for c in cfgs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError("population: two members share seed and objective (the same run twice)")


def split_populations(
    cfgs: Sequence[RunConfig], max_members: int, min_populations: int = 1
) -> list[list[RunConfig]]:
    """Compatible configs grouped into populations of at most ``max_members`` (and, where there
    are enough members, at least ``min_populations`` of them, to fill parallel workers)."""
    groups: dict[str, list[RunConfig]] = {}
    for cfg in cfgs:
        groups.setdefault(study_key(cfg), []).append(cfg)
    out = []
    for group in groups.values():
        n = max(-(-len(group) // max_members), min(min_populations, len(group)))
        out.extend(list(part) for part in np.array_split(np.array(group, dtype=object), n))
    return out


# -- parts -------------------------------------------------------------------------------------
def core_factory(cfg: RunConfig, world: World) -> Callable[..., TokenSearchBatch | TabularSearchBatch]:
    """``make_core(batch_size, closed_book=False)`` for the grain the policy plays."""
    core_type = TabularSearchBatch if cfg.policy.kind == "tabular" else TokenSearchBatch
    return functools.partial(core_type, cfg.task, world=world)


def build_trainer(cfgs: Sequence[RunConfig], cache_dir: Path | None = None) -> Trainer:
    """A Trainer for one population (``cfgs``: its members), its base policy from the cache."""
    check_population(cfgs)
    cfg = cfgs[0]
    members = [Member(c.seed, c.objective) for c in cfgs]
    if cfg.policy.kind == "hf":
        if len(cfgs) != 1:
            raise ConfigError("policy.kind='hf': a Hugging Face policy trains one run at a time")
        from testbed.integrations.hf_run import hf_parts

        policy, world, make_core = hf_parts(cfg)
        return Trainer(cfg.trainer, members, policy, world, make_core)
    world = World(cfg.task.world)
    make_core = core_factory(cfg, world)
    base = base_policy(
        lambda: build_policy(cfg.policy, make_core(1)),
        make_core,
        cfg.warm_start,
        key={"task": cfg.task, "policy": cfg.policy},
        cache_dir=cache_dir,
    )
    policy = build_policy(cfg.policy, make_core(1), members=len(cfgs))
    policy.load_state_dict(population_state(base.state_dict(), len(cfgs)))
    return Trainer(cfg.trainer, members, policy, world, make_core)


# -- running -----------------------------------------------------------------------------------
@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch threads (results depend on it), restoring the caller's count after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def flat_config(cfg: RunConfig) -> dict[str, object]:
    """The run's config as dotted columns (``objective.sapo_tau`` ...), for tidy result tables."""
    out: dict[str, object] = {}

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node if not isinstance(node, list | tuple) else str(tuple(node))

    walk("", to_dict(cfg))
    return out


def summarise(cfg: RunConfig, result: RunResult) -> tuple[list[dict], dict]:
    """Tidy rows (config columns included) and the summary record of one finished run."""
    columns = {"run": config_hash(cfg), **flat_config(cfg)}
    alarm = ALARM.fired(result.rows)
    rows = [{**columns, **r, "isdd_alarm": on} for r, on in zip(result.rows, alarm, strict=True)]
    evals = [r for r in result.rows if "eval_em_sampled" in r]
    em = [r["eval_em_sampled"] for r in evals]
    summary = {
        **columns,
        "warm_em": em[0],
        "peak_em": max(em),
        "peak_update": int(evals[int(np.argmax(em))]["update"]),
        "final_em": em[-1],
        "warm_em_greedy": evals[0]["eval_em_greedy"],
        "final_em_greedy": evals[-1]["eval_em_greedy"],
        "final_em_closed_book": evals[-1]["eval_em_closed_book"],
        "max_em_closed_book": max(r["eval_em_closed_book"] for r in evals),
        "collapsed": result.collapsed,
        "collapse_step": result.collapse_step,
        "alarm_update": ALARM.first_update(result.rows),
    }
    return rows, summary


def train_population(
    cfgs: Sequence[RunConfig],
    cache_dir: Path | None = None,
    threads: int | None = 1,
    on_rows: Callable[[list[dict]], None] | None = None,
) -> list[tuple[list[dict], dict]]:
    """Train a population (configs sharing ``STUDY_FIELDS``) in one process: per member, tidy rows
    and a summary, exactly as ``train`` gives for each alone. ``threads``: torch threads (pinned,
    since results depend on it; None keeps the caller's)."""
    with torch_threads(threads):
        results = build_trainer(cfgs, cache_dir).run(on_rows)
    return [summarise(c, r) for c, r in zip(cfgs, results, strict=True)]


def train(cfg: RunConfig, cache_dir: Path | None = None, threads: int | None = 1) -> tuple[list[dict], dict]:
    """Train one run; returns its tidy rows and summary record."""
    return train_population([cfg], cache_dir, threads)[0]
