"""Uncertainty across seeds: bootstrap CIs, Wilson intervals, paired tests with Holm's correction,
and the one summary table every experiment, the compare job and the paper figures print.

Comparisons are paired by seed: runs with the same seed start from the same base policy and draw
the same first training episodes, so arm A's seed s is compared with arm B's seed s (Wilcoxon
signed-rank on EM, exact McNemar on collapse). Claims are stated over distributions of seeds, never
single seeds (a seed's numbers change with the CPU's kernel path).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

MIN_SEEDS = 5  # below this a CI is printed with a warning mark


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (the value itself with fewer than two values or no spread)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2 or np.all(x == x[0]):
        return (float(x[0]), float(x[0])) if len(x) else (float("nan"), float("nan"))
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, method="percentile", rng=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (e.g. a collapse rate)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control over the given tests)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of ``a`` and ``b`` (summaries) matched on seed: columns ``a``, ``b`` of ``metric``."""
    return pd.merge(a[["seed", metric]], b[["seed", metric]], on="seed", suffixes=("_a", "_b")).rename(
        columns={f"{metric}_a": "a", f"{metric}_b": "b"}
    )


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 when all are zero)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 0 or np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="zsplit").pvalue)


def mcnemar_p(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact McNemar p-value: do paired binary outcomes (collapsed or not) differ?"""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((x & ~y).sum()), int((~x & y).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b).pvalue)


def summary_numbers(
    summaries: pd.DataFrame, by: Sequence[str], reference: Mapping[str, object] | None = None
) -> pd.DataFrame:
    """Per group of ``by``, one column per number (an experiment's ``table.csv``): ``seeds``,
    ``start_em`` (mean), ``peak_em`` and ``final_em`` (mean, ``_ci_low`` / ``_ci_high``: 95%
    bootstrap CI), ``collapses``, ``collapse_rate`` (95% Wilson ``_ci_low`` / ``_ci_high``),
    ``median_collapse_update``; with ``reference`` (a dict of ``by`` values naming one group), each
    other group's paired differences to it: ``final_em_diff`` (mean over seeds), ``p_final_wilcoxon``
    and ``p_collapse_mcnemar`` (exact), and both Holm-adjusted over all groups (``_holm``)."""
    by = list(by)
    groups = list(summaries.groupby(by, sort=False, dropna=False))
    ref = None
    if reference is not None:
        ref = next((g for key, g in groups if _key(by, key) == reference), None)
    rows: list[dict[str, object]] = []
    pvals: list[float] = []
    for key, g in groups:
        row: dict[str, object] = {**_key(by, key), "seeds": len(g), "start_em": g["warm_em"].mean()}
        for metric in ("peak_em", "final_em"):
            lo, hi = bootstrap_ci(g[metric])
            row |= {metric: g[metric].mean(), f"{metric}_ci_low": lo, f"{metric}_ci_high": hi}
        k = int(g["collapsed"].sum())
        lo, hi = wilson_ci(k, len(g))
        steps = g.loc[g["collapsed"].astype(bool), "collapse_step"]
        row |= {"collapses": k, "collapse_rate": k / len(g)}
        row |= {"collapse_rate_ci_low": lo, "collapse_rate_ci_high": hi}
        row["median_collapse_update"] = steps.median() if len(steps) else np.nan
        if ref is not None and _key(by, key) != reference:
            final = paired(g, ref, "final_em")
            col = paired(g, ref, "collapsed")
            p_final, p_collapse = wilcoxon_p(final["a"], final["b"]), mcnemar_p(col["a"], col["b"])
            row["final_em_diff"] = (final["a"] - final["b"]).mean()
            row |= {"p_final_wilcoxon": p_final, "p_collapse_mcnemar": p_collapse}
            pvals += [p_final, p_collapse]
        rows.append(row)
    if pvals:
        adjusted = iter(holm(pvals))
        for row in rows:
            if "p_final_wilcoxon" in row:
                row["p_final_holm"] = next(adjusted)
                row["p_collapse_holm"] = next(adjusted)
    return pd.DataFrame(rows)


def summary_table(
    summaries: pd.DataFrame, by: Sequence[str], reference: Mapping[str, object] | None = None
) -> pd.DataFrame:
    """``summary_numbers`` as text (an experiment's ``table.md``): seeds, start EM, peak and final EM
    as mean [95% bootstrap CI], collapse rate [95% Wilson], median collapse update; against
    ``reference``, the paired final-EM difference, the Wilcoxon and McNemar p, Holm-adjusted.
    ``(!)``: fewer than 5 seeds."""
    n = summary_numbers(summaries, by, reference)

    def interval(metric: str, fmt: str, warn: str = "") -> list[str]:
        few = n["seeds"] < MIN_SEEDS
        cols = zip(n[metric], n[f"{metric}_ci_low"], n[f"{metric}_ci_high"], few, strict=True)
        return [f"{m:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]{warn if f else ''}" for m, lo, hi, f in cols]

    table = n[[*by, "seeds"]].copy()
    table["start EM"] = [f"{x:.3f}" for x in n["start_em"]]
    table["peak EM"] = interval("peak_em", ".3f", " (!)")
    table["final EM"] = interval("final_em", ".3f", " (!)")
    table["collapse rate"] = interval("collapse_rate", ".2f")
    median = n["median_collapse_update"]
    table["median collapse update"] = ["-" if np.isnan(x) else f"{x:.0f}" for x in median]
    if "final_em_diff" in n:
        table["final EM - ref (paired)"] = [x if np.isnan(x) else f"{x:+.3f}" for x in n["final_em_diff"]]
        pvalues = {"p_final_wilcoxon": "p final (Wilcoxon)", "p_collapse_mcnemar": "p collapse (McNemar)"}
        pvalues |= {"p_final_holm": "p final (Holm)", "p_collapse_holm": "p collapse (Holm)"}
        for column, name in pvalues.items():
            table[name] = n[column]
    return table


def _key(by: list[str], key: object) -> dict:
    key = key if isinstance(key, tuple) else (key,)
    return dict(zip(by, key, strict=True))


def with_arm(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its ``arm`` column: tables written before arms had that name call it ``part``."""
    return frame.rename(columns={"part": "arm"}) if "arm" not in frame and "part" in frame else frame


def alarm_table(
    rows: pd.DataFrame, summaries: pd.DataFrame, alarms: Sequence, collapsing: str, control: str
) -> pd.DataFrame:
    """How well each early-warning ``Alarm`` (``testbed.diagnostics``) foretells collapse: over the
    runs of arm ``collapsing`` that collapsed, the share it fired for before the collapse and its
    median lead in updates [95% bootstrap CI]; over the runs of arm ``control``, the share it
    fired for at all (false alarms, with a Wilson interval)."""
    rows, summaries = with_arm(rows), with_arm(summaries)
    out = []
    for alarm in alarms:
        leads: list[float] = []
        fired_before = false = 0
        runs = summaries[summaries["arm"] == collapsing]
        collapsed = runs[runs["collapsed"].astype(bool)]
        for _, s in collapsed.iterrows():
            first = alarm.first_update(rows[rows["run"] == s["run"]].to_dict("records"))
            if first is not None and first < s["collapse_step"]:
                fired_before += 1
                leads.append(s["collapse_step"] - first)
        n_collapsed = len(collapsed)
        ctrl = summaries[summaries["arm"] == control]
        for _, s in ctrl.iterrows():
            false += alarm.first_update(rows[rows["run"] == s["run"]].to_dict("records")) is not None
        lo, hi = bootstrap_ci_median(leads)
        flo, fhi = wilson_ci(false, len(ctrl))
        out.append(
            {
                "alarm": str(alarm),
                "fired before collapse": f"{fired_before}/{n_collapsed}",
                "median lead (updates)": f"{np.median(leads):.0f} [{lo:.0f}, {hi:.0f}]" if leads else "-",
                "false alarms on control": f"{false}/{len(ctrl)} [{flo:.2f}, {fhi:.2f}]",
            }
        )
    return pd.DataFrame(out)


def bootstrap_ci_median(
    values: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the median (NaN with fewer than two values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or np.all(x == x[0]):
        return (float(x[0]), float(x[0])) if len(x) else (float("nan"), float("nan"))
    res = stats.bootstrap((x,), np.median, confidence_level=confidence, method="percentile", rng=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclasses.dataclass(frozen=True)
class ScenarioCriteria:
    """What makes a scenario show ISDD (issue: the ISDD scenario), over seeds of the collapsing
    arm and of its control: the median per-seed rise of fresh-episode EM above the base before the
    peak (``peak_em - warm_em``) at least ``rise``; a collapse rate at least ``collapse_rate``; a
    median collapse update at least ``onset``; a control collapse rate at most ``control_rate``."""

    rise: float = 0.15
    collapse_rate: float = 0.75
    onset: float = 20
    control_rate: float = 0.10
    early: float = 10  # a collapse by this update without a rise is a blow-up (see collapse_kind)
    decay_frac: float = 0.5  # a run that ends below this share of its low peak decayed (ditto)


COLLAPSE_KINDS = ("drift", "early_blowup", "decline_no_rise", "decay_from_low", "none")


def collapse_kind(run: Mapping[str, object], criteria: ScenarioCriteria = ScenarioCriteria()) -> str:
    """How a run ended, from its summary (``collapsed``, ``collapse_step``, ``warm_em``, ``peak_em``,
    ``final_em``), one of ``COLLAPSE_KINDS``:

    - ``drift``: the detector's collapse after a rise of ``criteria.rise`` above the base: ISDD's
      shape, rise then collapse;
    - ``early_blowup``: its collapse by update ``criteria.early`` without such a rise: an
      optimisation blow-up (the ratio's tail and the likelihood fall within a few Adam steps), not
      the gradual drift of ISDD;
    - ``decline_no_rise``: its collapse later than that, without such a rise: the run never
      improved on its base, then fell;
    - ``decay_from_low``: no collapse to the detector (its peak stayed under the detector's floor,
      ``trainer.collapse_min_peak``) yet the run ended below ``criteria.decay_frac`` of that peak,
      as a base near chance decaying to zero does;
    - ``none``: the run kept its level.
    """
    peak, warm, final = (float(run[c]) for c in ("peak_em", "warm_em", "final_em"))  # type: ignore[arg-type]
    if bool(run["collapsed"]):
        step = run.get("collapse_step")
        early = pd.notna(step) and float(step) <= criteria.early  # type: ignore[arg-type]
        if peak - warm >= criteria.rise:
            return "drift"
        return "early_blowup" if early else "decline_no_rise"
    return "decay_from_low" if final < criteria.decay_frac * peak else "none"


def collapse_kinds(summaries: pd.DataFrame, criteria: ScenarioCriteria = ScenarioCriteria()) -> pd.Series:
    """``collapse_kind`` of every run of ``summaries``."""
    return pd.Series(
        [collapse_kind(r, criteria) for r in summaries.to_dict("records")], index=summaries.index, dtype=str
    )


CRITERIA_TEXT = ["criterion", "needs", "measured", "met"]  # criteria_table's columns as text


def criteria_table(
    summaries: pd.DataFrame,
    collapsing: str | Sequence[str],
    control: str,
    criteria: ScenarioCriteria = ScenarioCriteria(),
) -> pd.DataFrame:
    """Each of ``criteria`` measured on the runs of arm ``collapsing`` (several arms: their runs
    pooled, as samples of one process) and arm ``control``: the value [95% CI: bootstrap for
    medians, Wilson for rates] and whether the point value meets it; with the share of seeds that
    rose by ``criteria.rise``, the share that rose so, then collapsed, and the runs of each arm by
    ``collapse_kind`` (early blow-ups and decays from a low start told apart from drift).
    Columns ``CRITERIA_TEXT`` (``measured``: the value as text), then its numbers: ``value``,
    ``ci_low``, ``ci_high``, ``count`` (a rate's runs; NaN for a median) and ``n``."""
    pooled = [collapsing] if isinstance(collapsing, str) else list(collapsing)
    summaries = with_arm(summaries)
    runs = summaries[summaries["arm"].isin(pooled)]
    ctrl = summaries[summaries["arm"] == control]
    rise = (runs["peak_em"] - runs["warm_em"]).to_numpy(dtype=float)
    collapsed = runs["collapsed"].astype(bool).to_numpy()
    onsets = runs.loc[collapsed, "collapse_step"].to_numpy(dtype=float)
    n, k, kc = len(runs), int(collapsed.sum()), int(ctrl["collapsed"].astype(bool).sum())
    rose = rise >= criteria.rise

    def rate(x: int, m: int) -> tuple:
        """(text, value, ci_low, ci_high, count, n)"""
        lo, hi = wilson_ci(x, m)
        text = f"{x}/{m} = {x / m:.2f} [{lo:.2f}, {hi:.2f}]" if m else "-"
        return text, x / m if m else np.nan, lo, hi, x, m

    def median(x: np.ndarray, fmt: str) -> tuple:
        lo, hi = bootstrap_ci_median(x.tolist())
        mid = float(np.median(x)) if len(x) else np.nan
        return f"{mid:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]" if len(x) else "-", mid, lo, hi, np.nan, len(x)

    rows = [
        (
            "median rise of EM above the base",
            f">= {criteria.rise}",
            median(rise, "+.3f"),
            bool(n) and float(np.median(rise)) >= criteria.rise,
        ),
        (
            "collapse rate",
            f">= {criteria.collapse_rate}",
            rate(k, n),
            bool(n) and k / n >= criteria.collapse_rate,
        ),
        (
            "median collapse update",
            f">= {criteria.onset:g}",
            median(onsets, ".0f"),
            bool(len(onsets)) and float(np.median(onsets)) >= criteria.onset,
        ),
        (
            "control collapse rate",
            f"<= {criteria.control_rate}",
            rate(kc, len(ctrl)),
            bool(len(ctrl)) and kc / len(ctrl) <= criteria.control_rate,
        ),
        ("seeds that rose by the rise", "(context)", rate(int(rose.sum()), n), None),
        ("seeds that rose so, then collapsed", "(context)", rate(int((rose & collapsed).sum()), n), None),
    ]
    labels = {
        "drift": "drift collapses (after a rise)",
        "early_blowup": f"early blow-ups (collapsed by update {criteria.early:g}, no rise)",
        "decline_no_rise": f"declines without a rise (collapsed after update {criteria.early:g})",
        "decay_from_low": "decays from a low start (peak under the detector's floor)",
    }
    for arm, frame in (("collapsing arm", runs), ("control", ctrl)):
        kinds = collapse_kinds(frame, criteria)
        for kind, label in labels.items():
            rows.append((f"{arm}: {label}", "(context)", rate(int((kinds == kind).sum()), len(frame)), None))
    met = {True: "yes", False: "no", None: ""}
    return pd.DataFrame(
        [(r[0], r[1], r[2][0], met[r[3]], *r[2][1:]) for r in rows],
        columns=[*CRITERIA_TEXT, "value", "ci_low", "ci_high", "count", "n"],
    )


MECHANISM_SIGNALS = (
    "pooled_ratio_p05_pos",
    "pooled_low_ratio_frac_nonneg",
    "lld_mean_nonneg",
    "collapsed_search_frac",
    "entropy",
    "zero_grad_frac_all",
    "grad_norm",
)


def mechanism_table(
    rows: pd.DataFrame,
    arms: Sequence[str],
    signals: Sequence[str] = MECHANISM_SIGNALS,
    edges: Sequence[int] = (1, 11, 31, 61, 101, 151),
) -> pd.DataFrame:
    """The mechanism signals by update range (``edges``: [1, 11) is updates 1-10, ...): per arm
    and range, the mean over seeds of each run's mean over the range (NaN updates left out)."""
    missing = [s for s in signals if s not in rows.columns]
    if missing:
        raise ValueError(f"signals={missing}: not logged in these rows")
    rows = with_arm(rows)
    rows = rows[rows["arm"].isin(arms) & (rows["update"] >= edges[0]) & (rows["update"] < edges[-1])]
    ranges = pd.cut(
        rows["update"],
        list(edges),
        right=False,
        labels=[f"{a}-{b - 1}" for a, b in itertools.pairwise(edges)],
    )
    per_run = (
        rows.assign(updates=ranges).groupby(["arm", "updates", "run"], observed=True)[list(signals)].mean()
    )
    table = per_run.groupby(["arm", "updates"], observed=True).mean().reset_index()
    table["arm"] = pd.Categorical(table["arm"], list(arms))
    return table.sort_values(["arm", "updates"]).reset_index(drop=True)
