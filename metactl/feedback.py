"""Decisions a controller makes and the feedback it learns from.

The loop::

    d = ctl.sample()                       # Decision: d.value to use now
    ...                                    # roll out at d.value
    ctl.update(Counterfactual(d, loglik, advantages))

Every feedback type is a frozen dataclass validated on construction: a bad
shape, NaN/inf, a complex or boolean array, a reward or advantage beyond
``MAX_MAGNITUDE`` (1e100) or an empty batch raises ``ValueError`` naming the field,
so a controller never sees data outside its domain (docs/concepts.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from metactl._validate import MAX_MAGNITUDE, bounded, real, real_array

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


@dataclass(frozen=True, eq=False)
class Counterfactual:
    """Every rollout scored at every virtual arm of its decision.

    Attributes:
        decision: the Decision whose ``value`` the rollouts were sampled at.
        loglik: ``[N, M]``; ``loglik[i, j]`` is the mean token log-probability of
            rollout ``i`` when the arm is ``decision.virtual[j]``. Any finite value (e.g. a
            mask fill of ``np.finfo(np.float32).min``): controllers use each row only up to
            a shift.
        advantages: ``[N]`` the rollouts' advantages (e.g. GRPO's group-normalised
            rewards, or PPO's per-step GAE advantages), each ``|A_i| <= 1e100``.
        rewards: optional ``[N]`` the rollouts' raw rewards (``|r_i| <= 1e100``), for
            signals that need more than advantages (e.g. which prompt groups are solved).
        groups: optional ``[N]`` non-negative integer id of each rollout's prompt group
            (rollouts of one prompt share an id).
        lengths: optional ``[N]`` positive number of scored tokens of each rollout, so that
            ``loglik[i, j] * lengths[i]`` is the rollout's total log-likelihood at arm ``j``.

    A controller that needs an optional field raises ``ValueError`` naming it when it is
    missing. The TRL round, the SB3 callback and the lab fill all three.
    """

    decision: Decision
    loglik: FloatArray
    advantages: FloatArray
    rewards: FloatArray | None = None
    groups: NDArray[np.int64] | None = None
    lengths: FloatArray | None = None

    def __post_init__(self) -> None:
        d = _check_decision("Counterfactual.decision", self.decision)
        loglik = _readonly(real_array("Counterfactual.loglik", self.loglik, 2))
        adv = _readonly(
            real_array("Counterfactual.advantages", self.advantages, 1, limit=MAX_MAGNITUDE)
        )
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
        rewards = (
            None
            if self.rewards is None
            else _readonly(_rows("rewards", self.rewards, n, limit=MAX_MAGNITUDE))
        )
        groups = None if self.groups is None else _readonly(_group_ids(self.groups, n))
        lengths = None if self.lengths is None else _readonly(_lengths(self.lengths, n))
        object.__setattr__(self, "loglik", loglik)
        object.__setattr__(self, "advantages", adv)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "lengths", lengths)


def _rows(field_name: str, value: ArrayLike, n: int, *, limit: float | None = None) -> FloatArray:
    """An optional per-rollout field of Counterfactual: ``[N]`` finite floats."""
    name = f"Counterfactual.{field_name}"
    arr = real_array(name, value, 1, limit=limit)
    if arr.shape != (n,):
        raise ValueError(
            f"{name}: shape {arr.shape} does not match loglik's {n} rows (expected ({n},))"
        )
    return arr


def _group_ids(value: ArrayLike, n: int) -> NDArray[np.int64]:
    arr = _rows("groups", value, n)
    if np.any(arr < 0) or np.any(arr != np.floor(arr)) or np.any(arr > 2**53):
        at = int(np.argwhere((arr < 0) | (arr != np.floor(arr)) | (arr > 2**53))[0, 0])
        raise ValueError(
            f"Counterfactual.groups: expected non-negative integer group ids, got {float(arr[at])} "
            f"at index {at}"
        )
    return arr.astype(np.int64)


def _lengths(value: ArrayLike, n: int) -> FloatArray:
    arr = _rows("lengths", value, n, limit=MAX_MAGNITUDE)
    if np.any(arr <= 0):
        at = int(np.argwhere(arr <= 0)[0, 0])
        raise ValueError(
            f"Counterfactual.lengths: each rollout's scored-token count must be > 0, got "
            f"{float(arr[at])} at index {at}"
        )
    return arr


@dataclass(frozen=True, eq=False)
class Outcome:
    """Bandit feedback: one played arm and the return it earned."""

    decision: Decision
    reward: float

    def __post_init__(self) -> None:
        _check_decision("Outcome.decision", self.decision)
        reward = bounded("Outcome.reward", real("Outcome.reward", self.reward))
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
        rewards = _readonly(real_array("Outcomes.rewards", self.rewards, 1, limit=MAX_MAGNITUDE))
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
        entropy = bounded(
            "EntropyObservation.entropy", real("EntropyObservation.entropy", self.entropy)
        )
        if not entropy > 0:
            raise ValueError(f"EntropyObservation.entropy: must be > 0, got {entropy}")
        object.__setattr__(self, "entropy", entropy)


Feedback = Counterfactual | Outcome | Outcomes | EntropyObservation
