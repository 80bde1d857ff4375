"""Run folders that cannot lose or mix a run, and one-line errors for every bad input.

Atomic progress files, ``--resume`` repairing torn results, the per-folder lock, a full disk,
config validation (exit 2, nothing written) and corrupted folders under ``plot``/``--resume``.
Training is replaced by a fake ``run_one`` that writes its files with the lab's own writers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from metactl.integrations.lab.cli import main
from metactl.integrations.lab.config import CompareConfig, ConfigError, parse_config
from metactl.integrations.lab.rundir import (
    LOCK_FILE,
    METRICS_FILE,
    RESULT_FILE,
    ROLLOUTS_FILE,
    RunFolderError,
    append_jsonl,
    atomic_write,
    lock_out,
    read_jsonl,
    write_result,
)
from metactl.integrations.lab.testbed.tasks import (
    HELD_OUT_PROMPTS,
    MAX_EVAL_SIZE,
    _eval_arith,
    _is_eval,
    make_task,
    max_eval_size,
)

TWO_FIXED = [{"kind": "fixed", "temperature": 0.6}, {"kind": "fixed", "temperature": 1.0}]
SETTINGS: dict[str, Any] = {"controllers": TWO_FIXED, "seeds": 1, "steps": 20}


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``folder``."""
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def _config(tmp_path: Path, **overrides: Any) -> Path:
    path = tmp_path / "compare.json"
    path.write_text(json.dumps({**SETTINGS, **overrides}))
    return path


def _fake_run_one(calls: list[tuple[int, int]], pad: int) -> Callable[..., dict[str, Any]]:
    """A ``run_one`` that writes a finished run with the lab's writers instead of training."""

    def run_one(cfg: CompareConfig, index: int, seed: int, run_dir: Path, **kw: Any) -> Any:
        calls.append((index, seed))
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        spec = cfg.controllers[index]
        for step in range(cfg.steps + 1):
            record = {"step": step, "meta/temperature": 0.8, "pad": "x" * pad}
            append_jsonl(run_dir / METRICS_FILE, record)
        append_jsonl(run_dir / METRICS_FILE, {"step": cfg.steps, "eval/accuracy": 0.5})
        append_jsonl(
            run_dir / ROLLOUTS_FILE, {"step": cfg.steps, "advantage": [1.0], "preferred": [0.9]}
        )
        result = {
            "controller": spec.label(),
            "kind": spec.kind,
            "seed": seed,
            "steps": cfg.steps,
            "initial_accuracy": 0.25,
            "final_accuracy": 0.5,
            "auc": 0.4,
            "curve": [[0, 0.25], [cfg.steps, 0.5]],
            "wall_time_s": 1.0,
        }
        write_result(run_dir, result)
        return result

    return run_one


def _use_fake_training(monkeypatch: pytest.MonkeyPatch, pad: int = 0) -> list[tuple[int, int]]:
    from metactl.integrations.lab import runner

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(runner, "run_one", _fake_run_one(calls, pad))
    monkeypatch.setattr(runner, "warm_start", lambda *a, **k: None)
    return calls


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Fake training; returns the (controller index, seed) of every run asked for."""
    pytest.importorskip("trl")
    return _use_fake_training(monkeypatch)


@pytest.fixture
def finished(
    tmp_path: Path, fake_training: list[tuple[int, int]], capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path]:
    """A finished two-run experiment: ``(config file, run folder)``."""
    config, out = _config(tmp_path), tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out), "--no-plot"]) == 0
    capsys.readouterr()
    fake_training.clear()
    return config, out


# --- atomic writes ---------------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    atomic_write(path, "old")
    atomic_write(path, b"new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_failed_atomic_write_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.mkdir()  # os.replace of a file over a non-empty folder fails
    (target / "keep").write_text("kept")
    with pytest.raises(OSError):
        atomic_write(target, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary left
    assert (target / "keep").read_text() == "kept"


# --- --resume repairs results that do not count ------------------------------------------------


def _to_folder(path: Path) -> None:
    """Replace the file ``path`` with an empty folder."""
    path.unlink()
    path.mkdir()


def _valid_result(run: Path) -> bytes:
    return (run / RESULT_FILE).read_bytes()


TORN: dict[str, Callable[[Path], object]] = {
    "empty": lambda run: (run / RESULT_FILE).write_bytes(b""),
    "truncated": lambda run: (run / RESULT_FILE).write_bytes(_valid_result(run)[:40]),
    "list": lambda run: (run / RESULT_FILE).write_text("[]"),
    "not-utf8": lambda run: (run / RESULT_FILE).write_bytes(b'{"controller": "\xff"}'),
    "folder": lambda run: _to_folder(run / RESULT_FILE),
    "other-seed": lambda run: (run / RESULT_FILE).write_text(
        json.dumps({**json.loads(_valid_result(run)), "seed": 7})
    ),
    "other-steps": lambda run: (run / RESULT_FILE).write_text(
        json.dumps({**json.loads(_valid_result(run)), "steps": 3})
    ),
    "nan-accuracy": lambda run: (run / RESULT_FILE).write_text(
        _valid_result(run).decode().replace('"final_accuracy": 0.5', '"final_accuracy": NaN')
    ),
}


@pytest.mark.parametrize("damage", list(TORN), ids=list(TORN))
def test_resume_reruns_a_result_that_does_not_count(
    finished: tuple[Path, Path],
    fake_training: list[tuple[int, int]],
    capsys: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    config, out = finished
    TORN[damage](out / "runs" / "T0.6" / "seed0")
    # The report counts it as unfinished, and says why.
    assert main(["plot", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished_runs"] == 1 and summary["complete"] is False
    assert [i["run"] for i in summary["incomplete"]] == ["runs/T0.6/seed0"]
    assert "result.json" in summary["incomplete"][0]["problem"]
    capsys.readouterr()
    # --resume reruns exactly that run, and says so in one line.
    assert main(["compare", str(config), "--out", str(out), "--resume", "--no-plot"]) == 0
    assert fake_training == [(0, 0)]
    notice = [line for line in capsys.readouterr().err.splitlines() if "rerunning" in line]
    assert len(notice) == 1 and "runs/T0.6/seed0" in notice[0], notice
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["finished_runs"] == 2


# --- one job per folder ------------------------------------------------------------------------------


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    with lock_out(tmp_path):
        with pytest.raises(RunFolderError, match=f"another metactl job \\(pid {os.getpid()}\\)"):
            lock_out(tmp_path)
    with lock_out(tmp_path):  # released: taken again
        pass


_HOLDER = """
import sys, time
from metactl.integrations.lab import runner
from metactl.integrations.lab.cli import main

