"""SB3's actor-critic policies with a sampling temperature.

The action distribution at temperature ``T`` (``policy.temperature``, 1.0 unless set):

- Discrete, MultiDiscrete: ``softmax(logits / T)`` (per component);
- MultiBinary: ``Bernoulli(sigmoid(logits / T))`` per dimension;
- Box: ``N(mean, (std * T)^2)`` per dimension (applied as ``log_std + log T``).

Every place SB3 builds the distribution reads it: sampling in ``collect_rollouts``
(``policy.forward``), ``evaluate_actions`` in ``train`` and ``predict``. At ``T = 1`` the policy
is SB3's own, operation for operation (the override hands over to ``ActorCriticPolicy``).
"""

from __future__ import annotations

import math
from typing import Any

import torch as th
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    BasePolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.type_aliases import PyTorchObs

from metactl.temperature import check_temperature

__all__ = [
    "TEMPERED_DISTRIBUTIONS",
    "TemperatureActorCriticPolicy",
    "TemperatureCnnPolicy",
    "TemperatureMlpPolicy",
    "TemperatureMultiInputPolicy",
]

LOGIT_DISTRIBUTIONS = (CategoricalDistribution, MultiCategoricalDistribution, BernoulliDistribution)
"""Distributions parameterised by logits: tempered as ``logits / T``."""

TEMPERED_DISTRIBUTIONS = (*LOGIT_DISTRIBUTIONS, DiagGaussianDistribution)
"""Every action distribution a temperature policy supports (Discrete, MultiDiscrete,
MultiBinary and Box actions without gSDE)."""


class TemperatureActorCriticPolicy(ActorCriticPolicy):
    """``ActorCriticPolicy`` whose action distribution reads ``self.temperature``.

    Built by SB3 exactly like its own policy (same arguments, same parameters, same
    initialisation), so ``PPO(TemperatureMlpPolicy, env, seed=s)`` at ``temperature = 1``
    trains bit for bit as ``PPO("MlpPolicy", env, seed=s)``. The temperature is a plain
    attribute, not a parameter: SB3's saved zips are unchanged and a loaded policy starts at 1.

    Raises:
        ValueError: ``use_sde=True`` (gSDE's state-dependent noise has no temperature here), or
            an action space whose distribution is not one of ``TEMPERED_DISTRIBUTIONS``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.use_sde:
            raise ValueError(
                f"use_sde: {type(self).__name__} does not support gSDE (generalized "
                "State-Dependent Exploration, use_sde=True): its noise has no temperature; "
                "use use_sde=False (the default)"
            )
        if not isinstance(self.action_dist, TEMPERED_DISTRIBUTIONS):
            raise ValueError(
                f"action_space: {self.action_space} gives a {type(self.action_dist).__name__}, "
                f"which {type(self).__name__} cannot temper; supported: Discrete, MultiDiscrete, "
                "MultiBinary and Box actions"
            )
        self._temperature = 1.0

    @property
    def temperature(self) -> float:
        """The sampling temperature: logits / T, or std * T. 1.0 is SB3's own policy."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = check_temperature(value, "policy.temperature")

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> Distribution:
        temperature = self._temperature
        if temperature == 1.0:
            return super()._get_action_dist_from_latent(latent_pi)
        params = self.action_net(latent_pi)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            return self.action_dist.proba_distribution(params, self.log_std + math.log(temperature))
        dist: Any = self.action_dist  # a LOGIT_DISTRIBUTIONS member (checked at construction)
        tempered: Distribution = dist.proba_distribution(action_logits=params / temperature)
        return tempered

    def action_params(self, obs: PyTorchObs) -> th.Tensor:
        """The action head's output at ``temperature = 1``: logits, or the Gaussian's mean.

        The actor's half of ``get_distribution`` (no value head), for scoring a rollout.
        """
        features = BasePolicy.extract_features(self, obs, self.pi_features_extractor)
        params: th.Tensor = self.action_net(self.mlp_extractor.forward_actor(features))
        return params


TemperatureMlpPolicy = TemperatureActorCriticPolicy
"""SB3's ``MlpPolicy`` (``ActorCriticPolicy``) with a temperature."""


class TemperatureCnnPolicy(TemperatureActorCriticPolicy, ActorCriticCnnPolicy):
    """SB3's ``CnnPolicy`` (``ActorCriticCnnPolicy``, NatureCNN features) with a temperature."""


class TemperatureMultiInputPolicy(TemperatureActorCriticPolicy, MultiInputActorCriticPolicy):
    """SB3's ``MultiInputPolicy`` (Dict observations, ``CombinedExtractor``) with a temperature."""
