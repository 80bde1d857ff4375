"""Informativeness: the temperature at which the most prompt groups teach GRPO something."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from metactl import functional as F
from metactl._validate import real
from metactl.controllers._arms import arm_label, check_all_arms, temperature_grid
from metactl.controllers.base import BaseController, Metrics, check_shape
from metactl.controllers.tampo import PAPER_TEMPERATURES
from metactl.feedback import Counterfactual, Feedback
from metactl.metric_keys import prob_key
from metactl.spaces import Discrete


class Informativeness(BaseController):
    """The temperature at which the most prompt groups have unequal rewards, from the same rollouts.

    GRPO learns only from prompt groups whose G rewards differ: a group solved or failed alike
    has zero advantage. This controller moves its meta-policy toward the temperature that
    maximises the expected informative fraction U(T) = (1/B) sum_b P_T(group b's rewards are
    not all equal), estimated from the round's rollouts with no extra generation. Per round,
    with rollouts sampled at the played arm T_s, e_b = 1 when group b's rewards are all equal::

        log Lambda_bk = sum_{i in b} L_i (l_i(T_k) - l_i(T_s))       group b's likelihood ratio
        w_bk  = Lambda_bk / sum_c Lambda_ck                          self-normalised over groups
        d_k   = U_k - U_s = -sum_b w_bk (e_b - ebar)                 gain over the played arm
        ess_k = 1 / sum_b w_bk^2                                     effective groups at T_k
        d_k  := d_j where ess_k < min_ess * B, j the nearest arm between T_k and T_s with
                ess_j >= min_ess * B (T_s itself, d_s = 0, if none)    arm out of reach
        abar  <- (1 - ema) abar + ema d;   pi = softmax(abar / scale);   T ~ nucleus(pi, top_p)

    l_i(T) is rollout i's mean token log-likelihood at T and L_i its scored tokens
    (``Counterfactual.loglik``, ``.lengths``). A round in which every group is equal
    (ebar = 0 or 1) is a no-op, as is TAMPO's all-zero-advantage round. Why this estimator:

    - Each group's G completions are one joint draw, re-weighted to T_k by its joint
      likelihood ratio, so it estimates the probability that the *group* is informative,
      not a per-completion pass rate pushed through a concave function (that plug-in is pulled
      toward T_s by its own variance).
    - Under rewards independent of the completions (a random-reward control) d_k has mean
      exactly zero at every arm, whatever the guard: the weights depend on the completions
      only and sum_b (e_b - ebar) = 0. The controller cannot drift where nothing is learnable.
    - Self-normalised weights keep d_k in [-1, 1]. An arm the batch cannot see (its weights
      concentrate on a few groups, more so for long completions and far arms) is not scored by
      one group's luck: it is credited with the trend up to the edge of the reach, so that the
      policy can walk toward an optimum beyond it, one reach at a time.
    - A fixed ``scale`` in units of informative fraction, not TAMPO's min-max normalisation,
      which turns differences of any size, noise included, into a full swing of the policy.
    - Its first-order term is d_k ~ -(Delta beta_k) Cov_b(e_b, sum_{i in b} L_i g_i): a
      policy-gradient estimate of dU/d(1/T), where TAMPO's is of d(pass rate)/d(1/T)
      (docs/tampo.md).

    The informative fraction is a proxy for learning, not learning itself: once a model is
    competent the most informative temperature is a hot one, where each informative group may
    teach less (docs/tampo.md has a learning toy where this costs it against TAMPO).

    It needs ``rewards``, ``groups`` and ``lengths`` in :class:`metactl.Counterfactual`
    (MetaGRPOTrainer fills them), and rollouts sampled at one of its arms (``decision.arm``).

    Args:
        space: the candidate temperatures (default: the paper's 0.6, 0.7, ..., 1.5).
        ema: the weight of the new round in abar <- (1 - ema) abar + ema d.
        scale: the gain in informative fraction that multiplies an arm's probability by e.
        top_p: nucleus mass for sampling the temperature; 0 means argmax. Default 1 (no
            nucleus): nucleus ties break by arm order, a bias toward the first arms while the
            policy is flat.
        min_ess: an arm's gain counts only when its effective number of groups is at least
            ``min_ess`` times the round's groups; in (0, 1].
        seed: int, Generator or None (fresh entropy, recorded in ``seed_entropy``).
    """

    accepts: ClassVar[tuple[type, ...]] = (Counterfactual,)

    def __init__(
        self,
        space: Discrete | Sequence[float] | np.ndarray | None = None,
        *,
        ema: float = 0.1,
        scale: float = 0.02,
        top_p: float = 1.0,
        min_ess: float = 0.5,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        space = temperature_grid("Informativeness", space, PAPER_TEMPERATURES)
        ema = real("Informativeness(ema)", ema)
        top_p = real("Informativeness(top_p)", top_p)
        min_ess = real("Informativeness(min_ess)", min_ess)
        scale = real("Informativeness(scale)", scale)
        if not scale > 0.0:
            raise ValueError(f"Informativeness(scale): must be > 0, got {scale}")
        if not 0.0 < ema <= 1.0:
            raise ValueError(f"Informativeness(ema): must be in (0, 1], got {ema}")
        if not 0.0 <= top_p <= 1.0:
            raise ValueError(f"Informativeness(top_p): must be in [0, 1], got {top_p}")
        if not 0.0 < min_ess <= 1.0:
            raise ValueError(f"Informativeness(min_ess): must be in (0, 1], got {min_ess}")
        super().__init__(space, seed)
        self.ema = float(ema)
        self.scale = float(scale)
        self.top_p = float(top_p)
        self.min_ess = float(min_ess)
        self._abar = np.zeros(len(space))

    @property
    def space(self) -> Discrete:
        """The candidate arms."""
        assert isinstance(self._space, Discrete)
        return self._space

    @property
    def probs(self) -> np.ndarray:
        """The meta-policy pi = softmax(abar / scale) over the arms."""
        return F.softmax(self._abar / self.scale)

    @property
    def ema_gains(self) -> np.ndarray:
        """abar: the exponential moving average of each arm's informativeness gain."""
        return self._abar.copy()

    def sampling_probs(self) -> np.ndarray:
        """The distribution the next ``sample()`` draws from."""
        return F.nucleus(self.probs, self.top_p)

    def _sample(self) -> tuple[float, np.ndarray, float, np.ndarray]:
        values = self.space.values
        k = F.sample_categorical(self.sampling_probs(), self._rng.random())
        return float(values[k]), values, float(k), np.arange(values.size, dtype=np.float64)

    def _update(self, feedback: Feedback) -> Metrics:
        assert isinstance(feedback, Counterfactual)
        values = self.space.values
        check_all_arms(feedback, values.size)
        for name in ("rewards", "groups", "lengths"):
            if getattr(feedback, name) is None:
                raise ValueError(
                    f"Counterfactual.{name}: Informativeness needs the rollouts' rewards, "
                    f"prompt groups and scored lengths, but {name} is None; pass "
                    f"Counterfactual(..., rewards=..., groups=..., lengths=...)"
                )
        rewards, groups, lengths = feedback.rewards, feedback.groups, feedback.lengths
        assert rewards is not None and groups is not None and lengths is not None
        played = int(feedback.decision.arm)
        log_lambda, _ = F.group_log_likelihood_ratios(feedback.loglik, lengths, groups, played)
        equal = F.equal_reward_groups(rewards, groups)
        gains, ess = F.informativeness_gains(log_lambda, equal)
        reached = ess >= self.min_ess * equal.size
        gains = F.carry_beyond_reach(gains, reached, values, played)
        noop = bool(np.all(equal == equal[0]))
        if not noop:
            self._abar = F.ema(self._abar, gains, self.ema)
        metrics: Metrics = {
            "noop": float(noop),
            "num_rollouts": float(rewards.size),
            "num_groups": float(equal.size),
            "informative_fraction": float(1.0 - np.mean(equal)),
            "reached_arms": float(np.sum(reached)),
        }
        pi = self.probs
        for value, p, d, abar in zip(values, pi, gains, self._abar, strict=True):
            label = arm_label(float(value))
            metrics[prob_key(label)] = float(p)
            metrics[f"gain/{label}"] = float(d)
            metrics[f"ema_gain/{label}"] = float(abar)
        metrics["policy_entropy"] = F.entropy(pi)
        metrics["expected_value"] = float(np.dot(pi, values))
        return metrics

    def _config(self) -> dict[str, Any]:
        return {"ema": self.ema, "scale": self.scale, "top_p": self.top_p, "min_ess": self.min_ess}

    def _params(self) -> dict[str, Any]:
        return {"ema_gains": self._abar.copy()}

    def _load_params(self, params: Mapping[str, Any]) -> None:
        # abar is an average of gains in [-1, 1].
        self._abar = check_shape(
            "params.ema_gains", params["ema_gains"], (len(self.space),), limit=1.0
        )
