"""Likelihood-ratio meta-gradient controllers (DESIGN section 4)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np

from metactl import functional as F
from metactl._validate import MAX_MAGNITUDE, bounded, integer, real
from metactl.controllers._arms import (
    arm_label,
    check_all_arms,
    counterfactual_arm_advantages,
    played_arms,
)
from metactl.controllers.base import BaseController, Metrics, check_shape
from metactl.feedback import Counterfactual, Feedback, Outcome, Outcomes
from metactl.metric_keys import MEAN, SIGMA, prob_key
from metactl.spaces import Box, Discrete


class _MetaPolicyRule(ABC):
    """How a meta-policy over one kind of space samples, reads feedback and stays valid.

    A rule is stateless: it holds the space and the settings it needs, and every method takes
    the parameters ``theta`` and returns new values, so :class:`MetaGradient` keeps all the
    state (and its transactional updates) in one place.

    Attributes:
        num_params: the size of ``theta``.
        num_values: the size of the running average of counterfactual values ``q`` that the
            rule keeps (0 when it keeps none).
    """

    num_params: int
    num_values: int

    @abstractmethod
    def initial_params(self) -> np.ndarray:
        """``theta`` before any update."""

    @abstractmethod
    def sample(
        self, theta: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, np.ndarray, float, np.ndarray]:
        """(value, virtual values [M], arm coordinate, virtual arm coordinates [M])."""

    @abstractmethod
    def counterfactual_gradient(
        self,
        theta: np.ndarray,
        feedback: Counterfactual,
        q_average: np.ndarray | None,
        metrics: Metrics,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """dJ/dtheta from counterfactual feedback, and the new running average of ``q``.

        Args:
            theta: the current parameters.
            feedback: every rollout scored at every virtual arm of its decision.
            q_average: the running average of the arms' values; None before the first batch.
            metrics: receives the batch's per-arm diagnostics.

        Returns:
            ``(gradient, q_average)``; the average is None for a rule that keeps none.
        """

    @abstractmethod
    def bandit_gradient(
        self, theta: np.ndarray, arms: np.ndarray, centred: np.ndarray
    ) -> np.ndarray:
        """The score-function estimate of dJ/dtheta from played arms and baselined rewards."""

    @abstractmethod
    def entropy_gradient(self, theta: np.ndarray) -> np.ndarray:
        """dH/dtheta, the gradient of the meta-policy's entropy."""

    def constrain(self, theta: np.ndarray) -> np.ndarray:
        """``theta`` brought back into its valid set after a step (unconstrained by default)."""
        return theta

    @abstractmethod
    def check_params(self, theta: np.ndarray) -> None:
        """Raise ``ValueError`` naming the entry if saved ``theta`` is outside its valid set."""

    @abstractmethod
    def policy_metrics(self, theta: np.ndarray, metrics: Metrics) -> None:
        """Write the meta-policy's summary into ``metrics``."""


