"""PPO's hyperparameters, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["PPOConfig"]


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (CleanRL's ``ppo.py`` defaults unless noted).

    Attributes:
        num_steps: steps per sub-environment per rollout.
        learning_rate: Adam step size (eps 1e-5).
        anneal_lr_timesteps: if set, the learning rate decays linearly to 0 over this many
            environment steps (CleanRL anneals over the whole run).
        gamma: discount.
        gae_lambda: GAE's lambda.
        num_minibatches: minibatches per epoch.
        update_epochs: passes over each rollout.
        norm_adv: normalise advantages per minibatch in the policy loss.
        clip_coef: the surrogate's clip range.
        clip_vloss: clip the value loss around the old values.
        ent_coef: weight of the entropy bonus (entropy of pi_T, the behaviour policy).
        vf_coef: weight of the value loss.
        max_grad_norm: gradient-norm clip.
        target_kl: stop the epochs early once the approximate KL exceeds this.
        hidden_sizes: hidden widths of the actor and critic MLPs.
        meta_advantages: advantages handed to the controller: "normalized" (zero mean, unit
            std over the rollout's steps, the analogue of GRPO's group normalisation) or "raw".
    """

    num_steps: int = 128
    learning_rate: float = 2.5e-4
    anneal_lr_timesteps: int | None = None
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    hidden_sizes: tuple[int, ...] = (64, 64)
    meta_advantages: Literal["normalized", "raw"] = "normalized"

    def __post_init__(self) -> None:
        positive_ints = ("num_steps", "num_minibatches", "update_epochs")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"PPOConfig({name}): must be an integer >= 1, got {value!r}")
        for name in ("learning_rate", "clip_coef", "max_grad_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"PPOConfig({name}): must be finite and > 0, got {value!r}")
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PPOConfig({name}): must be in [0, 1], got {value!r}")
        for name in ("ent_coef", "vf_coef"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PPOConfig({name}): must be finite and >= 0, got {value!r}")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"PPOConfig(target_kl): must be > 0 or None, got {self.target_kl!r}")
        if self.anneal_lr_timesteps is not None and not self.anneal_lr_timesteps >= 1:
            raise ValueError(
                "PPOConfig(anneal_lr_timesteps): must be >= 1 or None, "
                f"got {self.anneal_lr_timesteps!r}"
            )
        if self.meta_advantages not in ("normalized", "raw"):
            raise ValueError(
                "PPOConfig(meta_advantages): must be 'normalized' or 'raw', "
                f"got {self.meta_advantages!r}"
            )
        object.__setattr__(self, "hidden_sizes", tuple(int(w) for w in self.hidden_sizes))
