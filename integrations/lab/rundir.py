"""The run-folder format of ``metactl compare``/``demo``: the one module that writes and reads it.

One experiment per folder::

    OUT/config.json                              the validated config, command, versions, labels
    OUT/.metactl.lock                            held (flock) by the job writing the folder
    OUT/runs/<folder(label)>/seed<k>/metrics.jsonl   per-step metrics (also for unfinished runs)
    OUT/runs/<folder(label)>/seed<k>/rollouts.jsonl  probe rollouts: advantage, preferred T
    OUT/runs/<folder(label)>/seed<k>/result.json     written last, only when the run finished
    OUT/summary.json  OUT/report.md  OUT/report.png     the report (rewritten from the files above)

Rules this module enforces (the runner, the report and the config validation all ask it):

- A folder holds one experiment: an existing non-empty folder is used only with ``--resume``
  and the same config (:func:`check_out`).
- One job at a time: the job writing a folder holds an exclusive ``flock`` on its lock file
  (:func:`prepare_out`); a second job into a live folder is refused naming the holder's pid.
  The kernel drops the lock when the holder dies, however it dies, so there is no stale lock.
- Nothing half-written marks progress: ``config.json``, ``result.json`` and the report are
  written by :func:`atomic_write` (a temporary file in the same folder, fsync, rename), so a
  crash or a full disk leaves the old file or the new one, never a torn one.
- A run is finished only if its ``result.json`` parses and matches the run the config asks
  for (controller, kind, seed, steps); anything else counts as unfinished, and ``--resume``
  reruns it.
- No two runs share a folder: every controller label maps to its own folder name
  (:func:`folder_names` refuses labels whose names would collide, compared case-insensitively
  because macOS and Windows file systems are, or would be too long for a file name).
- The expected runs are the config's labels x seeds; :func:`list_runs` says of each whether it
  finished, is unfinished (a folder without a valid ``result.json``) or missing (no folder), so
  the summary, the table and the figure agree.
- A file that cannot be read as this format (not UTF-8, not JSON, a wrongly typed field, a
  directory where a file belongs) is a :class:`RunFolderError` naming the file and the line;
  only a torn last line of a JSON-lines file (what a killed writer leaves) is skipped.

Everything is JSON or JSON lines (no pickle), so a report can be drawn from a finished or an
interrupted folder without torch or TRL.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import math
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from metactl.metric_keys import (
    MEAN,
    META_PREFIX,
    PROB_PREFIX,
    SIGMA,
    TEMPERATURE,
    meta_key,
    prob_arm,
)

CONFIG_FILE = "config.json"
LOCK_FILE = ".metactl.lock"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
ROLLOUTS_FILE = "rollouts.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
RUNS_DIR = "runs"

#: Longest run folder name (bytes) when the file system does not say (``NAME_MAX`` of Linux).
NAME_MAX = 255

#: Search bounds of each probe rollout's preferred temperature (``rollouts.jsonl``): a value
#: at a bound means "at most/at least this", not a measurement.
PREFERRED_BOUNDS = (0.05, 10.0)

#: The largest ``metrics.jsonl``/``rollouts.jsonl`` the lab reads (bytes): a million logged steps.
MAX_JSONL_BYTES = 1 << 30
#: The largest ``config.json``/``result.json`` the lab reads (bytes): a million-point curve.
MAX_JSON_BYTES = 64 << 20


class RunFolderError(ValueError):
    """``--out`` cannot hold this experiment, or a file of it is unreadable.

    The message is one line that names the folder or file (and line) and the fix.
    """


class NotRegularFile(ValueError):
    """A file the lab would read is a link, not a regular file, or larger than its cap.

    The message says what the file is (``"is a FIFO, not a regular file"``), without its path:
    the caller names the file and the fix.
    """


class LinkedFile(NotRegularFile):
    """A file the lab would read without following links is a symbolic link."""


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _not_regular(mode: int) -> str | None:
    """What a file of this mode is, when it is not a regular file, else None."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"is {kind}, not a regular file"


