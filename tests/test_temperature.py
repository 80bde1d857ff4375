"""The one check that a controller can drive a sampling temperature (TRL and SB3 use it)."""

from __future__ import annotations

import math

import pytest

import metactl as mc
from metactl.temperature import TEMPERATURE_RANGE, check_temperature, is_temperature


@pytest.mark.parametrize(
    "ctl",
    [
        mc.TAMPO(seed=0),
        mc.MetaGradient(mc.Box(0.3, 3.0, log=True), seed=0),
        mc.SlidingWindowUCB(mc.Discrete([0.5, 1.0]), seed=0),
        mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=10),
        mc.Fixed(1.0),
        mc.Schedule.linear(0.9, 1.5, steps=10),
    ],
    ids=lambda c: type(c).__name__,
)
def test_controllers_over_positive_temperatures_pass_and_are_returned(ctl: mc.Controller) -> None:
    assert mc.check_temperature_controller(ctl) is ctl


def _refusal(controller: object, offered: tuple[type, ...] = mc.FEEDBACK_PRIORITY) -> str:
    with pytest.raises(mc.IncompatibleController) as info:
        mc.check_temperature_controller(controller, offered)
    # One error type that callers catching either built-in still catch.
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    return str(info.value)


def test_refuses_what_is_not_a_controller() -> None:
    assert "expected a metactl controller" in _refusal(1.0)
    assert "got float" in _refusal(1.0)


@pytest.mark.parametrize(
    ("ctl", "named"),
    [
        (mc.TAMPO(mc.Discrete([0.0, 1.0]), seed=0), "arm(s) [0.0]"),
        (mc.TAMPO(mc.Discrete([-1.0, 0.5, -0.2]), seed=0), "arm(s) [-1.0, -0.2]"),
        (mc.Fixed(0.0), "arm(s) [0.0]"),
        (mc.MetaGradient(mc.Box(-1.0, 1.0), seed=0), "Box(-1.0, 1.0, log=False)"),
        (mc.MetaGradient(mc.Box(0.0, 2.0), seed=0), "Box(0.0, 2.0, log=False)"),
        # Finite and > 0, but outside [0.01, 100]: issue 24 found these failing mid-training
        # (1e-45 in torch.multinomial, 1e300 as a non-finite loglik).
        (mc.Fixed(1e-45), "arm(s) [1e-45]"),
        (mc.Fixed(1e300), "arm(s) [1e+300]"),
        (mc.Schedule.linear(0.005, 1.0, steps=10), "Box(0.005, 1.0, log=False)"),
        (mc.Schedule.piecewise([5], [1.0, 150.0]), "Box(1.0, 150.0, log=False)"),
        (mc.TAMPO(mc.Discrete([0.5, 1.0, 1e-3]), seed=0), "arm(s) [0.001]"),
        (mc.SlidingWindowUCB(mc.Discrete([1.0, 101.0]), seed=0), "arm(s) [101.0]"),
        (mc.MetaGradient(mc.Box(0.001, 3.0, log=True), seed=0), "Box(0.001, 3.0, log=True)"),
        (mc.MetaGradient(mc.Discrete([0.5, 1e300]), seed=0), "arm(s) [1e+300]"),
    ],
)
def test_refuses_arms_outside_the_temperature_range(ctl: mc.Controller, named: str) -> None:
    message = _refusal(ctl)
    assert "must lie in [0.01, 100]" in message
    assert named in message
    assert type(ctl).__name__ in message


@pytest.mark.parametrize(
    "ctl",
    [
        mc.Fixed(0.01),
        mc.Fixed(100.0),
        mc.TAMPO(mc.Discrete([0.01, 1.0, 100.0]), seed=0),
        mc.MetaGradient(mc.Box(0.01, 100.0, log=True), seed=0),
        mc.EntropyTarget(mc.Box(0.01, 100.0), vocab_size=10),
    ],
    ids=lambda c: repr(c.space),
)
def test_the_ends_of_the_range_are_temperatures(ctl: mc.Controller) -> None:
    assert mc.check_temperature_controller(ctl) is ctl


@pytest.mark.parametrize("space", [mc.Box(0.005, 3.0), mc.Box(0.3, 200.0), mc.Box(1e-45, 1.0)])
def test_entropy_target_refuses_bounds_outside_the_range_when_built(space: mc.Box) -> None:
    # EntropyTarget proposes only temperatures, so it checks when it is built; generic spaces
    # (a Box may hold any hyperparameter) are checked where they are used as temperatures.
    with pytest.raises(ValueError, match=r"EntropyTarget\(space\).*\[0\.01, 100\]") as info:
        mc.EntropyTarget(space, vocab_size=10)
    assert repr(space) in str(info.value)


def test_refuses_a_controller_that_learns_from_nothing_offered() -> None:
    message = _refusal(mc.SlidingWindowUCB(mc.Discrete([0.5, 1.0]), seed=0), (mc.Counterfactual,))
    assert "SlidingWindowUCB learns only from Outcome, Outcomes" in message
    assert "offered here is Counterfactual" in message
    # The same controller is fine where bandit feedback is offered.
    ucb = mc.SlidingWindowUCB(mc.Discrete([0.5, 1.0]), seed=0)
    assert mc.check_temperature_controller(ucb, (mc.Counterfactual, mc.Outcome)) is ucb


def test_check_temperature_returns_a_float_or_names_where_the_bad_value_came_from() -> None:
    assert check_temperature(1, "x") == 1.0 and isinstance(check_temperature(1, "x"), float)
    assert TEMPERATURE_RANGE == (0.01, 100.0)
    for good in (0.01, 0.6, 100.0):
        assert is_temperature(good) and check_temperature(good, "x") == good
    for bad in (0.0, -0.5, math.inf, math.nan, 1e-45, 0.0099, 100.01, 1e300):
        assert not is_temperature(bad)
        with pytest.raises(
            ValueError, match=r"temperature: decision\.value must be in \[0\.01, 100\]"
        ):
            check_temperature(bad, "decision.value")
    with pytest.raises(ValueError, match="must be a number, got 'warm'"):
        check_temperature("warm", "decision.value")
    with pytest.raises(ValueError, match="must be a number, got the bool True"):
        check_temperature(True, "decision.value")
