"""Built-in controllers."""

from metactl.controllers.base import (
    FEEDBACK_PRIORITY,
    BaseController,
    Controller,
    Metrics,
    preferred_feedback,
)
from metactl.controllers.baselines import EntropyTarget, Fixed, Schedule, SlidingWindowUCB
from metactl.controllers.informativeness import Informativeness
from metactl.controllers.meta_gradient import MetaGradient
from metactl.controllers.tampo import PAPER_TEMPERATURES, TAMPO

__all__ = [
    "FEEDBACK_PRIORITY",
    "PAPER_TEMPERATURES",
    "TAMPO",
    "BaseController",
    "Controller",
    "EntropyTarget",
    "Fixed",
    "Informativeness",
    "MetaGradient",
    "Metrics",
    "Schedule",
    "SlidingWindowUCB",
    "preferred_feedback",
]
