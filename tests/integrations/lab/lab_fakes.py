"""Fake training for the lab's command-line tests, usable in the job's worker processes.

``metactl demo`` and ``compare --workers N`` train in spawned processes, which receive the
training function pickled by reference (its module and name). A fake must therefore be a
module-level function of an importable module (this one: the workers get the test process's
``sys.path``), and what it records must outlive the process it ran in: each call appends one
line to the file named by ``$METACTL_TEST_FAKE_CALLS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: The environment variable naming the file each fake call appends to (the workers inherit it).
CALLS_ENV = "METACTL_TEST_FAKE_CALLS"


class FakeCalls:
    """The ``(controller index, seed, pid)`` of every fake call, read from the calls file.

    Compares equal to a list of ``(index, seed)`` pairs, in the order the calls happened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def entries(self) -> list[tuple[int, int, int]]:
        """Every call as ``(index, seed, pid)``."""
        rows = [line.split() for line in self.path.read_text().splitlines() if line]
        return [(int(i), int(s), int(p)) for i, s, p in rows]

    def pairs(self) -> list[tuple[int, int]]:
        return [(i, s) for i, s, _ in self.entries()]

    def pids(self) -> set[int]:
        """The processes the fake ran in."""
        return {p for _, _, p in self.entries()}

    def clear(self) -> None:
        self.path.write_text("")

    def __len__(self) -> int:
        return len(self.entries())

    def __eq__(self, other: object) -> bool:
        return self.pairs() == other

    def __repr__(self) -> str:
        return f"FakeCalls({self.pairs()})"


def _record(index: int, seed: int) -> None:
    with open(os.environ[CALLS_ENV], "a") as f:  # one short O_APPEND write per call
        f.write(f"{index} {seed} {os.getpid()}\n")


def write_fake_run(
    out: Path, label: str, slug: str, seed: int, *, finished: bool, kind: str, steps: int = 20
) -> None:
    """The files of one run under ``out/runs/<slug>/seed<seed>`` (a torn line if unfinished)."""
    rd = out / "runs" / slug / f"seed{seed}"
    rd.mkdir(parents=True)
    lines = [{"step": 0, "eval/accuracy": 0.4}]
    for s in range(1, 21):
        rec: dict[str, Any] = {"step": s, "meta/temperature": 0.6 + 0.1 * (s % 3)}
        if kind == "tampo":
            rec.update({f"meta/prob/{t:g}": 1 / 3 for t in (0.6, 0.7, 0.8)})
        if kind == "meta_gradient":  # a Box policy logs its median and sigma
            rec.update({"meta/mean": 0.9 + 0.01 * s, "meta/sigma": 1.0 / s})
        lines.append(rec)
        if s % 10 == 0:
            lines.append({"step": s, "eval/accuracy": 0.4 + 0.01 * s + 0.01 * seed})
    text = "\n".join(json.dumps(x) for x in lines) + "\n"
    if not finished:
        text += '{"step": 21, "meta/tempera'  # torn line of a killed process
    (rd / "metrics.jsonl").write_text(text)
    (rd / "rollouts.jsonl").write_text(
        json.dumps(
            {
                "step": 10,
                "advantage": [1.0, -0.5, -0.5, 1.0, -0.5],
                "preferred": [0.7, 1.2, 1.4, 0.05, 10.0],  # two at the search bounds
            }
        )
        + "\n"
    )
    if finished:
        curve = [[0, 0.4], [10, 0.5 + 0.01 * seed], [steps, 0.6 + 0.01 * seed]]
        (rd / "result.json").write_text(
            json.dumps(
                {
                    "controller": label,
                    "kind": kind,
                    "seed": seed,
                    "steps": steps,
                    "initial_accuracy": 0.4,
                    "final_accuracy": 0.6 + 0.01 * seed,
                    "auc": 0.5,
                    "curve": curve,
                    "wall_time_s": 3.0,
                }
            )
        )


def fake_run_one(cfg: Any, index: int, seed: int, run_dir: Path, **kw: Any) -> dict[str, Any]:
    """``runner.run_one``'s stand-in: records the call and writes a finished fake run."""
    import shutil

    _record(index, seed)
    shutil.rmtree(run_dir, ignore_errors=True)
    spec = cfg.controllers[index]
    write_fake_run(
        run_dir.parents[2],
        spec.label(),
        run_dir.parent.name,
        seed,
        finished=True,
        kind=spec.kind,
        steps=cfg.steps,
    )
    result: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
    return result


class FakeTrainingCalled(RuntimeError):
    """Raised by :func:`raising_run_one`: proof that the job called the fake."""


def raising_run_one(cfg: Any, index: int, seed: int, run_dir: Path, **kw: Any) -> Any:
    """``runner.run_one``'s stand-in that records the call, then raises."""
    _record(index, seed)
    raise FakeTrainingCalled(f"fake training called for controller {index}, seed {seed}")
