"""examples/compare_paired.py: per-seed differences against a baseline, from run folders."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from metactl.integrations.lab.rundir import run_dir_for, write_meta, write_result

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "compare_paired.py"
SETTINGS = {"task": "addition", "difficulty": 2, "steps": 10, "warm_start": {}, "trainer": {}}


def _folder(
    out: Path,
    finals: dict[str, list[float]],
    kinds: dict[str, str] | None = None,
    first_seed: int = 0,
) -> None:
    labels = list(finals)
    seeds = [first_seed + i for i in range(len(next(iter(finals.values()))))]
    out.mkdir()
    write_meta(out, {"config": {**SETTINGS, "seeds": seeds}, "labels": labels, "seeds": seeds})
    for label, values in finals.items():
        for seed, final in zip(seeds, values, strict=True):
            run_dir = run_dir_for(out, label, seed)
            run_dir.mkdir(parents=True)
            write_result(
                run_dir,
                {
                    "controller": label,
                    "kind": (kinds or {}).get(label, "fixed"),
                    "seed": seed,
                    "steps": SETTINGS["steps"],
                    "initial_accuracy": 0.1,
                    "final_accuracy": final,
                    "auc": final / 2,
                    "curve": [[0, 0.1], [10, final]],
                    "wall_time_s": 1.0,
                },
            )


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_paired_differences_match_a_hand_computation(tmp_path: Path) -> None:
    _folder(tmp_path / "a", {"base": [0.50, 0.60, 0.70], "x": [0.55, 0.60, 0.80]})
    _folder(tmp_path / "b", {"y": [0.40, 0.60, 0.70]})
    proc = _run(str(tmp_path / "a"), str(tmp_path / "b"), "--baseline", "base")
    assert proc.returncode == 0, proc.stderr
    rows = {r["controller"]: r for r in map(json.loads, proc.stdout.splitlines())}
    # x - base = [5, 0, 10] points: mean 5, sd 5, t(0.975, 2) = 4.302653 -> half 12.42
    half = 4.302653 * 5 / math.sqrt(3)
    assert rows["x"]["final_diff_pts"] == 5.0
    assert rows["x"]["final_diff_ci95_pts"] == [round(5 - half, 2), round(5 + half, 2)]
    assert rows["x"]["auc_diff_pts"] == 2.5
    # AUC differences [2.5, 0, 5]: sd 2.5; (t(0.975, 2) + t(0.80, 2)) * sd / sqrt(3)
    mdd = (4.302653 + 1.060660) * 2.5 / math.sqrt(3)
    assert rows["x"]["auc_minimum_detectable_pts"] == pytest.approx(mdd, abs=0.01)
    assert rows["y"]["final_diff_pts"] == round(100 * (-0.1 / 3), 2)
    assert rows["base"]["final_diff_ci95_pts"] == [0.0, 0.0]


def test_folders_of_other_settings_are_refused(tmp_path: Path) -> None:
    _folder(tmp_path / "a", {"base": [0.5, 0.6]})
    _folder(tmp_path / "b", {"y": [0.4, 0.6]})
    meta_path = tmp_path / "b" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["difficulty"] = 3
    meta_path.write_text(json.dumps(meta))
    proc = _run(str(tmp_path / "a"), str(tmp_path / "b"), "--baseline", "base")
    assert proc.returncode != 0 and "ran other settings" in proc.stderr


def test_headroom_is_best_schedule_minus_best_fixed_paired_by_seed(tmp_path: Path) -> None:
    finals = {
        "T=a": [0.50, 0.60, 0.70],  # mean 0.600
        "T=b": [0.55, 0.65, 0.70],  # mean 0.633: the best fixed
        "s1": [0.60, 0.70, 0.80],  # mean 0.700: the best schedule
        "s2": [0.50, 0.50, 0.50],
        "tampo": [0.90, 0.90, 0.90],  # adaptive: neither fixed nor schedule
    }
    kinds = {"s1": "piecewise", "s2": "schedule", "tampo": "tampo"}
    _folder(tmp_path / "a", finals, kinds)
    proc = _run(str(tmp_path / "a"), "--headroom")
    assert proc.returncode == 0, proc.stderr
    rows = {r["metric"]: r for r in map(json.loads, proc.stdout.splitlines())}
    final = rows["final"]
    assert (final["best_fixed"], final["best_schedule"]) == ("T=b", "s1")
    assert final["seeds"] == [0, 1, 2]
    # s1 - T=b = [5, 5, 10] points: mean 6.667, sd 2.887, t(0.975, 2) = 4.302653
    diffs = [5.0, 5.0, 10.0]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = 4.302653 * sd / math.sqrt(3)
    assert final["headroom_pts"] == round(mean, 2)
    assert final["headroom_ci95_pts"] == [round(mean - half, 2), round(mean + half, 2)]
    assert rows["auc"]["headroom_pts"] == round(mean / 2, 2)


def test_headroom_needs_fixed_and_schedule_runs(tmp_path: Path) -> None:
    _folder(tmp_path / "a", {"T=a": [0.5, 0.6], "tampo": [0.6, 0.7]}, {"tampo": "tampo"})
    proc = _run(str(tmp_path / "a"), "--headroom")
    assert proc.returncode != 0 and "needs fixed and schedule runs" in proc.stderr
    proc = _run(str(tmp_path / "a"))
    assert proc.returncode == 2 and "--baseline" in proc.stderr


def test_chosen_on_measures_the_development_picks_on_confirmation_seeds(tmp_path: Path) -> None:
    kinds = {"s1": "piecewise", "s2": "schedule", "tampo": "tampo"}
    dev = {  # on development seeds T=b and s1 are the best (AUC = final / 2 here)
        "T=a": [0.50, 0.50, 0.50],
        "T=b": [0.60, 0.60, 0.60],
        "s1": [0.70, 0.70, 0.70],
        "s2": [0.60, 0.60, 0.60],
        "tampo": [0.50, 0.50, 0.50],
    }
    confirm = {  # on confirmation seeds T=a is better than T=b: the pick stays T=b
        "T=a": [0.80, 0.80, 0.80, 0.80, 0.80],
        "T=b": [0.60, 0.62, 0.58, 0.60, 0.65],
        "s1": [0.62, 0.66, 0.58, 0.61, 0.70],
        "s2": [0.90, 0.90, 0.90, 0.90, 0.90],
        "tampo": [0.61, 0.61, 0.61, 0.61, 0.61],
    }
    _folder(tmp_path / "dev", dev, kinds)
    _folder(tmp_path / "confirm", confirm, kinds, first_seed=10_000)
    proc = _run(str(tmp_path / "confirm"), "--chosen-on", str(tmp_path / "dev"))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    auc = {r["controller"]: r for r in rows if r["metric"] == "auc"}
    assert set(auc) == {"T=a", "s1", "s2", "tampo"}
    assert all(r["baseline"] == "T=b" for r in rows)
    assert [label for label, r in auc.items() if r["headroom"]] == ["s1"]
    assert auc["s1"]["seeds"] == [10_000 + i for i in range(5)]
    # s1 - T=b in AUC points (AUC = final / 2): [1, 2, 0, 0.5, 2.5]
    diffs = [1.0, 2.0, 0.0, 0.5, 2.5]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    t975, t80 = 2.776445105, 0.940964683  # Student t, 4 degrees of freedom
    assert auc["s1"]["diff_pts"] == round(mean, 2)
    half = t975 * sd / math.sqrt(5)
    assert auc["s1"]["diff_ci95_pts"] == [round(mean - half, 2), round(mean + half, 2)]
    assert auc["s1"]["minimum_detectable_pts"] == round((t975 + t80) * sd / math.sqrt(5), 2)


def test_chosen_on_refuses_mixed_seed_kinds(tmp_path: Path) -> None:
    kinds = {"s1": "piecewise"}
    _folder(tmp_path / "dev", {"T=a": [0.5, 0.6], "s1": [0.6, 0.7]}, kinds)
    _folder(tmp_path / "dev2", {"T=a": [0.5, 0.6], "s1": [0.6, 0.7]}, kinds)
    _folder(tmp_path / "conf", {"T=a": [0.5, 0.6], "s1": [0.6, 0.7]}, kinds, first_seed=10_000)
    proc = _run(str(tmp_path / "dev2"), "--chosen-on", str(tmp_path / "dev"))
    assert proc.returncode != 0 and "holds development seeds" in proc.stderr
    proc = _run(str(tmp_path / "conf"), "--chosen-on", str(tmp_path / "conf"))
    assert proc.returncode != 0 and "must hold development seeds only" in proc.stderr


def test_chosen_on_picks_across_several_development_folders(tmp_path: Path) -> None:
    kinds = {"s1": "piecewise", "s2": "schedule"}
    _folder(tmp_path / "dev", {"T=a": [0.5, 0.5], "T=b": [0.6, 0.6], "s2": [0.55, 0.55]}, kinds)
    _folder(tmp_path / "screen", {"T=c": [0.58, 0.58], "s1": [0.7, 0.7]}, kinds)
    confirm = {"T=b": [0.6, 0.6, 0.6], "s1": [0.61, 0.62, 0.63], "s2": [0.5, 0.5, 0.5]}
    _folder(tmp_path / "confirm", confirm, kinds, first_seed=10_000)
    proc = _run(
        str(tmp_path / "confirm"),
        "--chosen-on",
        str(tmp_path / "dev"),
        "--chosen-on",
        str(tmp_path / "screen"),
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    auc = {r["controller"]: r for r in rows if r["metric"] == "auc"}
    assert {r["baseline"] for r in rows} == {"T=b"}  # best fixed of both folders
    assert [label for label, r in auc.items() if r["headroom"]] == ["s1"]  # from the screen
    assert auc["s1"]["diff_pts"] == 1.0  # AUC = final / 2: [0.5, 1, 1.5] points