def read_regular(path: Path, limit: int, *, follow_links: bool = False) -> bytes:
    """The bytes of ``path``, read only when it is a regular file of at most ``limit`` bytes.

    The one reader of the lab's files (compare configs, run folders, warm-start caches): a
    FIFO, a device (``/dev/zero``), a folder or a file over the cap is refused before a byte
    is read, so no file can hang a command or exhaust its memory. The file is opened without
    blocking and checked again once open (it cannot be swapped in between).

    Args:
        path: the file.
        limit: the most bytes it may hold.
        follow_links: read the file a symbolic link points to; without it, a link is refused
            (a run folder holds its files itself).

    Raises:
        FileNotFoundError: there is no ``path``.
        NotRegularFile: ``path`` is not a regular file or larger than ``limit``; the message
            says which (:class:`LinkedFile`: a symbolic link, without ``follow_links``).
        OSError: ``path`` cannot be opened or read.
    """
    info = os.stat(path) if follow_links else os.lstat(path)
    problem = _not_regular(info.st_mode)
    if problem is not None:
        raise (LinkedFile if stat.S_ISLNK(info.st_mode) else NotRegularFile)(problem)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise LinkedFile("is a symbolic link, not a regular file") from None
        raise
    too_large = NotRegularFile(f"is larger than {_size(limit)}, the most the lab reads")
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        problem = _not_regular(info.st_mode)
        if problem is not None:
            raise NotRegularFile(problem)
        if info.st_size > limit:
            raise too_large
        data = f.read(limit + 1)  # at most one byte more than allowed, should it have grown
    if len(data) > limit:
        raise too_large
    return data


def _size(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


#: The fix of a run folder reached through (or holding) a symbolic link.
LINK_FIX = (
    "a run folder holds its runs itself and metactl neither reads, deletes nor writes through "
    "a link: replace the link by a copy of what it points to, or remove it"
)


def refuse_links(paths: Iterable[Path]) -> None:
    """Refuse the first of ``paths`` that is a symbolic link (one line naming it and the fix).

    Raises:
        RunFolderError: a path is a symbolic link.
    """
    for path in paths:
        if path.is_symlink():
            raise RunFolderError(f"{path}: is a symbolic link; {LINK_FIX}")


def check_run_path(run_dir: Path) -> None:
    """Refuse a run folder ``OUT/runs/<label>/seed<k>`` reached through or holding a link.

    ``runs``, ``runs/<label>`` and ``seed<k>`` must be folders of their own, and nothing
    directly in ``seed<k>`` a link, so that every path a run reads, deletes or writes
    resolves under ``OUT``.

    Raises:
        RunFolderError: one of them is a symbolic link (names it).
    """
    refuse_links([run_dir.parent.parent, run_dir.parent, run_dir])
    if run_dir.is_dir():
        refuse_links(sorted(run_dir.iterdir()))


def fresh_run_dir(run_dir: Path) -> None:
    """Empty (or create) the folder of a run that starts over; nothing outside it is touched.

    Raises:
        RunFolderError: the folder is reached through or holds a symbolic link
            (:func:`check_run_path`); nothing is deleted.
    """
    check_run_path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)


# --- writing ------------------------------------------------------------------------------------


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old content or the new, whole.

    The data goes to a temporary file in the same folder, is flushed and fsynced, then renamed
    over ``path`` (``os.replace``, atomic on POSIX), and the folder is fsynced so the rename
    survives a power cut. On any error the temporary file is removed and ``path`` is unchanged.

    Raises:
        OSError: the file cannot be written (e.g. ``ENOSPC``, a full disk).
    """
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        # Some file systems refuse to fsync a directory (EINVAL); the rename still happened.
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON object as a line (a crash leaves at most one torn last line).

    A symbolic link at ``path`` is refused (``OSError``), never written through.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(path, flags, 0o666), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    """Write ``config.json`` of a run folder (atomically)."""
    atomic_write(out / CONFIG_FILE, json.dumps(meta, indent=2))


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Write ``result.json`` (atomically): the mark that the run finished, so it is written last."""
    atomic_write(run_dir / RESULT_FILE, json.dumps(result, indent=1))


