"""The sampling temperature as the controlled knob: what every temperature integration checks.

TRL's ``MetaGRPOTrainer`` and the SB3 adapter both let a controller choose the sampling
temperature (``logits / T``, or ``std * T``); both refuse a controller that cannot do that with
the same check and the same error::

    mc.check_temperature_controller(ctl, offered=(mc.Counterfactual, mc.Outcome))
    T = mc.check_temperature(ctl.sample().value, "decision.value")
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from metactl.controllers.base import FEEDBACK_PRIORITY, Controller, preferred_feedback
from metactl.errors import IncompatibleController
from metactl.spaces import Box, Discrete


def is_temperature(value: float) -> bool:
    """Whether ``value`` can scale logits or a standard deviation: finite and > 0."""
    return math.isfinite(value) and value > 0


def check_temperature(value: Any, where: str) -> float:
    """``value`` as a float temperature, or ``ValueError`` naming ``where`` it came from.

    Raises:
        ValueError: ``value`` is not a number, or not finite and > 0.
    """
    try:
        temperature = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"temperature: {where} must be a number, got {value!r}") from exc
    if not is_temperature(temperature):
        raise ValueError(f"temperature: {where} must be finite and > 0, got {temperature}")
    return temperature


def check_temperature_controller(
    controller: Any, offered: Collection[type] = FEEDBACK_PRIORITY
) -> Controller:
    """``controller``, if it can drive a sampling temperature fed with ``offered`` feedback.

    Args:
        controller: the candidate controller.
        offered: the feedback types the caller can build for it (see
            :func:`metactl.preferred_feedback`).

    Returns:
        The same controller, typed as a :class:`metactl.Controller`.

    Raises:
        IncompatibleController: (both a ``TypeError`` and a ``ValueError``) it is not a metactl
            controller, some of its arms are not finite positive temperatures, or it learns
            from none of ``offered``.
    """
    if not isinstance(controller, Controller):
        raise IncompatibleController(
            f"controller: expected a metactl controller (e.g. metactl.TAMPO()), "
            f"got {type(controller).__name__}"
        )
    space = controller.space
    if isinstance(space, Discrete):
        bad = [float(v) for v in space.values if not is_temperature(float(v))]
        if bad:
            raise IncompatibleController(
                f"controller: its arms are sampling temperatures and must be finite and > 0; "
                f"{type(controller).__name__} has arm(s) {bad} in {space!r}"
            )
    elif isinstance(space, Box):
        if not (is_temperature(space.low) and is_temperature(space.high)):
            raise IncompatibleController(
                f"controller: its arms are sampling temperatures and must be finite and > 0; "
                f"{type(controller).__name__} ranges over {space!r}; "
                "use e.g. metactl.Box(0.3, 3.0, log=True)"
            )
    else:
        raise IncompatibleController(
            f"controller.space: expected metactl.Discrete or metactl.Box, "
            f"got {type(space).__name__}"
        )
    preferred_feedback(controller, offered)
    return controller
