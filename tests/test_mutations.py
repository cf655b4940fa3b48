"""Tests the mutation check relies on, and the check itself (slow: ``-m slow``)."""

from __future__ import annotations

import math

import pytest
import torch

from testbed.diagnostics import isdd_signals
from testbed.testing import mutants


def test_hand_computed_isdd_signals() -> None:
    # rows: A = 0 with r = [0.3, 0.6]; A = +1 with r = [0.9, 1.2]; A = -1 with r = [0.1, 0.1]
    ratios = torch.tensor([[0.3, 0.6], [0.9, 1.2], [0.1, 0.1]], dtype=torch.float64)
    adv = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    mask = torch.ones(3, 2)
    out = isdd_signals(ratios.log(), torch.zeros(3, 2), adv, mask, torch.zeros(3, 2, dtype=torch.long), 0.8)
    # nonneg: {0.3, 0.6, 0.9, 1.2}; p05 by linear interpolation at 0.05 * 3 = 0.15
    assert out["pooled_ratio_p05_nonneg"] == pytest.approx(0.3 + 0.15 * 0.3)
    assert out["pooled_ratio_p50_nonneg"] == pytest.approx(0.75)
    assert out["pooled_low_ratio_frac_nonneg"] == pytest.approx(0.5)
    assert out["pooled_ratio_p05_pos"] == pytest.approx(0.9 + 0.05 * 0.3)
    assert out["pooled_low_ratio_frac_pos"] == 0.0
    assert math.isfinite(out["lld_mean_nonneg"])


def test_every_mutation_names_existing_code_and_tests() -> None:
    for m in mutants.MUTATIONS:
        assert (mutants.ROOT / m.path).read_text().count(m.old) == 1, m.name
        for spec in m.tests:
            assert (mutants.ROOT / spec.split("::")[0].split(" -k ")[0]).exists(), spec


@pytest.mark.slow
def test_every_mutation_is_caught() -> None:
    """Applies each mutation to a copy of the tree; its tests must fail (15-30 minutes on 2 cores)."""
    assert mutants.check(mutants.MUTATIONS) == []