def is_out_of_space(exc: OSError) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def folder_error(out: Path, exc: OSError) -> RunFolderError:
    """The one-line error of an ``OSError`` met while writing the run folder ``out``.

    A full disk names the folder, the file being written and the space left, and says that the
    folder resumes once space is freed.
    """
    where = f" (writing {exc.filename})" if exc.filename else ""
    if is_out_of_space(exc):
        probe = next((p for p in (out, *out.absolute().parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(probe).free
        sizes = [
            sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
            for run in out.glob(f"{RUNS_DIR}/*/seed*")
            if (run / RESULT_FILE).is_file()
        ]
        need = (
            f"a finished run here takes {max(sizes) // 1024 + 1} KiB: free that much per run left"
            if sizes
            else "free some space (a run needs a few MB)"
        )
        return RunFolderError(
            f"--out {out}: no space left on the device{where}, {free} bytes free; {need}, "
            "then continue with --resume"
        )
    reason = exc.strerror or type(exc).__name__
    return RunFolderError(
        f"--out {out}: cannot create the folder or write in it ({reason}{where}); "
        "choose a writable --out"
    )


# --- names ----------------------------------------------------------------------------------------


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character that is not printable shown as its escape, on one line.

    Controls (ANSI escapes, NUL), format characters (bidi overrides such as ``U+202E``), line
    and paragraph separators and surrogates become ``\\x1b``, ``\\u202e``...; newlines and
    tabs ``\\n`` and ``\\t``. What the lab prints of files someone else may have written
    goes through it, so no such file can drive the terminal or reorder a line.
    """
    return "".join(_ESCAPES.get(ch) or (ch if ch.isprintable() else _escaped(ch)) for ch in text)


def shown(label: str) -> str:
    """A controller label as the lab prints it (terminal, ``report.md``, figure).

    :func:`printable` with backslashes doubled, so that the shown label reads back
    unambiguously (``"a\\nb"`` and ``"a<newline>b"`` differ).
    """
    return printable(label.replace("\\", "\\\\"))


def slug(label: str) -> str:
    """A folder name for a controller label (``"T=0.6"`` -> ``"T0.6"``).

    Letters, digits, ``.``, ``_`` and ``-`` are kept, spaces become ``_``; leading dots are
    dropped (``"."`` and ``".."`` are not folder names). A label with nothing left becomes
    ``"controller"``. Distinct labels can share a slug; :func:`folder_names` refuses those.
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "", label.replace(" ", "_")).lstrip(".")
    return name or "controller"


def folder_names(labels: Sequence[str], *, name_max: int = NAME_MAX) -> dict[str, str]:
    """The run folder name of every controller label, one folder per label.

    Args:
        labels: the controller labels.
        name_max: the longest file name (bytes) of the file system the folders go on.

    Raises:
        ValueError: two labels map to the same folder (e.g. ``"a b"`` and ``"a_b"``, or two
            labels without ASCII letters), or a folder name would be longer than ``name_max``;
            the message names the labels and the fix.
    """
    too_long = [label for label in labels if len(slug(label).encode()) > name_max]
    if too_long:
        shown = ", ".join(
            f"{label[:40]!r}... ({len(slug(label))} characters)" for label in too_long
        )
        raise ValueError(
            f"controllers: label too long for a run folder name ({shown}; the file system "
            f"takes at most {name_max}); give a shorter `name:`"
        )
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


# --- reading ------------------------------------------------------------------------------------


def _read_text(path: Path, limit: int) -> str | None:
    """The UTF-8 text of ``path`` (a regular file of at most ``limit`` bytes), or None without one.

    Raises:
        RunFolderError: ``path`` is a symbolic link, a folder, a FIFO or a device, larger than
            ``limit``, unreadable or not UTF-8 (names the file, the line of the first bad
            byte, and the fix).
    """
    try:
        raw = read_regular(path, limit)
    except FileNotFoundError:
        return None
    except LinkedFile as exc:
        raise RunFolderError(f"{path}: {exc}; {LINK_FIX}") from None
    except NotRegularFile as exc:
        raise RunFolderError(
            f"{path}: {exc}; the run folder is corrupted: remove it or the run holding it"
        ) from None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFolderError(
            f"{path}, {not_utf8(raw, exc)}; the file is corrupted: remove it or the run folder "
            "holding it"
        ) from None


def not_utf8(raw: bytes, error: UnicodeDecodeError) -> str:
    """``"line N: not UTF-8 text (byte 0x..)"``: where ``raw`` stopped decoding, for a one-line error."""
    line = raw[: error.start].count(b"\n") + 1
    return f"line {line}: not UTF-8 text (byte {raw[error.start]:#04x})"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


#: The meta-policy records of ``metrics.jsonl`` that hold a number (or null).
META_NUMBERS = (meta_key(TEMPERATURE), meta_key(MEAN), meta_key(SIGMA))


def logged_arm(key: str) -> str | None:
    """The arm label of a logged arm probability (``meta/prob/0.6`` -> ``"0.6"``), else None."""
    return prob_arm(key.removeprefix(META_PREFIX)) if key.startswith(META_PREFIX) else None


def _metrics_problem(rec: dict[str, Any]) -> str | None:
    """What is wrong with one ``metrics.jsonl`` record, or None."""
    if not _is_count(rec.get("step")):
        return f"'step' must be a non-negative integer, got {rec.get('step')!r}"
    acc: Any = rec.get("eval/accuracy")
    if "eval/accuracy" in rec and not (_is_finite(acc) and 0 <= acc <= 1):
        return f"'eval/accuracy' must be a number in [0, 1], got {acc!r}"
    for key, value in rec.items():
        numeric = key in META_NUMBERS
        arm = logged_arm(key)
        if arm is not None:
            try:
                float(arm)
            except ValueError:
                return f"{key!r}: the arm after {meta_key(PROB_PREFIX)!r} must be a number"
            numeric = True
        if numeric and value is not None and not _is_number(value):
            return f"{key!r} must be a number or null, got {value!r}"
    return None


def _rollouts_problem(rec: dict[str, Any]) -> str | None:
    """What is wrong with one ``rollouts.jsonl`` record, or None."""
    if not _is_count(rec.get("step")):
        return f"'step' must be a non-negative integer, got {rec.get('step')!r}"
    adv, pref = rec.get("advantage", []), rec.get("preferred", [])
    for key, values in (("advantage", adv), ("preferred", pref)):
        if not isinstance(values, list) or not all(_is_finite(v) for v in values):
            return f"{key!r} must be a list of finite numbers"
    if len(adv) != len(pref):
        return f"'advantage' and 'preferred' differ in length ({len(adv)} and {len(pref)})"
    return None


def _any_record(rec: dict[str, Any]) -> str | None:
    return None


def read_jsonl(
    path: Path, kind: Literal["metrics", "rollouts"] | None = None
) -> list[dict[str, Any]]:
    """Read a JSON-lines file of a run folder; ``[]`` if it does not exist.

    A torn last line (no newline at its end: an interrupted write) is skipped; every other line
    must be a JSON object (and, for ``kind``, one of that file's records).

    Raises:
        RunFolderError: a line that is not JSON, not an object or wrongly typed, or a file that
            is not UTF-8 or is a folder; names the file and the line.
    """
    text = _read_text(path, MAX_JSONL_BYTES)
    if text is None:
        return []
    lines = text.split("\n")
    check = {"metrics": _metrics_problem, "rollouts": _rollouts_problem}.get(
        kind or "", _any_record
    )
    out: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = number == len(lines)  # the text after the last newline
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if torn:
                continue
            raise RunFolderError(_line_error(path, number, f"not JSON ({exc.msg})")) from None
        except RecursionError:
            raise RunFolderError(_line_error(path, number, "nested too deeply")) from None
        if torn and not isinstance(obj, dict):
            continue  # e.g. the first digits of a number: torn too
        problem = "not a JSON object" if not isinstance(obj, dict) else check(obj)
        if problem is not None:
            raise RunFolderError(_line_error(path, number, problem))
        out.append(obj)
    return out


def _line_error(path: Path, line: int, problem: str) -> str:
    return f"{path}, line {line}: {problem}; the file is corrupted: remove it or its run folder"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (see :func:`read_jsonl`)."""
    return read_jsonl(run_dir / METRICS_FILE, "metrics")


def read_rollouts(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's ``rollouts.jsonl`` (see :func:`read_jsonl`)."""
    return read_jsonl(run_dir / ROLLOUTS_FILE, "rollouts")


def _meta_problem(meta: Any) -> str | None:
    if not isinstance(meta, dict):
        return "not a JSON object"
    if "config" in meta and not isinstance(meta["config"], dict):
        return "'config' must be an object"
    config = meta.get("config", {})
    if "controllers" in config and not (
        isinstance(config["controllers"], list)
        and all(isinstance(c, dict) for c in config["controllers"])
    ):
        return "'config.controllers' must be a list of objects"
    if "steps" in config and not _is_count(config["steps"]):
        return "'config.steps' must be a non-negative integer"
    labels = meta.get("labels")
    if labels is not None and not (
        isinstance(labels, list) and all(isinstance(x, str) for x in labels)
    ):
        return "'labels' must be a list of strings"
    seeds = meta.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and all(_is_count(s) for s in seeds)):
        return "'seeds' must be a list of non-negative integers"
    seeds = config.get("seeds")
    if seeds is not None and not (
        _is_count(seeds) or (isinstance(seeds, list) and all(_is_count(s) for s in seeds))
    ):
        return "'config.seeds' must be a count or a list of non-negative integers"
    for key in ("command", "device"):
        if key in meta and not isinstance(meta[key], str | None):
            return f"{key!r} must be a string"
    if "versions" in meta and not isinstance(meta["versions"], dict):
        return "'versions' must be an object"
    if "expected_runs" in meta and not _is_count(meta["expected_runs"]):
        return "'expected_runs' must be a non-negative integer"
    return None


def read_meta(out: Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder, or ``{}`` when there is none.

    Raises:
        RunFolderError: ``config.json`` is not UTF-8, not JSON or wrongly typed, or a folder;
            names the file (and line).
    """
    path = out / CONFIG_FILE
    text = _read_text(path, MAX_JSON_BYTES)
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFolderError(
            f"{path}, line {exc.lineno}: not JSON ({exc.msg}); the file is corrupted"
        ) from None
    except RecursionError:
        raise RunFolderError(f"{path}: nested too deeply; the file is corrupted") from None
    problem = _meta_problem(meta)
    if problem is not None:
        raise RunFolderError(f"{path}: {problem}; the file is corrupted")
    return meta  # type: ignore[no-any-return]  # checked by _meta_problem


def _result_problem(
    result: Any, expect: Mapping[str, Any], eval_every: int | None = None
) -> str | None:
    """Why a parsed ``result.json`` does not mark a finished run, or None when it does."""
    if not isinstance(result, dict):
        return "not a JSON object"
    for key, want in expect.items():
        if result.get(key) != want or isinstance(result.get(key), bool):
            return f"'{key}' is {result.get(key)!r}, the config asks for {want!r}"
    if not isinstance(result.get("controller"), str):
        return "'controller' must be a string"
    if not _is_count(result.get("seed")):
        return "'seed' must be a non-negative integer"
    for key in ("initial_accuracy", "final_accuracy", "auc", "wall_time_s"):
        if not _is_finite(result.get(key)):
            return f"'{key}' must be a finite number, got {result.get(key)!r}"
    steps = expect.get("steps", result.get("steps"))
    return _curve_problem(result.get("curve"), steps if _is_count(steps) else None, eval_every)


def _curve_problem(curve: Any, steps: int | None, eval_every: int | None) -> str | None:
    """What is wrong with a result's curve of a run of ``steps`` steps, or None.

    The curve holds step 0, every multiple of ``eval_every`` and the last step, increasing;
    so it has at most ``steps // eval_every + 2`` points (checked in one pass).
    """
    if not (
        isinstance(curve, list)
        and curve
        and all(
            isinstance(p, list) and len(p) == 2 and _is_count(p[0]) and _is_finite(p[1])
            for p in curve
        )
    ):
        return "'curve' must be a non-empty list of [step, accuracy] pairs"
    points = [p[0] for p in curve]
    if points[0] != 0 or any(b <= a for a, b in itertools.pairwise(points)):
        return "'curve' steps must increase from step 0"
    if steps is None:
        return None
    if points[-1] != steps:
        return f"'curve' must end at step {steps}, ends at {points[-1]}"
    if eval_every is not None and any(s % eval_every and s != steps for s in points):
        return f"'curve' holds a step that is not an evaluation (every {eval_every} steps)"
    return None


def read_result(
    run_dir: Path, expect: Mapping[str, Any] | None = None, *, eval_every: int | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """The ``result.json`` of a run and, when it does not mark a finished run, why.

    Args:
        run_dir: the run's folder.
        expect: fields the result must have (``controller``, ``kind``, ``seed``, ``steps`` of
            the run the config asks for).
        eval_every: the config's steps between evaluations: the curve holds step 0, the
            multiples of it and the last step, and nothing else.

    Returns:
        ``(result, None)`` for a finished run; ``(None, None)`` without ``result.json``;
        ``(None, problem)`` for one that is torn, empty, unparsable, a folder, larger than
        :data:`MAX_JSON_BYTES`, or that does not match ``expect``: the run is unfinished and
        ``--resume`` reruns it.

    Raises:
        RunFolderError: ``result.json`` is a symbolic link (it is neither read nor deleted).
    """
    path = run_dir / RESULT_FILE
    try:
        raw = read_regular(path, MAX_JSON_BYTES)
    except FileNotFoundError:
        return None, None
    except LinkedFile as exc:
        raise RunFolderError(f"{path}: {exc}; {LINK_FIX}") from None
    except NotRegularFile as exc:
        return None, f"result.json {exc}"
    except OSError as exc:
        return None, f"result.json cannot be read ({exc.strerror})"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "result.json is not UTF-8 text"
    if not text.strip():
        return None, "result.json is empty"
    try:
        result = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None, "result.json is torn or not JSON"
    problem = _result_problem(result, expect or {}, eval_every)
    if problem is not None:
        return None, f"result.json: {problem}"
    return result, None


RunStatus = Literal["finished", "unfinished", "missing"]


@dataclass(frozen=True)
class RunRef:
    """One expected (or found) run of a folder.

    Attributes:
        label: the controller label.
        seed: the run's seed.
        path: its folder (absent when ``status == "missing"``).
        status: ``"finished"`` (a valid ``result.json``), ``"unfinished"`` (a folder without
            one) or ``"missing"`` (not started).
        result: the parsed ``result.json`` of a finished run.
        problem: why an existing ``result.json`` does not count (torn, empty, not matching
            the config), else None.
    """

    label: str
    seed: int
    path: Path
    status: RunStatus
    result: dict[str, Any] | None = None
    problem: str | None = None


def expected_runs(meta: dict[str, Any]) -> list[tuple[str, int]]:
    """The (label, seed) pairs an experiment's ``config.json`` asks for, or [] if it does not say."""
    labels = meta.get("labels")
    seeds = meta.get("seeds")
    if seeds is None:
        seeds = meta.get("config", {}).get("seeds")
        if isinstance(seeds, int):
            seeds = list(range(seeds))
    if not isinstance(labels, list) or not isinstance(seeds, list):
        return []
    return [(str(label), int(seed)) for seed in seeds for label in labels]


def expected_result(
    label: str, seed: int, *, kind: str | None, steps: int | None
) -> dict[str, Any]:
    """The fields a finished run's ``result.json`` must hold (see :func:`read_result`)."""
    expect: dict[str, Any] = {"controller": label, "seed": seed}
    if kind is not None:
        expect["kind"] = kind
    if steps is not None:
        expect["steps"] = steps
    return expect


def run_ref(
    path: Path,
    label: str,
    seed: int,
    expect: Mapping[str, Any] | None = None,
    *,
    eval_every: int | None = None,
) -> RunRef:
    """The state of the run in ``path`` (see :class:`RunRef`; ``eval_every`` as :func:`read_result`)."""
    result, problem = read_result(path, expect, eval_every=eval_every)
    if result is not None:
        return RunRef(label, seed, path, "finished", result)
    return RunRef(label, seed, path, "unfinished" if path.is_dir() else "missing", None, problem)


def _check_runs_dir(out: Path) -> Path:
    runs = out / RUNS_DIR
    refuse_links([runs])
    if runs.exists() and not runs.is_dir():
        raise RunFolderError(f"{runs}: is a file, not a folder; the run folder is corrupted")
    return runs


def list_runs(out: Path) -> list[RunRef]:
    """Every run of ``out``: the expected ones (config labels x seeds) in order, else those found.

    With a ``config.json`` naming labels and seeds, each expected run is listed once (finished,
    unfinished or missing) and nothing else counts; a result counts only if it matches its
    controller's kind and seed and the config's steps. Without one (a hand-assembled folder),
    every ``runs/*/seed*`` folder is listed, labelled by its ``result.json`` or folder name.

    Raises:
        RunFolderError: ``config.json`` is corrupted, or ``runs`` is not a folder.
    """
    meta = read_meta(out)
    runs = _check_runs_dir(out)
    expected = expected_runs(meta)
    if expected:
        config = meta.get("config", {})
        labels = meta["labels"]
        specs = config.get("controllers")
        kinds = (
            {label: spec.get("kind") for label, spec in zip(labels, specs, strict=False)}
            if isinstance(specs, list) and len(specs) == len(labels)
            else {}
        )
        steps = config.get("steps")
        eval_every = config.get("eval_every")
        eval_every = eval_every if _is_count(eval_every) and eval_every > 0 else None
        for label, seed in expected:
            path = run_dir_for(out, label, seed)
            check_run_path(path)
            for folder in (path.parent, path):
                if folder.exists() and not folder.is_dir():
                    raise RunFolderError(
                        f"{folder}: is a file, not a folder; the run folder is corrupted"
                    )
        return [
            run_ref(
                run_dir_for(out, label, seed),
                label,
                seed,
                expected_result(label, seed, kind=kinds.get(label), steps=steps),
                eval_every=eval_every,
            )
            for label, seed in expected
        ]
    if not runs.is_dir():
        return []
    found: list[RunRef] = []
    for path in sorted(p for p in runs.glob("*/seed*") if p.is_dir()):
        check_run_path(path)
        seed_text = path.name[len("seed") :]
        seed = int(seed_text) if seed_text.isdigit() else -1
        ref = run_ref(path, path.parent.name, seed)
        if ref.result is not None:
            ref = RunRef(str(ref.result["controller"]), seed, path, ref.status, ref.result)
        found.append(ref)
    return found


def check_files(out: Path) -> list[RunRef]:
    """Read every file of the run folder ``out`` as the report will; return its runs.

    Raises:
        RunFolderError: a corrupted ``config.json``, ``metrics.jsonl`` or ``rollouts.jsonl``
            (naming the file and line), or ``runs`` is a file.
    """
    runs = list_runs(out)
    for run in runs:
        if run.status != "missing":
            read_metrics(run.path)
            read_rollouts(run.path)
    return runs


# --- the folder of a job -------------------------------------------------------------------------


class RunFolderLock:
    """The exclusive lock of the job writing a run folder (released by :meth:`release`).

    It is an ``flock`` on ``OUT/.metactl.lock``: the kernel drops it when the process ends,
    however it ends, so a killed job never leaves a stale lock. The file holds the pid.
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        """Release the lock (closing the file drops the flock); a second call does nothing."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunFolderLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _live_error(out: Path, fd: int) -> RunFolderError:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    holder = f"pid {text}" if text.isdigit() else "a process that is starting"
    return RunFolderError(
        f"--out {out}: another metactl job ({holder}) is writing this folder; wait for it to "
        "end (or stop it), or choose another --out"
    )


def _check_not_live(out: Path) -> None:
    """Refuse ``out`` if a job holds its lock; creates and writes nothing."""
    path = out / LOCK_FILE
    refuse_links([path])
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise folder_error(out, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _live_error(out, fd) from None
    finally:
        os.close(fd)  # drops the probe's lock, if it got it


def lock_out(out: Path) -> RunFolderLock:
    """Take the exclusive lock of the existing folder ``out`` and record this pid in it.

    Raises:
        RunFolderError: another process holds it (names its pid).
        OSError: the lock file cannot be created, or is a symbolic link (``ELOOP``).
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(out / LOCK_FILE, flags, 0o666)  # a link there is refused, never truncated
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        error = _live_error(out, fd)
        os.close(fd)
        raise error from None
    lock = RunFolderLock(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        lock.release()
        raise
    return lock


def _config_differences(old: Any, new: Any) -> list[str]:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ["config"]
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _check_names(out: Path, meta: dict[str, Any]) -> None:
    """Refuse run folder names longer than the file system under ``out`` takes."""
    labels = meta.get("labels")
    if not isinstance(labels, list):
        return
    probe = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not probe.is_dir():
        return  # reported by _check_contents
    try:
        name_max = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = NAME_MAX
    try:
        folder_names(labels, name_max=name_max)
    except ValueError as exc:
        raise RunFolderError(f"--out {out}: {exc}") from None


def _check_contents(out: Path, meta: dict[str, Any], *, resume: bool) -> dict[str, Any]:
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
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunFolderError(f"--out {out}: the folder is not writable; choose a writable --out")
    if all(p.name == LOCK_FILE for p in out.iterdir()):
        return meta  # empty, or left with only the lock of a job that wrote nothing
    if not resume:
        raise RunFolderError(
            f"--out {out}: the folder already holds files (another experiment?); pass --resume "
            "to continue the experiment in it, or choose a new --out"
        )
    try:
        old = read_meta(out)
    except RunFolderError as exc:
        raise RunFolderError(f"--resume: {exc}") from None
    if "config" not in old:
        raise RunFolderError(
            f"--resume: {out} is not a metactl run folder (no {CONFIG_FILE}); choose a new --out"
        )
    changed = _config_differences(old["config"], meta.get("config"))
    if changed:
        raise RunFolderError(
            f"--resume: {out} holds a different config (differs in: {', '.join(changed)}); "
            "resume with the original config and options, or choose a new --out"
        )
    try:
        check_files(out)
    except RunFolderError as exc:
        raise RunFolderError(f"--resume: {exc}") from None
    return {**meta, "command": old.get("command", meta.get("command"))}


def check_out(out: Path, meta: dict[str, Any], *, resume: bool) -> dict[str, Any]:
    """Check that ``out`` can hold the experiment ``meta`` describes; write nothing.

    Args:
        out: the ``--out`` folder.
        meta: the ``config.json`` content of the new experiment (``"config"`` at least).
        resume: continue the experiment already in ``out``.

    Returns:
        The ``config.json`` content to write: ``meta``, keeping the original command when resuming.

    Raises:
        RunFolderError: another job is writing ``out`` (names its pid); ``out`` is a file, holds
            another experiment (or any files, without ``resume``), holds a different config or
            a corrupted file, or is reached through a symbolic link (``runs/``, a run, a file
            of a run, the lock); a name of ``out`` or a run folder name is too long for its
            file system. One line naming the fix.
    """
    _check_out_name(out)
    try:
        if out.is_dir():
            _check_not_live(out)
        _check_names(out, meta)
        return _check_contents(out, meta, resume=resume)
    except OSError as exc:
        raise folder_error(out, exc) from None


def _check_out_name(out: Path) -> None:
    """Refuse an ``out`` whose path has a name longer than a file name may be."""
    long = [part for part in out.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        raise RunFolderError(
            f"--out {out}: the name {long[0][:40]!r}... is {len(os.fsencode(long[0]))} bytes, "
            f"more than a file name may have ({NAME_MAX}); choose a shorter --out"
        )


def prepare_out(out: Path, meta: dict[str, Any], *, resume: bool) -> RunFolderLock:
    """Check ``out`` (:func:`check_out`), create it, lock it and write ``config.json``.

    The caller holds the returned lock for as long as it writes the folder.

    Raises:
        RunFolderError: as :func:`check_out` (checked again under the lock, so two jobs
            started at once cannot both take a folder), or ``out`` cannot be created or
            written (a full disk says so).
    """
    check_out(out, meta, resume=resume)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = lock_out(out)
    except OSError as exc:
        raise folder_error(out, exc) from None
    try:
        meta = _check_contents(out, meta, resume=resume)
        for stale in out.glob(".*.tmp"):  # of an atomic_write cut short by a killed job
            stale.unlink()
        write_meta(out, meta)
    except OSError as exc:
        lock.release()
        raise folder_error(out, exc) from None
    except BaseException:
        lock.release()
        raise
    return lock
