"""metactl: adapt an RL run's hyperparameters while it trains.

The flagship is TAMPO (ICLR 2026): the sampling temperature of LLM GRPO
training treated as a learned meta-policy, scored on the rollouts the run
already made. See ``docs/concepts.md`` for the loop::

    import metactl as mc

    ctl = mc.TAMPO(seed=0)                 # paper defaults: T in 0.6..1.5
    d = ctl.sample()                       # d.value: temperature for these rollouts
    metrics = ctl.update(mc.Counterfactual(d, loglik, advantages))
"""

from metactl import testing
from metactl.controllers import (
    FEEDBACK_PRIORITY,
    PAPER_TEMPERATURES,
    TAMPO,
    BaseController,
    Controller,
    EntropyTarget,
    Fixed,
    Informativeness,
    MetaGradient,
    Metrics,
    Schedule,
    SlidingWindowUCB,
    preferred_feedback,
)
from metactl.errors import DependencyNotInstalled, IncompatibleController
from metactl.feedback import (
    Counterfactual,
    Decision,
    EntropyObservation,
    Feedback,
    Outcome,
    Outcomes,
)
from metactl.spaces import Box, Discrete, Space
from metactl.temperature import check_temperature_controller

__version__ = "0.1.0"

__all__ = [
    "FEEDBACK_PRIORITY",
    "PAPER_TEMPERATURES",
    "TAMPO",
    "BaseController",
    "Box",
    "Controller",
    "Counterfactual",
    "Decision",
    "DependencyNotInstalled",
    "Discrete",
    "EntropyObservation",
    "EntropyTarget",
    "Feedback",
    "Fixed",
    "IncompatibleController",
    "Informativeness",
    "MetaGradient",
    "Metrics",
    "Outcome",
    "Outcomes",
    "Schedule",
    "SlidingWindowUCB",
    "Space",
    "__version__",
    "check_temperature_controller",
    "preferred_feedback",
    "testing",
]
