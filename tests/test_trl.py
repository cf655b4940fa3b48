"""The TRL plug-in against TRL 1.16's own ``GRPOTrainer._compute_loss``, on the same model and inputs."""

from __future__ import annotations

import math
import warnings
from typing import Any

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

    settings: dict[str, Any] = dict(
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


def _inputs(trainer, seed: int = 0, truncated_row: bool = False) -> dict:
    """Four off-policy completions with a ragged mask, advantages of both signs and zero; one
    token 3 nats below the reference; ``truncated_row``: row 2 masked whole, as
    ``mask_truncated_completions`` leaves a truncated completion."""
    g = torch.Generator().manual_seed(seed)
    vocab = trainer.model.config.vocab_size
    prompt = torch.randint(0, vocab, (4, 5), generator=g)
    completion = torch.randint(0, vocab, (4, 6), generator=g)
    cmask = torch.ones(4, 6, dtype=torch.long)
    cmask[1, 4:] = 0
    cmask[3, 2:] = 0
    if truncated_row:
        cmask[2] = 0
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
    inputs["ref_per_token_logps"][0, 1] = logps[0, 1] + 3.0  # past k3's usual clamp at 10
    return inputs


STATE = ("entropy_coef", "_last_world_entropy", "_entropy_window_stats")


def _ours_and_trls(trainer, inputs):
    """(loss, grads, logged metrics, entropy state) from our override and from TRL's own
    _compute_loss, same model, same inputs, same starting state."""
    start = {k: getattr(trainer, k) for k in STATE}
    out = []
    for fn in (trainer._compute_loss, lambda m, i: GRPOTrainer._compute_loss(trainer, m, i)):
        for k, v in start.items():
            setattr(trainer, k, v)
        trainer._metrics["train"].clear()
        trainer.model.zero_grad()
        loss = fn(trainer.model, inputs)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
        logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if not k.startswith("testbed/")}
        out.append((float(loss.detach()), grads.clone(), logged, {k: getattr(trainer, k) for k in STATE}))
    return out[0], out[1]


def _assert_same(ours, theirs) -> None:
    assert ours[0] == pytest.approx(theirs[0], rel=1e-5, abs=1e-7)
    assert torch.allclose(ours[1], theirs[1], rtol=1e-4, atol=1e-6)
    assert set(ours[2]) == set(theirs[2])  # TRL's log keys, no more, no fewer
    for key, value in theirs[2].items():
        assert ours[2][key] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), key
    assert ours[3]["entropy_coef"] == theirs[3]["entropy_coef"]


GSPO = dict(loss_type="grpo", importance_sampling_level="sequence", epsilon=3e-4, epsilon_high=4e-4)
# (objective, GRPOConfig settings): every GRPOConfig field the loss reads, varied.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("testbed_grpo", dict(loss_type="dapo")),
    ("testbed_grpo", dict(loss_type="dapo", epsilon=0.05)),
    ("testbed_grpo", dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.5)),
    ("testbed_grpo", dict(loss_type="dapo", steps_per_generation=2)),
    ("testbed_grpo", dict(loss_type="grpo")),
    ("testbed_grpo", dict(loss_type="bnpo")),
    ("testbed_grpo", dict(loss_type="dr_grpo")),
    ("testbed_grpo", dict(loss_type="dr_grpo", max_completion_length=16)),
    ("testbed_grpo", dict(loss_type="luspo")),
    ("testbed_grpo", dict(loss_type="dapo", beta=0.1)),
    ("testbed_grpo", dict(loss_type="grpo", beta=0.1, use_bias_correction_kl=False)),
    ("testbed_grpo", dict(loss_type="dapo", entropy_coef=0.05)),
    ("testbed_grpo", dict(loss_type="grpo", use_adaptive_entropy=True, entropy_target=10.0)),
    ("testbed_grpo", dict(loss_type="bnpo", use_adaptive_entropy=True, entropy_target=0.1)),
    ("testbed_cispo", dict(loss_type="cispo", epsilon_high=1.5)),
    ("testbed_cispo", dict(loss_type="cispo", epsilon_high=1.5, steps_per_generation=2)),
    ("testbed_soft_adaptive_gate", dict(loss_type="sapo", sapo_temperature_neg=2.0)),
    ("testbed_soft_adaptive_gate", dict(loss_type="sapo", sapo_temperature_pos=0.5, entropy_coef=0.1)),
    ("testbed_two_sided_clip", dict(loss_type="dapo", delta=1.5)),
    ("testbed_opsm", dict(loss_type="dapo", off_policy_mask_threshold=0.05)),
    ("testbed_gspo_token", GSPO),
    ("testbed_gspo_token", dict(GSPO, beta=0.1)),
]


