"""Resuming MetaGRPOTrainer: a bad controller file is refused before anything loads, partial
checkpoints are skipped, mid-round resumes say what they do, aborted rounds do not leak."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import digit_reward, make_config, make_dataset

import metactl as mc
from metactl.integrations.lab.testbed import make_model
from metactl.integrations.trl import CONTROLLER_FILE, MetaGRPOTrainer


def build(
    tokenizer: Any, out: Any, controller: Any, reward: Any = digit_reward, **config: Any
) -> Any:
    args = make_config(out, **config)
    return MetaGRPOTrainer(
        model=make_model(tokenizer, seed=0),
        reward_funcs=reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        controller=controller,
    )


def decisions_of(controller: Any) -> list[float]:
    values: list[float] = []
    sample = controller.sample

    def recording_sample() -> mc.Decision:
        d = sample()
        values.append(d.value)
        return d

    controller.sample = recording_sample
    return values


@pytest.fixture(scope="module")
def trained(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A trainer after 4 steps (optimizer state present), and its checkpoint-2 (other weights)."""
    out = tmp_path_factory.mktemp("trained")
    trainer = build(
        tokenizer,
        out,
        mc.TAMPO(seed=0),
        max_steps=4,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
        save_strategy="steps",
        save_steps=2,
    )
    trainer.train()
    return trainer, out / "checkpoint-2"


def _state() -> dict[str, Any]:
    ctl = mc.TAMPO(seed=0)
    ctl.sample()
    return ctl.state_dict()


def _record(**controller: Any) -> dict[str, Any]:
    return {"format": "metactl.trl/1", "seam": "logits", "controller": {**_state(), **controller}}


def _nested(depth: int) -> Any:
    value: Any = 0.0
    for _ in range(depth):
        value = [value]
    return value


BAD_FILES: list[tuple[str, Any, str]] = [
    ("truncated-json", b'{"format": "metactl.trl/1", "contr', r"not valid JSON"),
    ("empty", b"", r"not valid JSON"),
    ("not-utf8", b"\xff\xfe{}", r"not UTF-8"),
    ("top-level-list", b"[]", r"expected a JSON object, got a list"),
    ("top-level-string", b'"metactl"', r"expected a JSON object, got a str"),
    ("no-controller", {"format": "metactl.trl/1", "seam": "logits"}, r"controller: missing"),
    ("bad-format", {**_record(), "format": "metactl.trl/99"}, r"format: expected 'metactl.trl/1'"),
    ("format-not-string", {**_record(), "format": 7}, r"format: expected"),
    ("no-format", {"controller": _state()}, r"format: missing"),
    ("seam-not-string", {**_record(), "seam": [1]}, r"seam: expected a string"),
    ("recursion-bomb", b"[" * 200_000 + b"]" * 200_000, r"nested deeper than"),
    ("deep-params", _record(params={"ema_advantages": _nested(40)}), r"nested deeper than"),
    ("huge-value", {**_record(), "format": "x" * 3_000_000}, r"format: expected .*characters\)"),
    ("over-size-cap", {**_record(), "pad": [0] * 2_000_000}, r"bytes, more"),
    ("huge-list", _record(params={"ema_advantages": [0.5] * 400_000}), r"controller: .*ema_adv"),
    ("updates-over-step", _record(step=1, updates=5), r"controller: .*updates"),
    ("negative-step", _record(step=-1), r"controller.step: expected an int >= 0, got -1"),
    ("string-step", _record(step="1"), r"controller.step: expected an int >= 0"),
    ("bool-updates", _record(updates=True), r"controller.updates: expected an int >= 0"),
    ("nan-literal", b'{"format": "metactl.trl/1", "controller": NaN}', r"NaN, which is not JSON"),
    (
        "huge-int",
        b'{"format": "metactl.trl/1", "controller": {"step": ' + b"9" * 5000 + b"}}",
        r"digits|integer",
    ),
    (
        "controller-not-object",
        {**_record(), "controller": [1, 2]},
        r"controller: expected a JSON object",
    ),
    (
        "other-space",
        {**_record(), "controller": mc.TAMPO(mc.Discrete([0.5, 2.0]), seed=0).state_dict()},
        r"controller: .*space mismatch",
    ),
    (
        "other-controller",
        {**_record(), "controller": mc.SlidingWindowUCB(mc.TAMPO().space, seed=0).state_dict()},
        r"controller: .*saved by 'SlidingWindowUCB'",
    ),
    (
        "bad-rng",
        _record(rng={"bit_generator": "PCG64", "state": {"state": "x"}}),
        r"controller: .*rng",
    ),
    (
        "non-finite-param",
        _record(params={"ema_advantages": [1e308 * 10] * 10}),
        r"Infinity, which is not JSON",
    ),
]