def hold(cfg, index, seed, run_dir, **kw):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text('{{"step": 0}}\\n')
    time.sleep(600)

runner.run_one = hold
runner.warm_start = lambda *a, **k: None
sys.exit(main(["compare", {config!r}, "--out", {out!r}, "--no-plot"]))
"""


@pytest.mark.slow
def test_a_second_job_into_a_live_folder_is_refused_naming_the_first(
    tmp_path: Path, fake_training: list[tuple[int, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A real job holds the folder; a second compare (with or without --resume) exits 2."""
    config, out = _config(tmp_path), tmp_path / "out"
    code = _HOLDER.format(config=str(config), out=str(out))
    holder = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        started = out / "runs" / "T0.6" / "seed0" / METRICS_FILE
        while not started.exists() and holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), holder.communicate(timeout=30)
        before = _snapshot(out)
        for extra in (["--resume"], []):
            argv = ["compare", str(config), "--out", str(out), "--no-plot", *extra]
            assert main(argv) == 2
            _assert_one_line_error(capsys, f"pid {holder.pid}", "another metactl job")
            assert _snapshot(out) == before and fake_training == []
        assert main(["plot", str(out)]) == 0  # reading the folder is fine
        capsys.readouterr()
    finally:
        holder.kill()  # SIGKILL: no chance to release the lock by hand
        holder.wait()
    # The kernel dropped the dead job's lock: no stale lock, the folder resumes.
    argv = ["compare", str(config), "--out", str(out), "--no-plot", "--resume"]
    assert main(argv) == 0
    assert fake_training == [(0, 0), (1, 0)]
    assert json.loads((out / "summary.json").read_text())["complete"] is True


