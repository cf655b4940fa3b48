"""The diagnostics count collapsed tokens at a threshold of their own (``trainer.diag_ratio_threshold``),
not at SAPO's tau: another objective's numbers never read ``objective.sapo_tau``, and a run keeps its
stored key exactly when its threshold is the tau it was stored with."""

from __future__ import annotations

import pandas as pd
import torch
from tiny import tiny

from testbed.config import config_hash, with_overrides
from testbed.objectives import get_objective
from testbed.run import RunConfig, study_key, train

# noisy old log-probs: ratios spread far below 1, so every threshold matters
DRIFT = {"trainer.mismatch_std": "1.0", "policy.kind": "tabular"}


def _metrics(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.drop(columns=[c for c in frame if "." in c or c in ("run", "wall_time")])


def test_grpo_numbers_do_not_read_sapo_tau() -> None:
    a, _ = train(tiny(**DRIFT, **{"objective.sapo_tau": "0.5"}))
    b, _ = train(tiny(**DRIFT, **{"objective.sapo_tau": "0.95"}))
    assert _metrics(a)["pooled_low_ratio_frac_pos"].notna().any()
    pd.testing.assert_frame_equal(_metrics(a), _metrics(b))


def test_the_diagnostics_threshold_moves_the_low_ratio_shares() -> None:
    low, _ = train(tiny(**DRIFT, **{"trainer.diag_ratio_threshold": "0.3"}))
    high, _ = train(tiny(**DRIFT, **{"trainer.diag_ratio_threshold": "1.5"}))
    for col in ("pooled_low_ratio_frac_nonneg", "low_ratio_frac_nonneg"):
        below, above = _metrics(low)[col].fillna(0), _metrics(high)[col].fillna(0)  # update 0: NaN
        assert (below <= above).all() and (below < above).any(), col


def test_an_objective_counts_low_ratios_at_the_threshold_it_is_given() -> None:
    ratio = torch.tensor([[0.4, 0.7, 0.9, 1.0]])
    args = (ratio.log(), torch.zeros(1, 4), torch.ones(1), torch.ones(1, 4))
    grpo = get_objective("grpo")
    assert grpo(*args)[1]["low_ratio_frac_pos"] == 0.5  # the default threshold, 0.8
    assert grpo(*args, low_ratio_threshold=0.5)[1]["low_ratio_frac_pos"] == 0.25
    assert grpo(*args, low_ratio_threshold=0.95)[1]["low_ratio_frac_pos"] == 0.75


def test_keys_move_only_where_the_threshold_left_sapo_tau() -> None:
    default = RunConfig()
    assert config_hash(default) == "cb05629931dc"  # every default run keeps its key
    assert config_hash(with_overrides(default, {"trainer.diag_ratio_threshold": 0.8})) == "cb05629931dc"
    sapo = with_overrides(default, {"objective.name": "sapo", "objective.sapo_tau": 0.5})
    # stored with its diagnostics at r <= 0.5: that run keeps its key; at 0.8 it is another run
    assert config_hash(with_overrides(sapo, {"trainer.diag_ratio_threshold": 0.5})) == "b42fab015d3e"
    assert config_hash(sapo) != "b42fab015d3e"
    grpo_half = with_overrides(default, {"trainer.diag_ratio_threshold": 0.5})
    assert config_hash(grpo_half) != config_hash(default)
    assert study_key(sapo) == study_key(default)  # populations still share trainer settings
