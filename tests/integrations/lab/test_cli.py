"""``metactl`` command line, compare config validation and reports."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fakes import (  # tests/integrations/lab, on the path of the tests and their workers
    CALLS_ENV,
    FakeCalls,
    FakeTrainingCalled,
    fake_run_one,
    raising_run_one,
)
from lab_fakes import write_fake_run as _fake_run

import metactl as mc
from metactl.integrations.lab.cli import DEMO_WORKERS, build_parser, main
from metactl.integrations.lab.config import (
    CONTROLLER_KINDS,
    CompareConfig,
    ConfigError,
    demo_config,
    load_config,
    parse_config,
)
from metactl.integrations.lab.report import collect, mean_ci95, write_report
from metactl.integrations.lab.rundir import read_jsonl


def _cfg(*controllers: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"controllers": list(controllers), **top}


# --- config ------------------------------------------------------------------------------------


def test_demo_config_is_tampo_against_fixed_temperatures() -> None:
    cfg = demo_config()
    assert [c.label() for c in cfg.controllers] == ["TAMPO", "T=0.6", "T=1", "T=1.4"]
    assert cfg.seed_list() == [0, 1, 2]
    assert demo_config(quick=True).seed_list() == [0]
    assert demo_config(quick=True, seeds=2).seed_list() == [0, 1]


def test_every_controller_kind_builds_the_documented_object() -> None:
    cfg = parse_config(
        _cfg(
            {"kind": "tampo", "ema": 0.1, "top_p": 0.9},
            {"kind": "meta_gradient"},
            {"kind": "meta_gradient", "space": "box", "low": 0.5, "high": 2.0},
            {"kind": "sliding_window_ucb", "window": 50},
            {"kind": "schedule", "start": 0.9, "end": 1.5},
            {"kind": "entropy_target"},
            {"kind": "fixed", "temperature": 0.6},
            {"kind": "piecewise", "boundaries": [75], "values": [1.0, 0.6]},
            {"kind": "informativeness", "temperatures": [0.3, 1.0, 2.0], "scale": 0.05},
        )
    )
    built = [c.build(seed=0, steps=cfg.steps, vocab_size=50) for c in cfg.controllers]
    types = [type(c) for c in built]
    assert types == [
        mc.TAMPO,
        mc.MetaGradient,
        mc.MetaGradient,
        mc.SlidingWindowUCB,
        mc.Schedule,
        mc.EntropyTarget,
        mc.Fixed,
        mc.Schedule,
        mc.Informativeness,
    ]
    assert list(built[8].space.values) == [0.3, 1.0, 2.0] and built[8].scale == 0.05
    assert cfg.controllers[8].label() == "Informativeness"
    assert isinstance(built[2].space, mc.Box) and built[2].space.log
    assert [built[7].value_at(s) for s in (0, 74, 75, 149)] == [1.0, 1.0, 0.6, 0.6]
    assert cfg.controllers[7].label() == "piecewise 1@0 -> 0.6@75"
    assert built[4].value_at(cfg.steps) == pytest.approx(1.5)  # linear over the run's steps
    assert {c.kind for c in cfg.controllers} == set(CONTROLLER_KINDS)
    labels = [c.label() for c in cfg.controllers]
    assert len(set(labels)) == len(labels)


def test_unknown_controller_is_rejected_naming_the_entry() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_cfg({"kind": "tampo"}, {"kind": "pbt"}))
    msg = str(info.value)
    assert "controllers[1]" in msg and "'pbt'" in msg and "tampo" in msg


def test_negative_temperature_is_rejected_naming_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_cfg({"kind": "fixed", "temperature": -0.5}))
    msg = str(info.value)
    assert "controllers[0] (fixed).temperature" in msg and "greater than 0" in msg and "-0.5" in msg


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_cfg({"kind": "tampo", "temperatures": [0.6, -1.0]}), "temperatures"),
        (_cfg({"kind": "tampo", "emma": 0.1}), "emma"),
        (_cfg({"kind": "entropy_target", "low": 2.0, "high": 1.0}), "low must be < high"),
        (_cfg({"kind": "schedule", "end": 0}), "end"),
        (_cfg({"kind": "piecewise", "boundaries": [50], "values": [1.0]}), "values"),
        (
            _cfg({"kind": "piecewise", "boundaries": [50], "values": [1.0, 0.6, 0.7]}),
            "one more than boundaries",
        ),
        (
            _cfg({"kind": "piecewise", "boundaries": [60, 30], "values": [1, 0.8, 0.6]}),
            "increase strictly",
        ),
        (_cfg({"kind": "fixed", "temperature": 1}, task="chess"), "task"),
        (_cfg({"kind": "fixed", "temperature": 1}, difficulty=40), "difficulty"),
        (_cfg({"kind": "fixed", "temperature": 1}, steps=0), "steps"),
        (_cfg({"kind": "fixed", "temperature": 1}, seeds=[1, 1]), "seeds"),
        (
            _cfg({"kind": "fixed", "temperature": 1}, {"kind": "fixed", "temperature": 1.0}),
            "distinct",
        ),
        ({"controllers": []}, "controllers"),
        ({"task": "addition"}, "controllers"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_configs_name_the_field(data: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config(data)


def test_load_config_reads_yaml_and_json(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    y = tmp_path / "c.yaml"
    y.write_text("task: sorting\ndifficulty: 4\nseeds: [3, 5]\ncontrollers:\n  - kind: tampo\n")
    cfg = load_config(y)
    assert isinstance(cfg, CompareConfig) and cfg.seed_list() == [3, 5] and cfg.task == "sorting"
    j = tmp_path / "c.json"
    j.write_text(json.dumps(_cfg({"kind": "fixed", "temperature": 0.7})))
    assert load_config(j).controllers[0].label() == "T=0.7"
    bad = tmp_path / "bad.yaml"
    bad.write_text("controllers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_compare_with_bad_config_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("yaml")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("controllers:\n  - kind: tampo\n  - kind: fixed\n    temperature: -1.0\n")
    out = tmp_path / "out"
    status = main(["compare", str(cfg), "--out", str(out)])
    assert status == 2
    err = capsys.readouterr().err
    assert "controllers[1] (fixed).temperature" in err
    assert not out.exists()  # nothing ran: the output folder is made before any training


def test_core_cli_import_stays_light() -> None:
    code = (
        "import sys, metactl.integrations.lab.cli, metactl.integrations.lab.config, metactl.integrations.lab.report;"
        "bad = [m for m in ('torch', 'transformers', 'trl', 'matplotlib') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_parser_has_the_documented_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["demo", "--quick", "--out", "x", "--seeds", "2"])
    assert args.quick and args.out == "x" and args.seeds == 2
    assert parser.parse_args(["compare", "c.yaml"]).config == "c.yaml"
    assert parser.parse_args(["plot", "runs"]).run_dir == "runs"
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--seeds", "0"])


# --- reports -----------------------------------------------------------------------------------


def test_mean_ci95() -> None:
    m, lo, hi = mean_ci95([0.5, 0.6, 0.7])
    assert m == pytest.approx(0.6)
    assert lo == pytest.approx(0.6 - 4.302653 * 0.1 / 3**0.5, rel=1e-5)
    assert hi == pytest.approx(2 * 0.6 - lo)
    assert mean_ci95([0.4]) == (0.4, None, None)  # one seed: no interval, not a zero-width one


def _interrupted_folder(out: Path) -> None:
    out.mkdir()
    (out / "config.json").write_text(
        json.dumps(
            {
                "config": {"task": "addition", "difficulty": 2, "steps": 20},
                "command": "metactl demo --quick",
                "versions": {"metactl": mc.__version__},
                "labels": ["TAMPO", "T=0.6"],
                "seeds": [0, 1],
                "expected_runs": 4,
            }
        )
    )
    _fake_run(out, "TAMPO", "TAMPO", 0, finished=True, kind="tampo")
    _fake_run(out, "T=0.6", "T0.6", 0, finished=True, kind="fixed")
    _fake_run(out, "TAMPO", "TAMPO", 1, finished=False, kind="tampo")


def test_read_jsonl_skips_a_torn_last_line(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a"')
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]


def test_plot_on_an_interrupted_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    _interrupted_folder(out)
    assert main(["plot", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False
    assert summary["finished_runs"] == 2 and summary["expected_runs"] == 4
    assert summary["incomplete"] == [
        {"run": "runs/TAMPO/seed1", "label": "TAMPO", "seed": 1, "last_step": 20}
    ]
    assert summary["missing"] == [{"run": "runs/T0.6/seed1", "label": "T=0.6", "seed": 1}]
    assert list(summary["controllers"]) == ["TAMPO", "T=0.6"]
    assert summary["controllers"]["TAMPO"]["final_accuracy"] == [0.6]
    assert summary["controllers"]["TAMPO"]["final_accuracy_ci95"] is None  # one seed
    report = (out / "report.md").read_text()
    assert (
        "Incomplete run" in report
        and "| TAMPO | 1 of 2 |" in report
        and "unfinished: `runs/TAMPO/seed1`" in report
        and "not started: `runs/T0.6/seed1`" in report
        and "metactl demo --quick" in report
    )
    assert (out / "report.png").stat().st_size > 10_000
    assert "TAMPO" in capsys.readouterr().out


def test_plot_rejects_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    _assert_one_line_error(capsys, "not a metactl run folder")


def test_collect_without_config_still_summarises(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    _fake_run(out, "T=0.6", "T0.6", 0, finished=True, kind="fixed")
    _fake_run(out, "T=0.6", "T0.6", 1, finished=True, kind="fixed")
    s = collect(out)
    c = s["controllers"]["T=0.6"]
    assert c["seeds"] == [0, 1] and c["final_accuracy_ci95"][0] < c["final_accuracy_mean"]
    assert write_report(out, figure=False)["finished_runs"] == 2


# --- end to end (torch, transformers, TRL) -----------------------------------------------------


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    """`metactl demo --quick` (fewer steps) through MetaGRPOTrainer; its outputs parse."""
    pytest.importorskip("trl")
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    env = {**__import__("os").environ, "METACTL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "metactl.integrations.lab.cli",
            "demo",
            "--quick",
            "--steps",
            "6",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| TAMPO | 1 |" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["finished_runs"] == 4
    assert list(summary["controllers"]) == ["TAMPO", "T=0.6", "T=1", "T=1.4"]
    for c in summary["controllers"].values():
        assert len(c["final_accuracy"]) == 1 and 0.0 <= c["final_accuracy"][0] <= 1.0
    assert "metactl demo --quick" in (out / "report.md").read_text()
    assert (out / "report.png").stat().st_size > 10_000
    recs = read_jsonl(out / "runs" / "TAMPO" / "seed0" / "metrics.jsonl")
    temps = [r["meta/temperature"] for r in recs if "meta/temperature" in r]
    assert len(temps) == 6 and all(0.6 <= t <= 1.5 for t in temps)
    assert any(k.startswith("meta/prob/") for r in recs for k in r)
    fixed = read_jsonl(out / "runs" / "T0.6" / "seed0" / "metrics.jsonl")
    assert {r["meta/temperature"] for r in fixed if "meta/temperature" in r} == {0.6}
    assert [r["step"] for r in recs if "eval/accuracy" in r] == [0, 6]
    result = json.loads((out / "runs" / "TAMPO" / "seed0" / "result.json").read_text())
    assert result["controller_state"]  # JSON state of the controller
    # Interrupt it after the fact: drop a finished run's result; the report says so.
    (out / "runs" / "T1.4" / "seed0" / "result.json").unlink()
    assert main(["plot", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["finished_runs"] == 3


def test_interrupted_compare_keeps_finished_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("matplotlib")
    from metactl.integrations.lab import runner

    calls: list[tuple[int, int]] = []

    def fake_run_one(cfg: CompareConfig, index: int, seed: int, run_dir: Path, **kw: Any) -> Any:
        if calls:
            raise KeyboardInterrupt
        calls.append((index, seed))
        label = cfg.controllers[index].label()
        _fake_run(
            run_dir.parent.parent.parent,
            label,
            run_dir.parent.name,
            seed,
            finished=True,
            kind="tampo",
            steps=cfg.steps,
        )
        return json.loads((run_dir / "result.json").read_text())

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    monkeypatch.setattr(runner, "warm_start", lambda *a, **k: None)
    cfg = demo_config(quick=True)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        runner.run_compare(cfg, out, command="metactl demo --quick", progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished_runs"] == 1 and summary["complete"] is False
    assert (out / "report.png").exists()
    # --resume keeps the finished run and reruns the rest.
    calls.clear()
    seen: list[tuple[int, int]] = []

    def record(cfg: CompareConfig, index: int, seed: int, run_dir: Path, **kw: Any) -> Any:
        seen.append((index, seed))
        label = cfg.controllers[index].label()
        _fake_run(
            run_dir.parent.parent.parent,
            label,
            run_dir.parent.name,
            seed,
            finished=True,
            kind="fixed",
            steps=cfg.steps,
        )
        return json.loads((run_dir / "result.json").read_text())

    monkeypatch.setattr(runner, "run_one", record)
    summary = runner.run_compare(cfg, out, resume=True, progress=False, figure=False)
    assert seen == [(1, 0), (2, 0), (3, 0)]
    assert summary["complete"] is True


# --- run folders: one experiment each, one folder per run, one-line errors --------------------


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], needle: str) -> None:
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert err and "\n" not in err and "Traceback" not in err, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _config_file(tmp_path: Path, *controllers: dict[str, Any], **top: Any) -> Path:
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(_cfg(*controllers, **{"seeds": 1, "steps": 20, **top})))
    return path


def _use_fake(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: Callable[..., Any]
) -> FakeCalls:
    """Replace ``runner.run_one`` with ``fake`` here and in the job's worker processes."""
    from metactl.integrations.lab import runner

    calls = FakeCalls(tmp_path / "fake-calls.txt")
    monkeypatch.setenv(CALLS_ENV, str(calls.path))  # the workers inherit the environment
    monkeypatch.setattr(runner, "run_one", fake)
    monkeypatch.setattr(runner, "warm_start", lambda *a, **k: None)
    return calls


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCalls:
    """``runner.run_one`` writes a finished fake run instead of training; no warm start.

    The fake reaches the worker processes of ``metactl demo`` (two by default) and
    ``--workers N``. Returns the (controller index, seed) of every run it was asked for.
    """
    return _use_fake(monkeypatch, tmp_path, fake_run_one)


