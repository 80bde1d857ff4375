"""Paired differences between controllers of ``metactl compare`` folders, seed by seed.

    python examples/compare_paired.py runs/addition2 runs/addition2-ucb --baseline "T=0.6"
    python examples/compare_paired.py runs/headroom-misconception --headroom

Every controller of the folders is compared with ``--baseline`` on the seeds both finished:
the mean of the per-seed differences of final held-out accuracy and of AUC, with a 95%
Student-t interval over those differences (pairing by seed removes the variation that the
shared warm start and data order put into both), and the AUC difference's minimum detectable
difference (below). Folders must hold the same task and settings (checked). One JSON object per
controller.

``--headroom`` prints, per metric, the best schedule (``schedule`` or ``piecewise`` runs) minus
the best fixed temperature (``fixed`` runs), each the best by mean over the seeds every one of
them finished: the headroom of docs/testbed.md. Picking both after the fact makes it lean
optimistic when many schedules are tried.

``--chosen-on DEV`` (repeatable) removes that optimism: the best fixed temperature and the best
schedule are picked by their mean AUC on the development folders ``DEV``, and every controller
of the (confirmation) folders given, which must not hold development seeds, is measured against
that fixed temperature on AUC and on final accuracy. Each row then also gives the minimum
detectable difference: the true paired difference that a two-sided 5% test on this many seeds
would detect with 80% power, ``(t_0.975 + t_0.80) * sd / sqrt(n)`` with the observed standard
deviation of the per-seed differences. The statistics are ``metactl.integrations.lab.paired``'s,
the rule of the report's verdict too.

    python examples/compare_paired.py runs/misconception-confirm \\
        --chosen-on runs/misconception-dev --chosen-on runs/misconception-screen
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from metactl.integrations.lab.config import seed_evidence
from metactl.integrations.lab.paired import paired_difference
from metactl.integrations.lab.rundir import list_runs, read_meta

#: The trainer settings that change what a run learns (not where it runs or logs).
LEARNING_SETTINGS = ("learning_rate", "prompts_per_step", "num_generations", "beta")


#: Controller kinds that are a fixed temperature, and those that are a preset course of them.
FIXED_KINDS = ("fixed",)
SCHEDULE_KINDS = ("schedule", "piecewise")


@dataclass
class Args:
    folders: list[str]
    baseline: str | None
    headroom: bool
    chosen_on: list[str] | None


def finished_runs(
    folders: list[str], kinds: dict[str, str] | None = None
) -> dict[str, dict[int, dict[str, float]]]:
    """``label -> seed -> {"final": ..., "auc": ...}`` over every finished run of ``folders``.

    ``kinds``, when given, is filled with ``label -> controller kind``.
    """
    runs: dict[str, dict[int, dict[str, float]]] = {}
    settings = None
    for folder in folders:
        config = read_meta(Path(folder)).get("config", {})
        trainer = config.get("trainer", {})
        config = {key: config.get(key) for key in ("task", "difficulty", "steps", "warm_start")}
        config["trainer"] = {key: trainer.get(key) for key in LEARNING_SETTINGS}
        if settings is not None and config != settings:
            raise SystemExit(f"compare_paired: {folder} ran other settings than {folders[0]}")
        settings = config
        for run in list_runs(Path(folder)):
            if run.result is not None:
                runs.setdefault(run.label, {})[run.seed] = {
                    "final": float(run.result["final_accuracy"]),
                    "auc": float(run.result["auc"]),
                }
                if kinds is not None:
                    kinds[run.label] = str(run.result["kind"])
    return runs


def _metric(by_seed: dict[int, dict[str, float]], metric: str) -> dict[int, float]:
    return {seed: values[metric] for seed, values in by_seed.items()}


def paired(
    by_seed: dict[int, dict[str, float]], base: dict[int, dict[str, float]], metric: str
) -> tuple[float, list[float] | None]:
    """Mean per-seed difference ``by_seed - base`` of ``metric`` in points, with its 95% CI."""
    d = paired_difference(_metric(by_seed, metric), _metric(base, metric))
    interval = None if d.ci95 is None else [round(100 * d.ci95[0], 2), round(100 * d.ci95[1], 2)]
    return round(100 * d.mean, 2), interval


def minimum_detectable(
    by_seed: dict[int, dict[str, float]], base: dict[int, dict[str, float]], metric: str
) -> float | None:
    """Points of paired difference a 5% two-sided t-test detects with 80% power on these seeds."""
    mdd = paired_difference(_metric(by_seed, metric), _metric(base, metric)).minimum_detectable
    return None if mdd is None else round(100 * mdd, 2)


def evidence_of(folder: str) -> set[str]:
    """The kinds of seeds (development, confirmation) a folder's finished runs used."""
    return {seed_evidence(run.seed) for run in list_runs(Path(folder)) if run.result is not None}


