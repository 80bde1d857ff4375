"""The meta-policy metric names round-trip: minted by a controller, prefixed as a trainer logs
them, parsed back by the report; and the report reads controllers through the config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydantic")

import metactl as mc
from metactl.integrations.lab.config import parse_config
from metactl.integrations.lab.report import (
    _box_of,
    _is_tampo,
    _specs,
    parse_meta_policy,
)
from metactl.integrations.lab.rundir import _metrics_problem
from metactl.metric_keys import MEAN, SIGMA, TEMPERATURE, meta_key, prob_arm, prob_key


def _logged(controller: mc.BaseController, steps: int) -> list[dict[str, object]]:
    """What a trainer logs of ``controller`` over ``steps`` rounds (metrics.jsonl records)."""
    rng = np.random.default_rng(0)
    recs: list[dict[str, object]] = []
    for step in range(1, steps + 1):
        d = controller.sample()
        feedback = mc.testing.random_feedback(mc.Counterfactual, d, rng)
        metrics = controller.update(feedback)
        recs.append(
            {"step": step, meta_key(TEMPERATURE): d.value}
            | {meta_key(k): v for k, v in metrics.items()}
        )
    return recs


def test_tampo_probabilities_parse_back_to_the_arm_temperatures() -> None:
    temperatures = [0.6, 0.85, 1.0000001, 1.5]
    cfg = parse_config({"controllers": [{"kind": "tampo", "temperatures": temperatures}]})
    controller = cfg.controllers[0].build(seed=0, steps=3, vocab_size=64)
    recs = _logged(controller, 3)
    assert all(_metrics_problem(r) is None for r in recs)  # the run folder's check agrees
    policy = parse_meta_policy(recs)
    assert policy is not None and policy["kind"] == "discrete"
    assert policy["arms"] == temperatures
    assert policy["steps"] == [1, 2, 3]
    np.testing.assert_allclose(policy["probs"].sum(axis=1), 1.0)
    assert policy["temps"] == [r[meta_key(TEMPERATURE)] for r in recs]


def test_box_mean_and_sigma_parse_back() -> None:
    controller = mc.MetaGradient(mc.Box(0.6, 1.5, log=True), seed=0)
    recs = _logged(controller, 2)
    policy = parse_meta_policy(recs)
    assert policy is not None and policy["kind"] == "box"
    assert list(policy["mean"]) == [r[meta_key(MEAN)] for r in recs]
    assert list(policy["sigma"]) == [r[meta_key(SIGMA)] for r in recs]


def test_prob_key_and_prob_arm_are_inverse() -> None:
    assert prob_key("0.6") == "prob/0.6" and prob_arm("prob/0.6") == "0.6"
    assert prob_arm("advantage/0.6") is None
    assert meta_key(prob_key("1")) == "meta/prob/1"


def test_the_report_reads_kinds_and_boxes_from_the_config(tmp_path: Path) -> None:
    box = {"kind": "meta_gradient", "space": "box", "low": 0.7, "high": 1.4}
    specs = [
        {"kind": "tampo", "name": "mine"},
        {"kind": "fixed", "temperature": 0.6, "name": "TAMPO-like"},
        box,
        {"kind": "meta_gradient"},
        {"kind": "no_such_kind"},
    ]
    (tmp_path / "config.json").write_text(json.dumps({"config": {"controllers": specs}}))
    found = _specs(tmp_path)
    assert sorted(found) == ["MetaGradient (box)", "MetaGradient (discrete)", "TAMPO-like", "mine"]
    assert _is_tampo(found["mine"]) and not _is_tampo(found["TAMPO-like"])
    assert _box_of(tmp_path, "MetaGradient (box)") == mc.Box(0.7, 1.4, log=True)
    assert _box_of(tmp_path, "MetaGradient (discrete)") is None
    assert _box_of(tmp_path, "not there") is None
    # The config's rule is the controller's: build() learns over the same space.
    spec = parse_config({"controllers": [box]}).controllers[0]
    assert spec.build(seed=0, steps=1, vocab_size=64).space == _box_of(tmp_path, spec.label())