TWO_FIXED = ({"kind": "fixed", "temperature": 0.6}, {"kind": "fixed", "temperature": 1.0})


def test_reusing_out_without_resume_is_refused(
    tmp_path: Path, fake_training: FakeCalls, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, *TWO_FIXED)
    out = tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out), "--no-plot"]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert main(["compare", str(config), "--out", str(out), "--no-plot"]) == 2
    _assert_one_line_error(capsys, "pass --resume")
    assert _snapshot(out) == before and len(fake_training) == 2
    # Any non-empty folder, not only a metactl one.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    assert main(["compare", str(config), "--out", str(other)]) == 2
    _assert_one_line_error(capsys, "already holds files")
    assert _snapshot(other) == {"todo.txt": b"mine"}


@pytest.mark.parametrize(
    "names",
    [("a b", "a_b"), ("温度", "Температура"), ("T=a", "T=A")],
    ids=["space-underscore", "non-ascii", "case"],
)
def test_labels_that_share_a_run_folder_are_refused(
    tmp_path: Path, names: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    controllers = [
        {"kind": "fixed", "temperature": 0.6, "name": names[0]},
        {"kind": "fixed", "temperature": 1.0, "name": names[1]},
    ]
    with pytest.raises(ConfigError) as info:
        parse_config(_cfg(*controllers))
    assert repr(names[0]) in str(info.value) and repr(names[1]) in str(info.value)
    out = tmp_path / "out"
    assert main(["compare", str(_config_file(tmp_path, *controllers)), "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "share a run folder")
    assert not out.exists()


def test_every_label_gets_its_own_folder() -> None:
    from metactl.integrations.lab.rundir import folder_names, slug

    names = folder_names(["T=0.6", "a/b", "a b", "..", "TAMPO"])
    assert names == {
        "T=0.6": "T0.6",
        "a/b": "ab",
        "a b": "a_b",
        "..": "controller",
        "TAMPO": "TAMPO",
    }
    assert slug("../x") == "x"  # never a path out of runs/


def test_resume_with_a_changed_config_is_refused(
    tmp_path: Path, fake_training: FakeCalls, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, *TWO_FIXED)
    out = tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out), "--no-plot"]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    argv = ["compare", str(config), "--out", str(out), "--resume", "--no-plot"]
    assert main([*argv, "--steps", "7"]) == 2
    _assert_one_line_error(capsys, "differs in: steps")
    assert _snapshot(out) == before
    # The same config resumes: nothing left to run, the original command is kept.
    assert main(argv) == 0
    assert len(fake_training) == 2
    assert "--resume" not in json.loads((out / "config.json").read_text())["command"]


def test_resume_into_a_folder_that_is_not_a_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").write_text("x")
    config = _config_file(tmp_path, *TWO_FIXED)
    assert main(["compare", str(config), "--out", str(out), "--resume"]) == 2
    _assert_one_line_error(capsys, "not a metactl run folder")


def test_out_that_cannot_be_created_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = _config_file(tmp_path, *TWO_FIXED)
    assert main(["compare", str(config), "--out", str(blocker / "sub" / "out")]) == 2
    _assert_one_line_error(capsys, "cannot create the folder")
    assert main(["compare", str(config), "--out", str(blocker)]) == 2
    _assert_one_line_error(capsys, "is a file")
    assert blocker.read_text() == "not a folder"


def test_prepare_out_reports_a_failing_mkdir_in_one_line(tmp_path: Path) -> None:
    from metactl.integrations.lab.rundir import RunFolderError, prepare_out

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RunFolderError, match="cannot create"):
        prepare_out(blocker / "out", {"config": {}}, resume=False)


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--device", "tpu"])
    assert info.value.code == 2
    _assert_one_line_error(capsys, "--device")


