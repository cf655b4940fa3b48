"""The training loop: every objective end to end, learning at all, diagnostics, determinism,
config errors, and populations (many runs in one loop) against single runs."""

from __future__ import annotations

import copy
import math
from typing import cast

import pandas as pd
import pytest
import torch
from tiny import tiny

from testbed.advantages import group_advantages
from testbed.config import ConfigError, with_overrides
from testbed.diagnostics import detect_collapse
from testbed.envs import TokenSearchBatch
from testbed.metrics import documented
from testbed.objectives import get_objective, list_objectives
from testbed.run import RunConfig, build_trainer, flat_config, train
from testbed.trainer import TrainerConfig


@pytest.mark.parametrize("name", list_objectives())
def test_full_loop_smoke_for_every_objective(name: str) -> None:
    rows, summary = train(tiny(**{"objective.name": name, "objective.ref_kl_coef": "0.01"}))
    assert [r["update"] for r in rows] == [0, 1, 2]
    for key in ("train_reward", "ratio_p05_pos", "entropy", "grad_norm", "approx_kl", "zero_grad_frac_all"):
        assert key in rows[-1], key
    assert all(math.isfinite(r["loss"]) for r in rows[1:])
    assert summary["objective.name"] == name and 0.0 <= summary["final_em"] <= 1.0
    config_columns = set(flat_config(tiny()))
    undocumented = {
        k for r in rows for k in r if k not in config_columns and k != "run" and not documented(k)
    }
    assert not undocumented, f"add to testbed/metrics.py: {sorted(undocumented)}"


def test_metrics_doc_is_generated_from_the_code() -> None:
    from pathlib import Path

    from testbed.metrics import markdown

    path = Path(__file__).parent.parent / "docs" / "METRICS.md"
    assert path.read_text() == markdown(), "run: python -m testbed.metrics > docs/METRICS.md"


@pytest.mark.parametrize("policy", ["tabular", "transformer"])
def test_drift_knobs_run(policy: str) -> None:
    cfg = tiny(
        **{
            "policy.kind": policy,
            "trainer.staleness": "1",
            "trainer.old_log_probs": "rollout",
            "trainer.mismatch_std": "0.1",
            "trainer.epochs": "2",
            "trainer.entropy_coef": "0.01",
        }
    )
    rows, _ = train(cfg)
    assert rows[-1]["optimizer_steps"] == 2 * 2 * 2


def test_same_config_and_seed_same_numbers() -> None:
    cfg = tiny(**{"objective.name": "sapo"})
    a, _ = train(cfg)
    b, _ = train(cfg)
    drop = ["wall_time"]
    pd.testing.assert_frame_equal(pd.DataFrame(a).drop(columns=drop), pd.DataFrame(b).drop(columns=drop))
    c, _ = train(with_overrides(cfg, {"seed": "1"}))
    assert pd.DataFrame(c)["train_reward"].tolist() != pd.DataFrame(a)["train_reward"].tolist()


def test_train_pins_torch_threads_and_restores_the_callers() -> None:
    cfg = tiny()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, _ = train(cfg)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    b, _ = train(cfg)
    drop = ["wall_time"]
    pd.testing.assert_frame_equal(pd.DataFrame(a).drop(columns=drop), pd.DataFrame(b).drop(columns=drop))


def test_on_policy_grpo_learns_the_tabular_task() -> None:
    """K = 1 on-policy GRPO lifts held-out EM well above its start (a random table)."""
    cfg = with_overrides(
        RunConfig(),
        {
            "policy.kind": "tabular",
            "warm_start.steps": "0",
            "trainer.n_updates": "30",
            "trainer.minibatches": "1",
            "trainer.lr": "0.3",
            "trainer.eval_every": "30",
        },
    )
    _, summary = train(cfg)
    assert summary["warm_em"] < 0.15
    assert summary["final_em"] > summary["warm_em"] + 0.4


