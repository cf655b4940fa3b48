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
from testbed.config import added_field, check_at_most, check_choice, check_positive, check_range, fail, field
from testbed.diagnostics import check_loss, detect_collapse, isdd_signals, mean_rows
from testbed.objectives import ObjectiveConfig, get_objective
from testbed.objectives.common import LOW_RATIO_THRESHOLD
from testbed.policies import Policy
from testbed.rollout import Core, PolicyAgent, rollout

OLD_LOG_PROBS = ("recompute", "rollout")
PASSES = ("auto", "full", "lean")
ROLLOUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """The loop's knobs; the last group are the sources of drift between pi_theta and pi_old."""

    n_updates: int = field(
        60,
        help="RL updates (each: one rollout batch, then epochs x minibatches optimizer steps); > 0.",
        trl="max_steps / (steps_per_generation x num_iterations)",
        verl="trainer.total_training_steps",
    )
    questions_per_batch: int = field(
        16,
        help="Training questions (prompts) per rollout batch, each answered group_size times; > 0.",
        trl="generation_batch_size / num_generations",
        verl="data.train_batch_size",
    )
    group_size: int = field(
        8,
        help="Responses sampled per question: the group whose rewards give each response its advantage; > 0.",
        source="GRPO, arXiv 2402.03300",
        trl="num_generations",
        verl="actor_rollout_ref.rollout.n",
    )
    advantage: str = field(
        "grpo",
        help="Group advantage: grpo ((r - group mean) / group std), drgrpo (r - group mean, no std: "
        "Dr. GRPO) or rloo (r - mean of the other responses).",
        trl="scale_rewards (group / none)",
        verl="algorithm.adv_estimator (grpo, rloo; norm_adv_by_std_in_grpo=false for drgrpo)",
    )
    lr: float = field(
        5e-3,
        help="Adam learning rate of the RL updates; > 0.",
        trl="learning_rate",
        verl="actor_rollout_ref.actor.optim.lr",
    )
    max_grad_norm: float = field(
        1.0,
        help="Global gradient-norm clip of each optimizer step (per member); > 0.",
        trl="max_grad_norm",
        verl="actor_rollout_ref.actor.grad_clip",
    )
    entropy_coef: float = field(
        0.0,
        help="Weight of the entropy bonus subtracted from the loss (token-mean entropy); >= 0.",
        trl="entropy_coef",
        verl="actor_rollout_ref.actor.entropy_coeff",
    )
    eval_every: int = field(
        5,
        help="Evaluate every this many updates (and at the start and the end); > 0.",
        trl="eval_steps",
        verl="trainer.test_freq",
    )
    eval_episodes: int = field(
        512,
        help="Evaluation episodes, never trained on (the held-out questions when the world is fixed); > 0.",
    )
    collapse_frac: float = field(
        0.5,
        help="A run has collapsed when its evaluation EM ends below this share of its running peak and "
        "never climbs back; in [0, 1].",
    )
    collapse_min_peak: float = field(
        0.1, help="Peaks of evaluation EM below this never count as collapses (nothing to lose); in [0, 1]."
    )
    diag_ratio_threshold: float = added_field(
        LOW_RATIO_THRESHOLD,
        help="The diagnostics count a token as collapsed at r = pi_theta / pi_old <= this "
        "(low_ratio_frac_*, pooled_low_ratio_frac_*, collapsed_*_frac), whatever the objective; "
        "SAPO's own tau is objective.sapo_tau; > 0.",
    )
    # drift knobs
    epochs: int = field(
        1,
        help="Passes over each rollout batch (PPO epochs): more passes, more drift of pi_theta from "
        "pi_old; > 0.",
        trl="num_iterations",
        verl="actor_rollout_ref.actor.ppo_epochs",
    )
    minibatches: int = field(
        8,
        help="Optimizer steps per pass over a batch (the batch split in minibatches); "
        "<= questions_per_batch x group_size.",
        trl="steps_per_generation",
        verl="data.train_batch_size / actor_rollout_ref.actor.ppo_mini_batch_size",
    )
    old_log_probs: str = field(
        "recompute",
        help="pi_old of the objectives: recompute (the default: the trainer's policy before the update, "
        "so that the ratio measures the update's own drift, as TRL and verl compute it by default) or "
        "rollout (the sampler's own log-probs, as an inference engine's: a drift source of its own when "
        "the sampler differs: staleness, rollout_dtype). With passes=lean an on-policy float32 rollout is "
        "that same policy, so its own log-probs serve as the recompute (equal to float rounding, "
        "about 1e-7) and the pass is saved.",
        verl="algorithm.rollout_correction.bypass_mode (true: rollout)",
    )
    mismatch_std: float = field(
        0.0,
        help="Std of Gaussian noise added to each old log-prob, a simulated rollout/trainer mismatch; "
        "0 turns it off; >= 0.",
    )
    staleness: int = field(
        0,
        help="Rollouts come from the policy this many updates old (asynchronous, off-policy training); >= 0.",
    )
    rollout_dtype: str = field(
        "float32",
        help="Precision of the sampling copy of the policy: float32, bfloat16 or float16 (a mismatch "
        "between sampler and trainer, as an inference engine's).",
        verl="actor_rollout_ref.rollout.dtype",
    )
    passes: str = added_field(
        "auto",
        help="The update's scoring passes. full: every pass at the rollout's whole width, the policy's "
        "log-probs before the update recomputed by a pass, the diagnostics pass after it (how the "
        "transformer's and tabular runs were stored). lean: the batch cut to its longest episode "
        "(the testbed's Qwen2 also scores each member only to its own), the rollout's log-probs "
        "taken as the policy's before the update where the rollout is that policy in float32 "
        "(staleness 0), so no pass before the update; the diagnostics pass stays, its signals (and "
        "isdd_alarm) being logged every update. auto: lean for the testbed's Qwen2, full for others.",
    )

    def __post_init__(self) -> None:
        check_positive(self, "n_updates", "questions_per_batch", "group_size", "lr", "max_grad_norm")
        check_positive(self, "eval_every", "eval_episodes", "epochs", "minibatches")
        check_positive(self, "entropy_coef", "mismatch_std", "staleness", allow_zero=True)
        check_at_most(self, 1.0, "lr")  # sane ceilings: past them a run overflows, far from the field
        check_at_most(self, 1e3, "entropy_coef")
        check_at_most(self, 10.0, "mismatch_std")
        check_at_most(self, 1e6, "max_grad_norm", "eval_episodes")
        check_at_most(self, 1e5, "questions_per_batch", "group_size")
        check_choice(self, "advantage", ADV_ESTIMATORS)
        check_choice(self, "old_log_probs", OLD_LOG_PROBS)
        check_choice(self, "rollout_dtype", ROLLOUT_DTYPES)
        check_choice(self, "passes", PASSES)
        check_range(self, "collapse_frac", 0.0, 1.0)
        check_range(self, "collapse_min_peak", 0.0, 1.0)
        check_positive(self, "diag_ratio_threshold")
        if self.minibatches > self.questions_per_batch * self.group_size:
            fail(self, "minibatches", self.minibatches, "must not exceed questions_per_batch * group_size")