def test_reproduce_line_works_from_any_directory(
    tmp_path: Path, fake_training: FakeCalls, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import shlex

    out = tmp_path / "out"
    assert main(["demo", "--quick", "--steps", "20", "--out", str(out), "--no-plot"]) == 0
    command = json.loads((out / "config.json").read_text())["command"]
    assert command == (
        f"cd {shlex.quote(os.getcwd())} && metactl demo --quick --steps 20 --out {out} --no-plot"
    )
    assert command in (out / "report.md").read_text()
    # The demo trains in worker processes by default: the fake ran there, not real training.
    assert sorted(fake_training.pairs()) == [(0, 0), (1, 0), (2, 0), (3, 0)]
    assert DEMO_WORKERS == 1 or os.getpid() not in fake_training.pids()
    # The demo's last line is its verdict: every fake run has AUC 0.5, so the baseline is the
    # first fixed temperature and every difference is 0 (one seed: no interval).
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("verdict (AUC points, paired by seed, minus T=0.6: the best fixed")
    assert "TAMPO +0.0 (not resolved; 1 seeds)" in last


@pytest.mark.parametrize("workers", [None, "1", "2"], ids=["demo-default", "one", "two"])
def test_a_fake_set_to_raise_is_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str | None
) -> None:
    """The positive control of the fakes: a fake that raises makes the command raise.

    Tests that fake training (and those that expect no training at all) are only as good as
    the fake's reach: it must replace training in the worker processes too.
    """
    calls = _use_fake(monkeypatch, tmp_path, raising_run_one)
    argv = ["demo", "--quick", "--steps", "2", "--out", str(tmp_path / "out"), "--no-plot"]
    with pytest.raises(FakeTrainingCalled, match="fake training called"):
        main(argv if workers is None else [*argv, "--workers", workers])
    assert len(calls) >= 1
    in_workers = (DEMO_WORKERS if workers is None else int(workers)) > 1
    assert (os.getpid() not in calls.pids()) if in_workers else calls.pids() == {os.getpid()}


