"""The testbed's Qwen2 against transformers' Qwen2ForCausalLM (same weights, same logits), its
Hugging Face format, KV-cache decoding, trimmed scoring, populations (a member is its single run;
members never influence each other), the lean passes and the device setting."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny

from testbed.batch import Batch
from testbed.config import ConfigError, config_hash, with_overrides
from testbed.policies import PolicyConfig, Qwen2Policy, resolve_device
from testbed.policies.qwen2 import qwen2_shape
from testbed.run import RunConfig, build_trainer

transformers = pytest.importorskip("transformers")

VOCAB, D, LAYERS, HEADS, MAX_LEN = 40, 32, 2, 4, 48


def hf_model(seed: int):
    """A random Qwen2ForCausalLM of the test shape, its biases and norms moved off their init."""
    from testbed.policies.hf_tiny import qwen2_model

    model = qwen2_model(VOCAB, D, LAYERS, HEADS, MAX_LEN, seed=seed, mlp_ratio=4).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name or "norm" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def ours(members: int = 1, **kwargs) -> Qwen2Policy:
    return Qwen2Policy(qwen2_shape(VOCAB, D, LAYERS, HEADS, MAX_LEN), members, **kwargs)


def tokens(rows: int, length: int = 30, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_logits_equal_transformers_for_one_member_and_each_of_four() -> None:
    single = ours()
    single.load_hf_state_dict(hf_model(0).state_dict())
    x = tokens(3)
    assert torch.allclose(single(x), hf_model(0)(input_ids=x).logits, atol=1e-5)
    pop = ours(members=4)
    models = [hf_model(s) for s in range(4)]
    for k, model in enumerate(models):
        pop.load_hf_state_dict(model.state_dict(), member=k)
    x = tokens(4 * 3)  # member-major: rows 3k .. 3k + 2 are member k's
    logits = pop(x)
    for k, model in enumerate(models):
        rows = slice(3 * k, 3 * k + 3)
        assert (logits[rows] - model(input_ids=x[rows]).logits).abs().max() < 1e-5, k


@torch.no_grad()
def test_a_member_saved_in_the_hf_format_opens_in_transformers_and_loads_back(tmp_path) -> None:
    torch.manual_seed(0)
    pop = ours(members=3)
    pop.save_pretrained(tmp_path / "m1", member=1)
    model = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "m1").eval()
    x = tokens(6)
    assert torch.allclose(model(input_ids=x[2:4]).logits, pop(x)[2:4], atol=1e-5)
    back = Qwen2Policy.from_pretrained(tmp_path / "m1")
    assert back.shape == pop.shape
    for a, b in zip(back.parameters(), pop.parameters(), strict=True):
        assert torch.equal(a[0], b[1])


@torch.no_grad()
def test_kv_cache_decoding_equals_the_full_pass() -> None:
    torch.manual_seed(1)
    policy = ours(members=2, std=0.3)  # weights large enough for attention to prefer some positions
    x = tokens(4, length=20)
    full = policy(x)
    state = policy.start(4, max_len=20)
    steps = torch.stack([policy.next_logits(x[:, t], state) for t in range(20)], 1)
    assert (steps - full).abs().max() < 1e-5


def written_batch(members: int, rows: int, ends: list[int], width: int = MAX_LEN) -> Batch:
    """Rows member-major; member k's rows write positions 3 .. ends[k] - 1 (the rest is padding)."""
    b = members * rows
    mask = torch.zeros(b, width)
    for k, end in enumerate(ends):
        mask[k * rows : (k + 1) * rows, 3:end] = 1.0
    mask[::2, -1] = 0.0
    zeros = torch.zeros(b)
    return Batch(
        tokens(b, width), mask, torch.zeros(b, width), zeros, zeros.long(), zeros, torch.zeros(b, width)
    )


