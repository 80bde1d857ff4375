"""TAMPO and friends inside Stable-Baselines3's PPO and A2C (``metactl.integrations.sb3``).

A policy whose action distribution reads a temperature, and a callback at the rollout
boundaries that picks the temperature with a metactl controller and trains the controller on
the rollout SB3 already collected::

    import metactl as mc
    from stable_baselines3 import PPO
    from metactl.integrations.sb3 import MetaTemperatureCallback, TemperatureMlpPolicy

    model = PPO(TemperatureMlpPolicy, "CartPole-v1", seed=0)
    model.learn(100_000, callback=MetaTemperatureCallback(mc.TAMPO(seed=0)))

See ``docs/sb3.md``.

Raises:
    metactl.DependencyNotInstalled: if stable-baselines3 (or torch) is not installed
        (``pip install "metactl[sb3]"``).
"""

from __future__ import annotations

from metactl.errors import require

require("torch", "sb3")
require("stable_baselines3", "sb3")

from metactl.integrations.sb3.callback import (  # noqa: E402
    CHECKPOINT_FORMAT,
    SB3_FEEDBACK,
    MetaCheckpointCallback,
    MetaTemperatureCallback,
    controller_path,
)
from metactl.integrations.sb3.policy import (  # noqa: E402
    TemperatureActorCriticPolicy,
    TemperatureCnnPolicy,
    TemperatureMlpPolicy,
    TemperatureMultiInputPolicy,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "SB3_FEEDBACK",
    "MetaCheckpointCallback",
    "MetaTemperatureCallback",
    "TemperatureActorCriticPolicy",
    "TemperatureCnnPolicy",
    "TemperatureMlpPolicy",
    "TemperatureMultiInputPolicy",
    "controller_path",
]
