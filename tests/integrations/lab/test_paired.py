"""The lab's paired comparisons and the report's verdict, against hand computations."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from metactl.integrations.lab.paired import (
    choose_baseline,
    minimum_detectable,
    paired_difference,
    verdict,
    verdict_line,
)

# Student-t quantiles from a table (not from scipy): t_{0.975, 3} and t_{0.80, 3}.
T975_3 = 3.182446305284263
T80_3 = 0.978472312358
# ... and with 2 degrees of freedom.
T975_2 = 4.302652729911275
T80_2 = 1.060660171779821


def test_paired_difference_matches_a_hand_computation() -> None:
    values = {0: 0.51, 1: 0.62, 2: 0.73, 3: 0.86, 7: 0.99}  # seed 7 has no baseline: unpaired
    base = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.80, 4: 0.10}  # seed 4 has no value: unpaired
    d = paired_difference(values, base)
    # Differences 0.01, 0.02, 0.03, 0.06: mean 0.03, SD sqrt((4 + 1 + 0 + 9) / 3) * 0.01.
    sd = math.sqrt(14 / 3) * 0.01
    assert d.seeds == (0, 1, 2, 3)
    assert d.mean == pytest.approx(0.03)
    assert d.ci95 is not None
    assert d.ci95[0] == pytest.approx(0.03 - T975_3 * sd / 2)
    assert d.ci95[1] == pytest.approx(0.03 + T975_3 * sd / 2)
    assert d.minimum_detectable == pytest.approx((T975_3 + T80_3) * sd / 2)


def test_minimum_detectable_needs_three_seeds() -> None:
    assert minimum_detectable([0.1, 0.2]) is None
    assert minimum_detectable([0.1, 0.2, 0.6]) == pytest.approx(
        (T975_2 + T80_2) * math.sqrt(((0.1 - 0.3) ** 2 + 0.1**2 + 0.3**2) / 2) / math.sqrt(3)
    )
    one = paired_difference({0: 0.5}, {0: 0.4})
    assert one.mean == pytest.approx(0.1) and one.ci95 is None and one.minimum_detectable is None
    none = paired_difference({0: 0.5}, {1: 0.4})
    assert none.seeds == () and math.isnan(none.mean) and none.ci95 is None


@pytest.mark.parametrize(
    ("ci", "margin", "reading"),
    [
        ((0.001, 0.02), None, "better"),
        ((-0.02, -0.001), None, "worse"),
        ((-0.01, 0.02), None, "not resolved"),
        ((-0.004, 0.02), 0.005, "non-inferior"),
        ((-0.006, 0.02), 0.005, "not resolved"),
        ((-0.02, -0.001), 0.005, "worse"),
        (None, None, "not resolved"),
    ],
)
def test_reading_of_an_interval(
    ci: tuple[float, float] | None, margin: float | None, reading: str
) -> None:
    from metactl.integrations.lab.paired import PairedDifference

    assert PairedDifference((0, 1), 0.0, ci, None).reading(margin) == reading


def _controllers() -> dict[str, Any]:
    return {
        "TAMPO": {"kind": "tampo", "seeds": [0, 1, 2], "auc": [0.60, 0.62, 0.64],
                  "final_accuracy": [0.7, 0.7, 0.7]},
        "T=0.6": {"kind": "fixed", "seeds": [0, 1, 2], "auc": [0.61, 0.64, 0.68],
                  "final_accuracy": [0.7, 0.72, 0.74]},
        "T=1": {"kind": "fixed", "seeds": [0, 1, 2], "auc": [0.58, 0.60, 0.62],
                "final_accuracy": [0.69, 0.7, 0.71]},
    }  # fmt: skip


def test_the_baseline_is_the_named_one_else_the_best_fixed_temperature() -> None:
    c = _controllers()
    assert choose_baseline(c, "T=1") == ("T=1", "named by the config")
    label, why = choose_baseline(c)  # type: ignore[misc]
    assert label == "T=0.6" and "after the fact" in why  # mean AUC 0.643 > 0.60
    label, why = choose_baseline(c, "T=1.4")  # type: ignore[misc]
    assert label == "T=0.6" and "'T=1.4', named by the config, has no finished run" in why
    assert choose_baseline({"TAMPO": c["TAMPO"]}) == (
        "TAMPO",
        "the first controller (no fixed temperature ran)",
    )
    assert choose_baseline({}) is None


def test_verdict_rows_and_line() -> None:
    v = verdict(_controllers())
    assert v is not None and v["baseline"] == "T=0.6" and list(v["rows"]) == ["TAMPO", "T=1"]
    # TAMPO - T=0.6 on AUC: -0.01, -0.02, -0.04 -> mean -0.02333, SD 0.01528 (hand: t tables).
    tampo = v["rows"]["TAMPO"]["auc"]
    sd = math.sqrt(((4 / 3) ** 2 + (1 / 3) ** 2 + (5 / 3) ** 2) / 2) * 0.01
    assert tampo["mean"] == pytest.approx(-0.07 / 3)
    assert tampo["ci95"][1] == pytest.approx(-0.07 / 3 + T975_2 * sd / math.sqrt(3))
    assert tampo["minimum_detectable"] == pytest.approx((T975_2 + T80_2) * sd / math.sqrt(3))
    assert v["rows"]["TAMPO"]["reading"] == "not resolved"  # upper end +0.0146 > 0
    # T=1 - T=0.6: -0.03, -0.04, -0.06: upper end -0.0137 < 0.
    assert v["rows"]["T=1"]["reading"] == "worse"
    line = verdict_line(v)
    assert line.startswith("verdict (AUC points, paired by seed, minus T=0.6: the best fixed")
    assert "TAMPO -2.3 [-6.1, +1.5] (not resolved, detects 4.7; 3 seeds)" in line
    assert "T=1 -4.3 [-8.1, -0.5] (worse, detects 4.7; 3 seeds)" in line
    assert verdict_line(None) == "verdict: no finished run"


# --- the report -------------------------------------------------------------------------------


def _run(
    out: Path, label: str, slug: str, seed: int, kind: str, auc: float, curve: list[Any],
    temperatures: list[float],
) -> None:  # fmt: skip
    rd = out / "runs" / slug / f"seed{seed}"
    rd.mkdir(parents=True)
    records = [{"step": s + 1, "meta/temperature": t} for s, t in enumerate(temperatures)]
    records += [{"step": s, "eval/accuracy": a} for s, a in curve]
    (rd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = {
        "controller": label, "kind": kind, "seed": seed, "steps": len(temperatures),
        "initial_accuracy": curve[0][1], "final_accuracy": curve[-1][1], "auc": auc,
        "curve": curve, "wall_time_s": 1.0,
    }  # fmt: skip
    (rd / "result.json").write_text(json.dumps(result))


def _folder(out: Path, baseline: str | None = None) -> None:
    """Two controllers on seeds 0-2, 10 steps; T=0.6's curves end near 100% (wide band)."""
    out.mkdir()
    config: dict[str, Any] = {
        "task": "addition", "difficulty": 2, "steps": 10,
        "controllers": [{"kind": "tampo"}, {"kind": "fixed", "temperature": 0.6}],
    }  # fmt: skip
    if baseline is not None:
        config["baseline"] = baseline
    meta = {"config": config, "command": "metactl compare c.yaml", "labels": ["TAMPO", "T=0.6"],
            "seeds": [0, 1, 2], "expected_runs": 6}  # fmt: skip
    (out / "config.json").write_text(json.dumps(meta))
    tampo_temps = [[1.0] * 5 + [0.6] * 5, [1.0] * 5 + [0.8] * 5, [0.8] * 10]
    for seed, (auc_t, auc_f, end) in enumerate([(0.5, 0.55, 0.99), (0.52, 0.6, 0.6),
                                                 (0.54, 0.62, 1.0)]):  # fmt: skip
        _run(out, "TAMPO", "TAMPO", seed, "tampo", auc_t, [[0, 0.4], [10, 0.5]], tampo_temps[seed])
        _run(out, "T=0.6", "T0.6", seed, "fixed", auc_f, [[0, 0.4], [10, end]], [0.6] * 10)