def test_diagnostics_agree_with_the_objective_on_a_fixed_batch() -> None:
    cfg = tiny(**{"trainer.minibatches": "1", "trainer.old_log_probs": "rollout", "objective.name": "sapo"})
    trainer = build_trainer([cfg])
    batch = trainer.collect()
    gen = torch.Generator().manual_seed(0)
    batch.behaviour_log_probs = (
        batch.behaviour_log_probs + 0.3 * torch.randn(batch.mask.shape, generator=gen) * batch.mask
    )
    batch.rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1])
    with torch.no_grad():
        logp, _ = trainer.policy.score(batch)
    adv = group_advantages(batch.rewards, batch.group_ids)
    _, expected = get_objective("sapo")(
        logp, batch.behaviour_log_probs, adv, batch.mask, config=cfg.objective
    )
    (row,) = trainer.update(batch)
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), key


def test_bad_trainer_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"TrainerConfig\.lr=-1.0"):
        TrainerConfig(lr=-1.0)
    with pytest.raises(ConfigError, match=r"TrainerConfig\.old_log_probs='engine'"):
        TrainerConfig(old_log_probs="engine")
    with pytest.raises(ConfigError, match=r"objective\.tua"):
        with_overrides(RunConfig(), {"objective.tua": "0.5"})
    with pytest.raises(ConfigError, match=r"ObjectiveConfig\.sapo_tau=0.0"):
        with_overrides(RunConfig(), {"objective.sapo_tau": "0"})
    for bad in ("-1", str(2**64), "1.5"):
        with pytest.raises(ConfigError, match="seed"):
            with_overrides(RunConfig(), {"seed": bad})
    with pytest.raises(ConfigError, match="eval_episodes"):
        with_overrides(RunConfig(), {"trainer.eval_episodes": "0"})


def test_collapse_detector() -> None:
    steps = list(range(8))
    assert detect_collapse([0.2, 0.4, 0.6, 0.5, 0.2, 0.1, 0.0, 0.0], steps) == (True, 4)
    # a dip that recovers is no collapse
    assert detect_collapse([0.2, 0.6, 0.1, 0.1, 0.5, 0.6, 0.6, 0.5], steps) == (False, None)
    # nothing to lose: peak under min_peak
    assert detect_collapse([0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], steps) == (False, None)
    # NaN (no evaluation that update) is skipped
    assert detect_collapse([0.2, float("nan"), 0.6, float("nan"), 0.1, float("nan"), 0.0, 0.0], steps) == (
        True,
        4,
    )


def test_stale_rollouts_come_from_the_policy_before_the_update() -> None:
    trainer = build_trainer([tiny(**{"trainer.staleness": "1", "trainer.minibatches": "1"})])
    first = trainer.collect()
    before = copy.deepcopy(trainer.policy)
    first.rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1])
    trainer.update(first)
    second = trainer.collect()
    with torch.no_grad():
        stale, _ = before.score(second)
        current, _ = trainer.policy.score(second)
    assert torch.allclose(stale, second.behaviour_log_probs, atol=1e-5)
    assert not torch.allclose(current, second.behaviour_log_probs, atol=1e-5)


# -- populations ---------------------------------------------------------------------------------
def _params(trainer, member: int) -> list[torch.Tensor]:
    return [p.detach()[member].clone() for p in trainer.policy.parameters()]


