"""The shell every controller shares: readable repr, and which feedback an integration builds."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from controllers_common import GRID

import metactl as mc


# --- repr ----------------------------------------------------------------------------------
def test_repr_shows_the_class_the_space_and_the_settings() -> None:
    assert repr(mc.TAMPO(seed=0)) == (
        "TAMPO(space=Discrete([0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]), "
        "ema=0.05, top_p=0.7, normaliser='sparsemax', warmup_steps=0)"
    )
    assert repr(mc.MetaGradient(mc.Box(0.3, 3.0, log=True), lr=0.1, seed=0)) == (
        "MetaGradient(space=Box(0.3, 3.0, log=True), lr=0.1, optimizer='adam', "
        "entropy_bonus=0.0, prob_floor=0.0, num_virtual=8, min_sigma=0.05, ema=1.0, "
        "normaliser='sparsemax', baseline_ema=0.1)"
    )
    assert repr(mc.Schedule.piecewise([2, 5], [0.6, 1.0, 1.4])) == (
        "Schedule(space=Box(0.6, 1.4, log=False), kind='piecewise', values=[0.6, 1.0, 1.4], "
        "steps=None, boundaries=[2, 5])"
    )


def test_repr_of_every_controller_names_its_space_and_every_saved_setting(
    controller_factory: Callable[[], mc.BaseController],
) -> None:
    ctl = controller_factory()
    text = repr(ctl)
    assert text.startswith(f"{type(ctl).__name__}(space={ctl.space!r}")
    for name, value in ctl.state_dict()["config"].items():
        assert f"{name}={value!r}" in text
    assert "\n" not in text and "array(" not in text


def test_repr_does_not_change_with_learning() -> None:
    ctl = mc.TAMPO(GRID, seed=0)
    before = repr(ctl)
    d = ctl.sample()
    ctl.update(mc.testing.random_feedback(mc.Counterfactual, d, np.random.default_rng(0)))
    assert repr(ctl) == before


@pytest.mark.parametrize(
    "ctl",
    [
        mc.TAMPO(GRID, ema=0.1, top_p=0.5, normaliser="softmax", warmup_steps=2, seed=0),
        mc.MetaGradient(mc.Box(0.2, 2.0), optimizer="sgd", num_virtual=4, seed=0),
        mc.MetaGradient(GRID, prob_floor=0.1, seed=0),
        mc.SlidingWindowUCB(GRID, window=5, epsilon=0.1, seed=0),
        mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=50, warmup=3, seed=0),
        mc.Fixed(0.7, space=mc.Box(0.3, 3.0)),
    ],
    ids=repr,
)
def test_repr_evaluates_to_a_controller_with_the_same_settings(ctl: mc.BaseController) -> None:
    rebuilt = eval(repr(ctl), vars(mc))
    assert type(rebuilt) is type(ctl)
    assert rebuilt.space == ctl.space
    assert rebuilt.state_dict()["config"] == ctl.state_dict()["config"]


# --- which feedback an integration builds --------------------------------------------------
def test_feedback_priority_is_counterfactual_then_outcome_then_entropy() -> None:
    assert mc.FEEDBACK_PRIORITY == (
        mc.Counterfactual,
        mc.Outcome,
        mc.Outcomes,
        mc.EntropyObservation,
    )


@pytest.mark.parametrize(
    ("ctl", "offered", "expected"),
    [
        (mc.TAMPO(seed=0), mc.FEEDBACK_PRIORITY, mc.Counterfactual),
        (mc.MetaGradient(GRID, seed=0), mc.FEEDBACK_PRIORITY, mc.Counterfactual),
        (mc.MetaGradient(GRID, seed=0), (mc.Outcomes, mc.Outcome), mc.Outcome),
        (mc.MetaGradient(GRID, seed=0), (mc.Outcomes, mc.EntropyObservation), mc.Outcomes),
        (mc.SlidingWindowUCB(GRID, seed=0), mc.FEEDBACK_PRIORITY, mc.Outcome),
        (
            mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=10),
            mc.FEEDBACK_PRIORITY,
            mc.EntropyObservation,
        ),
        # Open-loop controllers accept everything: the richest offered signal wins, in the
        # library's order whatever the order of ``offered``.
        (mc.Fixed(1.0), (mc.EntropyObservation, mc.Outcome), mc.Outcome),
        (mc.Fixed(1.0), (mc.EntropyObservation, mc.Counterfactual), mc.Counterfactual),
        (mc.Fixed(1.0), (mc.EntropyObservation,), mc.EntropyObservation),
    ],
)
def test_preferred_feedback_is_the_first_offered_type_the_controller_accepts(
    ctl: mc.Controller, offered: tuple[type, ...], expected: type
) -> None:
    kind = mc.preferred_feedback(ctl, offered)
    assert kind is expected
    assert kind in ctl.accepts and kind in offered


def test_preferred_feedback_refuses_a_controller_that_accepts_nothing_offered() -> None:
    with pytest.raises(mc.IncompatibleController) as info:
        mc.preferred_feedback(mc.TAMPO(seed=0), (mc.Outcome, mc.EntropyObservation))
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert "TAMPO learns only from Counterfactual" in message
    assert "Outcome, EntropyObservation" in message
    with pytest.raises(TypeError, match="offered here is nothing"):
        mc.preferred_feedback(mc.SlidingWindowUCB(GRID, seed=0), ())