@pytest.mark.parametrize(("objective", "settings"), CASES, ids=[f"{o}-{s}" for o, s in CASES])
def test_trl_settings_change_our_loss_exactly_as_trls(tokenizer, tmp_path, objective, settings) -> None:
    """Loss, gradients, every TRL log key and the adaptive entropy state, on rows with a masked
    (truncated) completion too."""
    trainer = _trl_trainer(tokenizer, tmp_path, objective=objective, **settings)
    trainer.model.train()
    for seed, truncated in ((0, False), (1, False), (2, True)):
        _assert_same(*_ours_and_trls(trainer, _inputs(trainer, seed, truncated)))


def _vllm_trainer(tokenizer, tmp_path, objective: str, **settings):
    """vLLM is not installed here: build without it, then switch its correction on as TRL would."""
    trainer = _trl_trainer(tokenizer, tmp_path, objective="testbed_grpo", loss_type="dapo")
    trainer.args.use_vllm = trainer.use_vllm = True
    trainer.args.vllm_importance_sampling_correction = trainer.vllm_importance_sampling_correction = True
    for key, value in settings.items():
        setattr(trainer.args, key, value)
        setattr(trainer, key, value)
    trainer.objective_config = plugin.trl_objective_config(plugin.registry_name(objective), trainer.args)
    trainer.objective = get_objective(trainer.objective_config.name)
    return trainer


def _trl_sampling_weights(old, sampling, mask, mode, low, high):
    """TRL's importance_sampling_ratio, as _generate_and_score_completions computes it."""
    diff = (old - sampling) * mask
    ratio = torch.exp(diff.sum(-1, keepdim=True) if mode.startswith("sequence") else diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=low, max=high)
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


@pytest.mark.parametrize(
    ("objective", "mode", "low", "high"),
    [
        ("testbed_tis", "token_truncate", None, 2.0),
        ("testbed_tis", "sequence_truncate", None, 3.0),
        ("testbed_mis", "token_mask", 0.5, 5.0),
        ("testbed_mis", "sequence_mask", None, 3.0),  # TRL's default
    ],
)
def test_trl_vllm_importance_sampling_reaches_tis_and_mis(tokenizer, tmp_path, objective, mode, low, high):
    settings = dict(
        vllm_importance_sampling_mode=mode,
        vllm_importance_sampling_clip_min=low,
        vllm_importance_sampling_clip_max=high,
    )
    trainer = _vllm_trainer(tokenizer, tmp_path, objective, **settings)
    trainer.model.train()
    for seed in range(2):
        inputs = _inputs(trainer, seed)
        g = torch.Generator().manual_seed(seed + 10)
        old = inputs["old_per_token_logps"]
        inputs["sampling_per_token_logps"] = old + 0.8 * torch.randn(old.shape, generator=g)
        mask = inputs["completion_mask"].float()
        inputs["importance_sampling_ratio"] = _trl_sampling_weights(
            old, inputs["sampling_per_token_logps"], mask, mode, low, high
        )
        ours, theirs = _ours_and_trls(trainer, inputs)
        assert ours[0] == pytest.approx(theirs[0], rel=1e-5, abs=1e-7)
        assert torch.allclose(ours[1], theirs[1], rtol=1e-4, atol=1e-6)


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


