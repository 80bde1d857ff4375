"""Decisions a controller makes and the feedback it learns from.

The loop::

    d = ctl.sample()                       # Decision: d.value to use now
    ...                                    # roll out at d.value
    ctl.update(Counterfactual(d, loglik, advantages))

Every feedback type is a frozen dataclass validated on construction: a bad
shape, NaN/inf or an empty batch raises ``ValueError`` naming the field, so a
controller never sees invalid data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def _readonly(a: NDArray[Any]) -> NDArray[Any]:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Decision:
    """What a controller proposes for the next rollouts.

    Attributes:
        value: the arm to use now (e.g. the rollout temperature).
        virtual: ``[M]`` arm values at which to score the rollouts (the columns of
            ``Counterfactual.loglik``).
        arm: the controller's own coordinate of ``value``: the arm index for a
            ``Discrete`` space, the unconstrained coordinate ``u`` for a ``Box``.
        virtual_arms: ``[M]`` the same coordinate for each virtual value.
        step: index of this decision among the controller's decisions (0-based).
        source: identifier of the controller instance that made it.
    """

    value: float
    virtual: FloatArray
    arm: float
    virtual_arms: FloatArray
    step: int
    source: str = field(repr=False)

    def __post_init__(self) -> None:
        virtual = _readonly(np.array(self.virtual, dtype=np.float64, ndmin=1))
        virtual_arms = _readonly(np.array(self.virtual_arms, dtype=np.float64, ndmin=1))
        if virtual.ndim != 1 or virtual.shape != virtual_arms.shape:
            raise ValueError(
                f"Decision: virtual {virtual.shape} and virtual_arms {virtual_arms.shape} "
                "must be 1-D of equal length"
            )
        object.__setattr__(self, "virtual", virtual)
        object.__setattr__(self, "virtual_arms", virtual_arms)
        object.__setattr__(self, "value", float(self.value))


def _check_decision(name: str, decision: object) -> Decision:
    if not isinstance(decision, Decision):
        raise TypeError(f"{name}: expected a metactl Decision, got {type(decision).__name__}")
    return decision


def _finite_array(name: str, value: ArrayLike, ndim: int) -> FloatArray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot convert to a float array ({exc})") from exc
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)]
        raise ValueError(
            f"{name}: must be finite, found {bad.size} non-finite value(s) such as {bad.flat[0]}"
        )
    return _readonly(arr)


@dataclass(frozen=True, eq=False)
class Counterfactual:
    """Every rollout scored at every virtual arm of its decision.

    Attributes:
        decision: the Decision whose ``value`` the rollouts were sampled at.
        loglik: ``[N, M]``; ``loglik[i, j]`` is the mean token log-probability of
            rollout ``i`` when the arm is ``decision.virtual[j]``.
        advantages: ``[N]`` the rollouts' advantages (e.g. GRPO's group-normalised
            rewards, or PPO's per-step GAE advantages).
    """

    decision: Decision
    loglik: FloatArray
    advantages: FloatArray

    def __post_init__(self) -> None:
        d = _check_decision("Counterfactual.decision", self.decision)
        loglik = _finite_array("Counterfactual.loglik", self.loglik, 2)
        adv = _finite_array("Counterfactual.advantages", self.advantages, 1)
        n, m = loglik.shape
        if n == 0:
            raise ValueError("Counterfactual.loglik: the batch is empty (N = 0 rollouts)")
        if m != d.virtual.size:
            raise ValueError(
                f"Counterfactual.loglik: shape {loglik.shape} has {m} columns but the decision "
                f"has {d.virtual.size} virtual arms"
            )
        if adv.shape != (n,):
            raise ValueError(
                f"Counterfactual.advantages: shape {adv.shape} does not match loglik's "
                f"{n} rows (expected ({n},))"
            )
        object.__setattr__(self, "loglik", loglik)
        object.__setattr__(self, "advantages", adv)


@dataclass(frozen=True, eq=False)
class Outcome:
    """Bandit feedback: one played arm and the return it earned."""

    decision: Decision
    reward: float

    def __post_init__(self) -> None:
        _check_decision("Outcome.decision", self.decision)
        try:
            reward = float(self.reward)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Outcome.reward: expected a number, got {self.reward!r}") from exc
        if not math.isfinite(reward):
            raise ValueError(f"Outcome.reward: must be finite, got {reward}")
        object.__setattr__(self, "reward", reward)


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Many arms played at once (e.g. one arm per sample) and their returns."""

    decisions: tuple[Decision, ...]
    rewards: FloatArray

    def __post_init__(self) -> None:
        decisions = tuple(self.decisions) if isinstance(self.decisions, Sequence) else None
        if decisions is None:
            raise ValueError(
                f"Outcomes.decisions: expected a sequence of Decisions, got {type(self.decisions).__name__}"
            )
        for i, d in enumerate(decisions):
            _check_decision(f"Outcomes.decisions[{i}]", d)
        rewards = _finite_array("Outcomes.rewards", self.rewards, 1)
        if len(decisions) == 0:
            raise ValueError("Outcomes.decisions: the batch is empty (0 decisions)")
        if rewards.shape != (len(decisions),):
            raise ValueError(
                f"Outcomes.rewards: shape {rewards.shape} does not match {len(decisions)} decisions"
            )
        object.__setattr__(self, "decisions", decisions)
        object.__setattr__(self, "rewards", rewards)


@dataclass(frozen=True, eq=False)
class EntropyObservation:
    """The mean per-token entropy (nats) of the rollouts sampled at ``decision.value``."""

    decision: Decision
    entropy: float

    def __post_init__(self) -> None:
        _check_decision("EntropyObservation.decision", self.decision)
        try:
            entropy = float(self.entropy)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"EntropyObservation.entropy: expected a number, got {self.entropy!r}"
            ) from exc
        if not (math.isfinite(entropy) and entropy > 0):
            raise ValueError(f"EntropyObservation.entropy: must be finite and > 0, got {entropy}")
        object.__setattr__(self, "entropy", entropy)


Feedback = Counterfactual | Outcome | Outcomes | EntropyObservation