def test_scoring_is_trimmed_to_each_members_longest_episode_and_equals_a_full_pass() -> None:
    torch.manual_seed(2)
    policy = ours(members=2)
    batch = written_batch(2, 3, [12, 30])
    logp, entropy = policy.score(batch)
    with torch.no_grad():
        full = torch.log_softmax(policy(batch.tokens[:, :-1]), -1).gather(-1, batch.tokens[:, 1:, None])[
            ..., 0
        ]
    assert torch.allclose(logp[:, 1:], full * batch.mask[:, 1:], atol=1e-5)
    assert (logp[batch.mask == 0] == 0).all() and (entropy[batch.mask == 0] == 0).all()
    together = ours(members=2, member_passes="together")
    together.load_state_dict(policy.state_dict())
    assert torch.allclose(together.score(batch)[0], logp, atol=1e-5)
    # each member's pass has its own width: a member alone scores exactly as in the population
    alone = ours()
    alone.load_state_dict({n: v[1:2] for n, v in policy.state_dict().items()})
    assert torch.equal(alone.score(batch.select(torch.arange(3, 6)))[0], logp[3:])


def qwen2(**extra: str) -> RunConfig:
    return tiny(**{"policy.kind": "qwen2", **extra})


def _params(trainer, member: int) -> list[torch.Tensor]:
    return [p.detach()[member].clone() for p in trainer.policy.parameters()]