@pytest.mark.parametrize("policy", ["transformer", "tabular"])
def test_a_population_member_updates_as_its_single_run(policy: str) -> None:
    """Member k of a population takes the same first update (loss, gradients, metrics) as the
    single run with its seed and objective (within 1e-5)."""
    cfgs = [
        tiny(**{"policy.kind": policy, "seed": str(s), "objective.name": o})
        for s, o in ((0, "grpo"), (1, "sapo"), (2, "grpo"))
    ]
    pop = build_trainer(cfgs)
    single = build_trainer([cfgs[1]])
    rows_pop = pop.update(pop.collect())
    rows_one = single.update(single.collect())
    for key, value in rows_one[0].items():
        assert rows_pop[1][key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key
    for a, b in zip(_params(pop, 1), _params(single, 0), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_population_members_never_influence_each_other() -> None:
    """Changing member 1's seed or objective leaves member 0 bit-identical after two updates."""
    base = tiny(**{"trainer.minibatches": "2", "task.max_len": "64"})
    first = build_trainer([base, with_overrides(base, {"seed": "1"})])
    other = build_trainer([base, with_overrides(base, {"seed": "7", "objective.name": "sapo"})])
    lengths = []
    for trainer in (first, other):
        for _ in range(2):
            batch = trainer.collect()
            batch.rewards = (torch.arange(len(batch)) % 3 == 0).float()  # every group has a signal
            trainer.update(batch)
            lengths.append(batch.tokens.shape[1])
    assert isinstance(first.cores, TokenSearchBatch)
    assert lengths == [first.cores.capacity] * 4  # a population's batch shape never depends on a member
    for a, b in zip(_params(first, 0), _params(other, 0), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(_params(first, 1), _params(other, 1), strict=True))


def test_per_member_gradient_clipping_matches_torch() -> None:
    from testbed.trainer import clip_grad_norm_per_member

    gen = torch.Generator().manual_seed(0)
    params = [torch.zeros(3, 4, 5, requires_grad=True), torch.zeros(3, 7, requires_grad=True)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * torch.tensor([0.1, 5.0, 1.0]).view(
            3, *([1] * (p.dim() - 1))
        )
    grads = [cast(torch.Tensor, p.grad) for p in params]
    singles = [[g[k].clone().requires_grad_() for g in grads] for k in range(3)]
    norms = clip_grad_norm_per_member(params, 1.0, 3)
    for k in range(3):
        ref = [torch.zeros_like(g, requires_grad=True) for g in singles[k]]
        for r, g in zip(ref, singles[k], strict=True):
            r.grad = g.detach().clone()
        expected = torch.nn.utils.clip_grad_norm_(ref, 1.0)
        assert norms[k] == pytest.approx(float(expected), rel=1e-6)
        for r, p in zip(ref, params, strict=True):
            assert torch.allclose(cast(torch.Tensor, r.grad), cast(torch.Tensor, p.grad)[k], atol=1e-7)


def test_population_refuses_members_that_differ_in_a_shared_field() -> None:
    from testbed.run import split_populations

    a = tiny()
    b = with_overrides(a, {"policy.d_model": "8", "seed": "1"})
    with pytest.raises(ConfigError, match=r"policy\.d_model"):
        build_trainer([a, b])
    groups = split_populations([a, b, with_overrides(a, {"seed": "2"})], max_members=8)
    assert sorted(len(g) for g in groups) == [1, 2]


def test_populations_take_turns_across_base_policies() -> None:
    """Parallel workers start on different studies' bases, not all on the first one's."""
    from testbed.run import split_populations, study_key

    a = [with_overrides(tiny(), {"seed": str(s)}) for s in range(4)]
    b = [with_overrides(tiny(), {"seed": str(s), "task.world.n_entities": "10"}) for s in range(4)]
    groups = split_populations([*a, *b], max_members=2)
    assert [study_key(g[0]) for g in groups] == [study_key(a[0]), study_key(b[0])] * 2
    assert sorted(c.seed for g in groups for c in g) == sorted([*range(4), *range(4)])
    sapo = [with_overrides(c, {"objective.name": "sapo"}) for c in a]  # a second arm, same base
    pairs = split_populations([*a, *sapo], max_members=4)
    assert [sorted({c.seed for c in g}) for g in pairs] == [[0, 1], [2, 3]]  # every arm of its seeds
    # a control (another trainer, so another population) on the same base waits its turn behind b's
    control = [with_overrides(c, {"trainer.minibatches": "1"}) for c in a]
    turns = split_populations([*a, *control, *b], max_members=4)
    assert [study_key(g[0]) for g in turns] == [study_key(a[0]), study_key(b[0]), study_key(control[0])]
