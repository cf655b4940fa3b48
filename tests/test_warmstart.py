"""The base policy: one per study (shared by every RL seed, cached), its own seed, an optional cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import tiny

from testbed import warmstart
from testbed.config import ConfigError, config_hash
from testbed.run import build_trainer, study_key


def test_rl_seeds_share_one_cached_base_policy(tmp_path, monkeypatch) -> None:
    calls = []
    real = warmstart.imitate
    monkeypatch.setattr(warmstart, "imitate", lambda *a, **kw: calls.append(1) or real(*a, **kw))  # type: ignore[func-returns-value]
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


# -- calibration: imitation until the base lies in its target bands --------------------------------
# The tabular policy's greedy EM on the smoke world goes 0.0 -> 1.0 between imitation steps 1 and 2.
CALIBRATED = {"policy.kind": "tabular", "warm_start.batch_size": "32", "warm_start.check_every": "1"}
CALIBRATED |= {"warm_start.check_episodes": "64", "warm_start.steps": "12"}


def _record(cache: Path) -> dict:
    (path,) = cache.glob("base-*.pt")
    return json.loads(warmstart.record_path(path).read_text())


def test_calibrated_warm_start_stops_on_its_target(tmp_path) -> None:
    calibrated = build_trainer([tiny(**CALIBRATED, **{"warm_start.target_em_greedy": "0.5+1.0"})], tmp_path)
    record = _record(tmp_path)
    assert record["imitation_steps"] == 2 < 12  # stopped on its target, well before the cap
    assert [c["greedy"] for c in record["checks"]] == [0.0, 1.0]
    assert record["seconds"] > 0 and "world.n_entities=8" in record["task"]
    # the checks only watch: the base is the one a fixed count of 2 steps gives
    fixed = build_trainer([tiny(**{**CALIBRATED, "warm_start.steps": "2"})], None)
    for p, q in zip(calibrated.policy.parameters(), fixed.policy.parameters(), strict=True):
        assert torch.equal(p, q)


def test_unreachable_target_is_refused_in_one_line(tmp_path, monkeypatch) -> None:
    cap = tiny(**{**CALIBRATED, "warm_start.target_em_sampled": "0.9+1.0", "warm_start.steps": "3"})
    with pytest.raises(ConfigError) as err:
        build_trainer([cap], tmp_path)
    text = str(err.value)
    assert "\n" not in text and text.startswith("WarmStartConfig.target_em_sampled=(0.9, 1.0): not reached")
    assert "world.n_entities=8" in text and "sampled EM 0.0" in text and "after 3 imitation steps" in text
    over = tiny(**CALIBRATED, **{"warm_start.target_em_greedy": "0.2+0.5"})  # greedy jumps past it
    with pytest.raises(ConfigError, match=r"greedy EM 1\.000 .* after 2 imitation steps; greedy EM above"):
        build_trainer([over], tmp_path)
    assert not list(tmp_path.glob("base-*.pt"))  # a base that missed its target is never cached
    # its error is, so the study's other workers (and a rerun) say it again without retraining
    calls = []
    real = warmstart.imitate
    monkeypatch.setattr(warmstart, "imitate", lambda *a, **kw: calls.append(1) or real(*a, **kw))  # type: ignore[func-returns-value]
    with pytest.raises(ConfigError) as again:
        build_trainer([cap], tmp_path)
    assert str(again.value) == text and calls == []
    from testbed.run import base_record

    assert base_record(cap, tmp_path) == {"failed": text}  # what the study's bases.csv says of it


def test_cache_key_changes_with_the_target_and_keeps_old_keys() -> None:
    def path(**kw: object) -> str:
        return warmstart.cache_path(Path("."), "task", warmstart.WarmStartConfig(**kw)).name  # type: ignore[arg-type]

    plain, banded = path(), path(target_em_sampled=(0.1, 0.2))
    assert len({plain, banded, path(target_em_sampled=(0.1, 0.3)), path(target_em_greedy=(0.1, 0.2))}) == 4
    assert banded != path(target_em_sampled=(0.1, 0.2), check_every=50)
    # without a target the new fields stay out of the key: cached bases and stored runs keep theirs
    assert config_hash(warmstart.WarmStartConfig()) == "4dd5f27a0298"
    assert config_hash(warmstart.WarmStartConfig(pretrain_steps=300, lr=1e-3)) == "e3d9e149d1a8"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("1.2+1.5", "must lie in [0, 1]"),
        ("-0.1+0.2", "must lie in [0, 1]"),
        ("0.3+0.1", "is empty (lo > hi)"),
        ("0.1", "must be two numbers"),
        ("0.1+0.2+0.3", "must be two numbers"),
    ],
)
def test_bad_band_is_one_line_naming_field_and_value(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        tiny(**{"warm_start.target_em_greedy": value})
    text = str(err.value)
    assert text.startswith("WarmStartConfig.target_em_greedy=(") and why in text and "\n" not in text
    with pytest.raises(ConfigError, match=r"WarmStartConfig.check_every=50: must not exceed steps=5"):
        tiny(**{"warm_start.target_em_greedy": "0.1+0.2", "warm_start.check_every": "50"})


# -- the cache is optional: a bad entry is rebuilt, an unwritable cache skipped ----------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_cached_base_is_rebuilt_with_a_warning(tmp_path, damage: str) -> None:
    first = build_trainer([tiny()], tmp_path)
    (path,) = tmp_path.glob("base-*.pt")
    data = path.read_bytes()
    path.write_bytes(b"not a torch file" if damage == "garbage" else data[: len(data) // 2])
    with pytest.warns(UserWarning, match=f"base-policy cache {path} unreadable"):
        again = build_trainer([tiny()], tmp_path)
    for p, q in zip(first.policy.parameters(), again.policy.parameters(), strict=True):
        assert torch.equal(p, q)  # rebuilt as it was first built
    written = torch.load(path, weights_only=True)  # and written back whole
    assert all(torch.equal(written[k], v) for k, v in first.policy.state_dict().items())


def test_cache_that_torch_cannot_write_is_skipped(tmp_path, monkeypatch) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.warns(UserWarning, match="not written .*unexpected pos"):
        build_trainer([tiny()], tmp_path)
    assert not list(tmp_path.iterdir())  # no base, no record, no temporary file left behind


def test_parallel_workers_train_one_base_and_the_others_load_it(tmp_path, monkeypatch) -> None:
    import threading
    import time

    calls = []
    real = warmstart.imitate

    def slow(*a, **kw):  # long enough for the second worker to arrive while the first trains
        calls.append(1)
        time.sleep(0.5)
        return real(*a, **kw)

    monkeypatch.setattr(warmstart, "imitate", slow)
    trainers: dict[str, object] = {}
    workers = [
        threading.Thread(target=lambda s=s: trainers.update({s: build_trainer([tiny(seed=s)], tmp_path)}))
        for s in ("0", "1")
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(calls) == 1  # one trained it (the other waited for its lock), then read it
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".lock"] == []  # released, removed
    first, second = (list(trainers[s].policy.parameters()) for s in ("0", "1"))  # type: ignore[attr-defined]
    assert all(torch.equal(p, q) for p, q in zip(first, second, strict=True))