def test_summary_table_and_figure_agree_on_an_incomplete_folder(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from metactl.integrations.lab.report import summary_table

    out = tmp_path / "run"
    _interrupted_folder(out)
    meta = json.loads((out / "config.json").read_text())
    meta["labels"].append("T=1")  # a controller none of whose runs started
    meta["expected_runs"] = 6
    (out / "config.json").write_text(json.dumps(meta))
    summary = write_report(out, figure=True)
    assert summary["expected_runs"] == 6 and summary["finished_runs"] == 2
    assert len(summary["incomplete"]) == 1 and len(summary["missing"]) == 3
    assert summary["finished_runs"] + len(summary["incomplete"]) + len(summary["missing"]) == 6
    table = summary_table(summary)
    assert "| TAMPO | 1 of 2 |" in table and "| T=0.6 | 1 of 2 |" in table
    assert "| T=1 | 0 of 2 | n/a |" in table
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "report.png").exists()


# --- progress ------------------------------------------------------------------------------------


def test_progress_is_a_line_per_run_when_output_is_not_a_terminal(
    tmp_path: Path, fake_training: FakeCalls, capsys: pytest.CaptureFixture[str]
) -> None:
    from metactl.integrations.lab import runner

    cfg = parse_config(_cfg(*TWO_FIXED, seeds=2, steps=20))
    runner.run_compare(cfg, tmp_path / "out", progress=True, figure=False)
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err  # no bar redrawn into a log
    lines = [x for x in captured.out.splitlines() if "held-out accuracy" in x]
    assert len(lines) == 4 and "T=0.6 seed 0" in lines[0]