def test_a_folder_holding_only_a_lock_counts_as_empty(
    tmp_path: Path, fake_training: list[tuple[int, int]]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text("12345\n")  # a job that died before writing anything
    assert main(["compare", str(_config(tmp_path)), "--out", str(out), "--no-plot"]) == 0
    assert fake_training == [(0, 0), (1, 0)]


# --- a full disk -------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 148 KiB tmpfs (root only), unmounted afterwards."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root on Linux")
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=148k", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_is_one_line_and_the_folder_resumes_after_space_is_freed(
    tmp_path: Path,
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("trl")
    calls = _use_fake_training(monkeypatch, pad=1000)  # ~100 KiB of metrics per run
    config, out = _config(tmp_path, steps=100), small_disk / "run"
    argv = ["compare", str(config), "--out", str(out), "--no-plot"]
    assert main(argv) == 2
    _assert_one_line_error(
        capsys, f"--out {out}", "no space left", "a finished run here takes", "--resume"
    )
    assert len(calls) == 2  # the second run filled the disk
    assert json.loads((out / "config.json").read_text())["labels"] == ["T=0.6", "T=1"]
    assert not (out / "runs" / "T1" / "seed0" / RESULT_FILE).exists()
    assert not list(out.rglob("*.tmp"))  # no temporary file left behind
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    calls.clear()
    assert main([*argv, "--resume"]) == 0
    assert calls == [(1, 0)]
    assert json.loads((out / "summary.json").read_text())["complete"] is True


# --- config validation: one line, exit 2, nothing written -----------------------------------------

DEEP = "controllers: " + "[" * 1000 + "]" * 1000 + "\n"
BAD_CONFIGS: dict[str, tuple[bytes, str, tuple[str, ...]]] = {
    # id: (file content, suffix, needles of the error)
    "label-300": (
        json.dumps({**SETTINGS, "controllers": [{**TWO_FIXED[0], "name": "a" * 300}]}).encode(),
        ".json",
        ("too long", "300"),
    ),
    "lr-inf": (
        b"trainer: {learning_rate: .inf}\ncontrollers: [{kind: tampo}]\n",
        ".yaml",
        ("trainer.learning_rate",),
    ),
    "lr-negative": (
        b"trainer: {learning_rate: -1.0}\ncontrollers: [{kind: tampo}]\n",
        ".yaml",
        ("trainer.learning_rate",),
    ),
    "temperature-1e308": (
        b"controllers: [{kind: fixed, temperature: 1.0e308}]\n",
        ".yaml",
        ("controllers[0] (fixed).temperature", "1.0e308"),
    ),
    "temperature-tiny": (
        b"controllers: [{kind: tampo, temperatures: [1.0e-300, 1.0]}]\n",
        ".yaml",
        ("temperatures",),
    ),
    "seed-2**70": (
        f"seeds: [{2**70}]\ncontrollers: [{{kind: tampo}}]\n".encode(),
        ".yaml",
        ("seeds", str(2**70)),
    ),
    "seeds-10**12": (b"seeds: 1000000000000\ncontrollers: [{kind: tampo}]\n", ".yaml", ("seeds",)),
    "seeds-bool": (b"seeds: true\ncontrollers: [{kind: tampo}]\n", ".yaml", ("seeds",)),
    "steps-bool": (b"steps: true\ncontrollers: [{kind: tampo}]\n", ".yaml", ("steps", "True")),
    "eval-size-10**9": (
        b"eval_size: 1000000000\ncontrollers: [{kind: tampo}]\n",
        ".yaml",
        ("eval_size", str(MAX_EVAL_SIZE)),
    ),
    "eval-size-above-prompts": (
        b"difficulty: 1\neval_size: 200\ncontrollers: [{kind: tampo}]\n",
        ".yaml",
        ("eval_size", "at most 27"),
    ),
    "default-eval-size-above-prompts": (
        b"task: sorting\ndifficulty: 2\ncontrollers: [{kind: tampo}]\n",
        ".yaml",
        ("eval_size", "at most 19"),
    ),
    "not-utf8": (b"task: addition\nname: \xff\xfe\n", ".yaml", ("compare.yaml, line 2", "UTF-8")),
    "deep-yaml": (DEEP.encode(), ".yaml", ("nested too deeply",)),
    "yaml-syntax": (
        b"task: addition\ncontrollers:\n  - kind: tampo\n   bad: [\n",
        ".yaml",
        ("compare.yaml, line", "not valid YAML"),
    ),
    "json-syntax": (b'{"task": "addition",\n "controllers": [}\n', ".json", ("line 2", "JSON")),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_a_bad_config_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    pytest.importorskip("yaml")
    content, suffix, needles = BAD_CONFIGS[case]
    config = tmp_path / f"compare{suffix}"
    config.write_bytes(content)
    out = tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out)]) == 2
    _assert_one_line_error(capsys, *needles)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [config.name]


def test_a_bad_override_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["demo", "--seeds", "1000000000000", "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "seeds")
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [["compare", "c.yaml", "--out", ""], ["demo", "--out", "  "], ["plot", ""]],
    ids=["compare", "demo-blank", "plot"],
)
def test_an_empty_folder_argument_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    _assert_one_line_error(capsys, "expected a folder")
    assert list(tmp_path.iterdir()) == []  # not the default folder either


def test_a_label_too_long_for_the_file_system_is_refused() -> None:
    with pytest.raises(ConfigError, match="too long"):
        parse_config({"controllers": [{"kind": "tampo", "name": "a" * 256}]})
    assert parse_config({"controllers": [{"kind": "tampo", "name": "a" * 255}]})


# --- eval_size ----------------------------------------------------------------------------------------


def _held_out(prompts: Iterator[str]) -> int:
    return len({p for p in prompts if _is_eval(p)})


def _countdown_prompts(n: int) -> Iterator[str]:
    import itertools

    width = len(str(9**n)) + 1
    for nums in itertools.product(range(1, 10), repeat=n):
        shown = ",".join(map(str, sorted(nums)))
        for ops in itertools.product("+-*", repeat=n - 1):
            expr = str(nums[0]) + "".join(o + str(x) for o, x in zip(ops, nums[1:], strict=True))
            yield f"{shown}>{_eval_arith(expr):+0{width}d}:"


def test_held_out_prompt_counts_are_those_of_the_problem_spaces() -> None:
    import itertools

    def addition(d: int) -> Iterator[str]:
        return (f"{a:0{d}d}+{b:0{d}d}=" for a in range(10**d) for b in range(10**d))

    def sorting(n: int) -> Iterator[str]:
        return (
            "sort:" + "".join(map(str, t)) + "=" for t in itertools.product(range(10), repeat=n)
        )

    counted = {
        ("addition", 1): _held_out(addition(1)),
        ("addition", 2): _held_out(addition(2)),
        ("sorting", 2): _held_out(sorting(2)),
        ("sorting", 3): _held_out(sorting(3)),
        ("sorting", 4): _held_out(sorting(4)),
        ("countdown", 2): _held_out(_countdown_prompts(2)),
        ("countdown", 3): _held_out(_countdown_prompts(3)),
    }
    assert {k: v for k, v in HELD_OUT_PROMPTS.items() if k in counted} == counted
    assert _held_out(sorting(5)) > MAX_EVAL_SIZE  # the first space beyond the table
    assert max_eval_size("addition", 3) == MAX_EVAL_SIZE


