"""Each controller's sampled temperature over training, from the runs' ``metrics.jsonl``.

A run logs the temperature it sampled at every step (``meta/temperature``). For a controller
with finished runs on seeds ``S`` and a step range ``B`` (a block of the run)::

    course(B) = (1/|S|) sum_{s in S} mean_{t in B} T_s(t)

each seed weighted equally (a seed that logged fewer steps of the block is not down-weighted).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from metactl.integrations.lab.rundir import RunRef, read_metrics
from metactl.metric_keys import TEMPERATURE, meta_key


def sampled_temperatures(run: RunRef) -> dict[int, float]:
    """``step -> temperature`` the run logged (the last record of a step wins)."""
    key = meta_key(TEMPERATURE)
    out: dict[int, float] = {}
    for record in read_metrics(run.path):
        value = record.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out[int(record["step"])] = float(value)
    return out


def block_edges(steps: int, blocks: int) -> list[tuple[int, int]]:
    """``blocks`` consecutive step ranges ``(first, last)`` covering 1..steps (fewer if short)."""
    blocks = max(1, min(blocks, steps))
    cuts = [round(steps * j / blocks) for j in range(blocks + 1)]
    return [(cuts[j] + 1, cuts[j + 1]) for j in range(blocks)]


def temperature_blocks(runs: list[RunRef], steps: int, blocks: int = 5) -> dict[str, Any] | None:
    """Mean sampled temperature per block of the run, per controller, over its finished runs.

    Returns:
        ``{"blocks": [[first, last], ...], "controllers": {label: [mean or None, ...]}}``, or
        None when no finished run logged a temperature.
    """
    edges = block_edges(steps, blocks)
    per_label: dict[str, list[list[float]]] = {}
    for run in runs:
        if run.status != "finished":
            continue
        temps = sampled_temperatures(run)
        if not temps:
            continue
        seed_means = []
        for first, last in edges:
            inside = [t for step, t in temps.items() if first <= step <= last]
            seed_means.append(float(np.mean(inside)) if inside else math.nan)
        per_label.setdefault(run.label, []).append(seed_means)
    if not per_label:
        return None
    controllers: dict[str, list[float | None]] = {}
    for label, rows in per_label.items():
        arr = np.asarray(rows, dtype=np.float64)
        means: list[float | None] = []
        for j in range(arr.shape[1]):
            column = arr[:, j][np.isfinite(arr[:, j])]
            means.append(float(column.mean()) if column.size else None)
        controllers[label] = means
    return {"blocks": [list(e) for e in edges], "controllers": controllers}


def temperature_curve(runs: list[RunRef], bin_steps: int = 10) -> tuple[list[float], list[float]]:
    """The mean sampled temperature of ``runs`` in bins of ``bin_steps`` steps: (centres, means).

    Each finished run's bin mean counts once; a bin's value is the mean over the runs with steps
    in it.
    """
    bins: dict[int, list[float]] = {}
    for run in runs:
        if run.status != "finished":
            continue
        per_bin: dict[int, list[float]] = {}
        for step, t in sampled_temperatures(run).items():
            per_bin.setdefault((step - 1) // bin_steps, []).append(t)
        for b, values in per_bin.items():
            bins.setdefault(b, []).append(float(np.mean(values)))
    order = sorted(bins)
    centres = [b * bin_steps + (bin_steps + 1) / 2 for b in order]
    return centres, [float(np.mean(bins[b])) for b in order]


#: The rounds at the end of a run over which drift is measured.
DRIFT_WINDOW = 30
#: A controller does not drift on the random-reward control if the 95% interval of its mean
#: drift lies inside +-this (temperature units; under one step of the issue-22 grid above 0.6).
DRIFT_MARGIN = 0.15


def first_decision_mean(spec: Any, steps: int, draws: int = 2000) -> float:
    """T0: the expected temperature of a controller's first decision, before any feedback.

    The mean first ``sample()`` of the controller built from ``spec`` (a config's controller
    entry) with seeds ``0..draws-1``: the public API only, so it holds for any controller; 2000
    draws put the Monte Carlo error of a uniform 0.3-2.0 grid's mean near 0.01. Remembered per
    entry, since the report is rewritten after every run.
    """
    return _first_decision_mean(spec.model_dump_json(), steps, draws)


@functools.lru_cache(maxsize=64)
def _first_decision_mean(entry: str, steps: int, draws: int) -> float:
    from pydantic import TypeAdapter

    from metactl.integrations.lab.config import ControllerSpec

    spec = TypeAdapter(ControllerSpec).validate_json(entry)
    values = [
        spec.build(seed=seed, steps=steps, vocab_size=64).sample().value for seed in range(draws)
    ]
    return float(np.mean(values))


def drift(runs: list[RunRef], t0: float, steps: int) -> dict[str, Any] | None:
    """Mean sampled temperature over the last :data:`DRIFT_WINDOW` rounds minus ``t0``, per seed.

    Returns:
        ``{"t0", "seeds", "late_mean", "drift", "drift_ci95", "within_margin", "reading"}``
        over the finished runs (``within_margin``: the interval lies inside
        +-:data:`DRIFT_MARGIN`), or None without finished runs that logged the window.
        ``reading``: ``"no"`` (within the margin), ``"yes, warmer"`` / ``"yes, cooler"`` (the
        interval excludes 0 and is not within the margin), else ``"not resolved"`` (the
        interval holds 0 and reaches beyond the margin: more seeds are needed).
    """
    from metactl.integrations.lab.paired import mean_ci95

    first = steps - DRIFT_WINDOW + 1
    seeds, late = [], []
    for run in sorted(runs, key=lambda r: r.seed):
        if run.status != "finished":
            continue
        window = [t for step, t in sampled_temperatures(run).items() if first <= step <= steps]
        if window:
            seeds.append(run.seed)
            late.append(float(np.mean(window)))
    if not late:
        return None
    mean, low, high = mean_ci95([x - t0 for x in late])
    ci = None if low is None or high is None else [low, high]
    within = ci is not None and -DRIFT_MARGIN < ci[0] and ci[1] < DRIFT_MARGIN
    if within:
        reading = "no"
    elif ci is not None and (ci[0] > 0 or ci[1] < 0):
        reading = "yes, warmer" if ci[0] > 0 else "yes, cooler"
    else:
        reading = "not resolved"
    return {
        "t0": t0,
        "window": [first, steps],
        "seeds": seeds,
        "late_mean": float(np.mean(late)),
        "drift": mean,
        "drift_ci95": ci,
        "within_margin": within,
        "reading": reading,
    }
