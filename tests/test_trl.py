"""The TRL plug-in against TRL 1.16's own ``GRPOTrainer._compute_loss``, on the same model and inputs."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("trl")

from trl import GRPOTrainer

from testbed.config import ConfigError
from testbed.envs import World, WorldConfig
from testbed.envs.text.qa_data import TextQA
from testbed.envs.text.task import corpus_words
from testbed.integrations import trl as plugin
from testbed.objectives import ObjectiveConfig, get_objective
from testbed.policies.hf_tiny import qwen2_model, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus_words(TextQA.from_world(World(WorldConfig()))))


def _trl_trainer(tokenizer, tmp_path, objective="testbed_sapo", objective_kwargs=None, **kwargs):
    from datasets import Dataset
    from trl import GRPOConfig

    settings = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        num_iterations=2,
        learning_rate=1e-2,
        gradient_checkpointing=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    beta = kwargs.pop("beta", 0.0)
    settings.update(kwargs)
    data = Dataset.from_dict({"prompt": ["question : r0 of r1 of e3 ?", "question : r2 of r0 of e5 ?"] * 4})

    def reward(completions, **_):
        return [float(len(c.split()) % 3) for c in completions]  # varies within groups: non-zero advantages

    torch.manual_seed(0)
    trainer = plugin.TestbedGRPOTrainer(
        model=qwen2_model(len(tokenizer)),
        reward_funcs=reward,
        args=GRPOConfig(**settings),
        train_dataset=data,
        processing_class=tokenizer,
        objective=objective,
        objective_kwargs=objective_kwargs,
    )
    trainer.current_gradient_accumulation_steps = 2  # set by TRL's training loop; read by both losses
    if beta:
        # beta > 0 at construction makes TRL load a reference model by hub id; both losses only read
        # beta and the inputs' ref log-probs, so set it afterwards, as construction would have.
        trainer.args.beta = trainer.beta = beta
        trainer.objective_config = plugin.trl_objective_config(
            trainer.objective_config.name, trainer.args, objective_kwargs
        )
    return trainer


def _inputs(trainer, seed: int = 0) -> dict:
    """Four off-policy completions with a ragged mask, advantages of both signs and zero."""
    g = torch.Generator().manual_seed(seed)
    vocab = trainer.model.config.vocab_size
    prompt = torch.randint(0, vocab, (4, 5), generator=g)
    completion = torch.randint(0, vocab, (4, 6), generator=g)
    cmask = torch.ones(4, 6, dtype=torch.long)
    cmask[1, 4:] = 0
    cmask[3, 2:] = 0
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([prompt, completion], 1),
            torch.cat([torch.ones_like(prompt), cmask], 1),
            6,
        )[0]
    inputs = {
        "prompt_ids": prompt,
        "prompt_mask": torch.ones_like(prompt),
        "completion_ids": completion,
        "completion_mask": cmask,
        "advantages": torch.tensor([1.0, -0.7, 0.0, 0.4]),
        "old_per_token_logps": logps + 0.6 * torch.randn(logps.shape, generator=g),
        "ref_per_token_logps": logps + 0.3 * torch.randn(logps.shape, generator=g),
        "num_items_in_batch": cmask.sum() * 2.0,  # the window holds twice this micro-batch's tokens
    }
    return inputs


def _ours_and_trls(trainer, inputs) -> tuple[tuple[float, float], tuple[float, float]]:
    """(loss, grad norm) from our override and from TRL's own _compute_loss, same model, same inputs."""
    out = []
    for fn in (trainer._compute_loss, lambda m, i: GRPOTrainer._compute_loss(trainer, m, i)):
        trainer.model.zero_grad()
        loss = fn(trainer.model, inputs)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
        out.append((float(loss), grads.clone()))
    return out[0], out[1]


# (objective, GRPOConfig settings): each of epsilon, epsilon_high, loss_type and beta varied.
CASES = [
    ("testbed_grpo", dict(loss_type="dapo")),
    ("testbed_grpo", dict(loss_type="dapo", epsilon=0.05)),
    ("testbed_grpo", dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.5)),
    ("testbed_grpo", dict(loss_type="grpo")),
    ("testbed_grpo", dict(loss_type="bnpo")),
    ("testbed_grpo", dict(loss_type="dr_grpo")),
    ("testbed_grpo", dict(loss_type="luspo")),
    ("testbed_grpo", dict(loss_type="dapo", beta=0.1)),
    ("testbed_grpo", dict(loss_type="grpo", beta=0.1, use_bias_correction_kl=False)),
    ("testbed_cispo", dict(loss_type="cispo", epsilon_high=1.5)),
    ("testbed_soft_adaptive_gate", dict(loss_type="sapo", sapo_temperature_neg=2.0)),
    ("testbed_two_sided_clip", dict(loss_type="dapo", delta=1.5)),
    (
        "testbed_gspo_token",
        dict(loss_type="grpo", importance_sampling_level="sequence", epsilon=3e-4, epsilon_high=4e-4),
    ),
]