def eval_streams(seed: int, update: int) -> tuple[np.random.Generator, torch.Generator]:
    """The random streams (environment, sampling) of a run's evaluation at ``update``: functions of
    its seed and the update alone. At update 0 they are the ``seed + 1`` streams every run's first
    evaluation has used (numpy seeds ``[s, 0]`` as it seeds ``s``)."""
    entropy = [seed + 1, update]
    drawn = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
    sampling = seed + 1 if update == 0 else drawn
    return np.random.default_rng(entropy), torch.Generator().manual_seed(sampling)


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
        # one core steps every member's rows, each member's with its own stream (envs.streams)
        self.cores = make_core(k * n)
        n_eval = len(world.eval_ids(tc.eval_episodes))
        self.eval_cores = {closed: make_core(k * n_eval, closed_book=closed) for closed in (False, True)}
        needs_ref = any(m.objective.ref_kl_coef > 0 for m in members)
        self.reference = copy.deepcopy(policy) if needs_ref else None
        self.objectives = [get_objective(m.objective.name) for m in members]
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=tc.lr)
        self.rngs = [np.random.default_rng(m.seed) for m in members]
        self.gens = [torch.Generator().manual_seed(m.seed) for m in members]
        self.history: collections.deque = collections.deque(maxlen=tc.staleness + 1)  # stale snapshots
        self.optimizer_steps = 0
        self.device = next(policy.parameters()).device  # where the update's tensors live
        passes = getattr(policy, "passes", "full") if tc.passes == "auto" else tc.passes
        self.lean = passes == "lean"
        # the rollout's own log-probs are the current policy's: the same computation as a recompute
        self.rollout_is_policy = tc.staleness == 0 and tc.rollout_dtype == "float32"

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
        """The objective's old log-probs, and the current policy's own before this update (with
        lean passes and an on-policy float32 rollout: the rollout's, no pass)."""
        if self.lean and self.rollout_is_policy:
            before = batch.behaviour_log_probs
        else:
            before, _ = self.policy.score(batch)
        old = before if self.tc.old_log_probs == "recompute" else batch.behaviour_log_probs
        if self.tc.mismatch_std > 0:
            n = len(batch) // self.k
            noise = torch.cat([torch.randn((n, old.shape[1]), generator=gen) for gen in self.gens])
            old = old + noise.to(old.device) * self.tc.mismatch_std * batch.mask
        return old, before

    def _for_update(self, batch: Batch) -> Batch:
        """``batch`` on the policy's device; with lean passes, cut after its longest episode's last
        written position (nothing is scored past it)."""
        fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
        width = batch.tokens.shape[1]
        if self.lean:
            positions = torch.arange(width)
            width = max(2, int(((batch.mask > 0) * positions).amax()) + 1)
        grid = ("tokens", "mask", "behaviour_log_probs", "segment", "states")  # the [B, T] fields
        for name, value in fields.items():
            if value is not None:
                value = value[:, :width] if name in grid else value
                fields[name] = value.to(self.device)
        return Batch(**fields)

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
        batch = self._for_update(batch)
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
                idx = idx.to(self.device)
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
                        low_ratio_threshold=tc.diag_ratio_threshold,
                    )
                    ent = aggregate(entropy[rows], mb.mask[rows], "token-mean")
                    if tc.entropy_coef:
                        loss = loss - tc.entropy_coef * ent
                    total = total + loss
                    steps[j].append({**metrics, "loss": float(loss.detach()), "entropy": float(ent.detach())})
                    check_loss(steps[j][-1]["loss"], self.optimizer_steps, self.members[j], tc)
                self.opt.zero_grad()
                assert isinstance(total, torch.Tensor)  # a sum over k >= 1 members' losses
                total.backward()
                norms = clip_grad_norm_per_member(self.params, tc.max_grad_norm, k)
                self.opt.step()
                self.optimizer_steps += 1
                for j, norm in enumerate(norms.tolist()):
                    steps[j][-1]["grad_norm"] = norm
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
                    self.tc.diag_ratio_threshold,
                )
            )
        return out

    @torch.no_grad()
    def evaluate(self, update: int = 0) -> list[dict[str, float]]:
        """EM on the evaluation episodes (never trained on): greedy, sampled, and sampled with
        retrieval replaced by random documents (the closed-book probe), each with its standard error.
        Its random streams are ``eval_streams(seed, update)``: a policy evaluates to the same numbers
        at the same update, whatever was evaluated before (a saved policy to what its run logged)."""
        rngs, gens = zip(*(eval_streams(m.seed, update) for m in self.members), strict=True)
        ids = self.world.eval_ids(self.tc.eval_episodes)
        episodes = np.tile(ids, self.k)
        groups = np.arange(len(episodes))
        out: list[dict[str, float]] = [{} for _ in range(self.k)]
        for name, greedy, closed in (
            ("greedy", True, False),
            ("sampled", False, False),
            ("closed_book", False, True),
        ):
            agent = PolicyAgent(self.policy, list(gens), greedy=greedy)
            b = rollout(agent, self.eval_cores[closed], episodes, groups, list(rngs))
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
        rows = [[{"update": 0, "optimizer_steps": 0, **ev, "wall_time": 0.0}] for ev in self.evaluate(0)]
        if on_rows:
            on_rows([r[0] for r in rows])
        for u in range(1, tc.n_updates + 1):
            batch = self.collect()
            new = self.update(batch)
            n = len(batch) // self.k
            evals = self.evaluate(u) if u % tc.eval_every == 0 or u == tc.n_updates else [{}] * self.k
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
