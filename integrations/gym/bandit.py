"""A K-armed Bernoulli bandit with stationary, drifting and needle variants."""

from __future__ import annotations

from typing import Any, Literal, get_args

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metactl._validate import integer, real

BanditVariant = Literal["stationary", "drifting", "needle"]


class BanditEnv(gym.Env[np.ndarray, np.int64]):
    """K-armed Bernoulli bandit; every episode is one pull.

    Arm ``k`` pays ``payoff_k`` with probability ``p_k`` and 0 otherwise, so its
    expected reward is ``payoff_k * p_k``. The observation is a constant ``[0.0]``
    (a bandit has no state); the arms are the actions.

    Variants:
        - ``"stationary"``: ``p_k ~ U(0.1, 0.9)``, payoff 1, fixed for the whole run.
        - ``"drifting"``: as stationary, but every ``drift_period`` episodes the success
          probabilities are re-permuted among the arms, so the best arm moves while the
          agent trains. The clock counts episodes since the last seeded reset.
        - ``"needle"``: ``num_arms - 1`` decoys with ``p_k ~ U(0.2, 0.5)`` and payoff 1, and
          one needle paying ``needle_payoff`` with the small probability ``needle_prob``
          (default expected reward 1.0, twice the best decoy's at most). A policy that
          gets greedy early (too low a temperature) settles on a decoy before the needle's
          rare wins have shown up.

    The task (probabilities, payoffs, the needle's position, the drift permutations) is a
    function of ``task_seed`` only; ``reset(seed=...)`` seeds the reward draws and restarts
    the drift clock. So every copy in a vector env plays the same bandit.

    Args:
        num_arms: K >= 2.
        variant: "stationary", "drifting" or "needle".
        task_seed: seed of the task itself (not of the reward noise).
        drift_period: episodes between changes of the best arm ("drifting" only).
        needle_prob: the needle's success probability ("needle" only).
        needle_payoff: the needle's payoff ("needle" only).

    Step ``info`` carries ``expected_reward`` (of the pulled arm), ``regret`` (best expected
    reward minus it) and ``best_arm``, for studies of the meta-controller.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        num_arms: int = 10,
        variant: BanditVariant = "stationary",
        *,
        task_seed: int = 0,
        drift_period: int = 2000,
        needle_prob: float = 0.1,
        needle_payoff: float = 10.0,
        render_mode: str | None = None,
    ) -> None:
        if variant not in get_args(BanditVariant):
            raise ValueError(
                f"BanditEnv(variant): expected one of {get_args(BanditVariant)}, got {variant!r}"
            )
        num_arms = integer("BanditEnv(num_arms)", num_arms, minimum=2)
        drift_period = integer("BanditEnv(drift_period)", drift_period, minimum=1)
        task_seed = integer("BanditEnv(task_seed)", task_seed, minimum=0)
        needle_prob = real("BanditEnv(needle_prob)", needle_prob)
        needle_payoff = real("BanditEnv(needle_payoff)", needle_payoff)
        if not 0.0 < needle_prob <= 1.0:
            raise ValueError(f"BanditEnv(needle_prob): must be in (0, 1], got {needle_prob}")
        if not needle_payoff > 0:
            raise ValueError(
                f"BanditEnv(needle_payoff): must be finite and > 0, got {needle_payoff}"
            )
        if render_mode is not None:
            raise ValueError(f"BanditEnv(render_mode): no render modes, got {render_mode!r}")
        self.num_arms = int(num_arms)
        self.variant: BanditVariant = variant
        self.task_seed = int(task_seed)
        self.drift_period = int(drift_period)
        self.render_mode = render_mode

        # The task has its own RNG so that reset(seed) changes the reward noise, not the task.
        task_rng = np.random.default_rng([self.task_seed, self.num_arms])
        self.payoffs = np.ones(self.num_arms)
        self.needle_arm: int | None
        if variant == "needle":
            self.needle_arm = int(task_rng.integers(self.num_arms))
            self._base_probs = task_rng.uniform(0.2, 0.5, size=self.num_arms)
            self._base_probs[self.needle_arm] = needle_prob
            self.payoffs[self.needle_arm] = float(needle_payoff)
        else:
            self.needle_arm = None
            self._base_probs = task_rng.uniform(0.1, 0.9, size=self.num_arms)
        self._episode = 0

        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.num_arms)

    # --- the task ---------------------------------------------------------------
    def probs_at(self, episode: int) -> np.ndarray:
        """Success probabilities of the arms at a given episode (a pure function)."""
        if self.variant != "drifting":
            return self._base_probs.copy()
        period = episode // self.drift_period
        if period == 0:
            return self._base_probs.copy()
        perm = np.random.default_rng([self.task_seed, self.num_arms, period]).permutation(
            self.num_arms
        )
        return self._base_probs[perm]

    @property
    def expected_rewards(self) -> np.ndarray:
        """Expected reward of each arm at the current episode."""
        return self.probs_at(self._episode) * self.payoffs

    @property
    def best_arm(self) -> int:
        """The arm with the highest expected reward now."""
        return int(np.argmax(self.expected_rewards))

    # --- gymnasium API ----------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._episode = 0  # a seeded reset restarts the run, drift clock included
        return self._obs(), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"BanditEnv.step(action): {action!r} is not in {self.action_space}")
        arm = int(action)
        expected = self.expected_rewards
        success = self.np_random.random() < self.probs_at(self._episode)[arm]
        reward = float(self.payoffs[arm]) if success else 0.0
        info = {
            "expected_reward": float(expected[arm]),
            "regret": float(expected.max() - expected[arm]),
            "best_arm": int(np.argmax(expected)),
        }
        self._episode += 1
        return self._obs(), reward, True, False, info

    def _obs(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)

    # --- state that survives a reset without seed (for code that resumes the env exactly) -
    def get_persistent_state(self) -> dict[str, Any]:
        """JSON state that ``reset()`` without a seed keeps: the drift clock."""
        return {"episode": self._episode}

    def set_persistent_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_persistent_state`."""
        self._episode = int(state["episode"])
