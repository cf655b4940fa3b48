"""Saved policies: a population member's slice loads as a one-run policy with the same log-probs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tiny import tiny

from testbed.config import config_hash, with_overrides
from testbed.envs import World
from testbed.run import (
    RunConfig,
    build_trainer,
    core_factory,
    load_policy,
    member_state,
    save_policy,
    train_population,
)
from testbed.warmstart import demonstrations


def _population() -> list[RunConfig]:
    base = tiny(**{"warm_start.steps": "0", "trainer.n_updates": "1", "trainer.eval_episodes": "8"})
    return [with_overrides(base, {"seed": s}) for s in (0, 1)]


def test_a_members_slice_scores_as_the_population_scored_it(tmp_path) -> None:
    cfgs = _population()
    trainer = build_trainer(cfgs)
    with torch.no_grad():  # members apart, as training would move them
        for p in trainer.policy.parameters():
            p[1].add_(0.1 * torch.randn_like(p[1]))
    core = core_factory(cfgs[0], World(cfgs[0].task.world))(8)
    batch = demonstrations(core, np.arange(8), 0.25, np.random.default_rng(0))
    pair = batch.select(torch.cat([torch.arange(8), torch.arange(8)]))  # member-major: 8 rows each
    with torch.no_grad():
        population_logp, _ = trainer.policy.score(pair)
    for j, cfg in enumerate(cfgs):
        path = tmp_path / f"{j}.pt"
        save_policy(path, cfg, member_state(trainer.policy.state_dict(), j), {})
        loaded_cfg, policy = load_policy(path)
        assert config_hash(loaded_cfg) == config_hash(cfg)
        with torch.no_grad():
            logp, _ = policy.score(batch)
        torch.testing.assert_close(logp, population_logp[j * 8 : (j + 1) * 8])
    assert not torch.equal(population_logp[:8], population_logp[8:])  # the members did differ


def test_train_population_saves_trained_and_base_policies(tmp_path) -> None:
    more = {"policy.kind": "tabular", "trainer.n_updates": 3, "trainer.questions_per_batch": 16}
    cfgs = [with_overrides(c, more) for c in _population()]
    train_population(cfgs, runs_dir=tmp_path, save=True)
    trained: list[Any] = [load_policy(tmp_path / config_hash(c) / "policy.pt")[1] for c in cfgs]  # tabular
    bases: list[Any] = [load_policy(tmp_path / config_hash(c) / "policy.pt", base=True)[1] for c in cfgs]
    torch.testing.assert_close(bases[0].logits, bases[1].logits)  # one start for the population
    assert not torch.equal(trained[0].logits, bases[0].logits)  # and training moved each member
    assert not torch.equal(trained[0].logits, trained[1].logits)
