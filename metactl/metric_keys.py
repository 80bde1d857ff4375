"""The names of the meta-policy metrics: minted by controllers, logged by trainers, read by reports.

A controller's ``update()`` reports its policy under these names: a Discrete policy as one
:func:`prob_key` per arm (``prob/0.6``), a continuous (Box) one as :data:`MEAN` and
:data:`SIGMA`. A trainer logs every controller metric, and the temperature it sampled
(:data:`TEMPERATURE`), under :func:`meta_key` (``meta/prob/0.6``); a report parses them back
with :func:`prob_arm`.
"""

from __future__ import annotations

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


def prob_key(label: str) -> str:
    """The metric name of the probability of the arm labelled ``label``: ``prob/<label>``."""
    return PROB_PREFIX + label


def prob_arm(name: str) -> str | None:
    """The arm label of a probability's metric name (``prob/0.6`` -> ``"0.6"``), else None."""
    return name[len(PROB_PREFIX) :] if name.startswith(PROB_PREFIX) else None


def meta_key(name: str) -> str:
    """The name a trainer logs the metric ``name`` under: ``meta/<name>``."""
    return META_PREFIX + name
