"""Development and confirmation seeds: fixed in the configs, never mixed, named in reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metactl.integrations.lab.cli import main
from metactl.integrations.lab.config import (
    FIRST_CONFIRMATION_SEED,
    MAX_SEEDS,
    ConfigError,
    load_config,
    parse_config,
    seed_evidence,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _cfg(**top: Any) -> dict[str, Any]:
    return {"controllers": [{"kind": "tampo"}], **top}


def test_seed_counts_start_at_the_first_seed_of_their_kind() -> None:
    assert parse_config(_cfg(seeds=3)).seed_list() == [0, 1, 2]
    confirm = parse_config(_cfg(seeds=3, evidence="confirmation"))
    assert confirm.seed_list() == [10_000, 10_001, 10_002]
    assert FIRST_CONFIRMATION_SEED == 10_000
    assert [seed_evidence(s) for s in (0, 9_999, 10_000, 2**32 - 1)] == [
        "development",
        "development",
        "confirmation",
        "confirmation",
    ]


@pytest.mark.parametrize(
    ("top", "needle"),
    [
        (
            {"seeds": [0, 1, 10_003]},
            "seeds: 10003 is a confirmation seed in a config with evidence: development",
        ),
        (
            {"seeds": [10_000, 4], "evidence": "confirmation"},
            "seeds: 4 is a development seed in a config with evidence: confirmation",
        ),
        ({"evidence": "final"}, "evidence: Input should be 'development' or 'confirmation'"),
    ],
)
def test_a_seed_of_the_other_kind_is_refused_naming_it(top: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config(_cfg(**top))


def test_a_development_config_cannot_reach_confirmation_seeds_by_count() -> None:
    assert MAX_SEEDS < FIRST_CONFIRMATION_SEED  # seeds: n stays below the first one
    with pytest.raises(ConfigError, match=f"seeds: need 1..{MAX_SEEDS} seeds"):
        parse_config(_cfg(seeds=MAX_SEEDS + 1))


def test_cli_refuses_a_mixed_config_in_one_line_writing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(_cfg(seeds=[3, 10_007])))
    out = tmp_path / "out"
    assert main(["compare", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "10007 is a confirmation seed" in err and "\n" not in err
    assert not out.exists()


def test_the_confirmation_config_runs_what_was_chosen_on_development_seeds() -> None:
    dev = load_config(EXAMPLES / "misconception_dev.yaml")
    screen = load_config(EXAMPLES / "misconception_screen.yaml")
    confirm = load_config(EXAMPLES / "misconception_confirm.yaml")
    assert dev.evidence == screen.evidence == "development"
    assert dev.seed_list() == screen.seed_list() == list(range(6))
    assert confirm.evidence == "confirmation"
    assert confirm.seed_list() == list(range(10_000, 10_020))
    drop = {"evidence", "seeds", "controllers"}
    assert dev.model_dump(exclude=drop) == confirm.model_dump(exclude=drop)
    assert screen.model_dump(exclude=drop) == confirm.model_dump(exclude=drop)
    # Every controller it confirms was run on development seeds first.
    developed = dev.controllers + screen.controllers
    assert all(c in developed for c in confirm.controllers)


def _finished_folder(out: Path, seeds: list[int]) -> None:
    from metactl.integrations.lab.rundir import run_dir_for, write_meta, write_result

    out.mkdir()
    config = {"task": "addition", "difficulty": 2, "steps": 10, "seeds": seeds}
    write_meta(out, {"config": config, "labels": ["T=1"], "seeds": seeds})
    for seed in seeds:
        run_dir = run_dir_for(out, "T=1", seed)
        run_dir.mkdir(parents=True)
        write_result(
            run_dir,
            {
                "controller": "T=1",
                "kind": "fixed",
                "seed": seed,
                "steps": 10,
                "initial_accuracy": 0.1,
                "final_accuracy": 0.5,
                "auc": 0.3,
                "curve": [[0, 0.1], [10, 0.5]],
                "wall_time_s": 1.0,
            },
        )


@pytest.mark.parametrize(
    ("seeds", "said"),
    [
        (
            [10_000, 10_001, 10_002, 10_005],
            "Seeds: confirmation seeds 10000-10002, 10005 (never used to choose a setting).",
        ),
        ([0, 1], "Seeds: development seeds 0-1 (settings may have been chosen on them)."),
    ],
)
def test_the_report_says_which_kind_of_seeds_it_used(
    tmp_path: Path, seeds: list[int], said: str
) -> None:
    from metactl.integrations.lab.report import write_report

    out = tmp_path / "out"
    _finished_folder(out, seeds)
    summary = write_report(out, figure=False)
    kind = "confirmation" if seeds[0] >= FIRST_CONFIRMATION_SEED else "development"
    assert summary["evidence"] == {kind: seeds}
    assert said in (out / "report.md").read_text()
    assert json.loads((out / "summary.json").read_text())["evidence"] == {kind: seeds}
