"""SlidingWindowUCB, Fixed, Schedule and EntropyTarget against their rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

import metactl as mc


def _play_bernoulli(
    ctl: mc.SlidingWindowUCB, means: list[float], steps: int, rng: np.random.Generator
) -> list[int]:
    arms = []
    for _ in range(steps):
        d = ctl.sample()
        arm = int(d.arm)
        ctl.update(mc.Outcome(d, float(rng.random() < means[arm])))
        arms.append(arm)
    return arms


def test_ucb_tries_every_arm_first_then_finds_the_best_and_recovers_after_a_change() -> None:
    rng = np.random.default_rng(0)
    ctl = mc.SlidingWindowUCB(mc.Discrete([0.5, 1.0, 1.5, 2.0]), seed=0)
    arms = _play_bernoulli(ctl, [0.2, 0.4, 0.9, 0.3], 400, rng)
    assert arms[:4] == [0, 1, 2, 3]
    last = np.bincount(arms[-150:], minlength=4)
    assert np.argmax(last) == 2 and last[2] > 0.55 * 150  # epsilon = 0.5 explores half the time
    arms = _play_bernoulli(ctl, [0.9, 0.4, 0.1, 0.3], 400, rng)  # the best arm moves
    last = np.bincount(arms[-150:], minlength=4)
    assert np.argmax(last) == 0 and last[0] > 0.55 * 150


def test_ucb_scores_follow_the_formula_over_the_window() -> None:
    ctl = mc.SlidingWindowUCB(mc.Discrete([1.0, 2.0]), window=3, bonus=2.0, seed=0)
    plays = []
    for r in (1.0, 0.0, 0.5, 0.25):
        d = ctl.sample()
        plays.append((int(d.arm), r))
        ctl.update(mc.Outcome(d, r))
    window = plays[-3:]
    for k in range(2):
        rs = [r for a, r in window if a == k]
        expected = np.mean(rs) + 2.0 * math.sqrt(1 / len(rs)) if rs else math.inf
        assert ctl.scores()[k] == pytest.approx(expected)


def test_fixed_and_schedules_follow_their_formulas() -> None:
    assert {mc.Fixed(0.7).sample().value for _ in range(5)} == {0.7}
    lin = mc.Schedule.linear(0.9, 1.5, steps=200)
    cos = mc.Schedule.cosine(1.5, 0.5, steps=10)
    pw = mc.Schedule.piecewise([3, 5], [0.6, 1.0, 1.4])
    for s in range(15):
        assert lin.sample().value == pytest.approx(0.9 + 0.6 * min(s / 200, 1))
        assert cos.sample().value == pytest.approx(
            0.5 + 1.0 * (1 + math.cos(math.pi * min(s / 10, 1))) / 2
        )
        assert pw.sample().value == (0.6 if s < 3 else 1.0 if s < 5 else 1.4)
    with pytest.raises(ValueError, match="steps"):
        mc.Schedule.linear(0.9, 1.5, steps=0)
    with pytest.raises(ValueError, match="boundaries"):
        mc.Schedule.piecewise([3, 2], [0.6, 1.0, 1.4])
    with pytest.raises(ValueError, match="kind"):
        mc.Schedule("exponential", [1.0, 2.0], steps=3)  # type: ignore[arg-type]


def test_open_loop_controllers_accept_any_feedback_as_noop() -> None:
    ctl = mc.Fixed(1.0)
    d = ctl.sample()
    assert ctl.update(mc.Counterfactual(d, np.zeros((2, 1)), np.ones(2)))["noop"] == 1.0
    assert ctl.update(mc.Outcome(d, 3.0))["noop"] == 1.0


def test_entropy_target_rule() -> None:
    v = 1000
    ctl = mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=v, warmup=2, seed=0)
    for h in (2.0, 3.0):  # warm-up: target = 2.5, temperature unchanged
        assert ctl.sample().value == 1.0
        ctl.update(mc.EntropyObservation(ctl.sample(), h))
    assert ctl.target == pytest.approx(2.5)
    t = 1.0
    for h in (1.0, 4.0, 2.5, 0.2):
        ctl.update(mc.EntropyObservation(ctl.sample(), h))
        t = min(
            max(t * (1 + t * math.log(2.5 / h) / (math.log(v) + math.log(math.log(v)))), 0.3), 3.0
        )
        assert ctl.temperature == pytest.approx(t)
    with pytest.raises(ValueError, match="vocab_size"):
        mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=1)
    with pytest.raises(TypeError, match="Box"):
        mc.EntropyTarget(mc.Discrete([1.0]), vocab_size=10)  # type: ignore[arg-type]


def test_entropy_target_refuses_invalid_saved_target() -> None:
    import json

    ctl = mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=100, target=2.0)
    state = json.loads(json.dumps(ctl.state_dict()))
    state["params"]["target"] = -1.0
    fresh = mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=100, target=2.0)
    before = fresh.state_dict()
    with pytest.raises(ValueError, match="params.target"):
        fresh.load_state_dict(state)
    assert fresh.state_dict() == before


def test_piecewise_schedule_refuses_steps() -> None:
    with pytest.raises(ValueError, match="steps"):
        mc.Schedule("piecewise", [0.6, 1.0], boundaries=[3], steps=3)
