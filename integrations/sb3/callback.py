"""The controller at SB3's rollout boundaries: ``MetaTemperatureCallback``.

One round per rollout of an on-policy algorithm (PPO, A2C)::

    on_rollout_start   d = controller.sample(); policy.temperature = d.value
    ... collect_rollouts samples at T; SB3 computes GAE advantages ...
    on_rollout_end     controller.update(feedback built from the rollout buffer)
    train()            SB3's epochs, evaluate_actions at the same T

Feedback, the first type the controller accepts (``metactl.preferred_feedback``):

- ``Counterfactual``: every buffer step ``i`` scored at the virtual temperatures,
  ``loglik[i, k] = log pi_{T_k}(a_i | s_i)`` (one no-grad actor forward over the buffer), paired
  with its GAE advantage (standardised over the rollout unless ``normalize_advantages=False``);
  ``rewards[i]`` the step's reward from the environment, ``groups[i]`` the id of the episode
  segment the step belongs to, ``lengths[i] = 1`` (one action per step).
- ``Outcome`` / ``Outcomes``: the mean return of the episodes that ended in the rollout (from
  SB3's ``Monitor``); no update when none ended.
- ``EntropyObservation``: the mean entropy of the tempered action distribution over the buffer;
  no update when it is not positive (a Gaussian's differential entropy can be negative).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import obs_as_tensor

import metactl as mc
from metactl.controllers.base import preferred_feedback
from metactl.feedback import (
    Counterfactual,
    Decision,
    EntropyObservation,
    Feedback,
    Outcome,
    Outcomes,
)
from metactl.metric_keys import TEMPERATURE, meta_key
from metactl.temperature import check_temperature, check_temperature_controller

from .policy import TemperatureActorCriticPolicy
from .scoring import tempered_entropy, virtual_log_probs

__all__ = [
    "CHECKPOINT_FORMAT",
    "SB3_FEEDBACK",
    "MetaCheckpointCallback",
    "MetaTemperatureCallback",
    "controller_path",
]

SB3_FEEDBACK = (Counterfactual, Outcome, Outcomes, EntropyObservation)
"""The feedback the callback can build from a rollout."""

CHECKPOINT_FORMAT = "metactl.sb3/1"
"""The controller file holds ``{"format": ..., "controller_class": ..., "controller": state}``."""

SCORING_ROWS = 4096
"""Buffer rows per no-grad actor forward when scoring (bounds the memory of image policies)."""


def controller_path(model_path: str | os.PathLike[str]) -> Path:
    """Where the controller's JSON lies beside an SB3 zip: ``run.zip`` -> ``run.metactl.json``.

    ``model_path`` may omit ``.zip``, as SB3's ``save`` and ``load`` allow.
    """
    path = Path(model_path)
    stem = path.name[: -len(".zip")] if path.name.endswith(".zip") else path.name
    return path.with_name(stem + ".metactl.json")


class MetaTemperatureCallback(BaseCallback):
    """Sets a temperature policy's temperature each rollout and trains the controller.

    Args:
        controller: any metactl controller whose arms are temperatures (``mc.TAMPO``,
            ``mc.MetaGradient``, ``mc.SlidingWindowUCB``, ``mc.EntropyTarget``, ``mc.Fixed``, ...).
        normalize_advantages: standardise the rollout's GAE advantages (zero mean, unit
            standard deviation) before the Counterfactual, the analogue of GRPO's group
            normalisation: the scale of GAE advantages drifts as the critic learns, and TAMPO's
            EMA mixes rollouts.
        verbose: SB3's verbosity.

    Raises:
        metactl.IncompatibleController: the controller's arms are not temperatures, or it
            learns from none of ``SB3_FEEDBACK``.
        TypeError: (when ``learn`` starts) the model is not an on-policy algorithm with a
            ``TemperatureActorCriticPolicy``.
    """

    def __init__(
        self, controller: mc.Controller, *, normalize_advantages: bool = True, verbose: int = 0
    ) -> None:
        super().__init__(verbose)
        self.controller = check_temperature_controller(controller, SB3_FEEDBACK)
        self.feedback_kind = preferred_feedback(self.controller, SB3_FEEDBACK)
        self.normalize_advantages = normalize_advantages
        self._decision: Decision | None = None
        self._rollout_start_state: dict[str, Any] | None = None
        self._rewards: list[np.ndarray[Any, Any]] = []
        self._episode_returns: list[float] = []

    # --- SB3's hooks -----------------------------------------------------------------------------
    def _init_callback(self) -> None:
        policy = self.model.policy
        if not isinstance(policy, TemperatureActorCriticPolicy):
            raise TypeError(
                f"MetaTemperatureCallback: the model's policy is {type(policy).__name__}, which "
                "has no temperature; build the model with "
                "metactl.integrations.sb3.TemperatureActorCriticPolicy (TemperatureMlpPolicy, "
                "TemperatureCnnPolicy or TemperatureMultiInputPolicy), e.g. "
                "PPO(TemperatureMlpPolicy, env)"
            )
        if not isinstance(self.model, OnPolicyAlgorithm):
            raise TypeError(
                f"MetaTemperatureCallback: expected an on-policy algorithm (PPO, A2C), got "
                f"{type(self.model).__name__}"
            )

    @property
    def policy(self) -> TemperatureActorCriticPolicy:
        """The model's temperature policy (checked when ``learn`` starts)."""
        policy = self.model.policy
        assert isinstance(policy, TemperatureActorCriticPolicy)
        return policy

    def _on_rollout_start(self) -> None:
        # Mid-rollout checkpoints save this state: a resumed run collects the rollout again.
        self._rollout_start_state = self.controller.state_dict()
        decision = self.controller.sample()
        self.policy.temperature = check_temperature(decision.value, "decision.value")
        self._decision = decision
        self._rewards = []
        self._episode_returns = []

    def _on_step(self) -> bool:
        if self.feedback_kind is Counterfactual:
            # A copy: SB3 then adds the bootstrap of truncated episodes to the array in place.
            self._rewards.append(np.array(self.locals["rewards"], dtype=np.float64))
        elif self.feedback_kind is Outcome or self.feedback_kind is Outcomes:
            for info in self.locals["infos"]:
                episode = info.get("episode")  # set by SB3's Monitor when an episode ends
                if episode is not None:
                    self._episode_returns.append(float(episode["r"]))
        return True

    def _on_rollout_end(self) -> None:
        decision = self._decision
        assert decision is not None
        feedback = self._feedback(decision)
        metrics: dict[str, float] = {TEMPERATURE: decision.value}
        if feedback is None:
            metrics["skipped"] = 1.0
        else:
            metrics.update(self.controller.update(feedback))
        for name, value in metrics.items():
            self.logger.record(meta_key(name), value)
        self._decision = None
        self._rollout_start_state = None

    def _on_training_end(self) -> None:
        # Back to the network's own distribution, as a policy loaded from SB3's zip is.
        self.policy.temperature = 1.0

    # --- feedback --------------------------------------------------------------------------------
    def _feedback(self, decision: Decision) -> Feedback | None:
        kind = self.feedback_kind
        if kind is Outcome or kind is Outcomes:
            if not self._episode_returns:
                return None
            reward = float(np.mean(self._episode_returns))
            if kind is Outcome:
                return Outcome(decision, reward)
            return Outcomes((decision,), np.array([reward]))
        assert isinstance(self.model, OnPolicyAlgorithm)  # checked when learn started
        buffer = self.model.rollout_buffer
        params = self._action_params(buffer)
        policy = self.policy
        gaussian = isinstance(policy.action_dist, DiagGaussianDistribution)
        log_std = policy.log_std.detach() if gaussian else None
        if kind is EntropyObservation:
            entropy = float(
                tempered_entropy(policy.action_dist, params, log_std, decision.value).mean()
            )
            return EntropyObservation(decision, entropy) if entropy > 0 else None
        actions = th.as_tensor(buffer.actions, device=params.device)
        loglik = virtual_log_probs(
            policy.action_dist,
            params,
            log_std,
            actions.reshape(params.shape[0], -1),
            decision.virtual.tolist(),
        )
        advantages = buffer.advantages.reshape(-1).astype(np.float64)
        if self.normalize_advantages and advantages.size > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std(ddof=1) + 1e-8)
        return Counterfactual(
            decision,
            loglik.cpu().numpy(),
            advantages,
            rewards=np.stack(self._rewards).reshape(-1),
            groups=episode_segments(buffer.episode_starts),
            lengths=np.ones(advantages.size),
        )

    def _action_params(self, buffer: RolloutBuffer | DictRolloutBuffer) -> th.Tensor:
        """``[N, P]`` the actor's untempered output at every buffer step (step-major rows)."""
        observations = buffer.observations
        if isinstance(observations, dict):
            flat: Any = {k: v.reshape(-1, *v.shape[2:]) for k, v in observations.items()}
            n = next(iter(flat.values())).shape[0]
        else:
            flat = observations.reshape(-1, *observations.shape[2:])
            n = flat.shape[0]
        chunks = []
        with th.no_grad():
            for start in range(0, n, SCORING_ROWS):
                rows = (
                    {k: v[start : start + SCORING_ROWS] for k, v in flat.items()}
                    if isinstance(flat, dict)
                    else flat[start : start + SCORING_ROWS]
                )
                chunks.append(self.policy.action_params(obs_as_tensor(rows, self.policy.device)))
        return th.cat(chunks)

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The controller's state as JSON data, as the next rollout should start from it.

        Mid-rollout (a ``CheckpointCallback`` saves from ``on_step``) that is the state before
        this rollout's decision: SB3 resumes by collecting a new rollout, which then draws the
        same decision.
        """
        state = self._rollout_start_state
        return {
            "format": CHECKPOINT_FORMAT,
            "controller_class": type(self.controller).__name__,
            "controller": self.controller.state_dict() if state is None else state,
        }

    def load_state_dict(self, record: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the controller's state).

        Raises:
            ValueError: not a record of this format, a record of another controller class, or a
                controller state the controller refuses (its ``load_state_dict`` names why).
        """
        if not isinstance(record, Mapping) or record.get("format") != CHECKPOINT_FORMAT:
            found = record.get("format") if isinstance(record, Mapping) else type(record).__name__
            raise ValueError(
                f"record: expected a MetaTemperatureCallback record (format "
                f"{CHECKPOINT_FORMAT!r}), got format {found!r}"
            )
        name = type(self.controller).__name__
        if record["controller_class"] != name:
            raise ValueError(
                f"record.controller_class: the saved controller is a "
                f"{record['controller_class']}, this callback's is a {name}"
            )
        self.controller.load_state_dict(record["controller"])
        self._decision = None
        self._rollout_start_state = None

    def save(self, model_path: str | os.PathLike[str]) -> Path:
        """Write the controller's state beside the SB3 zip ``model_path`` (see :func:`controller_path`).

        Returns:
            The JSON file's path.
        """
        path = controller_path(model_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.state_dict()))
        os.replace(partial, path)  # never a half-written file under the final name
        return path

    def load(self, model_path: str | os.PathLike[str]) -> None:
        """Restore the controller from the JSON beside the SB3 zip ``model_path``.

        Raises:
            FileNotFoundError: no controller file beside ``model_path`` (names the file).
            ValueError: see :meth:`load_state_dict`.
        """
        path = controller_path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"model_path: no controller state at {path} (written by "
                "MetaTemperatureCallback.save or MetaCheckpointCallback beside the model's zip)"
            )
        self.load_state_dict(json.loads(path.read_text()))