def _write(path: Path, content: Any) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content))


def _optimizer_state(trainer: Any) -> list[torch.Tensor]:
    return [
        t.clone()
        for s in trainer.optimizer.state_dict()["state"].values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    ]


def test_bad_controller_files_are_refused_before_anything_loads(trained, tmp_path):
    trainer, checkpoint = trained
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    optimizer = _optimizer_state(trainer)
    controller = copy.deepcopy(trainer.controller.state_dict())
    step = trainer.state.global_step
    # checkpoint-2's weights differ from the trained ones: a load would show
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)["state"]
    assert any(
        not torch.equal(a, b)
        for a, b in zip(
            optimizer,
            [t for s in saved.values() for t in s.values() if isinstance(t, torch.Tensor)],
            strict=True,
        )
    )
    for name, content, match in BAD_FILES:
        bad = tmp_path / name
        shutil.copytree(checkpoint, bad)
        path = bad / CONTROLLER_FILE
        _write(path, content)
        with pytest.raises(ValueError, match=match) as info:
            trainer.train(resume_from_checkpoint=str(bad))
        message = str(info.value)
        assert str(path) in message, name
        assert len(message) < 600, (name, len(message))
        shutil.rmtree(bad)
    for kind in ("directory", "device"):
        bad = tmp_path / kind
        shutil.copytree(checkpoint, bad)
        (bad / CONTROLLER_FILE).unlink()
        if kind == "directory":
            (bad / CONTROLLER_FILE).mkdir()
        else:
            os.symlink("/dev/zero", bad / CONTROLLER_FILE)
        with pytest.raises(ValueError, match=r"not a regular file") as info:
            trainer.train(resume_from_checkpoint=str(bad))
        assert str(bad / CONTROLLER_FILE) in str(info.value)
    # nothing changed: weights, optimizer, controller, trainer step
    assert all(torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(optimizer, _optimizer_state(trainer), strict=True))
    assert trainer.controller.state_dict() == controller
    assert trainer.state.global_step == step


def test_the_controller_file_is_written_atomically(tmp_path):
    from metactl.integrations.trl._checkpoint import write_controller_file

    write_controller_file(str(tmp_path), "logits", _state())
    before = (tmp_path / CONTROLLER_FILE).read_bytes()
    with pytest.raises(TypeError):  # not JSON data: the write fails half-way
        write_controller_file(str(tmp_path), "logits", {**_state(), "params": {"x": object()}})
    assert (tmp_path / CONTROLLER_FILE).read_bytes() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONTROLLER_FILE]  # no temp file left


def run(tokenizer: Any, out: Any, resume: Any = None, **config: Any) -> tuple[Any, list[float]]:
    settings = {
        "max_steps": 4,
        "steps_per_generation": 2,
        "gradient_accumulation_steps": 1,
        "save_strategy": "steps",
        "save_steps": 2,
        **config,
    }
    trainer = build(tokenizer, out, mc.TAMPO(seed=0), **settings)
    decided = decisions_of(trainer.controller)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, decided


