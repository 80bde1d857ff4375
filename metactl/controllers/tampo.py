"""TAMPO: the paper's temperature meta-policy (Dang et al., ICLR 2026, section 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from metactl import functional as F
from metactl._validate import MAX_MAGNITUDE, integer, real
from metactl.controllers._arms import (
    arm_label,
    check_all_arms,
    counterfactual_arm_advantages,
    temperature_grid,
)
from metactl.controllers.base import BaseController, Metrics, check_shape
from metactl.feedback import Counterfactual, Feedback
from metactl.metric_keys import prob_key
from metactl.spaces import Discrete

PAPER_TEMPERATURES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)


class TAMPO(BaseController):
    """Temperature Adaptive Meta Policy Optimization, faithful to the paper.

    Per training step: sample T from the meta-policy by nucleus sampling, roll
    out at T, score every rollout at every candidate temperature, and move the
    meta-policy toward the temperatures that good rollouts prefer::

        ctl = mc.TAMPO(seed=0)                  # T in 0.6..1.5, ema 0.05, top_p 0.7
        for step in range(num_steps):
            d = ctl.sample()                    # d.value: rollout temperature
            rollouts = generate(temperature=d.value)
            loglik = score(rollouts, d.virtual) # [N, K] mean token log-probs at each T_k
            ctl.update(mc.Counterfactual(d, loglik, grpo_advantages))

    Args:
        space: the candidate temperatures (default: the paper's 0.6, 0.7, ..., 1.5).
        ema: alpha, the weight of the new batch in abar <- (1 - alpha) abar + alpha a.
        top_p: nucleus mass for sampling the temperature; 0 means argmax.
        normaliser: how each rollout's log-likelihoods become weights across arms
            ("sparsemax" as in the paper, or "softmax").
        warmup_steps: decisions sampled uniformly before the meta-policy is used.
        seed: int, Generator or None (fresh entropy, recorded in ``seed_entropy``).
    """

    accepts: ClassVar[tuple[type, ...]] = (Counterfactual,)

    def __init__(
        self,
        space: Discrete | Sequence[float] | np.ndarray | None = None,
        *,
        ema: float = 0.05,
        top_p: float = 0.7,
        normaliser: F.Normaliser = "sparsemax",
        warmup_steps: int = 0,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        space = temperature_grid(
            "TAMPO", space, PAPER_TEMPERATURES, "; use mc.MetaGradient for a continuous mc.Box"
        )
        ema = real("TAMPO(ema)", ema)
        top_p = real("TAMPO(top_p)", top_p)
        warmup_steps = integer("TAMPO(warmup_steps)", warmup_steps, minimum=0)
        if not 0.0 < ema <= 1.0:
            raise ValueError(f"TAMPO(ema): must be in (0, 1], got {ema}")
        if not 0.0 <= top_p <= 1.0:
            raise ValueError(f"TAMPO(top_p): must be in [0, 1], got {top_p}")
        if normaliser not in ("sparsemax", "softmax"):
            raise ValueError(
                f"TAMPO(normaliser): must be 'sparsemax' or 'softmax', got {normaliser!r}"
            )
        super().__init__(space, seed)
        self.ema = float(ema)
        self.top_p = float(top_p)
        self.normaliser: F.Normaliser = normaliser
        self.warmup_steps = int(warmup_steps)
        self._abar = np.zeros(len(space))

    @property
    def space(self) -> Discrete:
        """The candidate arms."""
        assert isinstance(self._space, Discrete)
        return self._space

    @property
    def probs(self) -> np.ndarray:
        """The meta-policy pi over the arms (min-max then sum normalised EMA advantages)."""
        return F.minmax_policy(self._abar)

    @property
    def ema_advantages(self) -> np.ndarray:
        """abar: the exponential moving average of each arm's advantage."""
        return self._abar.copy()

    def sampling_probs(self) -> np.ndarray:
        """The distribution the next ``sample()`` draws from (uniform during warm-up)."""
        if self.step < self.warmup_steps:
            return np.full(len(self.space), 1.0 / len(self.space))
        return F.nucleus(self.probs, self.top_p)

    def _sample(self) -> tuple[float, np.ndarray, float, np.ndarray]:
        values = self.space.values
        k = F.sample_categorical(self.sampling_probs(), self._rng.random())
        return float(values[k]), values, float(k), np.arange(values.size, dtype=np.float64)

    def _update(self, feedback: Feedback) -> Metrics:
        assert isinstance(feedback, Counterfactual)
        values = self.space.values
        check_all_arms(feedback, values.size)
        noop = not np.any(feedback.advantages)
        _, batch = counterfactual_arm_advantages(feedback, self.normaliser)
        if not noop:
            self._abar = F.ema(self._abar, batch, self.ema)
        metrics: Metrics = {"noop": float(noop), "num_rollouts": float(feedback.advantages.size)}
        pi = self.probs
        for value, p, a, abar in zip(values, pi, batch, self._abar, strict=True):
            label = arm_label(float(value))
            metrics[prob_key(label)] = float(p)
            metrics[f"advantage/{label}"] = float(a)
            metrics[f"ema_advantage/{label}"] = float(abar)
        metrics["policy_entropy"] = F.entropy(pi)
        metrics["expected_value"] = float(np.dot(pi, values))
        return metrics

    def _config(self) -> dict[str, Any]:
        return {
            "ema": self.ema,
            "top_p": self.top_p,
            "normaliser": self.normaliser,
            "warmup_steps": self.warmup_steps,
        }

    def _params(self) -> dict[str, Any]:
        return {"ema_advantages": self._abar.copy()}

    def _load_params(self, params: Mapping[str, Any]) -> None:
        # abar is an average of advantages, so it lies in their domain.
        self._abar = check_shape(
            "params.ema_advantages",
            params["ema_advantages"],
            (len(self.space),),
            limit=MAX_MAGNITUDE,
        )