def test_make_task_fills_the_largest_eval_size_the_config_accepts() -> None:
    pytest.importorskip("datasets")
    for name, d in (("addition", 1), ("sorting", 2), ("countdown", 2)):
        n = max_eval_size(name, d)
        task = make_task(name, difficulty=d, n_train=50, n_eval=n)
        assert len(task.eval) == len(set(task.eval["prompt"])) == n
        assert parse_config(
            {"task": name, "difficulty": d, "eval_size": n, "controllers": [{"kind": "tampo"}]}
        )


# --- corrupted run folders: plot and --resume say which file, in one line -------------------------


def _write(path: Path, data: str | bytes) -> None:
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)


def _append(path: Path, data: str) -> None:
    with path.open("a") as f:
        f.write(data)


def _folder_to_file(path: Path) -> None:
    """Replace the folder ``path`` with a file."""
    shutil.rmtree(path)
    path.write_text("x")


def _insert_line(path: Path, line: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([lines[0], line + "\n", *lines[1:]]))


RUN = Path("runs") / "T0.6" / "seed0"
CORRUPT: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "config-not-utf8": (
        lambda out: _write(out / "config.json", b'{"config": "\xff"}'),
        ("config.json, line 1", "UTF-8"),
    ),
    "config-not-json": (lambda out: _write(out / "config.json", "{\n"), ("config.json", "JSON")),
    "config-labels-typed": (
        lambda out: _write(
            out / "config.json",
            json.dumps({**json.loads((out / "config.json").read_text()), "labels": 5}),
        ),
        ("config.json", "'labels'"),
    ),
    "config-a-folder": (
        lambda out: _to_folder(out / "config.json"),
        ("config.json", "folder"),
    ),
    "metrics-not-utf8": (
        lambda out: _write(
            out / RUN / METRICS_FILE, b'{"step": 0}\n{"step": 1, "x": "\xff"}\n{"step": 2}\n'
        ),
        (f"{RUN / METRICS_FILE}, line 2", "UTF-8"),
    ),
    "metrics-bad-middle-line": (
        lambda out: _insert_line(out / RUN / METRICS_FILE, '{"step": 1, "meta/tempera'),
        (f"{RUN / METRICS_FILE}, line 2", "not JSON"),
    ),
    "metrics-wrong-type": (
        lambda out: _insert_line(out / RUN / METRICS_FILE, '{"step": "one"}'),
        (f"{RUN / METRICS_FILE}, line 2", "'step'"),
    ),
    "metrics-accuracy-typed": (
        lambda out: _append(out / RUN / METRICS_FILE, '{"step": 3, "eval/accuracy": "high"}\n'),
        (str(RUN / METRICS_FILE), "eval/accuracy"),
    ),
    "metrics-a-list": (
        lambda out: _insert_line(out / RUN / METRICS_FILE, "[1, 2]"),
        (f"{RUN / METRICS_FILE}, line 2", "not a JSON object"),
    ),
    "rollouts-wrong-type": (
        lambda out: _write(out / RUN / ROLLOUTS_FILE, '{"step": 1, "advantage": "abc"}\n'),
        (f"{RUN / ROLLOUTS_FILE}, line 1", "'advantage'"),
    ),
    "rollouts-not-utf8": (
        lambda out: _write(out / RUN / ROLLOUTS_FILE, b'{"step": 1}\n\xff\n'),
        (f"{RUN / ROLLOUTS_FILE}, line 2", "UTF-8"),
    ),
    "metrics-a-folder": (
        lambda out: _to_folder(out / RUN / METRICS_FILE),
        (str(RUN / METRICS_FILE), "folder"),
    ),
    "run-a-file": (
        lambda out: _folder_to_file(out / RUN),
        (str(RUN), "is a file"),
    ),
    "runs-a-file": (
        lambda out: _folder_to_file(out / "runs"),
        ("runs", "is a file"),
    ),
}