def test_report_names_the_baseline_and_gives_each_paired_difference(tmp_path: Path) -> None:
    from metactl.integrations.lab.report import write_report

    out = tmp_path / "run"
    _folder(out)
    summary = write_report(out, figure=False)
    v = summary["verdict"]
    assert v["baseline"] == "T=0.6"
    # TAMPO - T=0.6 on AUC: -0.05, -0.08, -0.08 -> mean -0.07, SD sqrt(0.0006 / 2) = 0.01732.
    sd = math.sqrt(0.0006 / 2)
    row = v["rows"]["TAMPO"]["auc"]
    assert row["mean"] == pytest.approx(-0.07)
    assert row["ci95"] == pytest.approx(
        [-0.07 - T975_2 * sd / 3**0.5, -0.07 + T975_2 * sd / 3**0.5]
    )
    text = (out / "report.md").read_text()
    assert "Baseline: **T=0.6** (the best fixed temperature by mean AUC" in text
    assert "| TAMPO | 3 | -7.0 [-11.3, -2.7] | 5.4 |" in text and "| worse |" in text
    # Temperature over training, 5 blocks of 2 steps, mean over the 3 seeds.
    assert summary["temperature"]["blocks"] == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]
    assert summary["temperature"]["controllers"]["TAMPO"] == pytest.approx(
        [(1.0 + 1.0 + 0.8) / 3, (1.0 + 1.0 + 0.8) / 3, (0.8 + 0.9 + 0.8) / 3,
         (0.6 + 0.8 + 0.8) / 3, (0.6 + 0.8 + 0.8) / 3]
    )  # fmt: skip
    assert "| TAMPO | 0.93 | 0.93 | 0.83 | 0.73 | 0.73 |" in text
    assert "| T=0.6 | 0.60 | 0.60 | 0.60 | 0.60 | 0.60 |" in text