def test_progress_in_a_subprocess_with_redirected_output(tmp_path: Path) -> None:
    """The real command with stdout/stderr to pipes (a log): no carriage returns."""
    out = tmp_path / "out"
    # The fake lives in a module (the demo's workers import it by name), not in the -c script.
    (tmp_path / "subprocess_fake.py").write_text(
        "import json\n"
        "def fake(cfg, index, seed, run_dir, **kw):\n"
        "    run_dir.mkdir(parents=True)\n"
        "    res = {'controller': cfg.controllers[index].label(), 'kind': 'fixed', 'seed': seed,\n"
        "           'steps': cfg.steps,\n"
        "           'initial_accuracy': 0.1, 'final_accuracy': 0.2, 'auc': 0.15,\n"
        "           'curve': [[0, 0.1], [2, 0.2]], 'wall_time_s': 1.0}\n"
        "    (run_dir / 'result.json').write_text(json.dumps(res))\n"
        "    return res\n"
    )
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import subprocess_fake\n"
        "from metactl.integrations.lab import runner\n"
        "from metactl.integrations.lab.cli import main\n"
        "runner.run_one = subprocess_fake.fake\n"
        "runner.warm_start = lambda *a, **k: None\n"
        f"sys.exit(main(['demo', '--quick', '--steps', '2', '--no-plot', '--out', {str(out)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stdout + proc.stderr
    assert proc.stdout.count("held-out accuracy 10.0% -> 20.0%") == 4  # the fake's, not training


