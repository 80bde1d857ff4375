"""The actor-critic network and its tempered action distributions.

Temperature ``T`` enters the behaviour policy in one place per action type:

- discrete actions: ``pi_T(a|s) = softmax(logits(s) / T)[a]``;
- Box actions: ``pi_T(a|s) = N(a; mean(s), (std * T)^2)`` per dimension.

``T = 1`` is the network's own policy. Sampling goes through an explicit
``torch.Generator`` (never the global RNG, never ``torch.distributions``), so that a run is
a function of its seeds and can be resumed bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

__all__ = ["ActorCritic", "PolicyOutput", "encoded_size"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def encoded_size(space: spaces.Space[Any]) -> int:
    """Length of the flat float vector :meth:`ActorCritic.encode` makes of an observation.

    Raises:
        ValueError: the observation space is not Box, Discrete or MultiDiscrete.
    """
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    raise ValueError(
        f"envs: observation space {space} is not supported; PPO encodes Box (flattened), "
        "Discrete and MultiDiscrete (one-hot) observations"
    )


@dataclass(frozen=True)
class PolicyOutput:
    """The untempered (``T = 1``) policy at a batch of states.

    Attributes:
        logits: ``[B, A]`` for discrete actions, else None.
        mean: ``[B, D]`` for Box actions, else None.
        log_std: ``[D]`` state-independent log standard deviation for Box actions, else None.
    """

    logits: Tensor | None = None
    mean: Tensor | None = None
    log_std: Tensor | None = None

    def log_prob(self, actions: Tensor, temperature: float) -> Tensor:
        """``log pi_T(a|s)`` per row, ``[B]``; Box actions sum over dimensions."""
        if self.logits is not None:
            logp = F.log_softmax(self.logits / temperature, dim=-1)
            return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        assert self.mean is not None and self.log_std is not None
        std = self.log_std.exp() * temperature
        z = (actions - self.mean) / std
        return (-0.5 * z.square() - self.log_std - math.log(temperature) - _LOG_SQRT_2PI).sum(-1)

    def entropy(self, temperature: float) -> Tensor:
        """Entropy of ``pi_T(.|s)`` in nats per row, ``[B]`` (differential for Box actions)."""
        if self.logits is not None:
            logp = F.log_softmax(self.logits / temperature, dim=-1)
            return -(logp.exp() * logp).sum(-1)
        assert self.mean is not None and self.log_std is not None
        per_dim = self.log_std + math.log(temperature) + 0.5 + _LOG_SQRT_2PI
        return per_dim.sum(-1).expand(self.mean.shape[0])

    def sample(self, temperature: float, generator: torch.Generator) -> Tensor:
        """Draw one action per row from ``pi_T`` with ``generator``."""
        if self.logits is not None:
            # Inverse-CDF sampling: one uniform per row (torch.multinomial is ~10x slower on
            # the small batches of a vector env, which dominates a CPU rollout).
            probs = F.softmax(self.logits.double() / temperature, dim=-1)
            u = torch.rand(
                (*probs.shape[:-1], 1), generator=generator, dtype=probs.dtype, device=probs.device
            )
            index = (probs.cumsum(-1) <= u).sum(-1)
            return index.clamp_(max=probs.shape[-1] - 1)
        assert self.mean is not None and self.log_std is not None
        noise = torch.randn(
            self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
        )
        return self.mean + self.log_std.exp() * temperature * noise


def _linear(n_in: int, n_out: int, gain: float, generator: torch.Generator) -> nn.Linear:
    # Built on the meta device, then allocated uninitialised (what torch.nn.utils.skip_init
    # does): nn.Linear's default init would draw from (and advance) torch's global RNG.
    layer = nn.Linear(n_in, n_out, device="meta").to_empty(device="cpu")
    nn.init.orthogonal_(layer.weight, gain, generator=generator)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(
    n_in: int, hidden: Sequence[int], n_out: int, out_gain: float, generator: torch.Generator
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_linear(n_in, width, math.sqrt(2), generator), nn.Tanh()]
        n_in = width
    layers.append(_linear(n_in, n_out, out_gain, generator))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate tanh MLPs for the policy and the value (CleanRL's PPO agent).

    Orthogonal initialisation (gain sqrt(2) in hidden layers, 0.01 for the policy head, 1 for
    the value head), drawn from ``generator`` so that the global RNG is neither read nor
    advanced. Box actions get a state-independent ``log_std`` parameter, initialised to 0.

    Args:
        observation_space: a single environment's observation space (Box, Discrete or
            MultiDiscrete).
        action_space: a single environment's action space (Discrete, or 1-D Box).
        hidden_sizes: widths of the hidden layers of both MLPs.
        generator: the RNG of the initialisation.

    Raises:
        ValueError: an unsupported space (naming ``envs``) or empty ``hidden_sizes`` entries.
    """

    def __init__(
        self,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        hidden_sizes: Sequence[int] = (64, 64),
        *,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        if any(int(w) < 1 for w in hidden_sizes):
            raise ValueError(f"hidden_sizes: every width must be >= 1, got {tuple(hidden_sizes)}")
        self.observation_space = observation_space
        self.action_space = action_space
        self.obs_size = encoded_size(observation_space)
        if isinstance(action_space, spaces.Discrete):
            self.discrete = True
            n_out = int(action_space.n)
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            self.discrete = False
            n_out = int(action_space.shape[0])
        else:
            raise ValueError(
                f"envs: action space {action_space} is not supported; PPO handles Discrete "
                "and 1-D Box actions"
            )
        self.action_size = n_out
        self.critic = _mlp(self.obs_size, hidden_sizes, 1, 1.0, generator)
        self.actor = _mlp(self.obs_size, hidden_sizes, n_out, 0.01, generator)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(n_out))

    def encode(self, obs: np.ndarray | Tensor) -> Tensor:
        """Turn a batch of raw observations into ``[B, obs_size]`` float32 features.

        Box observations are flattened; Discrete and MultiDiscrete ones are one-hot encoded
        (a discrete state id is a category, not a magnitude).
        """
        device = next(self.critic.parameters()).device
        x = torch.as_tensor(np.asarray(obs), device=device)
        space = self.observation_space
        if isinstance(space, spaces.Box):
            return x.reshape(x.shape[0], -1).float()
        if isinstance(space, spaces.Discrete):
            return F.one_hot((x.reshape(-1) - int(space.start)).long(), int(space.n)).float()
        assert isinstance(space, spaces.MultiDiscrete)
        x = x.reshape(x.shape[0], -1).long() - torch.as_tensor(space.start, device=device).reshape(
            1, -1
        )
        nvec = space.nvec.reshape(-1)
        parts = [F.one_hot(x[:, j], int(n)) for j, n in enumerate(nvec)]
        return torch.cat(parts, dim=-1).float()

    def value(self, features: Tensor) -> Tensor:
        """``V(s)`` per row, ``[B]``."""
        values: Tensor = self.critic(features)
        return values.squeeze(-1)

    def policy(self, features: Tensor) -> PolicyOutput:
        """The untempered policy at ``features``."""
        out = self.actor(features)
        if self.discrete:
            return PolicyOutput(logits=out)
        return PolicyOutput(mean=out, log_std=self.log_std)
