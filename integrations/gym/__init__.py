"""Registered toy environments for meta-control research (``metactl.integrations.gym``).

Importing this module registers the environments with gymnasium::

    import gymnasium as gym
    import metactl.integrations.gym  # noqa: F401  (registers metactl/...)

    env = gym.make("metactl/Bandit-v0", variant="needle", num_arms=10)
    env = gym.make("metactl/TokenSequence-v0", vocab_size=8, length=6, difficulty=3)

- ``metactl/Bandit-v0`` (:class:`BanditEnv`): a K-armed Bernoulli bandit with one-step
  episodes; ``variant`` is "stationary", "drifting" (the best arm changes every
  ``drift_period`` episodes) or "needle" (one rare, high-paying arm).
- ``metactl/TokenSequence-v0`` (:class:`TokenSequenceEnv`): LLM RL in miniature; the agent
  emits ``length`` tokens from a vocabulary of ``vocab_size`` and a hidden verifier scores
  the finished sequence (sparse terminal reward, optional partial credit).

Both pass ``gymnasium.utils.env_checker.check_env`` and are deterministic under
``reset(seed=...)``. The *task* (arm means, hidden targets) is fixed by ``task_seed``, so
every copy of an environment in a vector env solves the same task. See ``docs/gym.md``.

Raises:
    metactl.DependencyNotInstalled: if gymnasium is not installed (``pip install "metactl[gym]"``).
"""

from __future__ import annotations

from metactl.errors import require

require("gymnasium", "gym")

import gymnasium  # noqa: E402

from metactl.integrations.gym.bandit import BanditEnv, BanditVariant  # noqa: E402
from metactl.integrations.gym.token_sequence import TokenSequenceEnv  # noqa: E402

__all__ = ["BanditEnv", "BanditVariant", "TokenSequenceEnv", "register_envs"]


def register_envs() -> None:
    """Register ``metactl/Bandit-v0`` and ``metactl/TokenSequence-v0`` (idempotent).

    Called on import; call it again only if something cleared gymnasium's registry.
    """
    # Re-importing (e.g. importlib.reload in a notebook) must not warn about re-registration.
    if "metactl/Bandit-v0" not in gymnasium.registry:
        gymnasium.register(
            id="metactl/Bandit-v0",
            entry_point="metactl.integrations.gym.bandit:BanditEnv",
        )
    if "metactl/TokenSequence-v0" not in gymnasium.registry:
        gymnasium.register(
            id="metactl/TokenSequence-v0",
            entry_point="metactl.integrations.gym.token_sequence:TokenSequenceEnv",
        )


register_envs()