def best_on(folders: list[str], metric: str) -> tuple[str, str]:
    """The best fixed temperature and the best schedule of ``folders`` by mean ``metric``."""
    kinds: dict[str, str] = {}
    runs = finished_runs(folders, kinds)

    def mean(label: str) -> float:
        return sum(v[metric] for v in runs[label].values()) / len(runs[label])

    fixed = [label for label in runs if kinds[label] in FIXED_KINDS]
    schedules = [label for label in runs if kinds[label] in SCHEDULE_KINDS]
    if not fixed or not schedules:
        raise SystemExit(f"compare_paired: {folders} need fixed and schedule runs; have {kinds}")
    return max(fixed, key=mean), max(schedules, key=mean)


def chosen_on(devs: list[str], folders: list[str]) -> None:
    """Every controller of ``folders`` against the fixed temperature that is best on ``devs``.

    The row marked ``headroom`` is the schedule best on ``devs`` minus that fixed temperature,
    both measured on ``folders``.
    """
    for dev in devs:
        if evidence_of(dev) != {"development"}:
            raise SystemExit(f"compare_paired --chosen-on: {dev} must hold development seeds only")
    for folder in folders:
        if "development" in evidence_of(folder):
            raise SystemExit(
                f"compare_paired --chosen-on: {folder} holds development seeds; the choice "
                "is measured on confirmation seeds only"
            )
    finished_runs([*devs, *folders])  # same settings, checked
    runs = finished_runs(folders)
    base_label, schedule = best_on(devs, "auc")  # the claims are on AUC
    missing = [label for label in (base_label, schedule) if label not in runs]
    if missing:
        raise SystemExit(f"compare_paired --chosen-on: {folders} lack the picks {missing}")
    base = runs[base_label]
    for metric in ("auc", "final"):
        for label, by_seed in runs.items():
            if label == base_label:
                continue
            diff, interval = paired(by_seed, base, metric)
            row = {
                "metric": metric,
                "controller": label,
                "baseline": base_label,
                "chosen_on": devs,
                "headroom": label == schedule,
                "seeds": sorted(set(by_seed) & set(base)),
                "diff_pts": diff,
                "diff_ci95_pts": interval,
                "minimum_detectable_pts": minimum_detectable(by_seed, base, metric),
            }
            print(json.dumps(row))


def headroom(folders: list[str]) -> None:
    """Print, per metric, the best schedule minus the best fixed temperature, paired by seed."""
    kinds: dict[str, str] = {}
    runs = finished_runs(folders, kinds)
    fixed = [label for label in runs if kinds[label] in FIXED_KINDS]
    schedules = [label for label in runs if kinds[label] in SCHEDULE_KINDS]
    if not fixed or not schedules:
        raise SystemExit(
            f"compare_paired --headroom: needs fixed and schedule runs; have kinds {kinds}"
        )
    seeds = sorted(set.intersection(*(set(runs[label]) for label in fixed + schedules)))
    if not seeds:
        raise SystemExit(
            "compare_paired --headroom: no seed that every fixed and schedule run finished"
        )
    common = {label: {s: runs[label][s] for s in seeds} for label in fixed + schedules}
    for metric in ("final", "auc"):
        means = {
            label: sum(v[metric] for v in common[label].values()) / len(seeds) for label in common
        }
        best_fixed = max(fixed, key=means.__getitem__)
        best_schedule = max(schedules, key=means.__getitem__)
        diff, interval = paired(common[best_schedule], common[best_fixed], metric)
        row = {
            "metric": metric,
            "seeds": seeds,
            "best_fixed": best_fixed,
            "best_fixed_pts": round(100 * means[best_fixed], 2),
            "best_schedule": best_schedule,
            "best_schedule_pts": round(100 * means[best_schedule], 2),
            "headroom_pts": diff,
            "headroom_ci95_pts": interval,
        }
        print(json.dumps(row))


def main(args: Args) -> None:
    if args.chosen_on is not None:
        chosen_on(args.chosen_on, args.folders)
        return
    if args.headroom:
        headroom(args.folders)
        return
    assert args.baseline is not None  # argparse requires one of the two
    runs = finished_runs(args.folders)
    if args.baseline not in runs:
        raise SystemExit(f"compare_paired: no finished run of {args.baseline!r}; have {list(runs)}")
    base = runs[args.baseline]
    for label, by_seed in runs.items():
        seeds = sorted(set(by_seed) & set(base))
        row: dict[str, object] = {"controller": label, "baseline": args.baseline, "seeds": seeds}
        for metric in ("final", "auc"):
            row[f"{metric}_diff_pts"], row[f"{metric}_diff_ci95_pts"] = paired(
                by_seed, base, metric
            )
        row["auc_minimum_detectable_pts"] = minimum_detectable(by_seed, base, "auc")
        print(json.dumps(row))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="metactl compare output folders")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--baseline", help="controller label to compare with")
    mode.add_argument(
        "--headroom", action="store_true", help="best schedule minus best fixed temperature"
    )
    mode.add_argument(
        "--chosen-on",
        metavar="DEV",
        action="append",
        help="baseline and schedule picked on development folder DEV (repeat for several)",
    )
    main(Args(**vars(parser.parse_args())))
