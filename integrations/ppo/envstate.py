"""Where a run stands in its vector environment, and its exact save/restore without pickling.

:class:`EnvCursor` is what PPO keeps between steps: the next observation, which
sub-environments reset on the next step, each running episode's return and length, and (for a
``SyncVectorEnv``) an :class:`EpisodeLog` that restores the environments exactly.

An environment's internal state (a cart's velocity, a time limit's step counter) has no
portable serialisation, but it is a function of where its episode started and the actions
taken since. So for each sub-environment this log keeps:

- how the current episode started: ``{"seed": s}`` (a seeded reset), or the RNG state of
  ``env.unwrapped.np_random`` just before an autoreset, plus, if the env defines it,
  ``env.unwrapped.get_persistent_state()`` (JSON state that survives ``reset()``, such as
  the drifting bandit's clock);
- the actions taken in the episode since then.

Restoring resets each sub-environment the same way and replays the actions, then checks that
the replayed observation equals the saved one (any env that is a deterministic function of
its RNG restores exactly; one that is not is reported, not silently desynchronised).
Everything is JSON: RNG states are dicts of ints, actions lists of numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv

__all__ = ["EnvCursor", "EnvStep", "EpisodeLog"]


def _rng_state(env: gym.Env[Any, Any]) -> dict[str, Any]:
    return copy.deepcopy(dict(env.unwrapped.np_random.bit_generator.state))


def _persistent_state(env: gym.Env[Any, Any]) -> Any:
    getter = getattr(env.unwrapped, "get_persistent_state", None)
    return getter() if callable(getter) else None


def _jsonable_action(action: Any) -> Any:
    arr = np.asarray(action)
    return arr.item() if arr.ndim == 0 else arr.tolist()


class EpisodeLog:
    """Per sub-environment: how the current episode started and its actions so far.

    Args:
        envs: the vector environment (must be a ``SyncVectorEnv``: its sub-environments are
            reachable in this process).
        seeds: the seed each sub-environment was reset with.
    """

    def __init__(self, envs: SyncVectorEnv, seeds: list[int]) -> None:
        self.envs = envs
        self.starts: list[dict[str, Any]] = [{"seed": int(s)} for s in seeds]
        self.actions: list[list[Any]] = [[] for _ in seeds]

    def record_step(self, actions: np.ndarray, stepped: np.ndarray, done: np.ndarray) -> None:
        """After a vector step: log actions of envs that stepped, note envs that just ended.

        Args:
            actions: ``[N]`` (or ``[N, D]``) actions given to the vector env.
            stepped: ``[N]`` bool, False where the step was an autoreset (action ignored).
            done: ``[N]`` bool, terminated or truncated in this step.
        """
        for i in range(len(self.starts)):
            if stepped[i]:
                self.actions[i].append(_jsonable_action(actions[i]))
            if done[i]:
                # The vector env resets this sub-env on its next step; its RNG is now exactly
                # the state that reset will start from.
                env = self.envs.envs[i]
                self.starts[i] = {"rng": _rng_state(env), "persistent": _persistent_state(env)}
                self.actions[i] = []

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy of the log."""
        return {"starts": copy.deepcopy(self.starts), "actions": copy.deepcopy(self.actions)}

    def restore(
        self, state: dict[str, Any], observations: np.ndarray, autoreset: np.ndarray
    ) -> None:
        """Bring every sub-environment back to the logged point.

        Args:
            state: from :meth:`state_dict`.
            observations: the vector env's observations at that point (to verify the replay).
            autoreset: ``[N]`` bool, sub-environments whose episode had just ended (the vector
                env resets them on the next step).

        Raises:
            ValueError: the log is for a different number of sub-environments.
            RuntimeError: a replayed observation differs from the saved one (the environment
                is not a deterministic function of its seed, RNG state and actions).
        """
        starts, actions = state["starts"], state["actions"]
        if len(starts) != self.envs.num_envs:
            raise ValueError(
                f"num_envs: the checkpoint has {len(starts)} sub-environments, "
                f"envs has {self.envs.num_envs}"
            )
        space = self.envs.single_action_space
        dtype = space.dtype
        assert dtype is not None  # Discrete and Box action spaces, the ones PPO takes, have one
        for i, env in enumerate(self.envs.envs):
            start = starts[i]
            if "seed" in start:
                obs, _ = env.reset(seed=int(start["seed"]))
            else:
                env.unwrapped.np_random.bit_generator.state = copy.deepcopy(start["rng"])
                setter = getattr(env.unwrapped, "set_persistent_state", None)
                if start.get("persistent") is not None and callable(setter):
                    setter(copy.deepcopy(start["persistent"]))
                if autoreset[i]:
                    # The episode had ended; the vector env resets it on its next step, from
                    # the RNG state just restored. Nothing to replay.
                    continue
                obs, _ = env.reset()
            for a in actions[i]:
                action = np.asarray(a, dtype=dtype) if space.shape else dtype.type(a)
                obs, *_ = env.step(action)
            if not np.array_equal(np.asarray(obs), np.asarray(observations[i])):
                raise RuntimeError(
                    f"resume: replaying sub-environment {i} gave observation {obs}, the "
                    f"checkpoint has {observations[i]}; the environment is not a deterministic "
                    "function of its seed, RNG state and actions, so it cannot be resumed exactly"
                )
        # The vector env keeps which sub-envs to reset next step in a private array; restoring
        # it is the one place this touches SyncVectorEnv internals (gymnasium has no setter).
        self.envs._autoreset_envs = np.asarray(autoreset, dtype=np.bool_).copy()
        self.starts = copy.deepcopy(starts)
        self.actions = copy.deepcopy(actions)


