"""The run-folder format of ``metactl compare``/``demo``: the one module that writes and reads it.

One experiment per folder::

    OUT/config.json                              the validated config, command, versions, labels
    OUT/runs/<folder(label)>/seed<k>/metrics.jsonl   per-step metrics (also for unfinished runs)
    OUT/runs/<folder(label)>/seed<k>/rollouts.jsonl  probe rollouts: advantage, preferred T
    OUT/runs/<folder(label)>/seed<k>/result.json     written last, only when the run finished
    OUT/summary.json  OUT/report.md  OUT/report.png     the report (rewritten from the files above)

Rules this module enforces (the runner, the report and the config validation all ask it):

- A folder holds one experiment: an existing non-empty folder is used only with ``--resume``
  and the same config (:func:`check_out`).
- No two runs share a folder: every controller label maps to its own folder name
  (:func:`folder_names` refuses labels whose names would collide, compared case-insensitively
  because macOS and Windows file systems are).
- The expected runs are the config's labels x seeds; :func:`list_runs` says of each whether it
  finished, is unfinished (a folder without ``result.json``) or missing (no folder), so the
  summary, the table and the figure agree.

Everything is JSON or JSON lines (no pickle), so a report can be drawn from a finished or an
interrupted folder without torch or TRL.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
ROLLOUTS_FILE = "rollouts.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
RUNS_DIR = "runs"

#: Search bounds of each probe rollout's preferred temperature (``rollouts.jsonl``): a value
#: at a bound means "at most/at least this", not a measurement.
PREFERRED_BOUNDS = (0.05, 10.0)


class RunFolderError(ValueError):
    """``--out`` cannot hold this experiment; the message is one line that names the fix."""


def slug(label: str) -> str:
    """A folder name for a controller label (``"T=0.6"`` -> ``"T0.6"``).

    Letters, digits, ``.``, ``_`` and ``-`` are kept, spaces become ``_``; leading dots are
    dropped (``"."`` and ``".."`` are not folder names). A label with nothing left becomes
    ``"controller"``. Distinct labels can share a slug; :func:`folder_names` refuses those.
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "", label.replace(" ", "_")).lstrip(".")
    return name or "controller"


def folder_names(labels: Sequence[str]) -> dict[str, str]:
    """The run folder name of every controller label, one folder per label.

    Raises:
        ValueError: two labels map to the same folder (e.g. ``"a b"`` and ``"a_b"``, or two
            labels without ASCII letters); the message names them and the fix.
    """
    by_name: dict[str, list[str]] = {}
    for label in labels:
        by_name.setdefault(slug(label).casefold(), []).append(label)
    clashes = [group for group in by_name.values() if len(group) > 1]
    if clashes:
        described = "; ".join(
            f"{', '.join(repr(x) for x in group)} -> runs/{slug(group[0])}" for group in clashes
        )
        raise ValueError(
            f"controllers: labels share a run folder ({described}); give them distinct `name:` "
            "values made of letters, digits, '.', '_' or '-'"
        )
    return {label: slug(label) for label in labels}


def run_dir_for(out: Path, label: str, seed: int) -> Path:
    """The folder of one run inside a compare output folder."""
    return out / RUNS_DIR / slug(label) / f"seed{seed}"


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
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    """Write ``config.json`` of a run folder."""
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))


