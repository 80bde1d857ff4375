"""Paired comparisons over seeds: the lab's one rule for "is controller A better than B?".

Every controller of an experiment runs on the same seeds from the same warm start, so a seed's
data order and sampling noise enter both runs. Comparing them seed by seed removes that shared
variation. For a controller ``c``, a baseline ``b`` and a metric ``m`` (AUC or final accuracy), on
the seeds ``S`` both finished (``n = |S|``)::

    d_s  = m_c(s) - m_b(s)                                        the per-seed difference
    dbar = (1/n) sum_s d_s,   sd = sqrt(sum_s (d_s - dbar)^2 / (n - 1))
    CI   = dbar +- t_{0.975, n-1} * sd / sqrt(n)                  two-sided 95% Student-t
    MDD  = (t_{0.975, n-1} + t_{0.80, n-1}) * sd / sqrt(n)         minimum detectable difference

MDD is the true paired difference that a two-sided 5% test on these ``n`` seeds detects with 80%
power, at the observed spread: an interval that holds 0 says "no difference larger than about
MDD", not "no difference". The reading of a comparison: ``better`` when the interval lies above 0,
``worse`` when it lies below, else ``not resolved``; with a non-inferiority ``margin`` the
reading ``non-inferior`` means the interval's lower end lies above ``-margin``.

``report.md``, the verdict line of ``metactl demo``/``compare`` and
``examples/compare_paired.py`` all use these functions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metactl.integrations.lab.rundir import shown

#: The fewest paired seeds with a minimum detectable difference (two leave one degree of freedom,
#: whose t quantiles make the figure meaningless).
MIN_SEEDS_FOR_MDD = 3


def mean_ci95(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean and two-sided 95% Student-t confidence interval ``(mean, low, high)``.

    With one value there is no interval (no spread can be estimated): ``low`` and ``high`` are
    None. With none, the mean is NaN.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return (math.nan, None, None)
    m = float(arr.mean())
    if arr.size == 1:
        return (m, None, None)
    half = float(_t975(arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return (m, m - half, m + half)


@functools.lru_cache(maxsize=64)
def _t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (one per seed count)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def minimum_detectable(differences: Sequence[float]) -> float | None:
    """``(t_0.975 + t_0.80) * sd / sqrt(n)`` of the per-seed differences; None under 3 seeds."""
    arr = np.asarray(differences, dtype=np.float64)
    if arr.size < MIN_SEEDS_FOR_MDD:
        return None
    from scipy import stats

    n = arr.size
    t_sum = float(stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.80, n - 1))
    return t_sum * float(arr.std(ddof=1)) / math.sqrt(n)


@dataclass(frozen=True)
class PairedDifference:
    """``controller - baseline`` of one metric over the seeds both finished.

    Attributes:
        seeds: the paired seeds, ascending.
        mean: the mean per-seed difference (NaN without seeds).
        ci95: its two-sided 95% Student-t interval; None under two seeds.
        minimum_detectable: see the module docstring; None under three seeds.
    """

    seeds: tuple[int, ...]
    mean: float
    ci95: tuple[float, float] | None
    minimum_detectable: float | None

    def reading(self, margin: float | None = None) -> str:
        """``better``, ``worse``, ``non-inferior`` (with ``margin``) or ``not resolved``."""
        if self.ci95 is None:
            return "not resolved"
        low, high = self.ci95
        if low > 0:
            return "better"
        if high < 0:
            return "worse"
        if margin is not None and low > -margin:
            return "non-inferior"
        return "not resolved"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``summary.json``)."""
        return {
            "seeds": list(self.seeds),
            "mean": self.mean,
            "ci95": None if self.ci95 is None else list(self.ci95),
            "minimum_detectable": self.minimum_detectable,
        }


def paired_difference(
    values: Mapping[int, float], baseline: Mapping[int, float]
) -> PairedDifference:
    """``values - baseline`` seed by seed (both map a seed to a metric), on the seeds both hold."""
    seeds = tuple(sorted(set(values) & set(baseline)))
    differences = [float(values[s]) - float(baseline[s]) for s in seeds]
    mean, low, high = mean_ci95(differences)
    ci = None if low is None or high is None else (low, high)
    return PairedDifference(seeds, mean, ci, minimum_detectable(differences))


#: The metrics of a verdict, by their key in ``summary.json``'s per-controller lists.
VERDICT_METRICS = {"auc": "auc", "final": "final_accuracy"}