@dataclass
class EnvStep:
    """One step of every sub-environment, as a rollout records it.

    Attributes:
        reward, terminated, truncated: ``[N]`` what the vector env returned.
        stepped: ``[N]`` bool; False where the vector env spent the step resetting an episode
            that ended on the previous step (gymnasium's next-step autoreset ignores the action
            there, so that row is not a transition).
        finished: ``(return, length)`` of each episode that ended at this step, in
            sub-environment order.
    """

    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    stepped: np.ndarray
    finished: list[tuple[float, int]]


class EnvCursor:
    """Where a run stands in a next-step-autoreset vector env between two steps.

    Resets ``envs`` with ``seed`` on construction. Exact save and restore needs a
    ``SyncVectorEnv`` (possibly inside vector wrappers): its sub-environments are logged and
    replayed; any other vector env can only be restarted from a seed (``log`` is None).

    Attributes:
        obs: the observation the next action is chosen from.
        autoreset: ``[N]`` bool, sub-environments whose episode ended on the last step.
        episode_return, episode_length: ``[N]`` of each sub-environment's running episode.
        log: the replay log, or None when the sub-environments are not in this process.
        vector_wrapped: ``envs`` wraps the ``SyncVectorEnv`` (such wrappers' state is not saved).
    """

    def __init__(self, envs: gym.vector.VectorEnv, seed: int) -> None:
        self.envs = envs
        num_envs = int(envs.num_envs)
        self.obs, _ = envs.reset(seed=seed)
        self.autoreset = np.zeros(num_envs, dtype=bool)
        self.episode_return = np.zeros(num_envs, dtype=np.float64)
        self.episode_length = np.zeros(num_envs, dtype=np.int64)
        base = envs.unwrapped
        self.log: EpisodeLog | None = None
        if isinstance(base, SyncVectorEnv):
            self.log = EpisodeLog(base, [seed + i for i in range(num_envs)])
        self.vector_wrapped = base is not envs

    def step(self, actions: np.ndarray) -> EnvStep:
        """Step every sub-environment with ``actions`` and account for the episodes that end."""
        stepped = ~self.autoreset
        obs, reward, terminated, truncated, _ = self.envs.step(actions)
        done = np.logical_or(terminated, truncated)
        self.episode_return += np.where(stepped, reward, 0.0)
        self.episode_length += stepped
        finished = [
            (float(self.episode_return[i]), int(self.episode_length[i]))
            for i in np.flatnonzero(done)
        ]
        self.episode_return[done] = 0.0
        self.episode_length[done] = 0
        if self.log is not None:
            self.log.record_step(actions, stepped, done)
        self.obs = obs
        self.autoreset = done
        return EnvStep(reward, terminated, truncated, stepped, finished)

    def state_dict(self) -> dict[str, Any]:
        """JSON: pending resets, running returns and lengths, the replay log (None without one).

        The observation is not included: it is an array, saved as a tensor beside this.
        """
        return {
            "autoreset": self.autoreset.tolist(),
            "episode_return": self.episode_return.tolist(),
            "episode_length": self.episode_length.tolist(),
            "env_log": self.log.state_dict() if self.log is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any], obs: np.ndarray, reset_seed: int) -> bool:
        """Bring the environments back to a :meth:`state_dict` taken when ``obs`` was next.

        With a replay log (now and when saved) the sub-environments are replayed to that exact
        point. Without one they can only restart: ``envs.reset(seed=reset_seed)``.

        Returns:
            Whether the environments were restored exactly.

        Raises:
            ValueError, RuntimeError: from :meth:`EpisodeLog.restore`.
        """
        autoreset = np.asarray(state["autoreset"], dtype=bool)
        if self.log is not None and state["env_log"] is not None:
            self.log.restore(state["env_log"], obs, autoreset)
            exact = True
        else:
            obs, _ = self.envs.reset(seed=reset_seed)
            autoreset = np.zeros(int(self.envs.num_envs), dtype=bool)
            if self.log is not None:  # the episodes now start from these seeded resets
                self.log = EpisodeLog(self.log.envs, [reset_seed + i for i in range(len(obs))])
            exact = False
        self.obs = obs
        self.autoreset = autoreset
        self.episode_return = np.asarray(state["episode_return"], dtype=np.float64)
        self.episode_length = np.asarray(state["episode_length"], dtype=np.int64)
        return exact
