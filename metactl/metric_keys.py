"""The names of the meta-policy metrics: minted by controllers, logged by trainers, read by reports.

A controller's ``update()`` reports its policy under these names: a Discrete policy as one
:func:`prob_key` per arm (``prob/0.6``), a continuous (Box) one as :data:`MEAN` and
:data:`SIGMA`. A trainer logs every controller metric, and the temperature it sampled
(:data:`TEMPERATURE`), under :func:`meta_key` (``meta/prob/0.6``); a report parses them back
with :func:`prob_arm`. A per-arm metric's name ends with the arm's label (:func:`arm_of`):
trainers log those only on request, and draw a Discrete policy as one histogram
(:data:`POLICY`).
"""

from __future__ import annotations

from collections.abc import Collection

META_PREFIX = "meta/"
"""What a trainer puts before each controller metric in its logs."""

PROB_PREFIX = "prob/"
"""What precedes an arm's label in the name of its probability."""

MEAN = "mean"
"""A Box policy's median temperature."""

SIGMA = "sigma"
"""A Box policy's spread, in the box's unconstrained coordinate."""

TEMPERATURE = "temperature"
"""The temperature a trainer sampled for the round (logged by the trainer, not the controller)."""

SHARPNESS_ADVANTAGE_COVARIANCE = "sharpness_advantage_covariance"
"""C_g = (1/N) sum_i A_i dl_i/d(1/T), logged by a trainer every round (docs/tampo.md): positive
when the good rollouts are the sharp ones, i.e. when TAMPO's signal cools the run."""


SEAM_SECONDS = "seam_seconds"
"""The seconds a trainer's seam spent in a round scoring the virtual temperatures (its own
work on this process, beside TRL's ``step_time``): what Counterfactual feedback costs."""

INFORMATIVE_FRACTION = "informative_fraction"
"""The fraction of a round's prompt groups whose completions got unequal rewards."""

NONFINITE_REWARDS = "nonfinite_rewards"
"""How many of a round's rewards were inf (left out of what the controller learns from)."""

SKIPPED_ROUNDS = "skipped_rounds"
"""How many rounds so far gave the controller nothing to learn from (counted, not learned)."""

POLICY = "policy"
"""The meta-policy over the arms, as one histogram per round (probability mass per arm)."""


def prob_key(label: str) -> str:
    """The metric name of the probability of the arm labelled ``label``: ``prob/<label>``."""
    return PROB_PREFIX + label


def prob_arm(name: str) -> str | None:
    """The arm label of a probability's metric name (``prob/0.6`` -> ``"0.6"``), else None."""
    return name[len(PROB_PREFIX) :] if name.startswith(PROB_PREFIX) else None


def arm_of(name: str, labels: Collection[str]) -> str | None:
    """The arm label a per-arm metric is about (``advantage/0.6`` -> ``"0.6"``), else None.

    A per-arm metric's name ends with ``/<label>`` for one of the arms' ``labels``.
    """
    _, sep, tail = name.rpartition("/")
    return tail if sep and tail in labels else None


def meta_key(name: str) -> str:
    """The name a trainer logs the metric ``name`` under: ``meta/<name>``."""
    return META_PREFIX + name
