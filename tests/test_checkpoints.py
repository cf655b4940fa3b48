"""Saved policies: a population member's slice loads as a one-run policy with the same log-probs;
Qwen2 and Hugging Face runs save in the Hugging Face format (a member alone opens with
``from_pretrained`` in transformers, logits equal ours) and re-evaluate to their stored numbers; a
save that cannot be made is refused before any work."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from tiny import TINY, tiny

from testbed import cli
from testbed.config import config_hash, with_overrides
from testbed.envs import World
from testbed.run import (
    RunConfig,
    build_trainer,
    core_factory,
    evaluate_policy,
    load_policy,
    member_state,
    run_folder,
    save_policy,
    save_pretrained,
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


# -- the Hugging Face format (kinds qwen2 and hf) ----------------------------------------------------
# A tiny Qwen2 whose base answers some questions (EM about 0.15), so that sampling moves the evaluation.
QWEN2 = {
    "policy.kind": "qwen2",
    "task.max_len": "96",
    "warm_start.steps": "60",
    "warm_start.lr": "0.01",
    "trainer.eval_episodes": "64",
}
EVAL_COLUMNS = [f"eval_em_{mode}" for mode in ("greedy", "sampled", "closed_book")]


@pytest.fixture(scope="module")
def qwen2_runs(tmp_path_factory) -> tuple[Path, list[RunConfig], list[list[dict]]]:
    """A population of two tiny Qwen2 runs (K = 2), trained and saved: its store, configs and rows."""
    root = tmp_path_factory.mktemp("qwen2")
    cfgs = [tiny(**QWEN2, seed=str(s)) for s in (0, 1)]
    results = train_population(cfgs, cache_dir=root / "cache", runs_dir=root, save=True)
    return root, cfgs, [rows for rows, _ in results]


@torch.no_grad()
def test_a_qwen2_member_saved_opens_in_transformers_with_our_logits(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    cfgs = [tiny(**{**QWEN2, "warm_start.steps": "0"}, seed=str(s)) for s in (0, 1)]
    trainer = build_trainer(cfgs, cache_dir=None)
    policy: Any = trainer.policy
    for p in policy.parameters():  # members apart, as training would move them
        p[1].add_(0.1 * torch.randn_like(p[1]))
    x = torch.randint(0, policy.shape.vocab_size, (2 * 3, 30), generator=torch.Generator().manual_seed(0))
    ours = policy(x)  # member-major: rows 3k .. 3k + 2 are member k's
    for k, cfg in enumerate(cfgs):
        save_pretrained(tmp_path / str(k), cfg, policy, k)
        model = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / str(k)).eval()
        rows = slice(3 * k, 3 * k + 3)
        assert (model(input_ids=x[rows]).logits - ours[rows]).abs().max() < 1e-5, k
        loaded_cfg, loaded = load_policy(tmp_path / str(k))
        assert config_hash(loaded_cfg) == config_hash(cfg)
        assert torch.equal(cast(Any, loaded)(x[rows]), ours[rows])
    assert not torch.allclose(ours[:3], ours[3:])  # the members did differ


def _opens_and_re_evaluates(folder: Path, cfg: RunConfig, rows: list[dict]) -> dict[str, torch.Tensor]:
    """Each Hugging Face directory of a saved Qwen2 run opens in transformers, and ``load_policy``
    rebuilds from it a policy that evaluates to the run's stored numbers; returns their embeddings."""
    transformers = pytest.importorskip("transformers")
    embeddings = {}
    for name, row in (("policy", rows[-1]), ("base", rows[0])):
        files = {p.name for p in (folder / name).iterdir()}
        assert {"config.json", "model.safetensors", "testbed_run.json"} <= files
        model = transformers.AutoModelForCausalLM.from_pretrained(folder / name)
        assert type(model).__name__ == "Qwen2ForCausalLM"
        embeddings[name] = model.state_dict()["model.embed_tokens.weight"]
        loaded_cfg, policy = load_policy(folder, base=name == "base")
        assert config_hash(loaded_cfg) == config_hash(cfg)
        again = evaluate_policy(loaded_cfg, policy, update=int(row["update"]))
        assert [again[c] for c in EVAL_COLUMNS] == [row[c] for c in EVAL_COLUMNS], (cfg.seed, name)
    return embeddings


def test_a_saved_qwen2_population_opens_in_transformers_and_re_evaluates_to_its_numbers(qwen2_runs) -> None:
    root, cfgs, rows = qwen2_runs
    saved = [_opens_and_re_evaluates(run_folder(root, c), c, r) for c, r in zip(cfgs, rows, strict=True)]
    assert torch.equal(saved[0]["base"], saved[1]["base"])  # one start for the population
    assert not torch.equal(saved[0]["policy"], saved[0]["base"])  # and training moved each member
    assert not torch.equal(saved[0]["policy"], saved[1]["policy"])
    assert 0 < rows[0][-1]["eval_em_sampled"] < 1  # a number sampling could have moved