def _fields_the_loss_reads() -> set[str]:
    """GRPOConfig fields TRL's _compute_loss reads: ``self.args.<f>``, or ``self.<a>`` where
    GRPOTrainer.__init__ set ``self.<a>`` from ``args.<f>``; derived from TRL's source."""
    import ast
    import inspect
    import textwrap

    def tree(fn):
        return ast.parse(textwrap.dedent(inspect.getsource(fn)))

    def args_fields(node, name: str) -> set[str]:
        return {
            n.attr
            for n in ast.walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == name
        }

    alias: dict[str, set[str]] = {}
    for node in ast.walk(tree(GRPOTrainer.__init__)):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and args_fields(target, "self") == {target.attr}:
                    alias.setdefault(target.attr, set()).update(args_fields(node.value, "args"))
    fields: set[str] = set()
    for node in ast.walk(tree(GRPOTrainer._compute_loss)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            fields |= alias.get(node.attr, set())
        if isinstance(node, ast.Attribute) and args_fields(node.value, "self") == {"args"}:
            fields.add(node.attr)
    return fields


# Fields that shape the loss's inputs where TRL builds them (_generate_and_score_completions).
INPUT_FIELDS = {
    "mask_truncated_completions",  # masked rows: the truncated_row inputs of the CASES
    "vllm_importance_sampling_mode",
    "vllm_importance_sampling_clip_min",
    "vllm_importance_sampling_clip_max",
}
# Honoured elsewhere than CASES: the vLLM test, and the fields every case sets.
HONOURED_ELSEWHERE = INPUT_FIELDS | {"use_vllm", "vllm_importance_sampling_correction", "loss_type"}
# Refused at construction: (GRPOConfig settings, error), see test_trl_subclass_refuses_...
REFUSED: dict[str, dict[str, Any]] = {
    "top_entropy_quantile": dict(top_entropy_quantile=0.5),
    "vespo_k_pos": dict(loss_type="vespo"),  # read only by loss_type="vespo", which is refused
    "vespo_k_neg": dict(loss_type="vespo"),
    "vespo_lambda_pos": dict(loss_type="vespo"),
    "vespo_lambda_neg": dict(loss_type="vespo"),
}
# Read only through another field that a case sets: (the field, what sets it).
THROUGH = {
    "entropy_target": "use_adaptive_entropy",
    "entropy_coef_delta": "use_adaptive_entropy",
    "entropy_coef_min": "use_adaptive_entropy",
    "entropy_coef_max": "use_adaptive_entropy",
}


def test_every_grpoconfig_field_of_the_loss_is_honoured_or_refused() -> None:
    """A field TRL's loss starts reading (a new TRL) fails here until it is honoured or refused."""
    read = _fields_the_loss_reads() | INPUT_FIELDS
    assert {"epsilon", "beta", "loss_type", "steps_per_generation", "entropy_coef"} <= read  # parsing works
    varied = {key for _, settings in CASES for key in settings}
    covered = varied | HONOURED_ELSEWHERE | set(REFUSED) | {f for f, via in THROUGH.items() if via in varied}
    assert sorted(read - covered) == []


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_trl_refused_fields_are_refused(tokenizer, tmp_path, field) -> None:
    with pytest.raises(ConfigError, match=r"GRPOConfig\.(top_entropy_quantile|loss_type)"):
        _trl_trainer(tokenizer, tmp_path, **REFUSED[field])


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (dict(), r"vllm_importance_sampling_correction=True: testbed_tis needs the sampler's log-probs"),
        (dict(use_vllm=True, vllm_importance_sampling_mode="token_mask"), r"mode='token_mask'.*testbed_tis"),
        (dict(use_vllm=True, vllm_importance_sampling_clip_min=0.5), r"clip_min=0\.5.*from above only"),
    ],
)
def test_trl_tis_refused_where_it_cannot_act(settings, match) -> None:
    from trl import GRPOConfig

    args = GRPOConfig(output_dir="unused", use_cpu=True, report_to="none")
    args.vllm_importance_sampling_mode = "token_truncate"
    for key, value in settings.items():
        setattr(args, key, value)
    with pytest.raises(ConfigError, match=match):
        plugin.trl_objective_config("tis", args)