def test_a_qwen2_member_updates_as_its_single_run() -> None:
    cfgs = [
        qwen2(**{"seed": str(s), "objective.name": o}) for s, o in ((0, "grpo"), (1, "sapo"), (2, "grpo"))
    ]
    pop, single = build_trainer(cfgs), build_trainer([cfgs[1]])
    batches = pop.collect(), single.collect()
    for batch in batches:  # every group has a signal: the update moves the weights
        batch.rewards = (torch.arange(len(batch)) % len(batches[1]) % 3 == 0).float()
    rows_pop, rows_one = pop.update(batches[0]), single.update(batches[1])
    for key, value in rows_one[0].items():
        assert rows_pop[1][key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key
    for a, b in zip(_params(pop, 1), _params(single, 0), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_qwen2_members_are_bit_independent() -> None:
    """Changing member 1's seed or objective leaves member 0 bit-identical after two updates,
    though the members' episode lengths (so their trimmed widths) differ."""
    base = qwen2(**{"trainer.minibatches": "2", "task.max_len": "64"})
    first = build_trainer([base, with_overrides(base, {"seed": "1"})])
    other = build_trainer([base, with_overrides(base, {"seed": "7", "objective.name": "sapo"})])
    for trainer in (first, other):
        for _ in range(2):
            batch = trainer.collect()
            batch.rewards = (torch.arange(len(batch)) % 3 == 0).float()  # every group has a signal
            trainer.update(batch)
    for a, b in zip(_params(first, 0), _params(other, 0), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(_params(first, 1), _params(other, 1), strict=True))


def test_lean_passes_take_the_rollouts_log_probs_before_the_update(monkeypatch) -> None:
    trainer = build_trainer([qwen2(**{"trainer.minibatches": "1"})])
    assert trainer.lean
    batch = trainer.collect()
    calls = []
    score = trainer.policy.score

    def counted(b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(b.tokens.shape)
        return score(b)

    monkeypatch.setattr(trainer.policy, "score", counted)
    trainer.update(batch)
    longest = int((batch.mask.sum(0) > 0).nonzero().max()) + 1
    assert calls == [(len(batch), longest)] * 2  # one minibatch step, one diagnostics pass; trimmed
    # what the lean update took as the policy before it: equal to a recompute to float rounding
    fresh = build_trainer([qwen2(**{"trainer.minibatches": "1"})])
    assert torch.allclose(fresh.policy.score(batch)[0], batch.behaviour_log_probs, atol=1e-5)


def test_keys_engine_and_device() -> None:
    # the transformer's, the tabular's and the old engine's Qwen2 runs keep their keys
    assert config_hash(RunConfig()) == "cb05629931dc"
    old = with_overrides(RunConfig(), {"policy.kind": "qwen2", "seed": "3"})
    assert config_hash(with_overrides(old, {"policy.engine": "hf"})) == "4e7c97576b3b"
    assert config_hash(old) != "4e7c97576b3b"  # the testbed's engine: new numbers, new keys
    assert config_hash(with_overrides(RunConfig(), {"policy.device": "cpu"})) == config_hash(RunConfig())
    assert config_hash(with_overrides(RunConfig(), {"policy.device": "cuda"})) != config_hash(RunConfig())
    with pytest.raises(ConfigError, match=r"^PolicyConfig\.device='bogus': not a device"):
        PolicyConfig(device="bogus")
    with pytest.raises(ConfigError, match=r"PolicyConfig\.engine='hf'"):
        PolicyConfig(engine="hf")
    assert resolve_device(PolicyConfig(kind="tabular")).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_before_any_work(monkeypatch) -> None:
    import testbed.run

    monkeypatch.setattr(testbed.run, "base_policy", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ConfigError, match=r"^PolicyConfig\.device='cuda': this machine has no CUDA device"):
        build_trainer([qwen2(**{"policy.device": "cuda"})])
    assert resolve_device(PolicyConfig()).type == "cpu"


@pytest.mark.slow
def test_the_gpu_study_script_runs_at_smoke_size_on_the_cpu(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / "gpu_default_study.py"
    out = tmp_path / "study.json"
    args = ["--device", "cpu", "--smoke", "--seeds", "1", "--out", str(tmp_path / "runs"), "--json", str(out)]
    subprocess.run([sys.executable, str(script), *args, "--cache", str(tmp_path)], check=True, timeout=600)
    report = json.loads(out.read_text())
    assert report["runs"] == 5 and report["runs_to_make"] == 4  # at smoke size the control is GRPO
    assert sum(p["members"] for p in report["populations"]) == 4
    assert all(p["train_tokens_per_s"] > 0 for p in report["populations"])


@torch.no_grad()
def test_feeding_known_tokens_equals_decoding_them_bit_for_bit() -> None:
    """``feed`` takes a block of known tokens (a prompt, a retrieved block) in one pass: the logits
    of every later step equal those of a state that decoded the block token by token, exactly."""
    torch.manual_seed(3)
    policy = ours(members=2, std=0.3)
    x = tokens(16, length=40)
    stepped, fed = policy.start(16, max_len=40), policy.start(16, max_len=40)
    pos = 0
    for block in (4, 1, 1, 6, 1, 2, 9, 1, 3, 1):  # feed block - 1 tokens, then decode one
        expected = [policy.next_logits(x[:, p], stepped) for p in range(pos, pos + block)][-1]
        if block > 1:
            policy.feed(x[:, pos : pos + block - 1], fed)
        assert torch.equal(policy.next_logits(x[:, pos + block - 1], fed), expected), pos
        pos += block


@torch.no_grad()
def test_member_groups_decode_as_the_whole_population() -> None:
    """Decoding in member groups (``decode_rows``) changes no member's numbers."""
    torch.manual_seed(4)
    policy = ours(members=4, std=0.3)
    x = tokens(4 * 8, length=12)
    whole = policy.start(32, max_len=12)
    policy.decode_rows = 16  # groups of two members
    grouped = policy.start(32, max_len=12)
    assert [m for m, _ in grouped.groups] == [slice(0, 2), slice(2, 4)] and len(whole.groups) == 1
    for state in (grouped, whole):
        policy.feed(x[:, :3], state)
    for p in range(3, 12):
        assert torch.equal(policy.next_logits(x[:, p], grouped), policy.next_logits(x[:, p], whole))


def test_scoring_without_gradients_in_row_blocks_equals_one_pass() -> None:
    """A pass without gradients scores each member's rows in blocks (``score_tokens``): the same
    log-probs and entropies, bit for bit, as the pass with gradients, which takes them at once."""
    torch.manual_seed(5)
    policy = ours(members=2, std=0.3)
    batch = written_batch(2, 24, [30, 41])
    policy.score_tokens = 200  # blocks of 5 and 4 rows (widths 30 and 41)
    assert len(policy._row_blocks(slice(0, 1), slice(0, 24), 30)) == 4
    with torch.no_grad():
        blocks = policy.score(batch)
    whole = policy.score(batch)
    assert whole[0].requires_grad
    assert torch.equal(blocks[0], whole[0].detach()) and torch.equal(blocks[1], whole[1].detach())
