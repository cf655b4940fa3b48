"""The GRPO-family trainer: one loop for every registered objective, with ISDD diagnostics.

Per update: sample G responses for each of Q training questions (from a policy ``staleness``
updates old), compute rewards and group advantages, fix the old log-probs (recomputed by the
current policy, or the rollout's own, perturbed by ``mismatch_std`` as between an inference engine
and a trainer), then take ``epochs x minibatches`` optimizer steps on the chosen objective. Each
update yields one tidy row of diagnostics.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from testbed.advantages import ADV_ESTIMATORS, group_advantages
from testbed.aggregation import aggregate
from testbed.batch import Batch
from testbed.config import check_choice, check_positive, check_range, config_hash, fail, to_dict
from testbed.diagnostics import detect_collapse, mean_rows
from testbed.envs import TabularSearchBatch, TaskConfig, TokenSearchBatch, World
from testbed.objectives import ObjectiveConfig, get_objective
from testbed.policies import Policy, PolicyConfig, build_policy
from testbed.rollout import rollout
from testbed.warmstart import WarmStartConfig, warm_start

OLD_LOG_PROBS = ("recompute", "rollout")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """The loop's knobs; the last group are the sources of drift between pi_theta and pi_old."""

    n_updates: int = 60
    questions_per_batch: int = 16
    group_size: int = 8
    advantage: str = "grpo"
    lr: float = 5e-3
    max_grad_norm: float = 1.0
    entropy_coef: float = 0.0
    eval_every: int = 4
    eval_samples: int = 4
    collapse_frac: float = 0.5
    collapse_min_peak: float = 0.1
    # drift knobs
    epochs: int = 1
    minibatches: int = 8
    old_log_probs: str = "recompute"
    mismatch_std: float = 0.0
    staleness: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "n_updates", "questions_per_batch", "group_size", "lr", "max_grad_norm")
        check_positive(self, "eval_every", "eval_samples", "epochs", "minibatches")
        check_positive(self, "entropy_coef", "mismatch_std", "staleness", allow_zero=True)
        check_choice(self, "advantage", ADV_ESTIMATORS)
        check_choice(self, "old_log_probs", OLD_LOG_PROBS)
        check_range(self, "collapse_frac", 0.0, 1.0)
        if self.minibatches > self.questions_per_batch * self.group_size:
            fail(self, "minibatches", self.minibatches, "must not exceed questions_per_batch * group_size")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on; its hash keys the run's results."""

    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    warm_start: WarmStartConfig = dataclasses.field(default_factory=WarmStartConfig)
    seed: int = 0


def make_core(cfg: RunConfig, batch_size: int, *, world: World) -> TokenSearchBatch | TabularSearchBatch:
    core_type = TabularSearchBatch if cfg.policy.kind == "tabular" else TokenSearchBatch
    return core_type(cfg.task, batch_size, world)


@dataclasses.dataclass
class RunResult:
    rows: list[dict]
    collapsed: bool
    collapse_step: int | None


