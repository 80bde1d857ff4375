"""Small real gymnasium environments and float64 references for the SB3 adapter's tests."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from scipy import special, stats

pytest.importorskip("stable_baselines3")

import metactl as mc

ACTION_SPACES: dict[str, spaces.Space[Any]] = {
    "Discrete": spaces.Discrete(3),
    "MultiDiscrete": spaces.MultiDiscrete([3, 4]),
    "MultiBinary": spaces.MultiBinary(3),
    # Wide bounds: SB3 clips what it sends to the env, and the rewards below read the
    # unclipped actions of its buffer.
    "Box": spaces.Box(-100.0, 100.0, (2,), np.float32),
}


def reward_of(action: Any) -> float:
    """The toy task's reward: ``sum_d (d + 1) a_d`` of the flattened action."""
    flat = np.asarray(action, dtype=np.float64).reshape(-1)
    return float(np.dot(np.arange(1, flat.size + 1), flat))


class ToyEnv(gym.Env[np.ndarray, Any]):
    """Random Box(3) observations, reward ``reward_of(action)``, truncated after ``horizon`` steps."""

    def __init__(self, action_space: spaces.Space[Any], horizon: int = 3) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = action_space
        self.horizon = horizon
        self.t = 0

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1.0, 1.0, 3).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return self._obs(), reward_of(action), False, self.t >= self.horizon, {}


class Recording:
    """Mixin: a real controller that also keeps every feedback it was given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feedback: list[Any] = []

    def update(self, feedback: Any) -> Any:
        self.feedback.append(feedback)
        return super().update(feedback)  # type: ignore[misc]


class RecordingTAMPO(Recording, mc.TAMPO):
    pass


class RecordingUCB(Recording, mc.SlidingWindowUCB):
    pass


class RecordingEntropyTarget(Recording, mc.EntropyTarget):
    pass


def mlp_action_params(state: dict[str, Any], obs: np.ndarray) -> np.ndarray:
    """The action head of SB3's default MLP policy (64-64 tanh), in float64 from its weights."""

    def w(name: str) -> np.ndarray:
        return state[name].detach().double().numpy()

    h = np.tanh(
        obs @ w("mlp_extractor.policy_net.0.weight").T + w("mlp_extractor.policy_net.0.bias")
    )
    h = np.tanh(h @ w("mlp_extractor.policy_net.2.weight").T + w("mlp_extractor.policy_net.2.bias"))
    return h @ w("action_net.weight").T + w("action_net.bias")


def reference_log_prob(
    space: spaces.Space[Any],
    params: np.ndarray,
    log_std: np.ndarray | None,
    actions: np.ndarray,
    t: float,
) -> np.ndarray:
    """``[N]`` float64 ``log pi_T(a | s)``, from the equations of each action type."""
    if isinstance(space, spaces.Box):
        assert log_std is not None
        return stats.norm.logpdf(actions, params, np.exp(log_std) * t).sum(-1)
    if isinstance(space, spaces.MultiBinary):
        z = params / t
        return (actions * special.log_expit(z) + (1 - actions) * special.log_expit(-z)).sum(-1)
    sizes = [int(space.n)] if isinstance(space, spaces.Discrete) else [int(n) for n in space.nvec]
    total = np.zeros(params.shape[0])
    for c, logits in enumerate(np.split(params, np.cumsum(sizes)[:-1], axis=1)):
        logp = special.log_softmax(logits / t, axis=1)
        total += logp[np.arange(len(logp)), actions[:, c].astype(int)]
    return total


def reference_entropy(
    space: spaces.Space[Any], params: np.ndarray, log_std: np.ndarray | None, t: float
) -> np.ndarray:
    """``[N]`` float64 entropy (nats) of ``pi_T(. | s)`` from the equations."""
    if isinstance(space, spaces.Box):
        assert log_std is not None
        return np.full(
            params.shape[0], np.sum(0.5 * np.log(2 * np.pi * np.e * (np.exp(log_std) * t) ** 2))
        )
    if isinstance(space, spaces.MultiBinary):
        p = special.expit(params / t)
        return -(special.xlogy(p, p) + special.xlogy(1 - p, 1 - p)).sum(-1)
    sizes = [int(space.n)] if isinstance(space, spaces.Discrete) else [int(n) for n in space.nvec]
    total = np.zeros(params.shape[0])
    for logits in np.split(params, np.cumsum(sizes)[:-1], axis=1):
        p = special.softmax(logits / t, axis=1)
        total -= special.xlogy(p, p).sum(1)
    return total


class ImageEnv(gym.Env[np.ndarray, Any]):
    """36x36 grey images (NatureCNN's smallest input), Discrete(3) actions, 4-step episodes."""

    observation_space = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = spaces.Discrete(3)

    def __init__(self) -> None:
        self.t = 0

    def _obs(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (36, 36, 1), dtype=np.uint8)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return self._obs(), reward_of(action), self.t >= 4, False, {}


class DictEnv(gym.Env[dict[str, Any], Any]):
    """Dict observations (a vector and a discrete id), MultiDiscrete([3, 2]) actions."""

    observation_space = spaces.Dict(
        {"x": spaces.Box(-1.0, 1.0, (3,), np.float32), "k": spaces.Discrete(4)}
    )
    action_space = spaces.MultiDiscrete([3, 2])

    def __init__(self) -> None:
        self.t = 0

    def _obs(self) -> dict[str, Any]:
        return {
            "x": self.np_random.uniform(-1.0, 1.0, 3).astype(np.float32),
            "k": int(self.np_random.integers(4)),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        self.t += 1
        return self._obs(), reward_of(action), self.t >= 4, False, {}