def episode_segments(episode_starts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``[n_steps * n_envs]`` step-major: the id of the episode segment of each buffer step.

    A segment is one sub-environment's run of steps within the rollout between episode starts;
    ids count segments environment by environment.
    """
    starts = np.array(episode_starts, dtype=bool)
    starts[0] = True  # each environment's first step of the rollout begins a segment
    ids = np.cumsum(starts.T.reshape(-1)) - 1  # environment-major
    return np.asarray(ids.reshape(starts.shape[1], starts.shape[0]).T.reshape(-1), dtype=np.int64)


class MetaCheckpointCallback(CheckpointCallback):
    """SB3's ``CheckpointCallback`` that also writes the controller beside each zip.

    ``ckpt/rl_model_1000_steps.zip`` gets ``ckpt/rl_model_1000_steps.metactl.json``. To resume::

        model = PPO.load("ckpt/rl_model_1000_steps.zip", env=env)
        meta = MetaTemperatureCallback(mc.TAMPO(seed=0))
        meta.load("ckpt/rl_model_1000_steps.zip")
        model.learn(rest, callback=meta, reset_num_timesteps=False)

    Args:
        meta: the MetaTemperatureCallback of the same ``learn`` call.
        save_freq, save_path, name_prefix, **kwargs: as ``CheckpointCallback``.
    """

    def __init__(
        self,
        meta: MetaTemperatureCallback,
        save_freq: int,
        save_path: str,
        name_prefix: str = "rl_model",
        **kwargs: Any,
    ) -> None:
        super().__init__(save_freq, save_path, name_prefix=name_prefix, **kwargs)
        self.meta = meta

    def _on_step(self) -> bool:
        saves = self.n_calls % self.save_freq == 0
        result = super()._on_step()
        if saves:
            self.meta.save(self._checkpoint_path(extension="zip"))
        return result