@pytest.mark.parametrize("case", list(CORRUPT), ids=list(CORRUPT))
def test_a_corrupted_folder_is_one_line_for_plot_and_resume(
    finished: tuple[Path, Path],
    fake_training: list[tuple[int, int]],
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    config, out = finished
    damage, needles = CORRUPT[case]
    damage(out)
    before = _snapshot(out)
    assert main(["plot", str(out)]) == 2
    _assert_one_line_error(capsys, "plot:", *needles)
    assert _snapshot(out) == before
    assert main(["compare", str(config), "--out", str(out), "--resume", "--no-plot"]) == 2
    _assert_one_line_error(capsys, "--resume", *needles)
    assert _snapshot(out) == before and fake_training == []


def test_a_torn_last_line_is_skipped_but_a_torn_middle_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "meta/te')
    assert read_jsonl(path, "metrics") == [{"step": 0}, {"step": 1}]
    path.write_text('{"step": 0}\n{"step": 1, "meta/te\n{"step": 2}\n')
    with pytest.raises(RunFolderError, match=r"metrics.jsonl, line 2: not JSON"):
        read_jsonl(path, "metrics")


# --- report.md escapes labels ----------------------------------------------------------------------


def test_a_label_with_a_pipe_or_a_newline_keeps_the_report_table_whole(
    tmp_path: Path, fake_training: list[tuple[int, int]]
) -> None:
    controllers = [{**TWO_FIXED[0], "name": "a|b"}, {**TWO_FIXED[1], "name": "two\nlines"}]
    config, out = _config(tmp_path, controllers=controllers), tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out), "--no-plot"]) == 0
    text = (out / "report.md").read_text()
    tables: list[list[str]] = [[]]  # runs of consecutive table lines
    for line in text.splitlines():
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    tables = [t for t in tables if t]
    table = tables[0]  # the summary
    assert len(table) == 4  # header, rule, two rows
    cells = [line.replace("\\|", "").count("|") for line in table]
    assert cells == [7, 7, 7, 7]
    assert table[2].startswith("| a\\|b |") and table[3].startswith("| two\\nlines |")
    # The verdict and temperature tables stay whole too, and so does the verdict line.
    assert len(tables) == 3
    for other in tables[1:]:
        assert len({line.replace("\\|", "").count("|") for line in other}) == 1
    assert "| two\\nlines |" in tables[1][2] or "| two\\nlines |" in tables[2][3]
    verdict = [line for line in text.splitlines() if line.startswith("`verdict")]
    assert len(verdict) == 1 and "two\\nlines" in verdict[0]


def test_resume_removes_temporaries_of_a_killed_write(
    finished: tuple[Path, Path], fake_training: list[tuple[int, int]]
) -> None:
    config, out = finished
    stale = out / ".summary.json.0badf00d.tmp"
    stale.write_text('{"half": ')
    assert main(["compare", str(config), "--out", str(out), "--resume", "--no-plot"]) == 0
    assert not stale.exists() and fake_training == []
    assert json.loads((out / "summary.json").read_text())["complete"] is True


# --- nothing read, deleted or written through a link (issue 24, finding 1) -----------------------


def _precious(folder: Path) -> Path:
    """A user's file outside the run folder, which no metactl command may touch."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "precious.txt"
    path.write_text("the user's work\n")
    return path


def _link_runs(out: Path, victim: Path) -> Path:
    """``runs`` -> a folder outside holding the same runs, precious.txt in the unfinished one."""
    shutil.copytree(out / "runs", victim)
    _precious(victim / "T0.6" / "seed0")
    shutil.rmtree(out / "runs")
    (out / "runs").symlink_to(victim)
    return out / "runs"


def _link_label(out: Path, victim: Path) -> Path:
    """The issue's repro: ``runs/<label>`` -> a folder holding ``seed0/precious.txt``."""
    _precious(victim / "seed0")
    shutil.rmtree(out / "runs" / "T0.6")
    (out / "runs" / "T0.6").symlink_to(victim)
    return out / "runs" / "T0.6"


def _link_seed(out: Path, victim: Path) -> Path:
    _precious(victim)
    shutil.rmtree(out / RUN)
    (out / RUN).symlink_to(victim)
    return out / RUN


def _link_file(name: str) -> Callable[[Path, Path], Path]:
    def link(out: Path, victim: Path) -> Path:
        _precious(victim)
        path = out / RUN / name
        path.unlink()
        path.symlink_to(victim / "precious.txt")
        return path

    return link


def _link_result(out: Path, victim: Path) -> Path:
    """A finished run's result.json -> a valid copy outside."""
    victim.mkdir()
    path = out / "runs" / "T1" / "seed0" / RESULT_FILE
    shutil.move(path, victim / RESULT_FILE)
    path.symlink_to(victim / RESULT_FILE)
    return path


def _link_top(name: str) -> Callable[[Path, Path], Path]:
    def link(out: Path, victim: Path) -> Path:
        precious = _precious(victim)
        path = out / name
        if path.exists():
            precious.write_bytes(path.read_bytes())
            path.unlink()
        path.symlink_to(precious)
        return path

    return link


