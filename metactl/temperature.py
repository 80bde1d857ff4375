"""The sampling temperature as the controlled knob: the one rule for what a temperature may be.

TRL's ``MetaGRPOTrainer`` and the SB3 adapter both let a controller choose the sampling
temperature (``logits / T``, or ``std * T``); both refuse a controller that cannot do that with
the same check and the same error::

    mc.check_temperature_controller(ctl, offered=(mc.Counterfactual, mc.Outcome))
    T = mc.check_temperature(ctl.sample().value, "decision.value")

Every temperature metactl samples or scores at lies in :data:`TEMPERATURE_RANGE`, ``[0.01, 100]``
(derivation in docs/concepts.md, "Temperatures"): the controllers that only propose temperatures
(``EntropyTarget``) refuse other bounds when built, the integrations refuse a controller whose
arms leave it when they are built (``check_temperature_controller``), and the tensor ops of
``metactl.integrations.torch`` refuse temperatures outside it. Spaces themselves stay generic:
a ``Discrete`` or ``Box`` may hold any hyperparameter.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from metactl.controllers.base import FEEDBACK_PRIORITY, Controller, preferred_feedback
from metactl.errors import IncompatibleController
from metactl.spaces import Box, Discrete, Space

FP32_MAX = 3.4028234663852886e38
"""The largest finite fp32 number: sampling (``softmax(z / T)``) and scoring run in fp32."""

TEMPERATURE_RANGE = (0.01, 100.0)
"""The temperatures metactl accepts, ends included (docs/concepts.md, "Temperatures").

Within it ``z / T`` and ``log softmax(z / T)`` are finite in fp32 for logits up to
``FP32_MAX * 0.01 / 2 ~ 1.7e36`` in absolute value, far beyond the documented ``1e4``
(in fp32 the finite range for ``|z| <= 1e4`` is about ``[5.9e-35, 8.5e37]``), and it holds every
useful temperature: at 0.01 a logit gap of 0.1 already has odds ``e^-10`` (argmax), at 100
logits of size 30 become 0.3 (nearly uniform).
"""


def is_temperature(value: float) -> bool:
    """Whether ``value`` is a temperature metactl samples and scores at: in :data:`TEMPERATURE_RANGE`."""
    low, high = TEMPERATURE_RANGE
    return low <= value <= high  # False for NaN


def temperature_rule() -> str:
    """The rule, for messages: ``"in [0.01, 100] (docs/concepts.md, Temperatures)"``."""
    low, high = TEMPERATURE_RANGE
    return f"in [{low:g}, {high:g}] (where sampling and scoring are finite in fp32, see docs/concepts.md)"


def check_temperature(value: Any, where: str) -> float:
    """``value`` as a float temperature, or ``ValueError`` naming ``where`` it came from.

    Raises:
        ValueError: ``value`` is not a real number, or lies outside :data:`TEMPERATURE_RANGE`.
    """
    if isinstance(value, bool):
        raise ValueError(f"temperature: {where} must be a number, got the bool {value!r}")
    try:
        temperature = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"temperature: {where} must be a number, got {value!r}") from exc
    if not is_temperature(temperature):
        raise ValueError(f"temperature: {where} must be {temperature_rule()}, got {temperature!r}")
    return temperature


def space_outside_range(space: Space) -> str | None:
    """What of ``space`` lies outside :data:`TEMPERATURE_RANGE` (``"arm(s) [...]"`` or its bounds), or None."""
    if isinstance(space, Discrete):
        bad = [float(v) for v in space.values if not is_temperature(float(v))]
        return f"arm(s) {bad} in {space!r}" if bad else None
    if not (is_temperature(space.low) and is_temperature(space.high)):
        return f"the range {space!r}"
    return None


def check_temperature_controller(
    controller: Any, offered: Collection[type] = FEEDBACK_PRIORITY
) -> Controller:
    """``controller``, if it can drive a sampling temperature fed with ``offered`` feedback.

    Called by an integration when it is built, so that a temperature it could not sample or
    score at is refused before training starts, naming the arm.

    Args:
        controller: the candidate controller.
        offered: the feedback types the caller can build for it (see
            :func:`metactl.preferred_feedback`).

    Returns:
        The same controller, typed as a :class:`metactl.Controller`.

    Raises:
        IncompatibleController: (both a ``TypeError`` and a ``ValueError``) it is not a metactl
            controller, some of its arms lie outside :data:`TEMPERATURE_RANGE`, or it learns
            from none of ``offered``.
    """
    if not isinstance(controller, Controller):
        raise IncompatibleController(
            f"controller: expected a metactl controller (e.g. metactl.TAMPO()), "
            f"got {type(controller).__name__}"
        )
    space = controller.space
    if not isinstance(space, (Discrete, Box)):
        raise IncompatibleController(
            f"controller.space: expected metactl.Discrete or metactl.Box, "
            f"got {type(space).__name__}"
        )
    outside = space_outside_range(space)
    if outside is not None:
        raise IncompatibleController(
            f"controller: its arms are sampling temperatures and must lie {temperature_rule()}; "
            f"{type(controller).__name__} has {outside}; use e.g. metactl.Box(0.3, 3.0, log=True)"
        )
    preferred_feedback(controller, offered)
    return controller
