"""HFPolicy's decode modes on CPU: the static cache samples exactly what the dynamic cache does."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from testbed.config import with_overrides
from testbed.policies.hf import HFPolicy
from testbed.policies.hf_run import hf_parts
from testbed.rollout import PolicyAgent, rollout
from testbed.run import RunConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parts():
    """The tiny HF policy's model and a core maker of the text task (the run assembly's own)."""
    policy, source, make_core = hf_parts(
        with_overrides(RunConfig(), {"policy.kind": "hf", "task.world.kind": "fixed"})
    )
    episodes = np.repeat(source.train_ids(np.random.default_rng(0), 6), 4)
    return policy.model, make_core, episodes


def _rollout(model, make_core, episodes, decode: str, seed: int = 1):
    policy = HFPolicy(model, decode=decode)
    agent = PolicyAgent(policy, torch.Generator().manual_seed(seed))
    return rollout(agent, make_core(len(episodes)), episodes, episodes, np.random.default_rng(seed))


def test_static_decode_samples_what_dynamic_decode_samples(parts) -> None:
    model, make_core, episodes = parts
    dynamic = _rollout(model, make_core, episodes, "dynamic")
    static = _rollout(model, make_core, episodes, "static")
    assert dynamic.tokens.shape[1] > 20 and dynamic.mask.sum() > 0
    assert torch.equal(static.tokens, dynamic.tokens) and torch.equal(static.mask, dynamic.mask)
    torch.testing.assert_close(static.behaviour_log_probs, dynamic.behaviour_log_probs, atol=1e-5, rtol=0)
    with torch.no_grad():  # the cached steps against one full pass: positions and mask are right
        scored, _ = HFPolicy(model, decode="static").score(static)
    torch.testing.assert_close(scored, static.behaviour_log_probs, atol=1e-4, rtol=0)


def test_static_logits_match_dynamic_logits_step_by_step(parts) -> None:
    model, make_core, episodes = parts
    tokens = _rollout(model, make_core, episodes, "dynamic").tokens
    dynamic, static = HFPolicy(model), HFPolicy(model, decode="static", max_len=tokens.shape[1])
    for _ in range(2):  # the second start reuses the cache of the first: it must begin clean
        a, b = dynamic.start(len(tokens)), static.start(len(tokens))
        with torch.no_grad():
            for pos in range(tokens.shape[1]):  # max_len steps: the cache's every slot
                torch.testing.assert_close(
                    static.next_logits(tokens[:, pos], b),
                    dynamic.next_logits(tokens[:, pos], a),
                    atol=1e-5,
                    rtol=0,
                )
        with pytest.raises(ValueError, match=r"max_len=\d+: the static cache is full"):
            static.next_logits(tokens[:, 0], b)


def test_decode_modes_resolve_and_refuse_clearly(parts) -> None:
    model, _, _ = parts
    assert "decoder" not in HFPolicy(model).start(4, max_len=8)  # auto on CPU: the dynamic cache
    with pytest.raises(ValueError, match=r"^decode='fast': one of auto, dynamic, static, graph$"):
        HFPolicy(model, decode="fast")
    with pytest.raises(ValueError, match="decode='graph': CUDA graphs need the model on CUDA"):
        HFPolicy(model, decode="graph").start(4, max_len=8)
    with pytest.raises(ValueError, match="max_len: decode='static' needs it"):
        HFPolicy(model, decode="static").start(4)


def test_a_copy_of_a_static_policy_builds_its_own_cache(parts) -> None:
    model, _, _ = parts
    policy = HFPolicy(copy.deepcopy(model), decode="static")
    state = policy.start(2, max_len=4)
    copied = copy.deepcopy(policy)  # the trainer's behaviour policy
    assert copied.start(2, max_len=4)["decoder"] is not state["decoder"]
    copied.to(torch.float64)  # new weights: a fresh cache of their dtype
    with torch.no_grad():
        assert copied.next_logits(torch.zeros(2, dtype=torch.long), copied.start(2, max_len=4)).dtype == (
            torch.float64
        )


def test_the_benchmark_runs_on_cpu(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_hf_rollout", ROOT / "benchmarks" / "bench_hf_rollout.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    args = ["--shape", "tiny", "--device", "cpu", "--modes", "dynamic", "static", "--batch", "16"]
    bench.main([*args, "--group", "4", "--check-steps", "4", "--json", str(out)])
    modes = json.loads(out.read_text())["modes"]
    assert modes["dynamic"]["tokens_per_s"] > 0 and modes["static"]["speedup"] > 0
    assert modes["static"]["max_abs_logp_diff"] < 1e-4 and modes["static"]["token_agree"] == 1.0
