"""Full-size checks of the headline claims (``python -m pytest -m slow``; minutes each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.compare import run_compare
from testbed.config import with_overrides
from testbed.sweep import make_executor
from testbed.run import RunConfig, train

pytestmark = pytest.mark.slow


def test_on_policy_grpo_improves_the_warm_started_transformer() -> None:
    cfg = with_overrides(
        RunConfig(), {"trainer.minibatches": "1", "trainer.lr": "0.002", "trainer.n_updates": "40"}
    )
    _, summary = train(cfg)
    assert summary["peak_em"] > summary["warm_em"] + 0.1


def test_default_compare_shows_grpo_collapse_in_most_seeds(tmp_path: Path) -> None:
    executor = make_executor("local")
    try:
        table = run_compare(tmp_path, executor=executor, progress=False).set_index("objective")
    finally:
        executor.shutdown()
    assert table.loc["grpo", "collapse_rate"] >= 0.5
    assert table.loc["grpo", "final_em"] < table.loc["grpo", "warm_em"]
