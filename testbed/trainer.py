"""The GRPO-family trainer: one loop for every registered objective, for one run or a population.

Per update: each member samples G responses for each of Q training episodes (from a policy
``staleness`` updates old), computes rewards and group advantages, fixes the old log-probs
(recomputed by the current policy, or the rollout's own, perturbed by ``mismatch_std`` as between
an inference engine and a trainer), then takes ``epochs x minibatches`` optimizer steps on its
objective. Each update yields one tidy row of diagnostics per member.

A population is K runs that share task, policy shape and trainer settings and differ in seed (and
objective): one policy with a member dimension serves them all (see ``policies.transformer``), while
each member keeps its own episodes, random streams, minibatch order, objective call, gradient clip
and rows; Adam is elementwise, so one Adam over the stacked weights is K independent Adams. A single
run is a population of one.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from testbed.advantages import ADV_ESTIMATORS, group_advantages
from testbed.aggregation import aggregate
from testbed.batch import Batch
from testbed.config import check_choice, check_positive, check_range, fail
from testbed.diagnostics import detect_collapse, isdd_signals, mean_rows
from testbed.objectives import ObjectiveConfig, get_objective
from testbed.policies import Policy
from testbed.rollout import Core, MemberCores, PolicyAgent, rollout

OLD_LOG_PROBS = ("recompute", "rollout")
ROLLOUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    eval_every: int = 5
    eval_episodes: int = 512
    collapse_frac: float = 0.5
    collapse_min_peak: float = 0.1
    # drift knobs
    epochs: int = 1
    minibatches: int = 8
    old_log_probs: str = "recompute"
    mismatch_std: float = 0.0
    staleness: int = 0
    rollout_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_positive(self, "n_updates", "questions_per_batch", "group_size", "lr", "max_grad_norm")
        check_positive(self, "eval_every", "eval_episodes", "epochs", "minibatches")
        check_positive(self, "entropy_coef", "mismatch_std", "staleness", allow_zero=True)
        check_choice(self, "advantage", ADV_ESTIMATORS)
        check_choice(self, "old_log_probs", OLD_LOG_PROBS)
        check_choice(self, "rollout_dtype", ROLLOUT_DTYPES)
        check_range(self, "collapse_frac", 0.0, 1.0)
        check_range(self, "collapse_min_peak", 0.0, 1.0)
        if self.minibatches > self.questions_per_batch * self.group_size:
            fail(self, "minibatches", self.minibatches, "must not exceed questions_per_batch * group_size")


class EpisodeSource(Protocol):
    """Where a run's episode ids come from: training ids drawn with the member's generator, and
    the fixed evaluation ids (a ``World``; or a QA dataset's training and held-out questions)."""

    def train_ids(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    def eval_ids(self, n: int) -> np.ndarray: ...


@dataclasses.dataclass
class RunResult:
    rows: list[dict]
    collapsed: bool
    collapse_step: int | None


@dataclasses.dataclass(frozen=True)
class Member:
    """What distinguishes one member of a population: its seed and its objective."""

    seed: int
    objective: ObjectiveConfig


def clip_grad_norm_per_member(params: Sequence[torch.Tensor], max_norm: float, members: int) -> torch.Tensor:
    """Clip each member's gradient (the slices ``p.grad[k]``) to ``max_norm`` on its own, as
    ``torch.nn.utils.clip_grad_norm_`` does for one model; returns the K norms before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    sq = torch.stack([g.reshape(members, -1).pow(2).sum(1) for g in grads]).sum(0)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(members, *([1] * (g.dim() - 1))))
    return norms


class Trainer:
    """The loop over given parts: a policy with one member per ``members`` entry, where episodes
    come from (a ``World``, or any ``EpisodeSource``), and ``make_core(batch_size, closed_book)``
    building one environment core."""

    def __init__(
        self,
        tc: TrainerConfig,
        members: Sequence[Member],
        policy: Policy,
        world: EpisodeSource,
        make_core: Callable[..., Core],
    ) -> None:
        if policy.members != len(members):
            raise ValueError(f"policy has {policy.members} members, the run list {len(members)}")
        self.tc, self.members, self.policy, self.world = tc, list(members), policy, world
        k, n = len(members), tc.questions_per_batch * tc.group_size
        self.cores = MemberCores([make_core(n) for _ in range(k)])
        n_eval = len(world.eval_ids(tc.eval_episodes))
        self.eval_cores = {
            closed: MemberCores([make_core(n_eval, closed_book=closed) for _ in range(k)])
            for closed in (False, True)
        }
        needs_ref = any(m.objective.ref_kl_coef > 0 for m in members)
        self.reference = copy.deepcopy(policy) if needs_ref else None
        self.objectives = [get_objective(m.objective.name) for m in members]
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=tc.lr)
        self.rngs = [np.random.default_rng(m.seed) for m in members]
        self.gens = [torch.Generator().manual_seed(m.seed) for m in members]
        self.eval_rngs = [np.random.default_rng(m.seed + 1) for m in members]
        self.eval_gens = [torch.Generator().manual_seed(m.seed + 1) for m in members]
        self.history: collections.deque = collections.deque(maxlen=tc.staleness + 1)  # stale snapshots
        self.optimizer_steps = 0

    @property
    def k(self) -> int:
        return len(self.members)

    # -- one update ------------------------------------------------------------------------------
    def _behaviour_policy(self) -> Policy:
        """The policy ``staleness`` updates old (the current one while history is short), in
        ``rollout_dtype``: a lower-precision copy samples as an inference engine would, while the
        trainer computes in float32 (the rollout/trainer mismatch as it arises)."""
        behaviour = self.policy
        if self.tc.staleness:
            self.history.append(copy.deepcopy(self.policy.state_dict()))
            behaviour = copy.deepcopy(self.policy)
            behaviour.load_state_dict(self.history[0])
        dtype = ROLLOUT_DTYPES[self.tc.rollout_dtype]
        if dtype != torch.float32:
            behaviour = copy.deepcopy(behaviour).to(dtype)
        return behaviour  # on-policy float32 needs no copy, and a large model's costs memory

    def collect(self) -> Batch:
        """Q training episodes x G responses per member; group ids are unique across members."""
        q, g = self.tc.questions_per_batch, self.tc.group_size
        episodes = np.concatenate([np.repeat(self.world.train_ids(rng, q), g) for rng in self.rngs])
        groups = np.repeat(np.arange(self.k * q), g)
        agent = PolicyAgent(self._behaviour_policy(), self.gens)
        return rollout(agent, self.cores, episodes, groups, self.rngs)

    @torch.no_grad()
    def old_log_probs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's old log-probs, and the current policy's own before this update."""
        before, _ = self.policy.score(batch)
        old = before if self.tc.old_log_probs == "recompute" else batch.behaviour_log_probs
        if self.tc.mismatch_std > 0:
            n = len(batch) // self.k
            noise = torch.cat([torch.randn((n, old.shape[1]), generator=gen) for gen in self.gens])
            old = old + noise * self.tc.mismatch_std * batch.mask
        return old, before

    def _minibatches(self, n: int) -> list[torch.Tensor]:
        """Row indices of each minibatch: chunk i of every member's own permutation."""
        chunks = [
            torch.chunk(torch.randperm(n, generator=gen) + k * n, self.tc.minibatches)
            for k, gen in enumerate(self.gens)
        ]
        return [torch.cat(parts) for parts in zip(*chunks, strict=True)]

    def update(self, batch: Batch) -> list[dict[str, float]]:
        """``epochs x minibatches`` optimizer steps; one diagnostics row per member."""
        tc, k = self.tc, self.k
        adv = group_advantages(batch.rewards, batch.group_ids, tc.advantage)
        old, before = self.old_log_probs(batch)
        ref = None
        if self.reference is not None:
            with torch.no_grad():
                ref, _ = self.reference.score(batch)
        steps: list[list[dict]] = [[] for _ in range(k)]
        n = len(batch) // k
        for _ in range(tc.epochs):
            for idx in self._minibatches(n):
                mb = batch.select(idx)
                logp, entropy = self.policy.score(mb)
                m = len(idx) // k
                total: torch.Tensor | float = 0.0
                for j in range(k):
                    rows = slice(j * m, (j + 1) * m)
                    loss, metrics = self.objectives[j](
                        logp[rows],
                        old[idx[rows]],
                        adv[idx[rows]],
                        mb.mask[rows],
                        None if ref is None else ref[idx[rows]],
                        config=self.members[j].objective,
                        rollout_log_probs=batch.behaviour_log_probs[idx[rows]],
                    )
                    ent = aggregate(entropy[rows], mb.mask[rows], "token-mean")
                    if tc.entropy_coef:
                        loss = loss - tc.entropy_coef * ent
                    total = total + loss
                    steps[j].append({**metrics, "loss": float(loss.detach()), "entropy": float(ent.detach())})
                self.opt.zero_grad()
                assert isinstance(total, torch.Tensor)  # a sum over k >= 1 members' losses
                total.backward()
                norms = clip_grad_norm_per_member(self.params, tc.max_grad_norm, k)
                self.opt.step()
                self.optimizer_steps += 1
                for j in range(k):
                    steps[j][-1]["grad_norm"] = float(norms[j])
        pooled = self._pooled_signals(batch, old, before, adv)
        out = []
        for j in range(k):
            row = mean_rows(steps[j])
            row["grad_norm_max"] = max(s["grad_norm"] for s in steps[j])
            row["adv_zero_frac"] = float((adv[j * n : (j + 1) * n] == 0).float().mean())
            out.append({**row, **pooled[j]})
        return out

    @torch.no_grad()
    def _pooled_signals(
        self, batch: Batch, old: torch.Tensor, before: torch.Tensor, adv: torch.Tensor
    ) -> list[dict[str, float]]:
        """The mechanism diagnostics over the whole update (all tokens of the batch at once), per member."""
        new, _ = self.policy.score(batch)
        n = len(batch) // self.k
        out = []
        for j in range(self.k):
            rows = slice(j * n, (j + 1) * n)
            out.append(
                isdd_signals(
                    new[rows] - old[rows],
                    new[rows] - before[rows],
                    adv[rows],
                    batch.mask[rows],
                    batch.segment[rows],
                    self.members[j].objective.sapo_tau,
                )
            )
        return out

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, float]]:
        """EM on the evaluation episodes (never trained on): greedy, sampled, and sampled with
        retrieval replaced by random documents (the closed-book probe), each with its standard error."""
        ids = self.world.eval_ids(self.tc.eval_episodes)
        episodes = np.tile(ids, self.k)
        groups = np.arange(len(episodes))
        out: list[dict[str, float]] = [{} for _ in range(self.k)]
        for name, greedy, closed in (
            ("greedy", True, False),
            ("sampled", False, False),
            ("closed_book", False, True),
        ):
            agent = PolicyAgent(self.policy, self.eval_gens, greedy=greedy)
            b = rollout(agent, self.eval_cores[closed], episodes, groups, self.eval_rngs)
            hits = (b.rewards >= 1.0).double().view(self.k, -1)
            for j in range(self.k):
                p, m = float(hits[j].mean()), hits.shape[1]
                out[j][f"eval_em_{name}"] = p
                out[j][f"eval_em_{name}_se"] = (p * (1 - p) / m) ** 0.5
        return out

    # -- the loop --------------------------------------------------------------------------------
    def run(self, on_rows: Callable[[list[dict]], None] | None = None) -> list[RunResult]:
        """Evaluate the start, then ``n_updates`` updates; ``on_rows`` sees each update's member rows
        (update 0, the start's evaluation, included)."""
        tc = self.tc
        start = time.perf_counter()
        rows = [[{"update": 0, "optimizer_steps": 0, **ev, "wall_time": 0.0}] for ev in self.evaluate()]
        if on_rows:
            on_rows([r[0] for r in rows])
        for u in range(1, tc.n_updates + 1):
            batch = self.collect()
            new = self.update(batch)
            n = len(batch) // self.k
            evals = self.evaluate() if u % tc.eval_every == 0 or u == tc.n_updates else [{}] * self.k
            for j in range(self.k):
                part = slice(j * n, (j + 1) * n)
                new[j] = {
                    "update": u,
                    **new[j],
                    "train_reward": float(batch.rewards[part].mean()),
                    "searches_per_episode": float(batch.searches[part].float().mean()),
                    "response_length": float(batch.mask[part].sum(1).mean()),
                    "optimizer_steps": self.optimizer_steps,
                    **evals[j],
                    "wall_time": time.perf_counter() - start,
                }
                rows[j].append(new[j])
            if on_rows:
                on_rows(new)
        return [self._result(r) for r in rows]

    def _result(self, rows: list[dict]) -> RunResult:
        em = [r.get("eval_em_sampled", float("nan")) for r in rows]
        collapsed, step = detect_collapse(
            em, [r["update"] for r in rows], self.tc.collapse_frac, self.tc.collapse_min_peak
        )
        return RunResult(rows, collapsed, step)
