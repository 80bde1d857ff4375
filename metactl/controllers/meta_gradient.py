"""Likelihood-ratio meta-gradient controllers (DESIGN section 4)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np

from metactl import functional as F
from metactl.controllers.base import BaseController, Metrics, check_shape, played_arms
from metactl.controllers.tampo import _check_all_arms, arm_label, counterfactual_arm_advantages
from metactl.feedback import Counterfactual, Feedback, Outcome, Outcomes
from metactl.spaces import Box, Discrete


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
        for name, value in (
            ("lr", lr),
            ("entropy_bonus", entropy_bonus),
            ("init_sigma", init_sigma),
            ("min_sigma", min_sigma),
        ):
            if not math.isfinite(value):
                raise ValueError(f"MetaGradient({name}): must be finite, got {value}")
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
        if not 0 < min_sigma <= init_sigma:
            raise ValueError(
                f"MetaGradient(init_sigma, min_sigma): need 0 < min_sigma <= init_sigma, "
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
        if isinstance(space, Discrete):
            self._theta = np.zeros(len(space))
        else:
            if init is not None and not space.low < init < space.high:
                raise ValueError(
                    f"MetaGradient(init): must lie strictly inside ({space.low}, {space.high}), "
                    f"got {init}"
                )
            mu0 = 0.0 if init is None else float(space.to_unconstrained(init))
            self._theta = np.array([mu0, np.log(init_sigma)])
        self._m = np.zeros_like(self._theta)
        self._v = np.zeros_like(self._theta)
        self._t = 0
        self._q = np.zeros(len(space) if isinstance(space, Discrete) else 0)
        self._q_seen = False
        self._baseline = 0.0
        self._baseline_seen = False

    # --- the meta-policy ---------------------------------------------------
    @property
    def probs(self) -> np.ndarray:
        """Discrete only: the sampling distribution (1 - f) softmax(phi) + f / K."""
        if not isinstance(self.space, Discrete):
            raise AttributeError(
                "MetaGradient.probs: only for a Discrete space; use .mean and .sigma"
            )
        k = len(self.space)
        return (1 - self.prob_floor) * F.softmax(self._theta) + self.prob_floor / k

    @property
    def mean(self) -> float:
        """Box only: the policy's median value, the box image of mu."""
        if not isinstance(self.space, Box):
            raise AttributeError("MetaGradient.mean: only for a Box space; use .probs")
        return float(self.space.from_unconstrained(self._theta[0]))

    @property
    def sigma(self) -> float:
        """Box only: the policy's standard deviation in the unconstrained coordinate u."""
        if not isinstance(self.space, Box):
            raise AttributeError("MetaGradient.sigma: only for a Box space; use .probs")
        return float(np.exp(self._theta[1]))

    # --- sample -----------------------------------------------------------------
    def _sample(self) -> tuple[float, np.ndarray, float, np.ndarray]:
        if isinstance(self.space, Discrete):
            values = self.space.values
            k = F.sample_categorical(self.probs, self._rng.random())
            return float(values[k]), values, float(k), np.arange(values.size, dtype=np.float64)
        mu, sigma = self._theta[0], float(np.exp(self._theta[1]))
        u_played = mu + sigma * self._rng.standard_normal()
        eps = self._rng.standard_normal(self.num_virtual // 2)
        u_virtual = mu + sigma * np.concatenate([eps, -eps])
        return (
            float(self.space.from_unconstrained(u_played)),
            self.space.from_unconstrained(u_virtual),
            float(u_played),
            u_virtual,
        )

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
            grad = None if noop else self._bandit_gradient(arms, centred)
        metrics["noop"] = float(noop)
        if grad is not None:
            self._ascend(grad)
        self._policy_metrics(metrics)
        return metrics

    def _counterfactual_gradient(self, feedback: Counterfactual, metrics: Metrics) -> np.ndarray:
        decision = feedback.decision
        if isinstance(self.space, Discrete):
            _check_all_arms(feedback, len(self.space))
            _, q = counterfactual_arm_advantages(feedback, self.normaliser)
            self._q = q if not self._q_seen else F.ema(self._q, q, self.ema)
            self._q_seen = True
            for value, a in zip(self.space.values, q, strict=True):
                metrics[f"advantage/{arm_label(float(value))}"] = float(a)
            return F.softmax_policy_gradient(self._theta, self._q)
        # Box: the virtual arms are draws from the policy at decision time; score them now.
        _, q = counterfactual_arm_advantages(feedback, self.normaliser)
        metrics["advantage_spread"] = float(np.max(q) - np.min(q))
        sigma = float(np.exp(self._theta[1]))
        g_mu, g_log_sigma = F.gaussian_gradient(decision.virtual_arms, q, self._theta[0], sigma)
        return np.array([g_mu, g_log_sigma])

    def _bandit_gradient(self, arms: np.ndarray, centred: np.ndarray) -> np.ndarray:
        if isinstance(self.space, Discrete):
            return F.score_function_gradient(self._theta, arms.astype(np.int64), centred)
        sigma = float(np.exp(self._theta[1]))
        return np.array(F.gaussian_score_gradient(arms, centred, self._theta[0], sigma))

    def _ascend(self, grad: np.ndarray) -> None:
        if self.entropy_bonus:
            if isinstance(self.space, Discrete):
                grad = grad + self.entropy_bonus * F.softmax_entropy_gradient(self._theta)
            else:  # H(N(mu, sigma^2)) = log sigma + const
                grad = grad + self.entropy_bonus * np.array([0.0, 1.0])
        if self.optimizer == "adam":
            self._t += 1
            self._theta, self._m, self._v = F.adam_ascent(
                self._theta, grad, self._m, self._v, self._t, self.lr
            )
        else:
            self._theta = self._theta + self.lr * grad
        if isinstance(self.space, Box):
            self._theta[1] = max(self._theta[1], np.log(self.min_sigma))

    def _policy_metrics(self, metrics: Metrics) -> None:
        if isinstance(self.space, Discrete):
            pi = self.probs
            for value, p in zip(self.space.values, pi, strict=True):
                metrics[f"prob/{arm_label(float(value))}"] = float(p)
            metrics["policy_entropy"] = F.entropy(pi)
            metrics["expected_value"] = float(np.dot(pi, self.space.values))
        else:
            metrics["mean"] = self.mean
            metrics["sigma"] = self.sigma

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
        n = 2 if isinstance(self.space, Box) else len(self.space)
        nq = 0 if isinstance(self.space, Box) else n
        self._theta = check_shape("params.theta", params["theta"], (n,))
        self._m = check_shape("params.adam_m", params["adam_m"], (n,))
        self._v = check_shape("params.adam_v", params["adam_v"], (n,))
        self._t = int(params["adam_t"])
        self._q = check_shape("params.q", params["q"], (nq,))
        self._q_seen = bool(params["q_seen"])
        self._baseline = float(params["baseline"])
        self._baseline_seen = bool(params["baseline_seen"])
