"""The base policy of a study: supervised pre-training on imperfect oracle demonstrations, cached.

RL from scratch on a sparse search reward learns nothing; real search-agent runs start from an
instruct model that already uses the format and sometimes searches well. The stand-in: the oracle
agent writes demonstrations, each of its words replaced by a random one with ``error_rate``, and
the policy is trained to imitate them (NLL on the agent's tokens only), after ``pretrain_steps``
of language modelling on the same transcripts' every token (the world's text: questions, retrieved
documents, searches and answers), as a model is pre-trained before it is instructed. Every RL run of a study
starts from the same base, as every run of a real study starts from one instruct model: the base
is keyed by task, policy and this config (its own ``seed`` included), never by the RL seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from testbed.aggregation import aggregate
from testbed.batch import Batch
from testbed.config import (
    ConfigError,
    added_field,
    check_at_most,
    check_positive,
    check_range,
    check_seed,
    config_hash,
    fail,
    field,
    to_dict,
)
from testbed.envs import World
from testbed.envs.agents import TabularOracle, TokenOracle
from testbed.io import FileLock, atomic_path, atomic_write
from testbed.policies import Policy
from testbed.rollout import Core, PolicyAgent, rollout
from testbed.tracking import flatten

# Bumped when the cached weights' layout or meaning changes, so old caches are never reused.
# 3: bases trained by the Qwen2 engine before store format 4 (a cached one of those started the
# default scenario at sampled EM 0.066 where the current code's own base starts at 0.150).
CACHE_FORMAT = 3


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    """The study's base policy: supervised imitation of an imperfect oracle (optionally after
    language-model pre-training), cached by task, policy and these fields; every RL run of a study
    starts from it. ``steps=0`` and ``pretrain_steps=0``: RL from the random initialisation."""

    error_rate: float = field(
        0.25,
        help="Share of the oracle's demonstration words replaced by a random word: how imperfect the "
        "base is; in [0, 1].",
    )
    steps: int = field(
        1500,
        help="Imitation steps (NLL on the agent's tokens of fresh demonstrations); the cap when "
        "calibrating; >= 0.",
    )
    batch_size: int = field(64, help="Demonstration episodes per warm-start step; > 0.")
    lr: float = field(3e-3, help="Adam learning rate of the warm start; > 0.")
    seed: int = field(
        0, help="Seed of the base policy's initialisation and demonstrations (not the RL seed)."
    )
    pretrain_steps: int = added_field(
        0,
        help="Language-model pre-training steps on whole demonstration transcripts (every token) "
        "before imitation; 0 skips it.",
    )
    target_em_sampled: tuple[float, ...] = added_field(
        (),
        help="Calibration band lo+hi of the base's sampled EM on fresh evaluation episodes (e.g. "
        "0.1+0.2): imitation runs until the base lies in every band given, checked every check_every "
        "steps, with steps as the cap; empty: exactly steps imitation steps.",
    )
    target_em_greedy: tuple[float, ...] = added_field(
        (), help="Calibration band lo+hi of the base's greedy EM (e.g. 0.3+0.6); see target_em_sampled."
    )
    check_every: int = added_field(100, help="Imitation steps between two calibration checks; > 0.")
    check_episodes: int = added_field(
        256, help="Fresh evaluation episodes (never trained on) per calibration check; > 0."
    )

    def __post_init__(self) -> None:
        check_range(self, "error_rate", 0.0, 1.0)
        check_positive(self, "batch_size", "lr", "check_every", "check_episodes")
        check_positive(self, "steps", "pretrain_steps", allow_zero=True)
        check_at_most(self, 1.0, "lr")  # a sane ceiling: past it the base policy overflows
        check_at_most(self, 1e5, "batch_size")
        check_seed(self, "seed")
        for name in ("target_em_sampled", "target_em_greedy"):
            check_band(self, name)
        if self.calibrated and self.check_every > self.steps:
            fail(self, "check_every", self.check_every, f"must not exceed steps={self.steps} (the cap)")

    @property
    def calibrated(self) -> bool:
        """Whether imitation stops on a target band rather than after a fixed count of steps."""
        return bool(self.target_em_sampled or self.target_em_greedy)

    def bands(self) -> dict[str, tuple[float, ...]]:
        """The target bands given, by evaluation mode."""
        out = {"sampled": self.target_em_sampled, "greedy": self.target_em_greedy}
        return {mode: band for mode, band in out.items() if band}


def check_band(owner: object, name: str) -> None:
    """Raise ConfigError unless the field is empty or a band (lo, hi) with 0 <= lo <= hi <= 1."""
    band = getattr(owner, name)
    if not band:
        return
    if len(band) != 2 or not all(isinstance(v, float | int) and not isinstance(v, bool) for v in band):
        fail(owner, name, band, "must be two numbers lo+hi (e.g. 0.1+0.2), or empty for no target")
    if not all(0.0 <= v <= 1.0 for v in band):
        fail(owner, name, band, "must lie in [0, 1]")
    if band[0] > band[1]:
        fail(owner, name, band, "is empty (lo > hi)")


def demonstrations(core: Core, episodes: np.ndarray, error_rate: float, rng: np.random.Generator) -> Batch:
    """Oracle episodes (with errors) on ``episodes``, through the same driver as any rollout."""
    oracle = TabularOracle if core.grain == "tabular" else TokenOracle
    return rollout(oracle(error_rate, rng), core, episodes, np.arange(len(episodes)), rng)


def whole_text(batch: Batch, pad: int) -> Batch:
    """``batch`` with every token of its transcripts after the first marked as written (language
    modelling): the non-pad ones, and any the agent wrote (a pad it wrote is text too)."""
    mask = torch.maximum((batch.tokens != pad).float(), batch.mask)
    mask[:, 0] = 0.0
    return dataclasses.replace(batch, mask=mask)


def imitate(
    policy: Policy,
    demos: Callable[[], Batch],
    cfg: WarmStartConfig,
    pad: int = 0,
    check: Callable[[int], bool] | None = None,
) -> list[float]:
    """Train ``policy`` on fresh demonstrations each step: ``cfg.pretrain_steps`` of token-mean NLL
    on every token (``pad`` excepted), then ``cfg.steps`` on the agent's written tokens only.

    Fresh episodes every step, never a fixed set: a small model memorises a fixed set's random
    errors instead of learning the task. ``check`` is called with the imitation steps taken every
    ``cfg.check_every`` of them and at the last; imitation stops when it returns True. Returns the
    losses.
    """
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    losses = []
    for step in range(cfg.pretrain_steps + cfg.steps):
        mb = demos()
        if step < cfg.pretrain_steps:
            mb = whole_text(mb, pad)
        logp, _ = policy.score(mb)
        loss = -aggregate(logp, mb.mask, "token-mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        done = step + 1 - cfg.pretrain_steps  # imitation steps taken
        due = done > 0 and (done % cfg.check_every == 0 or done == cfg.steps)
        if check is not None and due and check(done):
            break
    return losses


def exact_match(policy: Policy, core: Core, episodes: np.ndarray, seed: int) -> dict[str, float]:
    """The share of ``episodes`` (``core`` holds one row each) that ``policy`` answers exactly,
    sampled and greedy, as the trainer's evaluation counts it (reward >= 1)."""
    out = {}
    for mode in ("sampled", "greedy"):
        agent = PolicyAgent(policy, torch.Generator().manual_seed(seed), greedy=mode == "greedy")
        batch = rollout(agent, core, episodes, np.arange(len(episodes)), np.random.default_rng(seed))
        out[mode] = float((batch.rewards >= 1.0).double().mean())
    return out


