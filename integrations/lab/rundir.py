"""The run-folder format of ``metactl compare``/``demo``: the one module that writes and reads it.

One experiment per folder::

    OUT/config.json                              the validated config, command, versions, labels
    OUT/runs/<slug(controller)>/seed<k>/metrics.jsonl   per-step metrics (also for unfinished runs)
    OUT/runs/<slug(controller)>/seed<k>/rollouts.jsonl  probe rollouts: advantage, preferred T
    OUT/runs/<slug(controller)>/seed<k>/result.json     written last, only when the run finished
    OUT/summary.json  OUT/report.md  OUT/report.png     the report (rewritten from the files above)

Everything is JSON or JSON lines (no pickle), so a report can be drawn from a finished or an
interrupted folder without torch or TRL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
ROLLOUTS_FILE = "rollouts.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"


def slug(label: str) -> str:
    """A folder name for a controller label (``"T=0.6"`` -> ``"T0.6"``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "", label.replace(" ", "_")) or "controller"


def run_dir_for(out: Path, label: str, seed: int) -> Path:
    """The folder of one run inside a compare output folder."""
    return out / "runs" / slug(label) / f"seed{seed}"


def run_dirs(out: Path) -> list[Path]:
    """Every run folder under ``out``, finished or not, in a stable order."""
    runs = out / "runs"
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.glob("*/seed*") if p.is_dir())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a torn last line (an interrupted write)."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON object as a line (a crash leaves at most one torn last line)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_meta(out: Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder, or ``{}`` when absent or unreadable."""
    path = out / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    """Write ``config.json`` of a run folder."""
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The ``result.json`` of a finished run, or None (unfinished, or a torn write)."""
    path = run_dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return result if isinstance(result, dict) else None


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Write ``result.json``: the mark that the run finished (so it is written last)."""
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=1))


def label_for_dir(out: Path, run_dir: Path) -> str:
    """The controller label of a run folder (from ``config.json``; the folder name otherwise)."""
    slugs = read_meta(out).get("slugs", {})
    name = run_dir.parent.name
    return str(slugs[name]) if isinstance(slugs, dict) and name in slugs else name
