"""The base policy: one per study (shared by every RL seed, cached), its own seed, an optional cache."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny

from testbed import warmstart
from testbed.run import build_trainer, study_key


def test_rl_seeds_share_one_cached_base_policy(tmp_path, monkeypatch) -> None:
    calls = []
    real = warmstart.imitate
    monkeypatch.setattr(warmstart, "imitate", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    a = build_trainer([tiny(seed="0")], tmp_path)
    b = build_trainer([tiny(seed="5")], tmp_path)
    assert len(calls) == 1 and len(list(tmp_path.glob("base-*.pt"))) == 1  # trained once, then read
    for p, q in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
        assert torch.equal(p, q)
    c = build_trainer([tiny(**{"warm_start.seed": "1"})], tmp_path)  # another base on request
    assert len(calls) == 2
    assert not all(
        torch.equal(p, q) for p, q in zip(a.policy.parameters(), c.policy.parameters(), strict=True)
    )
    assert study_key(tiny(seed="0")) == study_key(tiny(seed="5", **{"objective.name": "sapo"}))


def test_unwritable_base_cache_only_warns(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="not written"):
        build_trainer([tiny()], blocker / "cache")
