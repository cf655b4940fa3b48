"""The scale ladder's parts on CPU: Qwen2 policies over the simulated task, their base models
(language-model pre-training, then imitation), single-run populations, the rollout mismatch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny import tiny

from testbed.config import ConfigError, added_field, config_hash
from testbed.envs import TokenSearchBatch, World
from testbed.policies import build_policy
from testbed.run import build_trainer, core_factory, split_populations, train
from testbed.studies.ladder import RUNGS, ladder, n_parameters, rollout_mismatch, rung_overrides
from testbed.warmstart import WarmStartConfig, whole_text

pytest.importorskip("transformers")


def qwen2(**extra: str):
    return tiny(**{"policy.kind": "qwen2", **extra})


def test_rung_shapes_have_the_sizes_they_are_named_for() -> None:
    sizes = {r: n_parameters(tiny(**{k: str(v) for k, v in rung_overrides(r).items()})) for r in RUNGS}
    named = {"0.1m": 0.1e6, "1m": 1e6, "10m": 10e6, "80m": 80e6}
    for rung, n in sizes.items():
        assert 0.75 * named[rung] < n < 1.35 * named[rung], (rung, n)


def test_unknown_rung_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"rung='2m'.*0\.1m"):
        rung_overrides("2m")


def test_qwen2_policy_samples_and_scores_the_simulated_task() -> None:
    cfg = qwen2()
    core = core_factory(cfg, World(cfg.task.world))(3)
    policy = build_policy(cfg.policy, core)
    state = policy.start(3)
    logits = policy.next_logits(torch.zeros(3, dtype=torch.long), state)
    assert isinstance(core, TokenSearchBatch) and logits.shape == (3, core.vocab.size)
    assert build_policy(cfg.policy, core, members=2).members == 2
    with pytest.raises(ValueError, match="no member dimension"):
        build_policy(dataclasses.replace(cfg.policy, engine="hf"), core, members=2)


def test_qwen2_runs_are_populations_and_the_hf_engines_populations_of_one() -> None:
    cfgs = [qwen2(seed=str(s)) for s in range(3)]
    assert [len(p) for p in split_populations(cfgs, 16)] == [3]
    hf = [qwen2(seed=str(s), **{"policy.engine": "hf"}) for s in range(3)]
    assert [len(p) for p in split_populations(hf, 16)] == [1, 1, 1]
    with pytest.raises(ConfigError, match="one run at a time"):
        build_trainer(hf)


def test_qwen2_run_is_deterministic() -> None:
    cfg = qwen2()
    a, b = train(cfg)[1], train(cfg)[1]
    assert a["final_em"] == b["final_em"] and a["warm_em"] == b["warm_em"]


def test_pretraining_marks_every_transcript_token_after_the_first() -> None:
    cfg = qwen2()
    trainer = build_trainer([cfg])
    batch = trainer.collect()
    assert isinstance(trainer.cores, TokenSearchBatch)
    pad = trainer.cores.vocab.pad
    lm = whole_text(batch, pad)
    assert lm.mask[:, 0].sum() == 0
    assert torch.equal(lm.mask[:, 1:].bool(), (batch.tokens[:, 1:] != pad) | batch.mask[:, 1:].bool())
    assert (lm.mask >= batch.mask).all()  # the agent's tokens are text too


def test_pretraining_changes_the_base_and_needs_the_token_grain() -> None:
    def weights(pretrain: str, steps: str) -> torch.Tensor:
        cfg = qwen2(**{"warm_start.pretrain_steps": pretrain, "warm_start.steps": steps})
        trainer = build_trainer([cfg])
        return torch.cat([p.detach().flatten() for p in trainer.policy.parameters()])

    # the same demonstrations and step count: only what the loss covers differs
    assert not torch.equal(weights("3", "2"), weights("0", "5"))
    with pytest.raises(ConfigError, match="pretrain_steps"):
        build_trainer([tiny(**{"policy.kind": "tabular", "warm_start.pretrain_steps": "2"})])


def test_added_fields_keep_stored_keys_at_their_default() -> None:
    @dataclasses.dataclass(frozen=True)
    class Old:
        a: int = 1

    @dataclasses.dataclass(frozen=True)
    class New:
        a: int = 1
        b: int = added_field(0, help="a field added after runs were stored")

    assert config_hash(New()) == config_hash(Old())
    assert config_hash(New(b=2)) != config_hash(Old())
    assert config_hash(WarmStartConfig(pretrain_steps=1)) != config_hash(WarmStartConfig())


def test_bf16_rollouts_mismatch_more_than_fp16() -> None:
    cfg = qwen2()
    bf16, fp16 = rollout_mismatch(cfg, "bfloat16"), rollout_mismatch(cfg, "float16")
    assert bf16["tokens"] > 0
    assert bf16["log_ratio_abs_mean"] > fp16["log_ratio_abs_mean"] > 0
    assert bf16["ratio_p01"] <= 1.0 <= bf16["ratio_p99"]


def test_ladder_experiment_pairs_grpo_and_sapo_per_rung() -> None:
    exp = ladder("10m", seeds=3, device="cpu")
    parts = exp.at_size(smoke=False)
    assert set(parts) == {"grpo", "sapo", "grpo_control"} and exp.reference == {"arm": "grpo"}
    cfgs = [c for spec in parts.values() for c in spec.configs()]
    assert {c.seed for c in cfgs} == {0, 1, 2}
    steps = {label: {c.trainer.minibatches for c in spec.configs()} for label, spec in parts.items()}
    assert steps == {"grpo": {6}, "sapo": {6}, "grpo_control": {1}}
    assert {(c.policy.kind, c.policy.d_model) for c in cfgs} == {("qwen2", 288)}


def test_the_qwen2_scenario_is_the_small_rung_at_lr_1e3() -> None:
    from testbed.studies.compare import compare_experiment
    from testbed.studies.scenarios import get_scenario

    # the same configs, so the scenario and the ladder share stored runs
    rung = ladder("0.1m", seeds=2, lr=1e-3).at_size(smoke=False)
    scenario = compare_experiment(("grpo", "sapo"), seeds=(0, 1), scenario="isdd_qwen2").at_size(smoke=False)
    for part, label in (("grpo", "grpo"), ("sapo", "sapo")):
        assert [config_hash(c) for c in rung[part].configs()] == [
            config_hash(c) for c in scenario[label].configs()
        ]
    control = get_scenario("isdd_qwen2").control
    assert control == {"trainer.minibatches": 1}


def test_ladder_script_runs_at_smoke_size(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "testbed.cli", "ladder", "--smoke", "--rungs", "0.1m", "--workers", "2"]
    cmd += ["--root", str(tmp_path), "--out", str(tmp_path / "out")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    table = pd.read_csv(tmp_path / "out" / "ladder.csv")
    # at smoke size GRPO and its control coincide (the smoke size sets the minibatches): one arm
    assert {"sapo", "grpo_control"} <= set(table["arm"]) and set(table["rung"]) == {"0.1m"}
    mismatch = pd.read_csv(tmp_path / "out" / "ladder_mismatch.csv")
    assert set(mismatch["dtype"]) == {"bfloat16", "float16"}
    assert (tmp_path / "out" / "ladder.png").exists() and (tmp_path / "out" / "ladder.md").exists()
