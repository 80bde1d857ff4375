"""PPO with a value critic, its sampling temperature set by a metactl controller.

``metactl.integrations.ppo`` answers how TAMPO applies to critic-based RL: the behaviour
policy samples at the controller's temperature (logits / T for discrete actions, std * T for
Gaussian ones), and TAMPO's Counterfactual feedback uses each step's action log-likelihood at
every virtual temperature against the step's GAE advantage::

    import gymnasium as gym
    import metactl as mc
    from metactl.integrations.ppo import PPO, PPOConfig

    envs = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
    ppo = PPO(envs, mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=0), PPOConfig(), seed=0)
    ppo.train(total_timesteps=50_000)

See ``docs/ppo.md`` for the derivation and ``examples/ppo_tampo.py`` for a single-file script.

Raises:
    metactl.DependencyNotInstalled: if torch or gymnasium is not installed
        (``pip install "metactl[gym]"``).
"""

from __future__ import annotations

from metactl.errors import require

require("torch", "gym")
require("gymnasium", "gym")

from metactl.integrations.ppo.config import PPOConfig  # noqa: E402
from metactl.integrations.ppo.policy import ActorCritic, PolicyOutput  # noqa: E402
from metactl.integrations.ppo.ppo import (  # noqa: E402
    PPO,
    PPO_FEEDBACK,
    Rollout,
    compute_gae,
    virtual_loglik,
)

__all__ = [
    "PPO",
    "PPO_FEEDBACK",
    "ActorCritic",
    "PPOConfig",
    "PolicyOutput",
    "Rollout",
    "compute_gae",
    "virtual_loglik",
]
