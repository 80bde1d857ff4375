"""Paired differences between controllers of ``metactl compare`` folders, seed by seed.

    python examples/compare_paired.py runs/addition2 runs/addition2-ucb --baseline "T=0.6"

Every controller of the folders is compared with ``--baseline`` on the seeds both finished:
the mean of the per-seed differences of final held-out accuracy and of AUC, with a 95%
Student-t interval over those differences (pairing by seed removes the variation that the
shared warm start and data order put into both). Folders must hold the same task and settings
(checked). One JSON object per controller.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from metactl.integrations.lab.report import mean_ci95
from metactl.integrations.lab.rundir import list_runs, read_meta

#: The trainer settings that change what a run learns (not where it runs or logs).
LEARNING_SETTINGS = ("learning_rate", "prompts_per_step", "num_generations", "beta")


@dataclass
class Args:
    folders: list[str]
    baseline: str


def finished_runs(folders: list[str]) -> dict[str, dict[int, dict[str, float]]]:
    """``label -> seed -> {"final": ..., "auc": ...}`` over every finished run of ``folders``."""
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
    return runs


def main(args: Args) -> None:
    runs = finished_runs(args.folders)
    if args.baseline not in runs:
        raise SystemExit(f"compare_paired: no finished run of {args.baseline!r}; have {list(runs)}")
    base = runs[args.baseline]
    for label, by_seed in runs.items():
        seeds = sorted(set(by_seed) & set(base))
        row: dict[str, object] = {"controller": label, "baseline": args.baseline, "seeds": seeds}
        for metric in ("final", "auc"):
            mean, low, high = mean_ci95([by_seed[s][metric] - base[s][metric] for s in seeds])
            row[f"{metric}_diff_pts"] = round(100 * mean, 2)
            row[f"{metric}_diff_ci95_pts"] = (
                None if low is None or high is None else [round(100 * low, 2), round(100 * high, 2)]
            )
        print(json.dumps(row))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="metactl compare output folders")
    parser.add_argument("--baseline", required=True, help="controller label to compare with")
    main(Args(**vars(parser.parse_args())))