@pytest.mark.parametrize(("objective", "settings"), CASES, ids=[f"{o}-{s}" for o, s in CASES])
def test_trl_settings_change_our_loss_exactly_as_trls(tokenizer, tmp_path, objective, settings) -> None:
    trainer = _trl_trainer(tokenizer, tmp_path, objective=objective, **settings)
    trainer.model.train()
    for seed in range(2):
        (ours, g_ours), (theirs, g_theirs) = _ours_and_trls(trainer, _inputs(trainer, seed))
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-7)
        assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-6)


def test_trl_metrics_keys_as_trl(tokenizer, tmp_path) -> None:
    trainer = _trl_trainer(tokenizer, tmp_path, objective="testbed_grpo", loss_type="dapo", beta=0.1)
    trainer.model.train()
    trainer._compute_loss(trainer.model, _inputs(trainer))
    ours = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    for key in ("entropy", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
        assert key in ours, key
    trainer._metrics["train"].clear()
    GRPOTrainer._compute_loss(trainer, trainer.model, _inputs(trainer))
    theirs = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    for key in ("entropy", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), key


def test_trl_subclass_trains_with_our_objective(tokenizer, tmp_path) -> None:
    trainer = _trl_trainer(tokenizer, tmp_path, objective_kwargs={"sapo_tau": 0.9})
    assert trainer.objective_config.sapo_tau == 0.9 and trainer.objective_config.agg_mode == "token-mean"
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"testbed/sapo_penalty", "testbed/ratio_p05_pos", "entropy", "clip_ratio/region_mean"} <= logged


def test_trl_sapo_on_policy_warns(tokenizer, tmp_path) -> None:
    with pytest.warns(UserWarning, match="plain GRPO"):
        _trl_trainer(tokenizer, tmp_path, num_iterations=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _trl_trainer(tokenizer, tmp_path, objective="testbed_grpo", num_iterations=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(use_liger_kernel=True), "use_liger_kernel"),
        (dict(loss_type="vespo"), r"GRPOConfig\.loss_type='vespo'"),
        (dict(loss_type="cispo"), r"GRPOConfig\.loss_type='cispo'.*testbed_cispo"),
        (dict(delta=2.0), r"GRPOConfig\.delta=2\.0"),
        (dict(top_entropy_quantile=0.5), r"GRPOConfig\.top_entropy_quantile=0\.5"),
        (dict(objective_kwargs={"eps_low": 0.1}), r"objective_kwargs\.eps_low: set by GRPOConfig"),
        (dict(objective_kwargs={"sapo_tau": -1.0}), r"ObjectiveConfig\.sapo_tau=-1\.0"),
    ],
)
def test_trl_subclass_refuses_what_it_cannot_honour(tokenizer, tmp_path, kwargs, match) -> None:
    with pytest.raises((ValueError, ConfigError), match=match):
        _trl_trainer(tokenizer, tmp_path, **kwargs)
    with pytest.raises(ValueError, match="testbed_sapo"):
        plugin.registry_name("sapo")


def test_trl_override_is_our_function_on_the_same_tensors(tokenizer, tmp_path) -> None:
    trainer = _trl_trainer(tokenizer, tmp_path, loss_type="bnpo")
    trainer.model.train()
    inputs = _inputs(trainer)
    loss = trainer._compute_loss(trainer.model, inputs)
    logps = trainer._get_per_token_logps_and_entropies(
        trainer.model,
        torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
        torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
        6,
    )[0]
    cfg = ObjectiveConfig(name="sapo", loss_agg_mode="token-mean")
    mask = inputs["completion_mask"].float()
    expected, metrics = get_objective("sapo")(
        logps, inputs["old_per_token_logps"], inputs["advantages"], mask, None, cfg
    )
    assert float(loss) == pytest.approx(
        float(expected) / trainer.current_gradient_accumulation_steps, rel=1e-5
    )
    assert metrics["sapo_penalty"] > 0  # off-policy inputs: the penalty acts