def test_the_config_names_the_baseline(tmp_path: Path) -> None:
    from metactl.integrations.lab.report import write_report

    out = tmp_path / "run"
    _folder(out, baseline="TAMPO")
    v = write_report(out, figure=False)["verdict"]
    assert v["baseline"] == "TAMPO" and v["why"] == "named by the config"
    assert v["rows"]["T=0.6"]["auc"]["mean"] == pytest.approx(0.07)


def test_a_baseline_that_is_not_a_label_is_refused() -> None:
    from metactl.integrations.lab.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"baseline: 'T=2' is not a controller label"):
        parse_config({"controllers": [{"kind": "tampo"}], "baseline": "T=2"})


def test_plot_prints_the_verdict_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from metactl.integrations.lab.cli import main

    out = tmp_path / "run"
    _folder(out)
    assert main(["plot", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("verdict (AUC points, paired by seed, minus T=0.6")
    assert "TAMPO -7.0 [-11.3, -2.7] (worse, detects 5.4; 3 seeds)" in last


def test_figure_bands_stay_in_zero_one_and_pooling_is_said(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metactl.integrations.lab import report
    from metactl.integrations.lab.rundir import check_files

    out = tmp_path / "run"
    _folder(out)
    summary = report.collect(out)
    runs = check_files(out)
    fig, axes = plt.subplots(1, 3)
    report._plot_curves(axes[0], summary, runs, report._specs(out))
    # T=0.6 ends at 99, 60 and 100%: its t interval there reaches about 150%.
    ends = [0.99, 0.6, 1.0]
    mean = sum(ends) / 3
    sd = math.sqrt(sum((e - mean) ** 2 for e in ends) / 2)
    assert mean + T975_2 * sd / math.sqrt(3) > 1.2
    for band in axes[0].collections:
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() >= 0.0 and ys.max() <= 100.0
    assert any(b.get_paths()[0].vertices[:, 1].max() == pytest.approx(100.0)
               for b in axes[0].collections)  # fmt: skip
    report._plot_temperatures(axes[1], summary, runs)
    lines = {line.get_label(): line for line in axes[1].get_lines()}
    assert list(lines["TAMPO (n=3)"].get_ydata()) == pytest.approx([(0.8 + 0.9 + 0.8) / 3])
    report._plot_preferred(axes[2], runs)
    assert "pooled over 2 controllers" in axes[2].get_title()
    plt.close(fig)


def test_drift_on_the_random_reward_control(tmp_path: Path) -> None:
    """Late mean temperature minus the first decision's expectation, with its interval."""
    from metactl.integrations.lab.report import write_report

    out = tmp_path / "run"
    out.mkdir()
    grid = [0.5, 1.0]
    config = {
        "task": "addition", "difficulty": 2, "steps": 40, "random_reward": 0.1,
        "controllers": [{"kind": "informativeness", "temperatures": grid},
                        {"kind": "fixed", "temperature": 0.5}],
    }  # fmt: skip
    meta = {"config": config, "command": "c", "labels": ["Informativeness", "T=0.5"],
            "seeds": [0, 1, 2], "expected_runs": 6}  # fmt: skip
    (out / "config.json").write_text(json.dumps(meta))
    lates = [1.0, 0.9, 1.1]  # the mean over rounds 11-40 of each seed
    for seed, late in enumerate(lates):
        temps = [0.5] * 10 + [late] * 30
        _run(out, "Informativeness", "Informativeness", seed, "informativeness", 0.5,
             [[0, 0.4], [40, 0.5]], temps)  # fmt: skip
        _run(out, "T=0.5", "T0.5", seed, "fixed", 0.5, [[0, 0.4], [40, 0.5]], [0.5] * 40)
    summary = write_report(out, figure=False)
    assert list(summary["drift"]) == ["Informativeness"]  # a fixed temperature cannot drift
    d = summary["drift"]["Informativeness"]
    # T0: a uniform first decision over {0.5, 1.0} (softmax of zeros, top_p 1): 0.75, up to the
    # Monte Carlo error of 2000 draws (SD 0.25 / sqrt(2000) = 0.006).
    assert d["t0"] == pytest.approx(0.75, abs=0.02)
    assert d["window"] == [11, 40] and d["seeds"] == [0, 1, 2]
    assert d["drift"] == pytest.approx(1.0 - d["t0"])
    half = T975_2 * 0.1 / math.sqrt(3)  # SD of 1.0, 0.9, 1.1 is 0.1
    assert d["drift_ci95"] == pytest.approx([1.0 - d["t0"] - half, 1.0 - d["t0"] + half])
    assert d["within_margin"] is False
    text = (out / "report.md").read_text()
    assert d["reading"] == "yes, warmer"  # the interval excludes 0: upward
    assert "## Drift on the random-reward control" in text and "| yes, warmer |" in text
    assert "**Random-reward control**: every completion's training reward was 1 with" in text


@pytest.mark.parametrize(
    ("lates", "reading"),
    [
        ([0.75, 0.76, 0.74], "no"),  # drifts -0.00 +-0.01: inside +-0.15
        ([0.55, 0.60, 0.65], "yes, cooler"),  # [-0.27, -0.03]: excludes 0, below
        ([0.60, 1.00, 0.65], "not resolved"),  # holds 0 and reaches beyond +-0.15
    ],
)
def test_drift_reading(tmp_path: Path, lates: list[float], reading: str) -> None:
    """Within the margin: no; an interval that excludes 0: yes, its way; else not resolved."""
    from metactl.integrations.lab.rundir import list_runs
    from metactl.integrations.lab.temperature_course import drift

    for seed, late in enumerate(lates):
        _run(tmp_path, "C", "C", seed, "tampo", 0.5, [[0, 0.4], [40, 0.5]], [late] * 40)
    d = drift(list_runs(tmp_path), 0.75, 40)
    assert d is not None and d["reading"] == reading
    mean = sum(lates) / 3 - 0.75
    assert d["drift"] == pytest.approx(mean)
    ci = d["drift_ci95"]
    assert (ci[0] > -0.15 and ci[1] < 0.15) == (reading == "no")