def _config_differences(old: Any, new: Any) -> list[str]:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ["config"]
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def check_out(out: Path, meta: dict[str, Any], *, resume: bool) -> dict[str, Any]:
    """Check that ``out`` can hold the experiment ``meta`` describes; write nothing.

    Args:
        out: the ``--out`` folder.
        meta: the ``config.json`` content of the new experiment (``"config"`` at least).
        resume: continue the experiment already in ``out``.

    Returns:
        The ``config.json`` content to write: ``meta``, keeping the original command when resuming.

    Raises:
        RunFolderError: ``out`` is a file, holds another experiment (or any files, without
            ``resume``), or holds a different config; one line naming the fix.
    """
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: is a file, not a folder; choose another --out")
    if not out.exists():
        ancestor = next(p for p in out.absolute().parents if p.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            problem = "is a file" if not ancestor.is_dir() else "is not writable"
            raise RunFolderError(
                f"--out {out}: cannot create the folder ({ancestor} {problem}); "
                "choose a writable --out"
            )
        return meta
    if not any(out.iterdir()):
        return meta
    if not resume:
        raise RunFolderError(
            f"--out {out}: the folder already holds files (another experiment?); pass --resume "
            "to continue the experiment in it, or choose a new --out"
        )
    old = read_meta(out)
    if "config" not in old:
        raise RunFolderError(
            f"--resume: {out} is not a metactl run folder (no readable {CONFIG_FILE}); "
            "choose a new --out"
        )
    changed = _config_differences(old["config"], meta.get("config"))
    if changed:
        raise RunFolderError(
            f"--resume: {out} holds a different config (differs in: {', '.join(changed)}); "
            "resume with the original config and options, or choose a new --out"
        )
    return {**meta, "command": old.get("command", meta.get("command"))}


def prepare_out(out: Path, meta: dict[str, Any], *, resume: bool) -> None:
    """Check ``out`` (:func:`check_out`), create it and write ``config.json``.

    Raises:
        RunFolderError: as :func:`check_out`, or ``out`` cannot be created or written.
    """
    meta = check_out(out, meta, resume=resume)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_meta(out, meta)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RunFolderError(
            f"--out {out}: cannot create the folder or write in it ({reason}); "
            "choose a writable --out"
        ) from None


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


RunStatus = Literal["finished", "unfinished", "missing"]


@dataclass(frozen=True)
class RunRef:
    """One expected (or found) run of a folder.

    Attributes:
        label: the controller label.
        seed: the run's seed.
        path: its folder (absent when ``status == "missing"``).
        status: ``"finished"`` (``result.json``), ``"unfinished"`` (a folder without it) or
            ``"missing"`` (not started).
        result: the parsed ``result.json`` of a finished run.
    """

    label: str
    seed: int
    path: Path
    status: RunStatus
    result: dict[str, Any] | None = None


def expected_runs(meta: dict[str, Any]) -> list[tuple[str, int]]:
    """The (label, seed) pairs an experiment's ``config.json`` asks for, or [] if it does not say."""
    labels = meta.get("labels")
    seeds = meta.get("seeds")
    if seeds is None:
        seeds = (
            meta.get("config", {}).get("seeds") if isinstance(meta.get("config"), dict) else None
        )
        if isinstance(seeds, int):
            seeds = list(range(seeds))
    if not isinstance(labels, list) or not isinstance(seeds, list):
        return []
    return [(str(label), int(seed)) for seed in seeds for label in labels]


def _run_ref(label: str, seed: int, path: Path) -> RunRef:
    result = read_result(path)
    if result is not None:
        return RunRef(label, seed, path, "finished", result)
    return RunRef(label, seed, path, "unfinished" if path.is_dir() else "missing")


def list_runs(out: Path) -> list[RunRef]:
    """Every run of ``out``: the expected ones (config labels x seeds) in order, else those found.

    With a ``config.json`` naming labels and seeds, each expected run is listed once (finished,
    unfinished or missing) and nothing else counts. Without one (a hand-assembled folder), every
    ``runs/*/seed*`` folder is listed, labelled by its ``result.json`` or folder name.
    """
    expected = expected_runs(read_meta(out))
    if expected:
        return [_run_ref(label, seed, run_dir_for(out, label, seed)) for label, seed in expected]
    runs = out / RUNS_DIR
    if not runs.is_dir():
        return []
    found: list[RunRef] = []
    for path in sorted(p for p in runs.glob("*/seed*") if p.is_dir()):
        seed_text = path.name[len("seed") :]
        seed = int(seed_text) if seed_text.isdigit() else -1
        ref = _run_ref(path.parent.name, seed, path)
        if ref.result is not None:
            ref = RunRef(
                str(ref.result.get("controller", ref.label)), seed, path, ref.status, ref.result
            )
        found.append(ref)
    return found
