"""Exact save/restore of a ``SyncVectorEnv`` mid-episode, without pickling environments.

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
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv

__all__ = ["EpisodeLog"]


def _rng_state(env: gym.Env) -> dict[str, Any]:
    return copy.deepcopy(env.unwrapped.np_random.bit_generator.state)


def _persistent_state(env: gym.Env) -> Any:
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
                action = np.asarray(a, dtype=space.dtype) if space.shape else space.dtype.type(a)
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
