"""The controller's file in a checkpoint: written atomically, read and validated before a resume.

``checkpoint-N/metactl_controller.json`` holds ``{"format": CHECKPOINT_FORMAT, "seam": ...,
"controller": state_dict}``. A resume reads it *before* transformers loads anything from the
checkpoint, so a bad file is refused with the model, optimizer and controller untouched::

    state = read_controller_file(path, controller)   # ValueError naming the file and the field
    ...                                               # transformers loads weights, optimizer
    controller.load_state_dict(state)                 # cannot fail: the state was tried on a copy

A checkpoint whose save was interrupted (no ``trainer_state.json``, which transformers writes
last) is skipped by :func:`last_complete_checkpoint`, named in a warning.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from typing import Any

CONTROLLER_FILE = "metactl_controller.json"
"""Name of the controller's state file inside each ``checkpoint-N/`` folder."""

CHECKPOINT_FORMAT = "metactl.trl/1"
"""The file holds ``{"format": ..., "seam": ..., "controller": state_dict}``; older files held the
bare ``state_dict`` (with its ``format_version``), and still load."""

TRAINER_STATE_FILE = "trainer_state.json"
"""What transformers writes last in a checkpoint: a folder without it is a partial save."""

MAX_CONTROLLER_FILE_BYTES = 4 * 2**20
"""Largest controller file read (a TAMPO state over 10 arms is about 3 KB)."""

MAX_DEPTH = 16
"""Deepest JSON nesting accepted (a state_dict nests 4 levels)."""

_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def write_controller_file(folder: str, seam: str, state: dict[str, Any]) -> None:
    """Write ``folder/metactl_controller.json`` atomically (a temporary file, then ``os.replace``).

    A kill during the write leaves either the previous file or none, never a truncated one.
    """
    record = {"format": CHECKPOINT_FORMAT, "seam": seam, "controller": state}
    fd, tmp = tempfile.mkstemp(prefix=f".{CONTROLLER_FILE}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(folder, CONTROLLER_FILE))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which is not JSON data")


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def read_controller_file(path: str, controller: Any) -> dict[str, Any]:
    """Read, validate and trial-load the controller state in ``path``; returns the state.

    The state is loaded into a copy of ``controller``: the controller itself is untouched, and
    loading the returned state into it afterwards passes the same checks.

    Raises:
        ValueError: naming ``path`` and the field: not a regular file, larger than
            :data:`MAX_CONTROLLER_FILE_BYTES`, not UTF-8 JSON, nested deeper than
            :data:`MAX_DEPTH`, a ``format`` other than :data:`CHECKPOINT_FORMAT`, no
            ``controller``, counters that are not ints >= 0, or a state the controller's
            ``load_state_dict`` refuses (its message, truncated: how its updates may relate to
            its decisions is its own rule).
    """
    where = f"{path}:"
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(f"{where} cannot be read ({exc.strerror})") from exc
    if not os.path.isfile(path):
        raise ValueError(f"{where} not a regular file")
    if st.st_size > MAX_CONTROLLER_FILE_BYTES:
        raise ValueError(
            f"{where} {st.st_size} bytes, more than the {MAX_CONTROLLER_FILE_BYTES} a "
            "controller state may take; not a file MetaGRPOTrainer wrote"
        )
    with open(path, "rb") as f:
        data = f.read(MAX_CONTROLLER_FILE_BYTES + 1)
    if len(data) > MAX_CONTROLLER_FILE_BYTES:
        raise ValueError(f"{where} more than {MAX_CONTROLLER_FILE_BYTES} bytes")
    try:
        record = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where} not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{where} not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise ValueError(f"{where} nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:  # _refuse_constant, or an integer of too many digits
        raise ValueError(f"{where} {shorten(str(exc))}") from exc
    if _depth(record) > MAX_DEPTH:
        raise ValueError(f"{where} nested deeper than {MAX_DEPTH} levels")
    if not isinstance(record, dict):
        raise ValueError(f"{where} expected a JSON object, got a {type(record).__name__}")
    if "format" in record:
        if record["format"] != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{where} format: expected {CHECKPOINT_FORMAT!r}, "
                f"got {shorten(repr(record['format']), 80)}"
            )
        if not isinstance(record.get("seam", ""), str):
            raise ValueError(f"{where} seam: expected a string")
        if "controller" not in record:
            raise ValueError(f"{where} controller: missing")
        state = record["controller"]
    elif "format_version" in record:  # a bare state_dict (files written before "format")
        state = record
    else:
        raise ValueError(
            f"{where} format: missing (expected {CHECKPOINT_FORMAT!r}, or a bare state_dict "
            "with its format_version)"
        )
    if not isinstance(state, dict):
        raise ValueError(
            f"{where} controller: expected a JSON object, got a {type(state).__name__}"
        )
    for name in ("step", "updates"):
        value = state.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(
                f"{where} controller.{name}: expected an int >= 0, got {shorten(repr(value), 80)}"
            )
    trial = copy.deepcopy(controller)
    try:
        trial.load_state_dict(state)
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise ValueError(f"{where} controller: {shorten(str(exc))}") from exc
    return state


def last_complete_checkpoint(output_dir: str) -> tuple[str | None, list[str]]:
    """The newest ``checkpoint-N`` in ``output_dir`` whose save completed, and the partial ones.

    A save is complete when ``trainer_state.json`` (which transformers writes last) is there;
    the controller file is written before it, atomically. Returns ``(path or None, [newer
    partial checkpoints])``.
    """
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_DIR.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    partial: list[str] = []
    for _, path in sorted(found, reverse=True):
        if os.path.isfile(os.path.join(path, TRAINER_STATE_FILE)):
            return path, partial
        partial.append(path)
    return None, partial