# --- figure ----------------------------------------------------------------------------------------


def _folder(out: Path, labels: list[str], seeds: list[int], specs: list[dict[str, Any]]) -> None:
    out.mkdir()
    (out / "config.json").write_text(
        json.dumps(
            {
                "config": {"task": "addition", "difficulty": 2, "steps": 20, "controllers": specs},
                "command": "metactl compare c.yaml",
                "labels": labels,
                "seeds": seeds,
                "expected_runs": len(labels) * len(seeds),
            }
        )
    )


def test_report_with_one_seed_claims_no_interval(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    _folder(
        out, ["TAMPO", "T=0.6"], [0], [{"kind": "tampo"}, {"kind": "fixed", "temperature": 0.6}]
    )
    _fake_run(out, "TAMPO", "TAMPO", 0, finished=True, kind="tampo")
    _fake_run(out, "T=0.6", "T0.6", 0, finished=True, kind="fixed")
    summary = write_report(out, figure=True)
    saved = json.loads((out / "summary.json").read_text())
    for c in saved["controllers"].values():
        assert c["final_accuracy_ci95"] is None and c["auc_ci95"] is None
    assert summary["complete"] is True
    assert "| TAMPO | 1 | 40.0 | 60.0 | 50.0 | 3 |" in (out / "report.md").read_text()
    assert (out / "report.png").stat().st_size > 10_000


def test_report_draws_a_box_meta_policy_and_an_unfinished_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from metactl.integrations.lab.report import _box_of, _meta_policy, _preferred
    from metactl.integrations.lab.rundir import list_runs

    out = tmp_path / "run"
    label = "MetaGradient (box)"
    spec = {"kind": "meta_gradient", "space": "box", "low": 0.6, "high": 1.5}
    _folder(out, [label], [0, 1], [spec])
    _fake_run(out, label, "MetaGradient_box", 0, finished=True, kind="meta_gradient")
    _fake_run(out, label, "MetaGradient_box", 1, finished=False, kind="meta_gradient")
    runs = list_runs(out)
    assert [r.status for r in runs] == ["finished", "unfinished"]
    policy = _meta_policy(runs[0])
    assert policy is not None and policy["kind"] == "box" and len(policy["steps"]) == 20
    assert _box_of(out, label) == mc.Box(0.6, 1.5, log=True)
    pref = _preferred(runs)
    assert pref["at_low"] == 2 and pref["at_high"] == 2  # counted apart, not drawn
    assert len(pref["positive"]) == 2 and len(pref["negative"]) == 4
    summary = write_report(out, figure=True)
    assert summary["incomplete"][0]["seed"] == 1 and summary["complete"] is False
    assert (out / "report.png").stat().st_size > 10_000


# --- device, workers, report_to ------------------------------------------------------------------


def test_device_and_workers_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["compare", "c.yaml", "--device", "cpu", "--workers", "2"])
    assert args.device == "cpu" and args.workers == 2
    assert parser.parse_args(["demo"]).device == "auto"
    from metactl.integrations.lab.cli import DEMO_WORKERS

    assert parser.parse_args(["demo"]).workers == DEMO_WORKERS == min(2, os.cpu_count() or 1)
    assert parser.parse_args(["compare", "c.yaml"]).workers == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--workers", "0"])