class Trainer:
    """Holds the policy, optimizer, environments and generators of one run."""

    def __init__(
        self,
        cfg: RunConfig,
        cache_dir: Path | None = None,
        policy: Policy | None = None,
        make_batch: Callable[[int], TokenSearchBatch | TabularSearchBatch] | None = None,
        splits: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Build everything from ``cfg``, or run ``cfg``'s loop on given parts: a ``policy``, a
        factory of environment batches ``make_batch(n)`` and the (train, held-out) question ids."""
        self.cfg = cfg
        tc = cfg.trainer
        torch.manual_seed(cfg.seed)
        if policy is None:
            world = World(cfg.task.world)
            make_batch = functools.partial(make_core, cfg, world=world)
            splits = (world.train, world.held_out)
            probe = make_batch(1)
            policy = build_policy(cfg.policy, probe)
            if cfg.warm_start.steps:
                key = {"task": cfg.task, "policy": cfg.policy}
                warm_start(policy, probe, cfg.warm_start, key, cfg.seed, cache_dir)
        elif make_batch is None or splits is None:
            raise ValueError("make_batch and splits: both are needed with a given policy")
        self.policy, self.make_batch = policy, make_batch
        self.train_ids, self.held_out_ids = splits
        self.core = make_batch(tc.questions_per_batch * tc.group_size)
        self.reference = copy.deepcopy(self.policy) if cfg.objective.ref_kl_coef > 0 else None
        self.objective = get_objective(cfg.objective.name)
        self.opt = torch.optim.Adam([p for p in self.policy.parameters() if p.requires_grad], lr=tc.lr)
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.eval_rng = np.random.default_rng(cfg.seed + 1)
        self.eval_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.history: collections.deque = collections.deque(maxlen=tc.staleness + 1)  # stale snapshots
        self.optimizer_steps = 0

    # -- one update ------------------------------------------------------------------------------
    def _behaviour_policy(self) -> Policy:
        """The policy ``staleness`` updates old (the current one while history is short)."""
        if self.cfg.trainer.staleness == 0:
            return self.policy  # no snapshot: on-policy needs none, and a large model's costs a copy
        self.history.append(copy.deepcopy(self.policy.state_dict()))
        stale = copy.deepcopy(self.policy)
        stale.load_state_dict(self.history[0])
        return stale

    def collect(self) -> Batch:
        tc = self.cfg.trainer
        questions = np.repeat(self.rng.choice(self.train_ids, tc.questions_per_batch), tc.group_size)
        groups = np.repeat(np.arange(tc.questions_per_batch), tc.group_size)
        return rollout(self._behaviour_policy(), self.core, questions, groups, self.rng, self.gen)

    def old_log_probs(self, batch: Batch) -> torch.Tensor:
        tc = self.cfg.trainer
        if tc.old_log_probs == "recompute":
            with torch.no_grad():
                old, _ = self.policy.score(batch)
        else:
            old = batch.behaviour_log_probs.clone()
        if tc.mismatch_std > 0:
            noise = torch.randn(old.shape, generator=self.gen) * tc.mismatch_std
            old = old + noise * batch.mask
        return old

    def update(self, batch: Batch) -> dict[str, float]:
        tc, ocfg = self.cfg.trainer, self.cfg.objective
        adv = group_advantages(batch.rewards, batch.group_ids, tc.advantage)
        old = self.old_log_probs(batch)
        ref = None
        if self.reference is not None:
            with torch.no_grad():
                ref, _ = self.reference.score(batch)
        steps = []
        for _ in range(tc.epochs):
            perm = torch.randperm(len(batch), generator=self.gen)
            for idx in torch.chunk(perm, tc.minibatches):
                mb = batch.select(idx)
                logp, entropy = self.policy.score(mb)
                loss, metrics = self.objective(
                    logp, old[idx], adv[idx], mb.mask, None if ref is None else ref[idx], config=ocfg
                )
                ent = aggregate(entropy, mb.mask, "token-mean")
                if tc.entropy_coef:
                    loss = loss - tc.entropy_coef * ent
                self.opt.zero_grad()
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), tc.max_grad_norm)
                self.opt.step()
                self.optimizer_steps += 1
                steps.append({**metrics, "entropy": float(ent.detach()), "grad_norm": float(grad_norm)})
        row = mean_rows(steps)
        row["grad_norm_max"] = max(s["grad_norm"] for s in steps)
        row["adv_zero_frac"] = float((adv == 0).float().mean())
        return row

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out EM, greedy (one episode per question) and sampled (eval_samples each)."""
        n = self.cfg.trainer.eval_samples
        out = {}
        for name, reps, greedy in (("greedy", 1, True), ("sampled", n, False)):
            qs = np.repeat(self.held_out_ids, reps)
            core = self.make_batch(len(qs))
            b = rollout(
                self.policy, core, qs, np.arange(len(qs)), self.eval_rng, self.eval_gen, greedy=greedy
            )
            out[f"eval_em_{name}"] = float((b.rewards >= 1.0).float().mean())
        return out

    # -- the loop --------------------------------------------------------------------------------
    def run(self, on_row: Callable[[dict], None] | None = None) -> RunResult:
        """Evaluate the start, then ``n_updates`` updates; ``on_row`` sees each row as it is made."""
        tc = self.cfg.trainer
        start = time.perf_counter()
        rows = [{"update": 0, "optimizer_steps": 0, **self.evaluate(), "wall_time": 0.0}]
        for u in range(1, tc.n_updates + 1):
            batch = self.collect()
            row = {"update": u, **self.update(batch)}
            row["train_reward"] = float(batch.rewards.mean())
            row["searches_per_episode"] = float(batch.searches.float().mean())
            row["response_length"] = float(batch.mask.sum(1).mean())
            row["optimizer_steps"] = self.optimizer_steps
            if u % tc.eval_every == 0 or u == tc.n_updates:
                row.update(self.evaluate())
            row["wall_time"] = time.perf_counter() - start
            rows.append(row)
            if on_row:
                on_row(row)
        em = [r.get("eval_em_sampled", float("nan")) for r in rows]
        collapsed, step = detect_collapse(
            em, [r["update"] for r in rows], tc.collapse_frac, tc.collapse_min_peak
        )
        return RunResult(rows, collapsed, step)


def flat_config(cfg: RunConfig) -> dict[str, object]:
    """The run's config as dotted columns (``objective.tau`` ...), for tidy result tables."""
    out: dict[str, object] = {}

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node if not isinstance(node, list | tuple) else str(tuple(node))

    walk("", to_dict(cfg))
    return out


def train(
    cfg: RunConfig, cache_dir: Path | None = None, trainer: Trainer | None = None
) -> tuple[list[dict], dict]:
    """Run one config (or a prepared ``trainer`` for it); returns tidy rows and a summary record."""
    result = (trainer or Trainer(cfg, cache_dir)).run()
    key = config_hash(cfg)
    columns = {"run": key, **flat_config(cfg)}
    rows = [{**columns, **r} for r in result.rows]
    em = [r["eval_em_sampled"] for r in result.rows if "eval_em_sampled" in r]
    summary = {
        **columns,
        "warm_em": em[0],
        "peak_em": max(em),
        "final_em": em[-1],
        "collapsed": result.collapsed,
        "collapse_step": result.collapse_step,
    }
    return rows, summary