LINKS: dict[str, Callable[[Path, Path], Path]] = {
    "runs": _link_runs,
    "runs-label": _link_label,
    "seed": _link_seed,
    "metrics": _link_file(METRICS_FILE),
    "rollouts": _link_file(ROLLOUTS_FILE),
    "result": _link_result,
    "lock": _link_top(LOCK_FILE),
    "config": _link_top("config.json"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(LINKS), ids=list(LINKS))
def test_a_symlink_in_a_run_folder_is_refused_and_nothing_is_touched(
    finished: tuple[Path, Path],
    fake_training: list[tuple[int, int]],
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    """An unfinished run reached through a link: --resume would empty the link's target."""
    config, out = finished
    (out / RUN / RESULT_FILE).unlink()  # T=0.6 seed 0 is unfinished: --resume reruns it
    victim = out.parent / "victim"
    link = LINKS[case](out, victim)
    before, outside = _snapshot(out), _snapshot(victim)
    assert outside  # the user's files, outside --out
    argv = ["compare", str(config), "--out", str(out), "--resume", "--no-plot"]
    assert main(argv) == 2
    _assert_one_line_error(capsys, f"{link}: is a symbolic link", "remove it")
    assert fake_training == []
    assert _snapshot(victim) == outside and _snapshot(out) == before
    if case != "lock":  # plot takes no lock
        assert main(["plot", str(out)]) == 2  # nothing read through the link either
        _assert_one_line_error(capsys, "plot:", f"{link}: is a symbolic link")
        assert _snapshot(victim) == outside and _snapshot(out) == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["runs", "runs-label", "seed"])
def test_a_run_reached_through_a_link_is_not_emptied(
    finished: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """The runner's own run_one refuses before it deletes anything (even if called directly)."""
    from metactl.integrations.lab import runner

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("reached training")

    monkeypatch.undo()  # the real run_one, not the fake that made the folder
    monkeypatch.setattr(runner, "warm_start", no_training)
    config, out = finished
    victim = out.parent / "victim"
    link = LINKS[case](out, victim)
    outside = _snapshot(victim)
    cfg = parse_config(json.loads(config.read_text()))
    with pytest.raises(RunFolderError, match=f"{link}: is a symbolic link"):
        runner.run_one(cfg, 0, 0, out / RUN)
    assert _snapshot(victim) == outside


# --- files read only when regular and bounded (issue 24, finding 7) -------------------------------


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["dev-zero", "fifo", "folder", "over-1-MiB"])
def test_a_config_that_is_not_a_small_regular_file_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    pytest.importorskip("yaml")
    config = tmp_path / "compare.yaml"
    if case == "dev-zero":
        config = Path("/dev/zero")
    elif case == "fifo":
        _fifo(config)  # no writer: a plain open would wait forever
    elif case == "folder":
        config.mkdir()
    else:
        config.write_bytes(b"controllers: [{kind: tampo}]\n" + b"#" * (1 << 20) + b"\n")
    needle = {
        "dev-zero": "is a device, not a regular file",
        "fifo": "is a FIFO, not a regular file",
        "folder": "is a folder, not a regular file",
        "over-1-MiB": "is larger than 1 MiB",
    }[case]
    out = tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out)]) == 2
    _assert_one_line_error(capsys, f"config {config}: {needle}", "pass a YAML or JSON file")
    assert not out.exists()