def test_a_qwen2_run_on_the_hf_engine_saves_as_the_testbeds_engine_does(tmp_path) -> None:
    pytest.importorskip("transformers")
    cfg = tiny(**QWEN2, **{"policy.engine": "hf"})
    rows, _ = train_population([cfg], cache_dir=tmp_path / "cache", runs_dir=tmp_path, save=True)[0]
    saved = _opens_and_re_evaluates(run_folder(tmp_path, cfg), cfg, rows)
    assert not torch.equal(saved["policy"], saved["base"])


@torch.no_grad()
@pytest.mark.parametrize("lora", ["false", "true"])
def test_an_hf_policy_saves_with_save_pretrained_and_loads_back(tmp_path, lora: str) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = tiny(**{"policy.kind": "hf", "task.world.kind": "fixed", "policy.lora": lora})
    policy: Any = build_trainer([cfg], cache_dir=None).policy
    for p in policy.model.parameters():  # off its initialisation (LoRA's B included), as training moves it
        p.add_(0.01 * torch.randn_like(p))
    save_pretrained(tmp_path / "m", cfg, policy)
    vocab = policy.model.get_input_embeddings().num_embeddings
    x = torch.randint(0, vocab, (3, 20), generator=torch.Generator().manual_seed(0))
    ours = policy.model(input_ids=x).logits
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()  # LoRA merged in
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert (model(input_ids=x).logits - ours).abs().max() < 1e-5
    loaded_cfg, loaded = load_policy(tmp_path / "m")
    assert config_hash(loaded_cfg) == config_hash(cfg)
    assert torch.equal(cast(Any, loaded).model(input_ids=x).logits, model(input_ids=x).logits)
    with pytest.raises(
        ValueError, match=r"no tokenizer beside the model; evaluate a policy that load_policy"
    ):
        evaluate_policy(cfg, policy)  # the text task's evaluation needs the run's own tokenizer


def test_an_hf_run_saves_model_and_tokenizer_and_re_evaluates_to_its_stored_numbers(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    from testbed.policies.hf_run import hf_parts

    cfg = tiny(**{"policy.kind": "hf", "task.world.kind": "fixed", "trainer.n_updates": "1"})
    rows, _ = train_population([cfg], cache_dir=None, runs_dir=tmp_path, save=True)[0]
    folder = run_folder(tmp_path, cfg)
    start = hf_parts(cfg)[0].model.state_dict()  # the tiny model the run built (seeded)
    for name in ("base", "policy"):
        model = transformers.AutoModelForCausalLM.from_pretrained(folder / name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder / name)
        assert tokenizer.convert_tokens_to_ids("<search>") != tokenizer.unk_token_id  # the task's tags
        assert all(
            torch.equal(v, start[k]) for k, v in model.state_dict().items()
        )  # each episode earned 0: nothing moved it
    loaded_cfg, policy = load_policy(folder)
    assert config_hash(loaded_cfg) == config_hash(cfg)
    again = evaluate_policy(loaded_cfg, policy)
    assert [again[c] for c in EVAL_COLUMNS] == [rows[-1][c] for c in EVAL_COLUMNS]


def test_a_save_that_cannot_be_made_is_refused_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "safetensors", None)  # the Hugging Face format's package, missing
    argv = ["train", "--out", str(tmp_path), "--save-policy", "--set", *(f"{k}={v}" for k, v in TINY.items())]
    with pytest.raises(SystemExit) as refused:
        cli.main([*argv, "policy.kind=qwen2"])
    assert refused.value.code == 2
    assert capsys.readouterr().err == (
        "sapo-testbed: config error: save: policy.kind='qwen2' saves in the Hugging Face format, which "
        "needs the safetensors package (pip install 'sapo-testbed[hf]')\n"
    )
    assert not [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]  # nothing ran


def test_a_folder_without_a_policy_or_with_broken_weights_is_named_in_one_line(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"holds no saved policy \(policy\.pt, or policy/ and base/"):
        load_policy(tmp_path)
    cfg = tiny(**{**QWEN2, "warm_start.steps": "0"})
    save_pretrained(tmp_path / "policy", cfg, build_trainer([cfg], cache_dir=None).policy)
    with pytest.raises(
        ValueError, match=r"policy: one policy's directory; for its base, load the run's base/$"
    ):
        load_policy(tmp_path / "policy", base=True)
    weights = tmp_path / "policy" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"policy: cannot read its weights \(\w+\)$"):
        load_policy(tmp_path)
