"""Baseline controllers: a bandit, constants, schedules, and closed-loop entropy control."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from metactl import functional as F
from metactl._validate import bounded, integer, real
from metactl.controllers._arms import arm_label, played_arms
from metactl.controllers.base import BaseController, Metrics
from metactl.feedback import Counterfactual, EntropyObservation, Feedback, Outcome, Outcomes
from metactl.metric_keys import prob_key
from metactl.spaces import Box, Discrete, Space
from metactl.temperature import space_outside_range, temperature_rule

ALL_FEEDBACK: tuple[type, ...] = (Counterfactual, Outcome, Outcomes, EntropyObservation)


class SlidingWindowUCB(BaseController):
    """Agent57's meta-controller: epsilon-greedy sliding-window UCB over discrete arms.

    Each arm is played once first; afterwards, with probability ``epsilon`` a
    uniformly random arm, else the argmax of ``mean_k + bonus * sqrt(1 / N_k)``
    over the last ``window`` outcomes (an arm absent from the window scores +inf)::

        ctl = mc.SlidingWindowUCB(mc.Discrete([0.6, 1.0, 1.4]), seed=0)
        d = ctl.sample()
        ctl.update(mc.Outcome(d, reward=batch_mean_reward))

    Args:
        space: the arms.
        window: how many of the most recent outcomes count (Agent57: 160).
        epsilon: probability of a uniformly random arm (Agent57: 0.5).
        bonus: beta, the weight of the exploration bonus (Agent57: 1).
        seed: int, Generator or None.
    """

    accepts: ClassVar[tuple[type, ...]] = (Outcome, Outcomes)

    def __init__(
        self,
        space: Discrete,
        *,
        window: int = 160,
        epsilon: float = 0.5,
        bonus: float = 1.0,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if not isinstance(space, Discrete):
            raise TypeError(f"SlidingWindowUCB(space): needs a metactl.Discrete, got {space!r}")
        window = integer("SlidingWindowUCB(window)", window, minimum=1)
        epsilon = real("SlidingWindowUCB(epsilon)", epsilon)
        bonus = real("SlidingWindowUCB(bonus)", bonus)
        if not 0 <= epsilon <= 1:
            raise ValueError(f"SlidingWindowUCB(epsilon): must be in [0, 1], got {epsilon}")
        if bonus < 0:
            raise ValueError(f"SlidingWindowUCB(bonus): must be >= 0, got {bonus}")
        super().__init__(space, seed)
        self.window = int(window)
        self.epsilon = float(epsilon)
        self.bonus = float(bonus)
        self._arms: list[int] = []
        self._rewards: list[float] = []

    @property
    def space(self) -> Discrete:
        """The candidate arms."""
        assert isinstance(self._space, Discrete)
        return self._space

    def scores(self) -> np.ndarray:
        """mean_k + bonus * sqrt(1 / N_k) over the window; +inf for arms not in it."""
        k = len(self.space)
        arms = np.asarray(self._arms, dtype=np.int64)
        rewards = np.asarray(self._rewards, dtype=np.float64)
        counts = np.bincount(arms, minlength=k).astype(np.float64)
        sums = np.bincount(arms, weights=rewards, minlength=k)
        with np.errstate(divide="ignore", invalid="ignore"):
            ucb = sums / counts + self.bonus * np.sqrt(1.0 / counts)
        return np.asarray(np.where(counts > 0, ucb, np.inf))

    @property
    def probs(self) -> np.ndarray:
        """The distribution of the next ``sample()``."""
        k = len(self.space)
        if self.step < k:
            return np.asarray(np.eye(k)[self.step])
        scores = self.scores()
        best = scores == np.max(scores)
        return np.asarray(self.epsilon / k + (1 - self.epsilon) * best / best.sum())

    def _sample(self) -> tuple[float, np.ndarray, float, np.ndarray]:
        values = self.space.values
        k = F.sample_categorical(self.probs, self._rng.random())
        return float(values[k]), values[k : k + 1], float(k), np.array([float(k)])

    def _update(self, feedback: Feedback) -> Metrics:
        assert isinstance(feedback, (Outcome, Outcomes))
        arms, rewards = played_arms(feedback)
        self._arms = (self._arms + [int(a) for a in arms])[-self.window :]
        self._rewards = (self._rewards + [float(r) for r in rewards])[-self.window :]
        metrics: Metrics = {
            "noop": 0.0,
            "num_rollouts": float(rewards.size),
            "reward": float(np.mean(rewards)),
        }
        for value, p, s in zip(self.space.values, self.probs, self.scores(), strict=True):
            label = arm_label(float(value))
            metrics[prob_key(label)] = float(p)
            if math.isfinite(s):
                metrics[f"ucb/{label}"] = float(s)
        return metrics

    def _config(self) -> dict[str, Any]:
        return {"window": self.window, "epsilon": self.epsilon, "bonus": self.bonus}

    def _params(self) -> dict[str, Any]:
        return {"window_arms": list(self._arms), "window_rewards": list(self._rewards)}

    def _load_params(self, params: Mapping[str, Any]) -> None:
        saved_arms, saved_rewards = params["window_arms"], params["window_rewards"]
        if not isinstance(saved_arms, list) or not isinstance(saved_rewards, list):
            raise ValueError(
                "params.window_arms/window_rewards: expected lists, got "
                f"{type(saved_arms).__name__}/{type(saved_rewards).__name__}"
            )
        k = len(self.space)
        arms = [integer(f"params.window_arms[{i}]", a, minimum=0) for i, a in enumerate(saved_arms)]
        rewards = [
            bounded(f"params.window_rewards[{i}]", real(f"params.window_rewards[{i}]", r))
            for i, r in enumerate(saved_rewards)
        ]
        if len(arms) != len(rewards) or len(arms) > self.window:
            raise ValueError(
                f"params.window_arms/window_rewards: lengths {len(arms)}/{len(rewards)} must match "
                f"and be <= window {self.window}"
            )
        out_of_range = [a for a in arms if a >= k]
        if out_of_range:
            raise ValueError(
                f"params.window_arms: arm indices must be < {k}, got {out_of_range[0]}"
            )
        self._arms, self._rewards = arms, rewards

    def _check_params_against(self, updates: int) -> None:
        # Every update adds at least one outcome to the window, and nothing else does.
        if len(self._arms) < min(updates, self.window):
            raise ValueError(
                f"params.window_arms: {updates} updates each added at least one outcome, so the "
                f"window must hold at least min(updates, window) = {min(updates, self.window)}, "
                f"got {len(self._arms)}"
            )
        if updates == 0 and self._arms:
            raise ValueError(
                f"params.window_arms: must be empty before the first update (updates = 0), "
                f"got {len(self._arms)} outcomes"
            )


class _OpenLoop(BaseController):
    """A controller whose value does not depend on feedback; every feedback is a valid no-op."""

    accepts: ClassVar[tuple[type, ...]] = ALL_FEEDBACK
    refuses_stale: ClassVar[bool] = False

    def value_at(self, step: int) -> float:
        raise NotImplementedError

    def _sample(self) -> tuple[float, np.ndarray, float, np.ndarray]:
        value = self.value_at(self.step)
        return value, np.array([value]), value, np.array([value])

    def _update(self, feedback: Feedback) -> Metrics:
        return {"noop": 1.0, "value": self.value_at(max(self.step - 1, 0))}

    def _params(self) -> dict[str, Any]:
        return {}

    def _load_params(self, params: Mapping[str, Any]) -> None:
        if params:
            raise ValueError(
                f"params: {type(self).__name__} has no parameters, got {sorted(params)}"
            )


class Fixed(_OpenLoop):
    """Always the same value: the fixed-temperature baseline.

    Example:
        >>> ctl = Fixed(1.0)
        >>> ctl.sample().value
        1.0
    """

    def __init__(self, value: float, *, space: Space | None = None) -> None:
        value = real("Fixed(value)", value)
        if space is not None and not isinstance(space, (Discrete, Box)):
            raise TypeError(
                f"Fixed(space): expected metactl.Discrete, metactl.Box or None, got {space!r}"
            )
        space = Discrete([value]) if space is None else space
        if not space.contains(value):
            raise ValueError(f"Fixed(value): {value} is not in {space}")
        super().__init__(space, seed=0)
        self.value = value

    def value_at(self, step: int) -> float:
        return self.value

    def _config(self) -> dict[str, Any]:
        return {"value": self.value}


ScheduleKind = Literal["linear", "cosine", "piecewise"]


class Schedule(_OpenLoop):
    """A value that depends only on the decision index (plain data, no callables).

    - linear:    v(s) = start + (end - start) * min(s / steps, 1)
    - cosine:    v(s) = end + (start - end) * (1 + cos(pi * min(s / steps, 1))) / 2
    - piecewise: v(s) = values[i] for boundaries[i-1] <= s < boundaries[i]

    Example:
        >>> sched = Schedule.linear(0.9, 1.5, steps=200)   # the paper's linear baseline
        >>> [round(sched.value_at(s), 3) for s in (0, 100, 200, 300)]
        [0.9, 1.2, 1.5, 1.5]
    """

    def __init__(
        self,
        kind: ScheduleKind,
        values: Sequence[float],
        *,
        steps: int | None = None,
        boundaries: Sequence[int] = (),
    ) -> None:
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            raise ValueError(f"Schedule(values): expected a sequence of numbers, got {values!r}")
        vals = [real(f"Schedule(values[{i}])", v) for i, v in enumerate(values)]
        if kind in ("linear", "cosine"):
            if len(vals) != 2:
                raise ValueError(f"Schedule(values): {kind} needs [start, end], got {vals}")
            if steps is None:
                raise ValueError(f"Schedule(steps): {kind} needs steps >= 1, got None")
            steps = integer("Schedule(steps)", steps, minimum=1)
            if boundaries:
                raise ValueError(
                    f"Schedule(boundaries): only for piecewise, got {list(boundaries)}"
                )
        elif kind == "piecewise":
            if steps is not None:
                raise ValueError(f"Schedule(steps): only for linear and cosine, got {steps}")
            bounds = [integer(f"Schedule(boundaries[{i}])", b) for i, b in enumerate(boundaries)]
            if len(vals) != len(bounds) + 1:
                raise ValueError(
                    f"Schedule(values, boundaries): piecewise needs len(values) == len(boundaries) + 1, "
                    f"got {len(vals)} values and {len(bounds)} boundaries"
                )
            if any(b <= a for a, b in itertools.pairwise(bounds)) or (bounds and bounds[0] < 1):
                raise ValueError(f"Schedule(boundaries): must be increasing and >= 1, got {bounds}")
        else:
            raise ValueError(
                f"Schedule(kind): must be 'linear', 'cosine' or 'piecewise', got {kind!r}"
            )
        low, high = min(vals), max(vals)
        space: Space = Box(low, high) if low < high else Discrete([low])
        super().__init__(space, seed=0)
        self.kind: ScheduleKind = kind
        self.values = vals
        self.steps = steps
        self.boundaries = [int(b) for b in boundaries]  # checked integers (piecewise only)

    @classmethod
    def linear(cls, start: float, end: float, *, steps: int) -> Schedule:
        """start -> end linearly over ``steps`` decisions, then constant."""
        return cls("linear", [start, end], steps=steps)

    @classmethod
    def cosine(cls, start: float, end: float, *, steps: int) -> Schedule:
        """start -> end along a half cosine over ``steps`` decisions, then constant."""
        return cls("cosine", [start, end], steps=steps)

    @classmethod
    def piecewise(cls, boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
        """values[0] until boundaries[0], values[1] until boundaries[1], ..."""
        return cls("piecewise", values, boundaries=boundaries)

    def _config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "values": self.values,
            "steps": self.steps,
            "boundaries": self.boundaries,
        }

    def value_at(self, step: int) -> float:
        """The scheduled value for decision index ``step``."""
        if self.kind == "piecewise":
            return self.values[int(np.searchsorted(self.boundaries, step, side="right"))]
        assert self.steps is not None
        start, end = self.values
        frac = min(step / self.steps, 1.0)
        if self.kind == "linear":
            value = start + (end - start) * frac
        else:
            value = end + (start - end) * (1 + math.cos(math.pi * frac)) / 2
        return float(np.clip(value, min(start, end), max(start, end)))


class EntropyTarget(BaseController):
    """Closed-loop temperature toward a target token entropy (E3-style).

    After each observation of the rollouts' mean token entropy H::

        T <- T * (1 + T * ln(H_target / H) / (ln V + ln ln V))

    clipped to the box. Without an explicit ``target``, H_target is the mean of
    the first ``warmup`` observations, during which T stays at its initial value::

        ctl = mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=32000, seed=0)
        d = ctl.sample()
        ctl.update(mc.EntropyObservation(d, entropy=mean_token_entropy))

    Args:
        space: a Box of allowed temperatures, inside ``metactl.temperature.TEMPERATURE_RANGE``
            (``[0.01, 100]``).
        vocab_size: V, the vocabulary size (>= 2).
        target: H_target in nats, or None to set it from the first observations.
        warmup: how many observations define the target when ``target`` is None.
        init: the initial temperature (default 1.0 clipped into the box).
        seed: int, Generator or None (unused by the rule; kept for the protocol).
    """

    accepts: ClassVar[tuple[type, ...]] = (EntropyObservation,)

    def __init__(
        self,
        space: Box,
        *,
        vocab_size: int,
        target: float | None = None,
        warmup: int = 10,
        init: float | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if not isinstance(space, Box):
            raise TypeError(
                f"EntropyTarget(space): needs a metactl.Box of temperatures, got {space!r}"
            )
        outside = space_outside_range(space)
        if outside is not None:
            raise ValueError(
                f"EntropyTarget(space): its bounds are sampling temperatures and must lie "
                f"{temperature_rule()}; got {outside}"
            )
        vocab_size = integer("EntropyTarget(vocab_size)", vocab_size, minimum=2)
        warmup = integer("EntropyTarget(warmup)", warmup, minimum=1)
        if target is not None:
            target = bounded("EntropyTarget(target)", real("EntropyTarget(target)", target))
            if not target > 0:
                raise ValueError(f"EntropyTarget(target): must be > 0, got {target}")
        init = (
            float(np.clip(1.0, space.low, space.high))
            if init is None
            else real("EntropyTarget(init)", init)
        )
        if not space.contains(init):
            raise ValueError(f"EntropyTarget(init): {init} is outside {space}")
        super().__init__(space, seed)
        self.vocab_size = int(vocab_size)
        self.warmup = int(warmup)
        self._temperature = init
        self._target = target
        self._observed: list[float] = []

    @property
    def temperature(self) -> float:
        """The temperature the next ``sample()`` returns."""
        return self._temperature

    @property
    def target(self) -> float | None:
        """H_target in nats (None until the warm-up observations are in)."""
        return self._target

    def _sample(self) -> tuple[float, np.ndarray, float, np.ndarray]:
        t = self._temperature
        return t, np.array([t]), t, np.array([t])

    def _update(self, feedback: Feedback) -> Metrics:
        assert isinstance(feedback, EntropyObservation)
        h = feedback.entropy
        if self._target is None:
            self._observed.append(h)
            if len(self._observed) >= self.warmup:
                self._target = float(np.mean(self._observed))
            return {"noop": 1.0, "entropy": h, "temperature": self._temperature}
        v = self.vocab_size
        t = self._temperature
        # ln(H*/H) as a difference of logs: the ratio itself can overflow or underflow.
        log_ratio = math.log(self._target) - math.log(h)
        t_new = t * (1 + t * log_ratio / (math.log(v) + math.log(math.log(v))))
        assert isinstance(self.space, Box)
        self._temperature = float(np.clip(t_new, self.space.low, self.space.high))
        return {
            "noop": 0.0,
            "entropy": h,
            "target_entropy": self._target,
            "temperature": self._temperature,
        }

    def _config(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "warmup": self.warmup}

    def _params(self) -> dict[str, Any]:
        return {
            "temperature": self._temperature,
            "target": self._target,
            "observed": list(self._observed),
        }

    def _load_params(self, params: Mapping[str, Any]) -> None:
        t = real("params.temperature", params["temperature"])
        if not self.space.contains(t):
            raise ValueError(f"params.temperature: {t} is outside {self.space}")
        target = params["target"]
        if target is not None:
            target = bounded("params.target", real("params.target", target))
            if not target > 0:
                raise ValueError(f"params.target: must be None or > 0, got {target}")
        saved = params["observed"]
        if not isinstance(saved, list):
            raise ValueError(f"params.observed: expected a list, got {type(saved).__name__}")
        observed = [
            bounded(f"params.observed[{i}]", real(f"params.observed[{i}]", h))
            for i, h in enumerate(saved)
        ]
        if not all(h > 0 for h in observed):
            raise ValueError(f"params.observed: entropies must be > 0, got {observed}")
        self._temperature = t
        self._target = target
        self._observed = observed

    def _check_params_against(self, updates: int) -> None:
        # Each warm-up update records one observation, and the warm-up ends after ``warmup``.
        if len(self._observed) > min(updates, self.warmup):
            raise ValueError(
                f"params.observed: one observation per warm-up update, so at most "
                f"min(updates, warmup) = {min(updates, self.warmup)}, got {len(self._observed)}"
            )
