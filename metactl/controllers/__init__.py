"""Built-in controllers."""

from metactl.controllers.base import BaseController, Controller, Metrics
from metactl.controllers.baselines import EntropyTarget, Fixed, Schedule, SlidingWindowUCB
from metactl.controllers.meta_gradient import MetaGradient
from metactl.controllers.tampo import PAPER_TEMPERATURES, TAMPO

__all__ = [
    "PAPER_TEMPERATURES",
    "TAMPO",
    "BaseController",
    "Controller",
    "EntropyTarget",
    "Fixed",
    "MetaGradient",
    "Metrics",
    "Schedule",
    "SlidingWindowUCB",
]
