"""The figures as a reader sees them, drawn from small synthetic frames (nothing is trained): names,
axis limits, seed counts, significance marks, intervals and layout."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Annotation

from testbed.analysis import wilson_ci
from testbed.studies import figures
from testbed.studies.ablations import sapo_grid_figure


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[plt.Figure]:
    """The figures the module saves, kept for inspection (still written to disk)."""
    kept: list[plt.Figure] = []
    save = figures.save_figure

    def keep(fig: plt.Figure, path: Path, dpi: int = 120) -> None:
        kept.append(fig)
        save(fig, path, dpi)

    monkeypatch.setattr(figures, "save_figure", keep)
    return kept


def _texts(fig: plt.Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(plt.Text)]


def _rows(
    arms: tuple[str, ...] = ("grpo", "grpo_control"), seeds: int = 8, updates: int = 10
) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = len(arms) * seeds * updates
    return pd.DataFrame(
        {
            "arm": np.repeat(arms, seeds * updates),
            "seed": np.tile(np.repeat(np.arange(seeds), updates), len(arms)),
            "update": np.tile(np.arange(1, updates + 1), len(arms) * seeds),
            "grad_norm": 0.2 + 0.05 * rng.random(n),
            "lld_mean_nonneg": -0.1 * rng.random(n),
        }
    )


def test_every_catalog_arm_and_objective_has_a_display_name() -> None:
    from testbed.objectives import list_objectives
    from testbed.studies import CATALOG, compare_experiment
    from testbed.studies.ladder import RUNGS, ladder
    from testbed.studies.worlds import WORLDS

    studies = [make(None) for make in CATALOG.values()]
    studies += [ladder(rung) for rung in RUNGS] + [compare_experiment(control=True)]
    names = {arm for exp in studies for arm in exp.arms} | set(list_objectives()) | set(WORLDS)
    raw = sorted(name for name in names if figures.display_name(name) == name)
    assert raw == []
    assert figures.display_name("grpo_control") == "GRPO, on-policy control"
    assert figures.display_name("entities_16/sapo") == "16 entities: SAPO (tau 0.8, w 0.1)"
    assert (
        figures.display_name("control_lr3e-3_mb1_u80")
        == "on-policy control, lr 3e-3, 1 step/batch, 80 updates"
    )
    assert figures.display_name("lr1.5e-3_2x6_u150") == "lr 1.5e-3, 2 epochs x 6 steps/batch, 150 updates"


def test_curve_legends_show_display_names_and_seed_counts(tmp_path: Path, drawn: list[plt.Figure]) -> None:
    figures.arm_curves(_rows(), pd.DataFrame(), tmp_path / "c")
    (fig,) = drawn
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["GRPO (n=8)", "GRPO, on-policy control (n=8)"]
    assert not [t for t in _texts(fig) if "grpo" in t]  # no raw name anywhere in the figure
    assert "median over seeds" in legend.get_title().get_text()


def test_one_seeds_spike_does_not_set_the_axis(tmp_path: Path, drawn: list[plt.Figure]) -> None:
    rows = _rows()
    spike = (rows["arm"] == "grpo") & (rows["seed"] == 3) & (rows["update"] == 5)
    rows.loc[spike, "grad_norm"] = 100.0
    rows.loc[spike, "lld_mean_nonneg"] = -45.0
    figures.curves(rows, tmp_path / "c", {"grad_norm": "g", "lld_mean_nonneg": "l"})
    (fig,) = drawn
    for ax, metric in zip(fig.axes, ("grad_norm", "lld_mean_nonneg"), strict=True):
        others = rows.loc[~spike, metric]
        lo, hi = ax.get_ylim()
        margin = 0.1 * (others.max() - others.min())
        assert others.min() - margin <= lo and hi <= others.max() + margin, (metric, lo, hi)
        assert lo <= rows.loc[~spike].groupby(["arm", "update"])[metric].median().min()
    assert figures.robust_limits(rows, "grad_norm", ["arm", "update"])[1] < 1.0


def _grid_summaries(seeds: int = 16) -> pd.DataFrame:
    """GRPO and SAPO's 3 x 3 grid: SAPO's cell (0.8, 0.1) gains 0.1 in every seed, (0.5, 1.0) loses
    0.01 in one seed only, the others equal GRPO."""
    rng = np.random.default_rng(1)
    grpo = 0.1 + 0.05 * rng.random(seeds)
    out = []
    for tau in (None, 0.5, 0.8, 0.95):
        for w in (None,) if tau is None else (0.01, 0.1, 1.0):
            final = grpo.copy()
            if (tau, w) == (0.8, 0.1):
                final = final + 0.1 + 0.01 * rng.random(seeds)
            if (tau, w) == (0.5, 1.0):
                final[0] -= 0.01
            out.append(
                pd.DataFrame(
                    {
                        "objective.name": "grpo" if tau is None else "sapo",
                        "objective.sapo_tau": tau or 0.8,
                        "objective.sapo_w": w or 0.1,
                        "seed": np.arange(seeds),
                        "final_em": final,
                        "peak_em": final + 0.1,
                        "warm_em": 0.1,
                        "collapsed": False,
                        "collapse_step": np.nan,
                    }
                )
            )
    return pd.concat(out, ignore_index=True)


def test_sapo_grid_figure_names_its_seed_count_and_marks_significant_cells(
    tmp_path: Path, drawn: list[plt.Figure]
) -> None:
    sapo_grid_figure(pd.DataFrame(), _grid_summaries(), tmp_path / "g")
    (fig,) = drawn
    final_ax, diff_ax = fig.axes[:2]  # then their colour bars
    assert "n = 16 seeds per cell" in final_ax.get_title() and "GRPO: " in final_ax.get_title()
    assert "n = 16 seeds per cell" in diff_ax.get_title()
    cells = [t.get_text() for t in diff_ax.texts]
    assert len(cells) == 9
    assert [c for c in cells if "*" in c] == ["+0.10 ***"]  # one seed's loss is not significant
    assert any("Holm" in t for t in _texts(fig))


def test_sapo_grid_figure_counts_uneven_cells(tmp_path: Path, drawn: list[plt.Figure]) -> None:
    s = _grid_summaries()
    s = s.drop(s[(s["objective.name"] == "sapo") & (s["seed"] == 15) & (s["objective.sapo_w"] == 1.0)].index)
    sapo_grid_figure(pd.DataFrame(), s, tmp_path / "g")
    assert "n = 15-16 seeds per cell" in drawn[0].axes[0].get_title()


def test_phase_figure_shows_n_and_wilson_intervals(tmp_path: Path, drawn: list[plt.Figure]) -> None:
    s = pd.DataFrame(
        [
            {"objective.name": name, "trainer.lr": lr, "trainer.minibatches": mb, "seed": seed}
            for name in ("grpo", "sapo")
            for lr in (0.001, 0.003)
            for mb in (1, 6)
            for seed in range(5)
        ]
    )
    s["collapsed"] = (
        (s["objective.name"] == "grpo") & (s["trainer.lr"] == 0.003) & (s["trainer.minibatches"] == 6)
    )
    s.loc[s.index[(s["collapsed"]) & (s["seed"] >= 3)], "collapsed"] = False  # 3 of 5
    figures.phase_figure(pd.DataFrame(), s, tmp_path / "p")
    (fig,) = drawn
    assert [ax.get_title() for ax in fig.axes] == ["learning rate 0.001", "learning rate 0.003"]
    labels = [t.get_text() for t in fig.axes[1].texts]
    assert sorted(labels) == ["0/5", "0/5", "0/5", "3/5"]
    (tip,) = [t for t in fig.axes[1].texts if isinstance(t, Annotation) and t.get_text() == "3/5"]
    assert tip.xy[1] == pytest.approx(wilson_ci(3, 5)[1])  # the label sits on the interval's top
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["GRPO", "SAPO (tau 0.8, w 0.1)"]


def test_a_two_panel_figure_leaves_no_empty_area(tmp_path: Path) -> None:
    rows = pd.concat([_rows(("lr3e-3_mb8_u80",)), _rows(("control_lr3e-3_mb1_u80",))])
    rows = rows.rename(columns={"grad_norm": "eval_em_sampled", "lld_mean_nonneg": "entropy"})
    figures.search_figure(rows, pd.DataFrame(), tmp_path / "s")
    image = plt.imread(tmp_path / "s.png")[..., :3]
    blank_columns = (image.min(axis=(0, 2)) > 0.99).mean()
    assert blank_columns < 0.1


def test_grid_and_phase_figures_are_byte_stable(tmp_path: Path) -> None:
    s = _grid_summaries(6).assign(**{"trainer.lr": 0.003, "trainer.minibatches": 6})
    for draw in (sapo_grid_figure, figures.phase_figure):
        drawn = []
        for name in ("a", "b"):
            draw(pd.DataFrame(), s, tmp_path / name)
            drawn.append([(tmp_path / name).with_suffix(x).read_bytes() for x in (".png", ".pdf")])
        assert drawn[0] == drawn[1], getattr(draw, "__name__", "figure")