def choose_baseline(
    controllers: Mapping[str, Mapping[str, Any]], named: str | None = None
) -> tuple[str, str] | None:
    """The baseline of a verdict and why it is the one, or None without finished runs.

    ``named`` (the config's ``baseline``) wins when it has finished runs. Otherwise the fixed
    temperature with the highest mean AUC over its finished seeds, chosen after the fact on the
    seeds it is then compared on (which favours it); without fixed temperatures, the first
    controller.
    """
    if named is not None and named in controllers:
        return named, "named by the config"
    fixed = [label for label, c in controllers.items() if c.get("kind") == "fixed"]
    if fixed:
        best = max(fixed, key=lambda label: float(np.mean(controllers[label]["auc"])))
        why = "the best fixed temperature by mean AUC on these seeds, chosen after the fact"
        if named is not None:
            why += f" ({named!r}, named by the config, has no finished run)"
        return best, why
    if not controllers:
        return None
    return next(iter(controllers)), "the first controller (no fixed temperature ran)"


def verdict(
    controllers: Mapping[str, Mapping[str, Any]], named: str | None = None
) -> dict[str, Any] | None:
    """Every controller against the baseline (:func:`choose_baseline`), paired by seed.

    Args:
        controllers: ``summary.json``'s ``controllers``: per label, ``kind``, ``seeds`` and the
            per-seed ``auc`` and ``final_accuracy`` lists in the order of ``seeds``.
        named: the baseline the config names, if any.

    Returns:
        ``{"baseline", "why", "rows": {label: {"auc": ..., "final": ..., "reading": ...}}}``
        (differences as fractions, like the accuracies; the reading is on AUC), or None when
        nothing finished.
    """
    chosen = choose_baseline(controllers, named)
    if chosen is None:
        return None
    base_label, why = chosen

    def by_seed(label: str, key: str) -> dict[int, float]:
        c = controllers[label]
        return {int(s): float(v) for s, v in zip(c["seeds"], c[key], strict=True)}

    rows: dict[str, Any] = {}
    for label in controllers:
        if label == base_label:
            continue
        diffs = {
            metric: paired_difference(by_seed(label, key), by_seed(base_label, key))
            for metric, key in VERDICT_METRICS.items()
        }
        rows[label] = {
            **{metric: d.as_dict() for metric, d in diffs.items()},
            "reading": diffs["auc"].reading(),
        }
    return {"baseline": base_label, "why": why, "metric": "auc", "rows": rows}


def _points(value: float | None, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def difference_text(d: Mapping[str, Any]) -> str:
    """``-0.4 [-2.1, +1.3]`` (points) from a :meth:`PairedDifference.as_dict`."""
    ci = d.get("ci95")
    interval = "" if ci is None else f" [{_points(ci[0])}, {_points(ci[1])}]"
    return f"{_points(d.get('mean'))}{interval}"


def verdict_line(v: Mapping[str, Any] | None) -> str:
    """One line: each controller's paired AUC difference to the baseline, its 95% CI, its MDD.

    Labels are shown escaped (:func:`~metactl.integrations.lab.rundir.shown`): no line break or
    terminal control character of a label reaches the line.
    """
    if v is None:
        return "verdict: no finished run"
    if not v["rows"]:
        return (
            f"verdict: only the baseline {shown(v['baseline'])} finished runs; nothing to compare"
        )
    parts = []
    for label, row in v["rows"].items():
        auc = row["auc"]
        mdd = auc.get("minimum_detectable")
        detects = "" if mdd is None else f", detects {_points(mdd, signed=False)}"
        parts.append(
            f"{shown(label)} {difference_text(auc)} "
            f"({row['reading']}{detects}; {len(auc['seeds'])} seeds)"
        )
    head = f"verdict (AUC points, paired by seed, minus {shown(v['baseline'])}: {v['why']}): "
    return head + "; ".join(parts)


def verdict_table(v: Mapping[str, Any], cell: Any = str) -> str:
    """The verdict as a Markdown table; ``cell`` escapes a label for a table cell."""
    rows = [
        f"| controller | seeds | AUC - {cell(v['baseline'])} [95% CI] | minimum detectable "
        f"| final - {cell(v['baseline'])} [95% CI] | minimum detectable | reading (AUC) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in v["rows"].items():
        auc, final = row["auc"], row["final"]
        rows.append(
            f"| {cell(label)} | {len(auc['seeds'])} | {difference_text(auc)} | "
            f"{_points(auc.get('minimum_detectable'), signed=False)} | {difference_text(final)} | "
            f"{_points(final.get('minimum_detectable'), signed=False)} | {row['reading']} |"
        )
    return "\n".join(rows)