def _sparse(path: Path, size: int) -> None:
    path.unlink()
    with path.open("wb") as f:
        f.truncate(size)  # a hole: no disk used, but this many bytes to read


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["metrics-dev-zero", "config-dev-zero", "metrics-fifo", "big"])
def test_a_run_file_that_is_not_a_small_regular_file_is_refused_unread(
    finished: tuple[Path, Path],
    fake_training: list[tuple[int, int]],
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    config, out = finished
    metrics = out / RUN / METRICS_FILE
    if case == "metrics-dev-zero":
        metrics.unlink()
        metrics.symlink_to("/dev/zero")
        path, needle = metrics, "is a symbolic link"
    elif case == "config-dev-zero":
        (out / "config.json").unlink()
        (out / "config.json").symlink_to("/dev/zero")
        path, needle = out / "config.json", "is a symbolic link"
    elif case == "metrics-fifo":
        metrics.unlink()
        path, needle = _fifo(metrics), "is a FIFO, not a regular file"
    else:
        _sparse(metrics, (1 << 30) + 1)
        path, needle = metrics, "is larger than 1 GiB"
    before = _snapshot(out) if case != "big" else None
    assert main(["plot", str(out)]) == 2
    _assert_one_line_error(capsys, "plot:", f"{path}: {needle}")
    argv = ["compare", str(config), "--out", str(out), "--resume", "--no-plot"]
    assert main(argv) == 2
    _assert_one_line_error(capsys, "--resume", f"{path}: {needle}")
    assert fake_training == []
    if before is not None:
        assert _snapshot(out) == before


def _hand_made_folder(out: Path, steps: int, curves: list[list[list[float]]]) -> None:
    """A finished run folder of one fixed-temperature controller, one run per curve."""
    from metactl.integrations.lab.rundir import write_meta

    out.mkdir()
    settings = {**SETTINGS, "controllers": [TWO_FIXED[0]], "steps": steps, "eval_every": 1}
    write_meta(
        out,
        {
            "config": parse_config(settings).model_dump(mode="json"),
            "labels": ["T=0.6"],
            "seeds": list(range(len(curves))),
        },
    )
    for seed, curve in enumerate(curves):
        run = out / "runs" / "T0.6" / f"seed{seed}"
        run.mkdir(parents=True)
        result = {
            "controller": "T=0.6",
            "kind": "fixed",
            "seed": seed,
            "steps": steps,
            "initial_accuracy": curve[0][1],
            "final_accuracy": curve[-1][1],
            "auc": 0.5,
            "curve": curve,
            "wall_time_s": 1.0,
        }
        write_result(run, result)


@pytest.mark.timeout(120)
def test_a_long_learning_curve_is_drawn_in_linear_time(tmp_path: Path) -> None:
    """50,000 evaluations on two seeds: the quadratic grouping took minutes, this takes seconds."""
    pytest.importorskip("matplotlib")
    from metactl.integrations.lab.report import write_report

    steps = 50_000
    curves = [[[s, ((s * (seed + 3)) % 7) / 7] for s in range(steps + 1)] for seed in range(2)]
    out = tmp_path / "out"
    _hand_made_folder(out, steps, curves)
    summary = write_report(out, figure=True)
    assert summary["complete"] and summary["finished_runs"] == 2
    assert (out / "report.png").stat().st_size > 0


CURVES: dict[str, tuple[Callable[[int], list[list[float]]], str]] = {
    # id: (curve of a 20-step run evaluated every 10 steps, what the problem says)
    "between-evaluations": (lambda n: [[s, 0.5] for s in range(n + 1)], "not an evaluation"),
    "ends-early": (lambda n: [[0, 0.5], [10, 0.5]], "must end at step 20"),
    "repeats-a-step": (lambda n: [[0, 0.5], [10, 0.5], [10, 0.5], [20, 0.5]], "increase"),
    "no-step-0": (lambda n: [[10, 0.5], [20, 0.5]], "increase from step 0"),
}


@pytest.mark.parametrize("case", list(CURVES), ids=list(CURVES))
def test_a_result_whose_curve_does_not_fit_the_run_does_not_count(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    config, out = finished
    make, problem = CURVES[case]
    path = out / RUN / RESULT_FILE
    result = json.loads(path.read_text())
    assert (result["steps"], json.loads(config.read_text()).get("eval_every", 10)) == (20, 10)
    path.write_text(json.dumps({**result, "curve": make(20)}))
    assert main(["plot", str(out)]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished_runs"] == 1
    [incomplete] = summary["incomplete"]
    assert incomplete["run"] == RUN.as_posix()
    assert "'curve'" in incomplete["problem"] and problem in incomplete["problem"]


# --- YAML: alias bombs, duplicate keys, error size (issue 24, findings 2 and 8) --------------------


def _alias_bomb(levels: int, width: int = 9) -> str:
    """``levels`` levels of ``width`` aliases: ``width ** levels`` strings in about 1 KB."""
    lines = ["anchors:", f"  a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join([*lines, "controllers: [{kind: tampo}]", ""])


YAML_CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    # id: (file content, needles of the error)
    "alias-bomb-9-levels": (_alias_bomb(9), ("more than 100000 values", "aliases")),
    "alias-bomb-in-a-field": (
        _alias_bomb(9).replace("controllers: [{kind: tampo}]", "controllers: *a8"),
        ("more than 100000 values",),
    ),
    "alias-holding-itself": ("a: &a [*a]\ncontrollers: [{kind: tampo}]\n", ("holds itself",)),
    "duplicate-key": (
        "steps: 2\ncontrollers: [{kind: tampo}]\nsteps: 1000000\n",
        ("compare.yaml, line 3", "key 'steps' given twice (first on line 1)", "keep one"),
    ),
    "duplicate-nested-key": (
        "controllers:\n  - kind: fixed\n    temperature: 0.6\n    temperature: 1.4\n",
        ("line 4", "key 'temperature' given twice (first on line 3)"),
    ),
    "integer-of-5000-digits": (f"steps: {'9' * 5000}\ncontrollers: [{{kind: tampo}}]\n", ("YAML",)),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(YAML_CONFIGS), ids=list(YAML_CONFIGS))
def test_a_crafted_yaml_config_is_one_line_and_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    pytest.importorskip("yaml")
    content, needles = YAML_CONFIGS[case]
    config = tmp_path / "compare.yaml"
    config.write_text(content)
    assert len(content) < 1200 or case.startswith("integer")  # the bomb is about 1 KB
    out = tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out)]) == 2
    _assert_one_line_error(capsys, *needles)
    assert not out.exists()


def test_merged_yaml_keys_may_be_overridden(tmp_path: Path) -> None:
    """``<<: *base`` then a key of base: YAML's override, not a duplicate."""
    pytest.importorskip("yaml")
    from metactl.integrations.lab.config import FixedSpec, load_config

    config = tmp_path / "compare.yaml"
    config.write_text(
        "controllers:\n"
        "  - &hot {kind: fixed, temperature: 1.4, name: hot}\n"
        "  - {<<: *hot, name: cold, temperature: 0.6}\n"
    )
    cfg = load_config(config)
    assert cfg.controllers == [
        FixedSpec(kind="fixed", temperature=1.4, name="hot"),
        FixedSpec(kind="fixed", temperature=0.6, name="cold"),
    ]


def test_a_duplicate_json_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "compare.json"
    config.write_text('{"steps": 2, "controllers": [{"kind": "tampo"}], "steps": 1000000}')
    assert main(["compare", str(config), "--out", str(tmp_path / "out")]) == 2
    _assert_one_line_error(capsys, "compare.json", "key 'steps' given twice", "keep one")


@pytest.mark.timeout(60)
def test_shared_containers_from_python_are_counted_not_walked() -> None:
    """parse_config takes Python data too: a list shared 9 times on 9 levels is refused at once."""
    bomb: Any = [{"kind": "tampo"}] * 9
    for _ in range(8):
        bomb = [bomb] * 9
    with pytest.raises(ConfigError, match="more than 100000 values"):
        parse_config({"controllers": bomb})