class _SoftmaxRule(_MetaPolicyRule):
    """Discrete arms: a softmax over one logit per arm, mixed with a probability floor."""

    def __init__(
        self, space: Discrete, *, prob_floor: float, ema: float, normaliser: F.Normaliser
    ) -> None:
        self.space = space
        self.prob_floor = prob_floor
        self.ema = ema
        self.normaliser: F.Normaliser = normaliser
        self.num_params = len(space)
        self.num_values = len(space)

    def initial_params(self) -> np.ndarray:
        return np.zeros(len(self.space))

    def probs(self, theta: np.ndarray) -> np.ndarray:
        """The sampling distribution (1 - f) softmax(phi) + f / K."""
        k = len(self.space)
        return (1 - self.prob_floor) * F.softmax(theta) + self.prob_floor / k

    def sample(
        self, theta: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, np.ndarray, float, np.ndarray]:
        values = self.space.values
        k = F.sample_categorical(self.probs(theta), rng.random())
        return float(values[k]), values, float(k), np.arange(values.size, dtype=np.float64)

    def counterfactual_gradient(
        self,
        theta: np.ndarray,
        feedback: Counterfactual,
        q_average: np.ndarray | None,
        metrics: Metrics,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        check_all_arms(feedback, len(self.space))
        _, q = counterfactual_arm_advantages(feedback, self.normaliser)
        # The arms are the same at every decision, so their values can be averaged over batches.
        q_average = q if q_average is None else F.ema(q_average, q, self.ema)
        for value, a in zip(self.space.values, q, strict=True):
            metrics[f"advantage/{arm_label(float(value))}"] = float(a)
        return F.softmax_policy_gradient(theta, q_average), q_average

    def bandit_gradient(
        self, theta: np.ndarray, arms: np.ndarray, centred: np.ndarray
    ) -> np.ndarray:
        return F.score_function_gradient(theta, arms.astype(np.int64), centred)

    def entropy_gradient(self, theta: np.ndarray) -> np.ndarray:
        return F.softmax_entropy_gradient(theta)

    def check_params(self, theta: np.ndarray) -> None:
        """Every finite vector of logits is valid (the shell has checked finiteness)."""

    def policy_metrics(self, theta: np.ndarray, metrics: Metrics) -> None:
        pi = self.probs(theta)
        for value, p in zip(self.space.values, pi, strict=True):
            metrics[prob_key(arm_label(float(value)))] = float(p)
        metrics["policy_entropy"] = F.entropy(pi)
        metrics["expected_value"] = float(np.dot(pi, self.space.values))


class _GaussianRule(_MetaPolicyRule):
    """A Box range: N(mu, sigma^2) over the box's unconstrained coordinate u, theta = (mu, log sigma)."""

    def __init__(
        self,
        space: Box,
        *,
        num_virtual: int,
        init: float | None,
        init_sigma: float,
        min_sigma: float,
        normaliser: F.Normaliser,
    ) -> None:
        self.space = space
        self.num_virtual = num_virtual
        self.init = init
        self.init_sigma = init_sigma
        self.min_sigma = min_sigma
        self.normaliser: F.Normaliser = normaliser
        self.num_params = 2
        self.num_values = 0

    def initial_params(self) -> np.ndarray:
        mu0 = 0.0 if self.init is None else float(self.space.to_unconstrained(self.init))
        return np.array([mu0, np.log(self.init_sigma)])

    def mean(self, theta: np.ndarray) -> float:
        """The policy's median value, the box image of mu."""
        return float(self.space.from_unconstrained(theta[0]))

    def sigma(self, theta: np.ndarray) -> float:
        """The policy's standard deviation in u."""
        return float(np.exp(theta[1]))

    def sample(
        self, theta: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, np.ndarray, float, np.ndarray]:
        mu, sigma = theta[0], self.sigma(theta)
        u_played = mu + sigma * rng.standard_normal()
        eps = rng.standard_normal(self.num_virtual // 2)
        u_virtual = mu + sigma * np.concatenate([eps, -eps])
        return (
            float(self.space.from_unconstrained(u_played)),
            self.space.from_unconstrained(u_virtual),
            float(u_played),
            u_virtual,
        )

    def counterfactual_gradient(
        self,
        theta: np.ndarray,
        feedback: Counterfactual,
        q_average: np.ndarray | None,
        metrics: Metrics,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        # The virtual arms are fresh draws from the policy at every decision: their values are
        # used at once and never averaged across batches.
        _, q = counterfactual_arm_advantages(feedback, self.normaliser)
        metrics["advantage_spread"] = float(np.max(q) - np.min(q))
        g_mu, g_log_sigma = F.gaussian_gradient(
            feedback.decision.virtual_arms, q, theta[0], self.sigma(theta)
        )
        return np.array([g_mu, g_log_sigma]), None

    def bandit_gradient(
        self, theta: np.ndarray, arms: np.ndarray, centred: np.ndarray
    ) -> np.ndarray:
        return np.array(F.gaussian_score_gradient(arms, centred, theta[0], self.sigma(theta)))

    def entropy_gradient(self, theta: np.ndarray) -> np.ndarray:
        return np.array([0.0, 1.0])  # H(N(mu, sigma^2)) = log sigma + const

    def constrain(self, theta: np.ndarray) -> np.ndarray:
        theta = theta.copy()
        # The sigma floor keeps it exploring; the ceiling keeps every draw mu + sigma eps finite.
        theta[1] = min(max(theta[1], np.log(self.min_sigma)), LOG_MAX_SIGMA)
        return theta

    def check_params(self, theta: np.ndarray) -> None:
        if not np.log(self.min_sigma) <= theta[1] <= LOG_MAX_SIGMA:
            raise ValueError(
                f"params.theta[1]: log sigma must lie in [log(min_sigma), log(1e100)] = "
                f"[{np.log(self.min_sigma)!r}, {LOG_MAX_SIGMA!r}], got {theta[1]!r}"
            )

    def policy_metrics(self, theta: np.ndarray, metrics: Metrics) -> None:
        metrics[MEAN] = self.mean(theta)
        metrics[SIGMA] = self.sigma(theta)


LOG_MAX_SIGMA = math.log(MAX_MAGNITUDE)
"""A Box policy's ceiling on log sigma in u: sigma <= 1e100, so every draw stays finite."""


class MetaGradient(BaseController):
    """Gradient ascent on J(phi) = E_{a ~ pi_phi}[Q(a)], over discrete or continuous arms.

    Discrete: softmax logits phi; with counterfactual values q_k the exact
    gradient pi_k (q_k - sum_j pi_j q_j); with bandit feedback the score-function
    estimate (r - b)(onehot(a) - pi) with an EMA baseline b.

    Box: a Gaussian N(mu, sigma^2) over the unconstrained coordinate u of the
    box (see :class:`metactl.Box`); ``num_virtual`` antithetic draws are the
    virtual arms to score rollouts at::

        ctl = mc.MetaGradient(mc.Box(0.3, 3.0, log=True), seed=0)
        d = ctl.sample()                 # d.value: temperature; d.virtual: M draws
        ctl.update(mc.Counterfactual(d, loglik_at(d.virtual), advantages))
        ctl.mean, ctl.sigma              # the meta-policy

    Args:
        space: ``Discrete`` arms or a ``Box`` range.
        lr: meta learning rate.
        optimizer: "adam" (scale-free, the default) or "sgd".
        entropy_bonus: weight of the policy entropy added to J (keeps exploring).
        prob_floor: Discrete only; the sampled policy is (1 - f) pi + f / K.
        num_virtual: Box only; even number of antithetic virtual draws per decision.
        init: Box only; initial median value (default: the box's midpoint in u).
        init_sigma: Box only; initial sigma in u.
        min_sigma: Box only; floor on sigma in u.
        ema: weight of the new batch in the EMA of counterfactual values q (1 = no smoothing).
        normaliser: per-rollout weights across virtual arms, "sparsemax" or "softmax".
        baseline_ema: step size of the reward baseline for bandit feedback.
        seed: int, Generator or None.
    """

    accepts: ClassVar[tuple[type, ...]] = (Counterfactual, Outcome, Outcomes)

    def __init__(
        self,
        space: Discrete | Box,
        *,
        lr: float = 0.05,
        optimizer: Literal["adam", "sgd"] = "adam",
        entropy_bonus: float = 0.0,
        prob_floor: float = 0.0,
        num_virtual: int = 8,
        init: float | None = None,
        init_sigma: float = 1.0,
        min_sigma: float = 0.05,
        ema: float = 1.0,
        normaliser: F.Normaliser = "sparsemax",
        baseline_ema: float = 0.1,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        lr = real("MetaGradient(lr)", lr)
        entropy_bonus = real("MetaGradient(entropy_bonus)", entropy_bonus)
        init_sigma = real("MetaGradient(init_sigma)", init_sigma)
        min_sigma = real("MetaGradient(min_sigma)", min_sigma)
        prob_floor = real("MetaGradient(prob_floor)", prob_floor)
        ema = real("MetaGradient(ema)", ema)
        baseline_ema = real("MetaGradient(baseline_ema)", baseline_ema)
        num_virtual = integer("MetaGradient(num_virtual)", num_virtual)
        if init is not None:
            init = real("MetaGradient(init)", init)
        if not lr > 0:
            raise ValueError(f"MetaGradient(lr): must be > 0, got {lr}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"MetaGradient(optimizer): must be 'adam' or 'sgd', got {optimizer!r}")
        if entropy_bonus < 0:
            raise ValueError(f"MetaGradient(entropy_bonus): must be >= 0, got {entropy_bonus}")
        if not 0 <= prob_floor < 1:
            raise ValueError(f"MetaGradient(prob_floor): must be in [0, 1), got {prob_floor}")
        if num_virtual < 2 or num_virtual % 2:
            raise ValueError(
                f"MetaGradient(num_virtual): must be an even number >= 2, got {num_virtual}"
            )
        if not 0 < min_sigma <= init_sigma <= MAX_MAGNITUDE:
            raise ValueError(
                f"MetaGradient(init_sigma, min_sigma): need 0 < min_sigma <= init_sigma <= 1e100, "
                f"got init_sigma={init_sigma}, min_sigma={min_sigma}"
            )
        if not 0 < ema <= 1:
            raise ValueError(f"MetaGradient(ema): must be in (0, 1], got {ema}")
        if normaliser not in ("sparsemax", "softmax"):
            raise ValueError(
                f"MetaGradient(normaliser): must be 'sparsemax' or 'softmax', got {normaliser!r}"
            )
        if not 0 < baseline_ema <= 1:
            raise ValueError(f"MetaGradient(baseline_ema): must be in (0, 1], got {baseline_ema}")
        if isinstance(space, Discrete) and init is not None:
            raise ValueError("MetaGradient(init): only for a Box space")
        if isinstance(space, Box) and init is not None and not space.low < init < space.high:
            raise ValueError(
                f"MetaGradient(init): must lie strictly inside ({space.low}, {space.high}), "
                f"got {init}"
            )
        super().__init__(space, seed)
        self.lr = float(lr)
        self.optimizer = optimizer
        self.entropy_bonus = float(entropy_bonus)
        self.prob_floor = float(prob_floor)
        self.num_virtual = int(num_virtual)
        self.min_sigma = float(min_sigma)
        self.ema = float(ema)
        self.normaliser: F.Normaliser = normaliser
        self.baseline_ema = float(baseline_ema)
        # The one place the space decides the rule; every method below delegates to it.
        self._rule: _SoftmaxRule | _GaussianRule
        if isinstance(space, Discrete):
            self._rule = _SoftmaxRule(
                space, prob_floor=self.prob_floor, ema=self.ema, normaliser=normaliser
            )
        else:
            self._rule = _GaussianRule(
                space,
                num_virtual=self.num_virtual,
                init=init,
                init_sigma=float(init_sigma),
                min_sigma=self.min_sigma,
                normaliser=normaliser,
            )
        self._theta = self._rule.initial_params()
        self._m = np.zeros_like(self._theta)
        self._v = np.zeros_like(self._theta)
        self._t = 0
        self._q = np.zeros(self._rule.num_values)
        self._q_seen = False
        self._baseline = 0.0
        self._baseline_seen = False

    # --- the meta-policy ---------------------------------------------------
    @property
    def probs(self) -> np.ndarray:
        """Discrete only: the sampling distribution (1 - f) softmax(phi) + f / K."""
        if not isinstance(self._rule, _SoftmaxRule):
            raise AttributeError(
                "MetaGradient.probs: only for a Discrete space; use .mean and .sigma"
            )
        return self._rule.probs(self._theta)

    @property
    def mean(self) -> float:
        """Box only: the policy's median value, the box image of mu."""
        if not isinstance(self._rule, _GaussianRule):
            raise AttributeError("MetaGradient.mean: only for a Box space; use .probs")
        return self._rule.mean(self._theta)

    @property
    def sigma(self) -> float:
        """Box only: the policy's standard deviation in the unconstrained coordinate u."""
        if not isinstance(self._rule, _GaussianRule):
            raise AttributeError("MetaGradient.sigma: only for a Box space; use .probs")
        return self._rule.sigma(self._theta)

    # --- sample -----------------------------------------------------------------
    def _sample(self) -> tuple[float, np.ndarray, float, np.ndarray]:
        return self._rule.sample(self._theta, self._rng)

    # --- update -------------------------------------------------------------------
    def _update(self, feedback: Feedback) -> Metrics:
        metrics: Metrics = {}
        if isinstance(feedback, Counterfactual):
            noop = not np.any(feedback.advantages)
            metrics["num_rollouts"] = float(feedback.advantages.size)
            grad = None if noop else self._counterfactual_gradient(feedback, metrics)
        else:
            assert isinstance(feedback, (Outcome, Outcomes))
            arms, rewards = played_arms(feedback)
            metrics["num_rollouts"] = float(rewards.size)
            metrics["reward"] = float(np.mean(rewards))
            if not self._baseline_seen:  # the first batch only sets the baseline
                self._baseline, self._baseline_seen = float(np.mean(rewards)), True
            centred = rewards - self._baseline
            metrics["baseline"] = self._baseline
            self._baseline += self.baseline_ema * (float(np.mean(rewards)) - self._baseline)
            noop = not np.any(centred)
            grad = None if noop else self._rule.bandit_gradient(self._theta, arms, centred)
        metrics["noop"] = float(noop)
        if grad is not None:
            self._ascend(grad)
        self._rule.policy_metrics(self._theta, metrics)
        return metrics

    def _counterfactual_gradient(self, feedback: Counterfactual, metrics: Metrics) -> np.ndarray:
        grad, q = self._rule.counterfactual_gradient(
            self._theta, feedback, self._q if self._q_seen else None, metrics
        )
        if q is not None:
            self._q, self._q_seen = q, True
        return grad

    def _ascend(self, grad: np.ndarray) -> None:
        if self.entropy_bonus:
            grad = grad + self.entropy_bonus * self._rule.entropy_gradient(self._theta)
        if self.optimizer == "adam":
            self._t += 1
            self._theta, self._m, self._v = F.adam_ascent(
                self._theta, grad, self._m, self._v, self._t, self.lr
            )
        else:
            self._theta = self._theta + self.lr * grad
        self._theta = self._rule.constrain(self._theta)

    # --- state ------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "optimizer": self.optimizer,
            "entropy_bonus": self.entropy_bonus,
            "prob_floor": self.prob_floor,
            "num_virtual": self.num_virtual,
            "min_sigma": self.min_sigma,
            "ema": self.ema,
            "normaliser": self.normaliser,
            "baseline_ema": self.baseline_ema,
        }

    def _params(self) -> dict[str, Any]:
        return {
            "theta": self._theta.copy(),
            "adam_m": self._m.copy(),
            "adam_v": self._v.copy(),
            "adam_t": self._t,
            "q": self._q.copy(),
            "q_seen": self._q_seen,
            "baseline": self._baseline,
            "baseline_seen": self._baseline_seen,
        }

    def _load_params(self, params: Mapping[str, Any]) -> None:
        n, nq = self._rule.num_params, self._rule.num_values
        theta = check_shape("params.theta", params["theta"], (n,))
        self._rule.check_params(theta)
        m = check_shape("params.adam_m", params["adam_m"], (n,))
        v = check_shape("params.adam_v", params["adam_v"], (n,))
        if np.any(v < 0):
            raise ValueError(f"params.adam_v: Adam's second moments must be >= 0, got {v.tolist()}")
        t = integer("params.adam_t", params["adam_t"], minimum=0)
        # q and the baseline are averages of advantages and rewards: inside their domain.
        q = check_shape("params.q", params["q"], (nq,), limit=MAX_MAGNITUDE)
        baseline = bounded("params.baseline", real("params.baseline", params["baseline"]))
        flags = {name: params[name] for name in ("q_seen", "baseline_seen")}
        for name, flag in flags.items():
            if not isinstance(flag, bool):
                raise ValueError(f"params.{name}: expected true or false, got {flag!r}")
        self._theta, self._m, self._v, self._t = theta, m, v, t
        self._q, self._q_seen = q, flags["q_seen"]
        self._baseline, self._baseline_seen = baseline, flags["baseline_seen"]

    def _check_params_against(self, updates: int) -> None:
        # Adam takes at most one step per accepted update (none on a no-op batch).
        if self._t > updates:
            raise ValueError(
                f"params.adam_t: Adam takes at most one step per update, so it must be <= "
                f"updates ({updates}), got {self._t}"
            )
