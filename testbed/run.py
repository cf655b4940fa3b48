"""The one place that assembles runs: ``RunConfig``, the parts built from it, and ``train``.

A run's config holds everything that changes its result (hence its key). From a config this
module builds the world, the environment cores, the study's base policy (cached), the policy and
the ``Trainer``, and runs it. A population is several configs that share ``STUDY_FIELDS`` (task,
policy, trainer, warm start) and differ in seed and objective: they train together in one
``Trainer`` (``train_population``); ``train`` is a population of one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import functools
import importlib.util
import itertools
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
import yaml

from testbed.config import ConfigError, check_seed, config_hash, fail, field, from_dict, load_yaml, to_dict
from testbed.diagnostics import ALARM
from testbed.envs import TabularSearchBatch, TaskConfig, TokenSearchBatch, World
from testbed.io import atomic_path
from testbed.objectives import ObjectiveConfig
from testbed.policies import (
    Policy,
    PolicyConfig,
    Qwen2Policy,
    build_policy,
    has_members,
    population_state,
    resolve_device,
)
from testbed.tracking import Trackers, flatten, make_tracker, run_names
from testbed.trainer import Member, RunResult, Trainer, TrainerConfig
from testbed.warmstart import WarmStartConfig, base_policy, cache_path, failure_path, record_path

STUDY_FIELDS = ("task", "policy", "trainer", "warm_start")
T = TypeVar("T")
POLICY_FORMAT = 1  # the layout of policy files (load_policy refuses others)
PRETRAINED_RUN = "testbed_run.json"  # in a Hugging Face policy directory: its format and run config


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on; its hash keys the run's results."""

    task: TaskConfig = field(
        default_factory=TaskConfig, help="The search task: world, retriever, turns and reward."
    )
    policy: PolicyConfig = field(default_factory=PolicyConfig, help="The policy's kind and shape.")
    objective: ObjectiveConfig = field(
        default_factory=ObjectiveConfig, help="The objective (loss) and every objective's knobs."
    )
    trainer: TrainerConfig = field(
        default_factory=TrainerConfig, help="The RL loop: batch, optimiser, evaluation, drift."
    )
    warm_start: WarmStartConfig = field(
        default_factory=WarmStartConfig, help="The base policy every RL run of a study starts from."
    )
    seed: int = field(
        0,
        help="The RL run's seed: its training episodes, sampling and minibatch order (the world and the "
        "base policy have seeds of their own); in [0, 2**63).",
        trl="seed",
    )

    def __post_init__(self) -> None:
        check_seed(self, "seed")
        if self.policy.kind == "tabular" and self.warm_start.pretrain_steps:  # fails here, before any work
            why = "language modelling needs the token grain; policy.kind='tabular' has none"
            fail(self.warm_start, "pretrain_steps", self.warm_start.pretrain_steps, why)

    def storage_key(self, plain: dict[str, Any]) -> dict[str, Any]:
        """What ``config_hash`` keys: ``trainer.diag_ratio_threshold`` unless it equals
        ``objective.sapo_tau``, the threshold of every run stored before the field existed (those runs
        keep their keys; a run with another sapo_tau, whose diagnostics now differ, gets a new one)."""
        trainer = {k: v for k, v in plain["trainer"].items() if k != "diag_ratio_threshold"}
        if self.trainer.diag_ratio_threshold != self.objective.sapo_tau:
            trainer["diag_ratio_threshold"] = self.trainer.diag_ratio_threshold
        return {**plain, "trainer": trainer}


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
    are enough members, at least ``min_populations`` of them, to fill parallel workers), in turns
    across base policies: parallel workers start on different bases (a study of several worlds
    trains its bases in parallel, rather than one worker training a base while the next waits for
    it). A population holds every arm of its seeds, so a study stopped early leaves paired results."""
    groups: dict[str, list[RunConfig]] = {}
    for cfg in sorted(cfgs, key=lambda c: c.seed):  # stable: the arms of a seed keep their order
        groups.setdefault(study_key(cfg), []).append(cfg)
    by_base: dict[str, list[list[list[RunConfig]]]] = {}
    for group in groups.values():
        most = max_members if has_members(group[0].policy) else 1
        n = max(-(-len(group) // most), min(min_populations, len(group)))
        parts = [list(part) for part in np.array_split(np.array(group, dtype=object), n)]
        by_base.setdefault(base_id(group[0]), []).append(parts)
    return _turns([_turns(groups_of_base) for groups_of_base in by_base.values()])


def _turns(lists: Sequence[Sequence[T]]) -> list[T]:
    """The first item of each list, then the second of each, and so on."""
    return [item for turn in itertools.zip_longest(*lists) for item in turn if item is not None]


# -- parts -------------------------------------------------------------------------------------
def core_factory(cfg: RunConfig, world: World) -> Callable[..., TokenSearchBatch | TabularSearchBatch]:
    """``make_core(batch_size, closed_book=False)`` for the grain the policy plays."""
    core_type = TabularSearchBatch if cfg.policy.kind == "tabular" else TokenSearchBatch
    return functools.partial(core_type, cfg.task, world=world)


def default_cache_dir() -> Path:
    """Where base policies are cached: $SAPO_TESTBED_CACHE or ~/.cache/sapo-testbed."""
    return Path(os.environ.get("SAPO_TESTBED_CACHE", Path.home() / ".cache" / "sapo-testbed"))


def usable_cache_dir(cache_dir: Path | None) -> Path | None:
    """``cache_dir`` if warm starts can be cached there, else None with a warning (it is optional)."""
    if cache_dir is None:
        return None
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as err:
        warnings.warn(
            f"warm-start cache {cache_dir} cannot be written ({err.strerror or err}): "
            "warm starts will be computed and not cached (set SAPO_TESTBED_CACHE to change it)",
            stacklevel=3,
        )
        return None
    return Path(cache_dir)


def cache_folder(cache_dir: Path | str | bool | None) -> Path | None:
    """The base-policy cache of a call: True, the command line's (``default_cache_dir()``, skipped
    with a warning when it cannot be written); a folder; None or False, none."""
    if cache_dir is True:
        return usable_cache_dir(default_cache_dir())
    return None if cache_dir is None or cache_dir is False else Path(cache_dir)


def base_key(cfg: RunConfig) -> dict[str, object]:
    """What a cached base policy is keyed by, beside its warm-start recipe."""
    return {"task": cfg.task, "policy": cfg.policy}


def base_id(cfg: RunConfig) -> str:
    """The name of ``cfg``'s base policy: its cache file's (key and warm-start recipe), so that
    runs grouped by base are those that share one cached base."""
    return cache_path(Path(), base_key(cfg), cfg.warm_start).stem


def base_record(cfg: RunConfig, cache_dir: Path | None = None) -> dict[str, Any] | None:
    """The training record of ``cfg``'s cached base (``testbed.warmstart.record_path``: steps,
    seconds, calibration checks), or ``{"failed": error}`` for a calibration that missed its
    target; None when the cache holds neither."""
    path = cache_path(cache_dir or default_cache_dir(), base_key(cfg), cfg.warm_start)
    if record_path(path).exists():
        return json.loads(record_path(path).read_text())
    return {"failed": failure_path(path).read_text().strip()} if failure_path(path).exists() else None


def build_trainer(
    cfgs: Sequence[RunConfig], cache_dir: Path | str | bool | None = True, **hf: Any
) -> Trainer:
    """A Trainer for one population (``cfgs``: its members), its base policy from the cache
    (``cache_dir``: see ``cache_folder``; by default the command line's, so a base is trained once).
    ``hf``: for ``policy.kind="hf"``, parts given instead of built (``qa``, ``model``, ``tokenizer``;
    see ``testbed.policies.hf_run.hf_parts``)."""
    check_population(cfgs)
    cfg = cfgs[0]
    members = [Member(c.seed, c.objective) for c in cfgs]
    resolve_device(cfg.policy)  # a device this machine lacks fails here, before any work
    if not has_members(cfg.policy) and len(cfgs) != 1:
        raise ConfigError(f"policy.kind={cfg.policy.kind!r}: no member dimension; one run at a time")
    if cfg.policy.kind == "hf":
        from testbed.policies.hf_run import hf_parts

        hf_policy, hf_world, hf_make_core = hf_parts(cfg, **hf)
        return Trainer(cfg.trainer, members, hf_policy, hf_world, hf_make_core)
    if cfg.task.qa_path is not None:
        raise ConfigError(f"task.qa_path={cfg.task.qa_path!r}: data of your own needs policy.kind='hf'")
    if cfg.task.retriever.url is not None:
        raise ConfigError(f"task.retriever.url={cfg.task.retriever.url!r}: a server needs policy.kind='hf'")
    world = World(cfg.task.world)
    make_core = core_factory(cfg, world)
    base = base_policy(
        lambda: build_policy(cfg.policy, make_core(1)),
        make_core,
        cfg.warm_start,
        key=base_key(cfg),
        cache_dir=cache_folder(cache_dir),
    )
    if not has_members(cfg.policy):  # the base itself is the run's policy
        return Trainer(cfg.trainer, members, base, world, make_core)
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
    """The run's config as dotted columns (``objective.sapo_tau`` ...), for tidy result tables;
    tuples as text, so that every column holds scalars."""
    return {k: str(tuple(v)) if isinstance(v, list | tuple) else v for k, v in flatten(to_dict(cfg)).items()}


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


def member_state(state: dict[str, torch.Tensor], member: int) -> dict[str, torch.Tensor]:
    """Member ``member``'s slice of a population's state dict, as a one-member state."""
    return {name: value[member : member + 1].clone() for name, value in state.items()}


def saves_pretrained(policy: PolicyConfig) -> bool:
    """Whether a run of ``policy`` saves in the Hugging Face format (a model directory that
    ``from_pretrained`` opens: kinds qwen2 and hf) rather than as ``policy.pt`` (tabular, transformer)."""
    return policy.kind in ("qwen2", "hf")


def check_savable(cfg: RunConfig) -> None:
    """ConfigError unless a run of ``cfg`` can save its policy: checked before any work, since a
    save fails only after the training it would keep."""
    if saves_pretrained(cfg.policy) and importlib.util.find_spec("safetensors") is None:
        raise ConfigError(
            f"save: policy.kind={cfg.policy.kind!r} saves in the Hugging Face format, which needs the "
            "safetensors package (pip install 'sapo-testbed[hf]')"
        )


def save_policy(
    path: Path, cfg: RunConfig, state: dict[str, torch.Tensor], base: dict[str, torch.Tensor]
) -> None:
    """One run's trained and base weights (one-member states) with its resolved config."""
    with atomic_path(path) as tmp:  # a killed run leaves the old file or none, never half of one
        torch.save({"format": POLICY_FORMAT, "config": to_dict(cfg), "state": state, "base": base}, tmp)


@contextlib.contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary directory beside ``path`` to write, renamed to ``path`` when the block ends: a
    killed save leaves no half-written directory under that name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_pretrained(
    folder: Path, cfg: RunConfig, policy: Policy, member: int = 0, tokenizer: Any = None
) -> None:
    """Member ``member`` of ``policy`` (kinds qwen2 and hf) as a Hugging Face model directory that
    ``AutoModelForCausalLM.from_pretrained`` opens (``config.json``, ``model.safetensors``, and
    ``tokenizer`` where the run has one; LoRA adapters merged into the weights), with the run's
    format and resolved config in ``PRETRAINED_RUN`` (read by ``load_policy``)."""
    with _atomic_dir(folder) as tmp:
        if isinstance(policy, Qwen2Policy):
            policy.save_pretrained(tmp, member)
        else:  # an HFPolicy: transformers' own model, one member
            model = cast(Any, policy).model
            (copy.deepcopy(model).merge_and_unload() if cfg.policy.lora else model).save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        (tmp / PRETRAINED_RUN).write_text(json.dumps({"format": POLICY_FORMAT, "config": to_dict(cfg)}))


def load_policy(path: Path | str, base: bool = False) -> tuple[RunConfig, Policy]:
    """The run config and policy saved by ``train_population(save=True)`` (``base``: the
    study's warm-started policy the run started from), rebuilt on the CPU, ready to score or sample.
    ``path``: a run's folder (``runs/<key>``), its ``policy.pt``, or one of its Hugging Face
    directories (``policy/`` or ``base/``, where ``base`` does not apply)."""
    path = Path(path)
    if path.is_dir():
        if (path / PRETRAINED_RUN).exists():
            if base:
                raise ValueError(f"{path}: one policy's directory; for its base, load the run's base/")
            return _load_pretrained(path)
        if (path / "policy.pt").exists():
            return load_policy(path / "policy.pt", base)
        if (path / "policy" / PRETRAINED_RUN).exists():
            return _load_pretrained(path / ("base" if base else "policy"))
        raise ValueError(f"{path}: holds no saved policy (policy.pt, or policy/ and base/: --save-policy)")
    try:
        ckpt = torch.load(path, weights_only=True)
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.EACCES, errno.EISDIR):
            raise ValueError(f"{path}: not a policy file (truncated, or garbage)") from err
        raise ValueError(f"{path}: cannot read it ({err.strerror})") from err
    except Exception as err:  # torch raises a different error for each way a file can be bad
        raise ValueError(f"{path}: not a policy file (truncated, or garbage: {type(err).__name__})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != POLICY_FORMAT:
        raise ValueError(f"{path}: not a policy file of this version (format {POLICY_FORMAT})")
    cfg = from_dict(RunConfig, ckpt["config"])
    policy = _fresh_policy(cfg)
    try:
        policy.load_state_dict(ckpt["base" if base else "state"])
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: its weights do not fit the policy its config describes") from err
    return cfg, policy


def _fresh_policy(cfg: RunConfig) -> Policy:
    """A one-member policy of ``cfg``'s kind on the CPU, freshly initialised."""
    on_cpu = dataclasses.replace(cfg.policy, device="cpu")
    return build_policy(on_cpu, core_factory(cfg, World(cfg.task.world))(1))


def _load_pretrained(path: Path) -> tuple[RunConfig, Policy]:
    """The run config and policy of a directory ``save_pretrained`` wrote (on the CPU, in fp32)."""
    try:
        meta = json.loads((path / PRETRAINED_RUN).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path / PRETRAINED_RUN}: cannot read it ({type(err).__name__})") from err
    if not isinstance(meta, dict) or meta.get("format") != POLICY_FORMAT:
        raise ValueError(f"{path}: not a policy directory of this version (format {POLICY_FORMAT})")
    cfg = from_dict(RunConfig, meta["config"])
    try:
        if has_members(cfg.policy):  # the testbed's Qwen2
            from safetensors.torch import load_file

            policy = _fresh_policy(cfg)
            cast(Qwen2Policy, policy).load_hf_state_dict(load_file(str(path / "model.safetensors")))
            return cfg, policy
        from transformers import AutoModelForCausalLM

        from testbed.policies.hf import HFPolicy

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    except ImportError:
        raise
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: its weights do not fit the policy its config describes") from err
    except Exception as err:  # safetensors and transformers raise their own errors for a bad file
        raise ValueError(f"{path}: cannot read its weights ({type(err).__name__})") from err
    return cfg, cast(Policy, HFPolicy(model))


def evaluate_policy(cfg: RunConfig, policy: Policy, update: int | None = None) -> dict[str, float]:
    """The evaluation ``cfg``'s run logs at ``update`` (default its last, where its saved policy
    comes from), of ``policy``: a policy ``load_policy`` rebuilt evaluates to the stored numbers
    (the evaluation's streams depend only on the seed and the update: ``trainer.eval_streams``).
    A policy of kind hf reads its tokenizer from the directory its model was loaded from."""
    world: Any = World(cfg.task.world)
    make_core = core_factory(cfg, world)
    if cfg.policy.kind == "hf":
        world, make_core = _hf_task(cfg, cast(Any, policy).model)
    trainer = Trainer(cfg.trainer, [Member(cfg.seed, cfg.objective)], policy, world, make_core)
    return trainer.evaluate(cfg.trainer.n_updates if update is None else update)[0]


def _hf_task(cfg: RunConfig, model: Any) -> tuple[Any, Callable[..., TokenSearchBatch]]:
    """The episodes and text-task cores of an hf run, for ``model`` and the tokenizer saved beside it."""
    from transformers import AutoTokenizer

    from testbed.policies.hf_run import hf_parts

    folder = model.name_or_path  # the directory from_pretrained read ("" for a model built in memory)
    if not folder or not (Path(folder) / "tokenizer_config.json").exists():
        raise ValueError(
            f"{folder or 'model'}: no tokenizer beside the model; evaluate a policy that load_policy rebuilt"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    plain = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, lora=False))  # weights merged
    _, world, make_core = hf_parts(plain, model=model, tokenizer=tokenizer)
    return world, make_core