def test_resume_skips_a_checkpoint_whose_save_was_interrupted(tokenizer, tmp_path):
    full, full_decided = run(tokenizer, tmp_path / "full")
    out = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", out)
    # a kill -9 during the save of checkpoint-4: transformers had not written trainer_state.json,
    # and our atomic write had left only its temporary file
    (out / "checkpoint-4" / "trainer_state.json").unlink()
    (out / "checkpoint-4" / CONTROLLER_FILE).rename(
        out / "checkpoint-4" / f".{CONTROLLER_FILE}.x.tmp"
    )
    with pytest.warns(UserWarning, match=r"skipping .*checkpoint-4: the save was interrupted"):
        resumed, resumed_decided = run(tokenizer, out, resume=True)
    assert resumed_decided == full_decided[1:]  # resumed from checkpoint-2, exactly
    assert resumed.controller.state_dict() == full.controller.state_dict()
    # a partial checkpoint named explicitly is refused by name
    (out / "checkpoint-4" / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match=r"checkpoint-4 has no trainer_state.json"):
        run(tokenizer, out, resume=str(out / "checkpoint-4"))


def test_mid_round_resume_warns_and_does_what_it_says(tokenizer, tmp_path):
    # rounds of 2 micro-steps; checkpoint-1 is saved one micro-step into the first round
    _, full_decided = run(tokenizer, tmp_path / "full", save_steps=1)
    assert len(full_decided) == 2
    with pytest.warns(UserWarning, match=r"1 of the 2 micro-steps into a generation round"):
        _, resumed_decided = run(
            tokenizer, tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-1")
        )
    # what the warning says: a new round at the interrupted round's temperature, rounds shifted,
    # one more round (3 remaining micro-steps: rounds of 2 + 1) than the uninterrupted run's 2
    assert resumed_decided[0] == full_decided[0]
    # the interrupted round, then 2 rounds over the 3 remaining micro-steps (2-3, then 4): 3
    # decisions where the uninterrupted run made 2
    assert len(resumed_decided) == 2
    # a checkpoint at a round boundary resumes without the warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        run(tokenizer, tmp_path / "boundary", resume=str(tmp_path / "full" / "checkpoint-2"))


def test_a_retried_train_does_not_keep_the_aborted_rounds_decision(tokenizer, tmp_path):
    calls = {"n": 0}

    def flaky_reward(prompts: list[Any], completions: list[str], **kwargs: Any) -> list[float]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("reward server down")
        return digit_reward(prompts, completions)

    controller = mc.TAMPO(seed=0)
    trainer = build(
        tokenizer,
        tmp_path,
        controller,
        reward=flaky_reward,
        max_steps=2,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
    )
    decided = decisions_of(controller)
    with pytest.raises(RuntimeError, match="reward server down"):
        trainer.train()
    assert controller.step == 1  # the aborted round sampled
    del decided[:]
    trainer.train()
    # the retry is the run the aborted round never started: 2 rounds, the first decision of a
    # fresh controller with the same seed, the RNG where 2 draws leave it
    fresh = mc.TAMPO(seed=0)
    assert decided[0] == fresh.sample().value
    assert controller.step == 2 and controller.updates == 2
    fresh.sample()
    assert controller.state_dict()["rng"] == fresh.state_dict()["rng"]


def test_two_trainers_on_one_controller_warn(tokenizer, tmp_path):
    controller = mc.TAMPO(seed=0)
    first = build(tokenizer, tmp_path / "a", controller)
    with pytest.warns(UserWarning, match=r"already drives another MetaGRPOTrainer"):
        second = build(tokenizer, tmp_path / "b", controller)
    assert first.controller is second.controller


def test_a_controller_whose_rule_allows_more_updates_than_decisions_resumes(tmp_path):
    """mc.Fixed may learn from one decision several times; the file reader keeps its rule."""
    from metactl.integrations.trl._checkpoint import read_controller_file

    fixed = mc.Fixed(1.0)
    decision = fixed.sample()
    for _ in range(2):
        fixed.update(mc.Outcome(decision, 1.0))
    state = fixed.state_dict()
    assert state["updates"] > state["step"]
    path = tmp_path / "controller.json"
    path.write_text(json.dumps({"format": "metactl.trl/1", "seam": "logits", "controller": state}))
    assert read_controller_file(str(path), mc.Fixed(1.0)) == state