def test_a_config_error_stays_short_whatever_the_input() -> None:
    """Thousands of bad entries and a megabyte value: the first errors, values cut, in one line."""
    bad = [{"kind": "fixed", "temperature": -1.0}] * 5000
    with pytest.raises(ConfigError) as info:
        parse_config({"controllers": bad, "task": "x" * 1_000_000})
    message = str(info.value)
    assert "\n" not in message and len(message) < 2500, len(message)
    assert "controllers[0] (fixed).temperature" in message and "more errors" in message
    with pytest.raises(ConfigError) as info:
        parse_config({"controllers": [{"kind": "tampo"}], "steps": 10**5000})
    assert "steps" in str(info.value) and "bits" in str(info.value)
    assert len(str(info.value)) < 500


# --- labels shown escaped; long --out names (issue 24, finding 8) ---------------------------------

HOSTILE = {
    "ansi": "\x1b[31mred\x1b[0m",
    "rtl": "abc\u202egnp.exe",
    "nul": "nul\x00byte",
}


def test_labels_reach_the_terminal_and_report_escaped(
    tmp_path: Path, fake_training: list[tuple[int, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    controllers = [
        {"kind": "fixed", "temperature": t, "name": name}
        for t, name in zip((0.6, 1.0, 1.4), HOSTILE.values(), strict=True)
    ]
    config, out = _config(tmp_path, controllers=controllers), tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out), "--no-plot"]) == 0
    printed = capsys.readouterr()
    report = (out / "report.md").read_text()
    for text in (printed.out, printed.err, report):
        assert not any(ch in text for ch in ("\x1b", "\u202e", "\x00")), text
    for text in (printed.out, report):  # the result lines and the table
        for shown in ("\\x1b[31mred\\x1b[0m", "abc\\u202egnp.exe", "nul\\x00byte"):
            assert shown in text, (shown, text)
    assert main(["plot", str(out)]) == 0  # and the figure draws them
    assert "\x1b" not in capsys.readouterr().out


@pytest.mark.parametrize("command", ["compare", "plot"])
def test_an_out_name_too_long_for_a_file_name_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    out = tmp_path / ("a" * 300)
    argv = (
        ["compare", str(_config(tmp_path)), "--out", str(out)]
        if command == "compare"
        else ["plot", str(out)]
    )
    assert main(argv) == 2
    _assert_one_line_error(capsys, "aaaa", "shorter --out" if command == "compare" else "plot:")
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["compare.json"] if command == "compare" else []
    )


# --- a tampered warm-start cache (issue 24, finding 8) --------------------------------------------


@pytest.fixture
def cached_warm_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A warm start in a private cache (not a shipped one): a fresh model, saved as the lab does."""
    pytest.importorskip("transformers")
    from metactl.integrations.lab.testbed.model import make_model
    from metactl.integrations.lab.testbed.tokenizer import make_tokenizer
    from metactl.integrations.lab.testbed.warmstart import WarmStartConfig, warm_start

    monkeypatch.setenv("METACTL_CACHE", str(tmp_path / "cache"))
    cfg = WarmStartConfig(task="addition", difficulty=1, steps=1)
    make_model(make_tokenizer(), seed=0, size="tiny").save_pretrained(cfg.path())
    (cfg.path() / "warmstart.json").write_text(json.dumps({"steps": 1}))
    assert warm_start(cfg)[2] == {"steps": 1}  # loads as it is
    return cfg


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CACHE_DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # id: (file damaged, damage, what the error says)
    "truncated-weights": ("model.safetensors", _truncate, "deserializing header"),
    "empty-weights": ("model.safetensors", lambda p: p.write_bytes(b""), "header"),
    "meta-not-utf8": ("warmstart.json", lambda p: p.write_bytes(b'{"steps": "\xff"}'), "UTF-8"),
    "meta-not-json": ("warmstart.json", lambda p: p.write_text("{"), "not JSON"),
    "meta-a-fifo": ("warmstart.json", lambda p: (p.unlink(), _fifo(p)), "FIFO"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(CACHE_DAMAGE), ids=list(CACHE_DAMAGE))
def test_a_tampered_warm_start_cache_is_one_line_naming_the_file(
    cached_warm_start: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    pytest.importorskip("trl")
    from metactl.integrations.lab import runner
    from metactl.integrations.lab.testbed.warmstart import WarmStartCacheError, warm_start

    name, damage, problem = CACHE_DAMAGE[case]
    file = cached_warm_start.path() / name
    damage(file)
    with pytest.raises(WarmStartCacheError) as info:
        warm_start(cached_warm_start)
    message = str(info.value)
    assert f"warm-start cache {file}: " in message and problem in message, message
    assert f"delete the folder {cached_warm_start.path()}" in message and "\n" not in message
    # The command says the same in one line (exit 2) before any run trains.
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(runner, "run_one", _fake_run_one(calls, 0))
    config = _config(tmp_path, difficulty=1, eval_size=20, warm_start={"steps": 1})
    argv = ["compare", str(config), "--out", str(tmp_path / "out"), "--no-plot"]
    assert main(argv) == 2
    _assert_one_line_error(capsys, f"warm-start cache {file}", "delete the folder")
    assert calls == []