def calibration_episodes(world: World, n: int) -> np.ndarray:
    """Fresh evaluation episodes for calibration checks: odd ids (never trained on) past the RL
    evaluation's in a procedural world, so a base is never chosen on the episodes that judge its
    runs; a fixed world's held-out questions."""
    ids = world.eval_ids(n)
    return ids + 2**41 if world.procedural else ids


def describe_task(task: object) -> str:
    """The task's fields that differ from its class's defaults (``world.n_entities=48``), to name
    a world in one line."""
    default = flatten(to_dict(type(task)()))
    changed = {k: v for k, v in flatten(to_dict(task)).items() if default.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"


class Calibrator:
    """The stopping rule of a calibrated warm start (``check`` of :func:`imitate`): at each check,
    the base's EM on fresh evaluation episodes; done once every target band holds. The step cap,
    or an EM above its band (imitation raises EM towards the demonstrations' own, so it would not
    come back), ends it with a one-line ConfigError naming the world and the EM reached."""

    def __init__(self, policy: Policy, make_core: Callable[[int], Core], cfg: WarmStartConfig) -> None:
        core = make_core(cfg.check_episodes)
        assert core.world is not None, "calibration plays the simulated world"
        self.policy, self.core, self.cfg = policy, core, cfg
        self.episodes = calibration_episodes(core.world, cfg.check_episodes)
        self.checks: list[dict[str, float]] = []

    def __call__(self, steps: int) -> bool:
        em = exact_match(self.policy, self.core, self.episodes, self.cfg.seed)
        self.checks.append({"steps": steps, **em})
        bands = self.cfg.bands()
        if all(lo <= em[mode] <= hi for mode, (lo, hi) in bands.items()):
            return True
        over = [mode for mode, (_, hi) in bands.items() if em[mode] > hi]
        if over or steps >= self.cfg.steps:
            mode = over[0] if over else next(m for m, (lo, _) in bands.items() if em[m] < lo)
            why = (
                f"{mode} EM above its band (try a smaller check_every or a larger error_rate)"
                if over
                else f"the cap (steps={self.cfg.steps}) reached"
            )
            reached = ", ".join(f"{m} EM {v:.3f}" for m, v in em.items())
            fail(
                self.cfg,
                f"target_em_{mode}",
                bands[mode],
                f"not reached in the task ({describe_task(self.core.config)}): {reached} on "
                f"{len(self.episodes)} fresh episodes after {steps} imitation steps; {why}",
            )
        return False


def cache_path(cache_dir: Path, key: object, cfg: WarmStartConfig) -> Path:
    return Path(cache_dir) / f"base-{config_hash({'key': key, 'warm_start': cfg, 'format': CACHE_FORMAT})}.pt"


def base_policy(
    build: Callable[[], Policy],
    make_core: Callable[[int], Core],
    cfg: WarmStartConfig,
    key: object,
    cache_dir: Path | None,
) -> Policy:
    """The study's base policy: built by ``build`` (seeded by ``cfg.seed``), then loaded from the
    cache for (``key``, cfg) or trained on demonstrations (until its target bands hold, when it
    has some) and cached, with a record of its training beside it (``record_path``)."""
    torch.manual_seed(cfg.seed)
    policy = build()
    if not cfg.steps + cfg.pretrain_steps:
        return policy
    if cache_dir is None:
        _train(policy, make_core, cfg)
        return policy
    path = cache_path(cache_dir, key, cfg)
    # One process trains a base; the others (a study's parallel workers) wait for it and load it.
    with _held(path):
        if path.exists():
            if _load(policy, path):
                return policy
            torch.manual_seed(cfg.seed)  # a failed load may have half-filled it: start afresh
            policy = build()
        failed = failure_path(path)
        if failed.exists():  # the same recipe and seed miss their target again: say so at once
            raise ConfigError(failed.read_text().strip())
        try:
            record = _train(policy, make_core, cfg)
        except ConfigError as err:
            with contextlib.suppress(OSError):  # the cache is optional
                atomic_write(failed, f"{err}\n")
            raise
        _save(policy, path, record)
    return policy


def _held(path: Path) -> contextlib.AbstractContextManager[object]:
    """The lock under which one process trains the base at ``path``; none (unguarded) where the
    cache folder cannot hold one: the cache is optional, and ``_save`` then says so."""
    try:
        return FileLock.wait_for(path.with_suffix(".lock"))
    except OSError:
        return contextlib.nullcontext()


def _train(policy: Policy, make_core: Callable[[int], Core], cfg: WarmStartConfig) -> dict:
    """Train ``policy`` on demonstrations (until its target bands hold, when it has some); the
    record of its training."""
    core = make_core(cfg.batch_size)
    if cfg.pretrain_steps and core.grain != "token":
        fail(cfg, "pretrain_steps", cfg.pretrain_steps, "language modelling needs the token grain")
    rng = np.random.default_rng(cfg.seed + 7919)
    world = core.world
    assert world is not None, "demonstrations are played in the simulated world"
    calibrator = Calibrator(policy, make_core, cfg) if cfg.calibrated else None
    start, cpu = time.perf_counter(), time.process_time()
    losses = imitate(
        policy,
        lambda: demonstrations(core, world.train_ids(rng, cfg.batch_size), cfg.error_rate, rng),
        cfg,
        pad=core.vocab.pad if core.grain == "token" else 0,
        check=calibrator,
    )
    return {
        "task": describe_task(core.config),
        "pretrain_steps": cfg.pretrain_steps,
        "imitation_steps": len(losses) - cfg.pretrain_steps,
        "seconds": round(time.perf_counter() - start, 3),
        "cpu_seconds": round(time.process_time() - cpu, 3),
        "threads": torch.get_num_threads(),
        "checks": calibrator.checks if calibrator else [],
    }


def failure_path(path: Path) -> Path:
    """The one-line error beside a base whose calibration missed its target (its workers and
    later runs raise it again rather than retrain it)."""
    return path.with_suffix(".failed")


def record_path(path: Path) -> Path:
    """The JSON record beside a cached base: steps taken, seconds, the calibration checks."""
    return path.with_suffix(".json")


def _load(policy: Policy, path: Path) -> bool:
    """Load the cached base at ``path`` into ``policy``; a file that cannot be read (garbage,
    truncated, another layout) only warns, and the base is rebuilt over it."""
    try:
        policy.load_state_dict(torch.load(path, weights_only=True))
    except Exception as err:  # any unreadable cache entry means the same: rebuild it
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        warnings.warn(f"base-policy cache {path} unreadable ({first}); rebuilding it", stacklevel=3)
        return False
    return True


def _save(policy: Policy, path: Path, record: dict) -> None:
    """Atomic write (parallel workers never read half a file), the record beside it; a cache that
    cannot be written (no space, no permission: OSError, or torch's RuntimeError) only warns."""
    try:
        with atomic_path(path) as tmp:
            torch.save(policy.state_dict(), tmp)
        atomic_write(record_path(path), json.dumps(record, indent=1) + "\n")
    except (OSError, RuntimeError) as err:
        warnings.warn(
            f"base-policy cache {path.parent} not written ({err}); the base is retrained next time",
            stacklevel=2,
        )