def test_resolve_device() -> None:
    torch = pytest.importorskip("torch")
    from metactl.integrations.lab.device import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: torch sees no CUDA device"):
            resolve_device("cuda")


def test_grpo_config_on_cpu_is_float32_and_reports_as_configured(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from metactl.integrations.lab.grpo_args import grpo_config

    cfg = parse_config(_cfg(*TWO_FIXED, trainer={"prompts_per_step": 4, "num_generations": 2}))
    args = grpo_config(cfg, tmp_path, 3, max_completion_length=5, device="cpu")
    assert args.use_cpu is True and args.bf16 is False
    assert args.seed == 3 and args.max_steps == cfg.steps
    assert args.per_device_train_batch_size == 8 and args.num_generations == 2
    assert args.report_to in ("none", [], ["none"])
    assert args.output_dir == str(tmp_path / "trainer")
    tb = parse_config(_cfg(*TWO_FIXED, trainer={"report_to": "tensorboard"}))
    assert tb.trainer.report_to == "tensorboard"
    with pytest.raises(ConfigError, match="report_to"):
        parse_config(_cfg(*TWO_FIXED, trainer={"report_to": "wandb-ish"}))


def test_planned_jobs_go_seed_by_seed_and_skip_finished_runs(tmp_path: Path) -> None:
    from metactl.integrations.lab.runner import planned_jobs

    cfg = parse_config(_cfg(*TWO_FIXED, seeds=2))
    assert planned_jobs(cfg, tmp_path, resume=False) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    _fake_run(tmp_path, "T=1", "T1", 0, finished=True, kind="fixed", steps=cfg.steps)
    _fake_run(tmp_path, "T=0.6", "T0.6", 1, finished=False, kind="fixed", steps=cfg.steps)
    assert planned_jobs(cfg, tmp_path, resume=True) == [(0, 0), (0, 1), (1, 1)]


def test_ucb_informative_fraction_in_config() -> None:
    cfg = parse_config(
        _cfg(
            {"kind": "sliding_window_ucb"},
            {"kind": "sliding_window_ucb", "outcome": "informative_fraction"},
        )
    )
    assert [c.label() for c in cfg.controllers] == ["SW-UCB", "SW-UCB (informative)"]
    assert [c.trainer_outcome() for c in cfg.controllers] == ["mean_reward", "informative_fraction"]
    assert {c.trainer_outcome() for c in demo_config().controllers} == {"mean_reward"}


@pytest.mark.slow
def test_workers_give_the_results_of_runs_one_after_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs in two spawned worker processes equal the same two runs trained in turn."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from metactl.integrations.lab import runner

    monkeypatch.setenv("METACTL_CACHE", str(tmp_path / "cache"))  # inherited by the workers
    cfg = parse_config(
        _cfg(
            {"kind": "tampo"},
            {"kind": "fixed", "temperature": 1.0},
            steps=2,
            seeds=1,
            eval_every=2,
            eval_size=16,
            trainer={"prompts_per_step": 2, "num_generations": 2},
            warm_start={"max_steps": 25},
        )
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker: the same thread count, the same arithmetic
    try:
        runner.run_compare(cfg, tmp_path / "seq", progress=False, figure=False)
    finally:
        torch.set_num_threads(threads)
    summary = runner.run_compare(cfg, tmp_path / "par", progress=False, figure=False, workers=2)
    assert summary["complete"] is True and summary["finished_runs"] == 2
    for folder in ("TAMPO", "T1"):
        seq = json.loads((tmp_path / "seq" / "runs" / folder / "seed0" / "result.json").read_text())
        par = json.loads((tmp_path / "par" / "runs" / folder / "seed0" / "result.json").read_text())
        seq.pop("wall_time_s")
        par.pop("wall_time_s")
        assert par == seq


def _children(pid: int) -> set[int]:
    """Pids of the live (not zombie) child processes of ``pid``, from /proc."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@contextlib.contextmanager
def _two_worker_job(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, set[int]]]:
    """A real ``compare --workers 2`` job, yielded once both runs train: (job, out, workers).

    On the way out, any job or worker still alive is killed (a failed test leaves none).
    """
    import os
    import signal
    import time

    pytest.importorskip("trl")
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            _cfg(
                {"kind": "fixed", "temperature": 0.6},
                {"kind": "fixed", "temperature": 1.0},
                steps=500,  # far longer than the test waits
                seeds=1,
                eval_every=100,
                eval_size=16,
                trainer={"prompts_per_step": 2, "num_generations": 2},
                warm_start={"max_steps": 25},
            )
        )
    )
    out = tmp_path / "out"
    env = {**os.environ, "METACTL_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "metactl.integrations.lab.cli", "compare", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--workers", "2", "--no-plot"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        started: list[Path] = []
        while len(started) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)  # both runs are training once each logged its step-0 evaluation
            started = list(out.glob("runs/*/seed0/metrics.jsonl"))
        assert len(started) == 2, proc.communicate(timeout=60)
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers
        yield proc, out, workers
    finally:
        for pid in workers | (_children(proc.pid) if proc.poll() is None else set()):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _wait_until_dead(pids: set[int], seconds: float) -> set[int]:
    """The pids of ``pids`` still alive after up to ``seconds``."""
    import time

    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {p for p in pids if _alive(p)}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_sigterm_stops_a_parallel_job_and_its_workers(tmp_path: Path) -> None:
    """`kill` of a --workers job ends it as Ctrl-C does, and no worker trains on afterwards."""
    import signal

    with _two_worker_job(tmp_path) as (proc, out, workers):
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        assert _wait_until_dead(workers, 30) == set()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished_runs"] == 0 and summary["complete"] is False
    assert not list(out.glob("runs/*/seed0/result.json"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_kill_9_of_a_parallel_job_leaves_no_worker(tmp_path: Path) -> None:
    """SIGKILL gives the job no chance to stop its workers: they must die with it anyway."""
    with _two_worker_job(tmp_path) as (proc, out, workers):
        proc.kill()
        proc.wait(timeout=30)
        assert _wait_until_dead(workers, 5) == set()
    assert not list(out.glob("runs/*/seed0/result.json"))


def test_cuda_without_a_gpu_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    out = tmp_path / "out"
    assert main(["demo", "--quick", "--device", "cuda", "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "--device cuda: torch sees no CUDA device")
    assert not out.exists()


def test_tensorboard_without_the_package_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed")
    config = _config_file(tmp_path, *TWO_FIXED, trainer={"report_to": "tensorboard"})
    out = tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out), "--device", "cpu"]) == 2
    _assert_one_line_error(capsys, "pip install tensorboard")
    assert not out.exists()


def test_grpo_config_on_cuda_is_bf16(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (transformers refuses bf16 without one)")
    from metactl.integrations.lab.grpo_args import grpo_config

    args = grpo_config(demo_config(quick=True), tmp_path, 0, max_completion_length=5, device="cuda")
    assert args.bf16 is True and args.use_cpu is False