def config_yaml(cfg: RunConfig) -> str:
    """The resolved config as nested YAML (what ``--config FILE`` reads back)."""
    return yaml.safe_dump(json.loads(json.dumps(to_dict(cfg))), sort_keys=False)  # tuples as lists


def config_file(path: Path | str) -> dict[str, Any]:
    """A YAML file of (nested) RunConfig fields as dotted overrides: only the fields it names,
    each checked (a bad one fails in one line naming the file and the field)."""
    data = load_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: empty, or not a mapping of RunConfig fields")
    try:
        from_dict(RunConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    return flatten(data)


def run_folder(runs_dir: Path, cfg: RunConfig) -> Path:
    """Where a run's artefacts go: its config, streamed table, tracker files and policy."""
    return Path(runs_dir) / config_hash(cfg)


@contextlib.contextmanager
def _trackers(
    cfgs: Sequence[RunConfig], track: str | None, runs_dir: Path | None
) -> Iterator[list[Trackers]]:
    """One tracker per member (none without ``runs_dir``), each given its resolved config; closed
    on the way out, so a failed run still leaves a readable table of what it did."""
    with contextlib.ExitStack() as stack:
        out = []
        if runs_dir is not None:
            for cfg in cfgs:
                folder = run_folder(runs_dir, cfg)
                shutil.rmtree(folder, ignore_errors=True)  # a rerun starts clean (no stale events)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "config.yaml").write_text(config_yaml(cfg))
                name, group = run_names(to_dict(cfg))
                tracker = stack.enter_context(
                    make_tracker(track, folder, name, group=group, tensorboard_dir=runs_dir / "tensorboard")
                )
                tracker.log_config({"run": config_hash(cfg), **to_dict(cfg)})
                out.append(tracker)
        yield out


def train_population(
    cfgs: Sequence[RunConfig],
    cache_dir: Path | str | bool | None = True,
    threads: int | None = 1,
    on_rows: Callable[[list[dict]], None] | None = None,
    track: str | None = None,
    runs_dir: Path | None = None,
    save: bool = False,
) -> list[tuple[list[dict], dict]]:
    """Train a population (configs sharing ``STUDY_FIELDS``) in one process: per member, tidy rows
    and a summary, exactly as ``train`` gives for each alone. ``cache_dir``: the base policy's cache
    (see ``cache_folder``; by default the command line's). ``threads``: torch threads (pinned,
    since results depend on it; None keeps the caller's). ``on_rows`` sees each update's member
    rows (update 0 included).

    With ``runs_dir``, member ``cfg`` gets the folder ``run_folder(runs_dir, cfg)``: its resolved
    config (``config.yaml``), its rows streamed as they are made (``rows.csv``, ``rows.parquet`` at
    the end), ``track``'s files (``tensorboard`` or ``wandb``, see ``testbed.tracking``) and, with
    ``save``, its trained and base policy, read by ``load_policy``: ``policy.pt`` (tabular and
    transformer), or the Hugging Face directories ``policy/`` and ``base/`` (qwen2 and hf, see
    ``save_pretrained``)."""
    if (track or save) and runs_dir is None:
        raise ConfigError("track and save need runs_dir, the folder the runs' files go to")
    if save and cfgs:
        check_savable(cfgs[0])
    pretrained = save and bool(cfgs) and saves_pretrained(cfgs[0].policy)
    with torch_threads(threads), _trackers(cfgs, track, runs_dir) as trackers:
        trainer = build_trainer(cfgs, cache_dir)
        if pretrained:  # every member starts from the base: written now, not held in memory
            _save_members(trainer, cfgs, runs_dir, "base")
        base = member_state(trainer.policy.state_dict(), 0) if save and not pretrained else {}

        seen: list[list[dict]] = [[] for _ in cfgs]

        def report(new: list[dict]) -> None:
            for history, row in zip(seen, new, strict=True):
                history.append(row)
            # the alarm as it stands at this update, as the stored rows hold it
            rows = [{**h[-1], "isdd_alarm": ALARM.fired(h)[-1]} for h in seen]
            for tracker, row in zip(trackers, rows, strict=False):
                tracker.log_row(int(row["update"]), row)
            if on_rows:
                on_rows(rows)

        results = trainer.run(report)
    if save:
        assert runs_dir is not None  # checked on entry
        if pretrained:
            _save_members(trainer, cfgs, runs_dir, "policy")
        else:
            end = trainer.policy.state_dict()
            for j, cfg in enumerate(cfgs):
                save_policy(run_folder(runs_dir, cfg) / "policy.pt", cfg, member_state(end, j), base)
    return [summarise(c, r) for c, r in zip(cfgs, results, strict=True)]


def _save_members(trainer: Trainer, cfgs: Sequence[RunConfig], runs_dir: Path | None, name: str) -> None:
    """Each member's policy as it stands, as the Hugging Face directory ``name`` of its run folder."""
    assert runs_dir is not None  # train_population checks it on entry
    task = getattr(trainer.cores, "task", None)
    tokenizer = getattr(task, "tokenizer", None)  # the text task's (kind hf); the simulated task has none
    for j, cfg in enumerate(cfgs):
        save_pretrained(run_folder(runs_dir, cfg) / name, cfg, trainer.policy, j, tokenizer)


def train(
    cfg: RunConfig, cache_dir: Path | str | bool | None = True, threads: int | None = 1, **options: Any
) -> tuple[list[dict], dict]:
    """Train one run; returns its tidy rows and summary record (``options``: see ``train_population``)."""
    return train_population([cfg], cache_dir, threads, **options)[0]
