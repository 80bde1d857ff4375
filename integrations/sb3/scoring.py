"""A rollout's actions scored at virtual temperatures, in float64.

For one step with action-head output ``z`` (logits, or the Gaussian's mean ``mu`` with
``sigma = exp(log_std)``) and action ``a``, the log-likelihood at temperature ``T``:

- Discrete: ``log softmax(z / T)[a]``;
- MultiDiscrete: ``sum_c log softmax(z_c / T)[a_c]`` over the components ``c``;
- MultiBinary: ``sum_d log sigmoid((2 a_d - 1) z_d / T)``;
- Box: ``sum_d log N(a_d; mu_d, (sigma_d T)^2)``.

The entropy of the tempered distribution is summed over components / dimensions the same way
(differential entropy for Box: ``sum_d log(sigma_d T) + 0.5 log(2 pi e)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)

__all__ = ["tempered_entropy", "virtual_log_probs"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _component_splits(dist: Distribution, width: int) -> list[int]:
    """Widths of the categorical components of the action head's ``width`` outputs."""
    if isinstance(dist, MultiCategoricalDistribution):
        return [int(n) for n in dist.action_dims]
    return [width]


def virtual_log_probs(
    dist: Distribution,
    params: th.Tensor,
    log_std: th.Tensor | None,
    actions: th.Tensor,
    temperatures: Sequence[float],
) -> th.Tensor:
    """``[N, K]`` float64: ``log pi_{T_k}(a_i | s_i)`` for every step ``i`` and temperature ``T_k``.

    Args:
        dist: the policy's ``action_dist`` (its type says how ``params`` are read).
        params: ``[N, P]`` the action head's output at ``T = 1``.
        log_std: ``[D]`` the Gaussian's log standard deviation (Box actions), else None.
        actions: ``[N, action_dim]`` the actions as SB3's rollout buffer stores them.
        temperatures: the ``K`` temperatures.
    """
    z = params.double()
    temps = th.as_tensor(list(temperatures), dtype=th.float64, device=z.device)
    if isinstance(dist, DiagGaussianDistribution):
        assert log_std is not None
        log_scale = log_std.double().unsqueeze(-1) + temps.log()  # [D, K]: log(sigma_d T_k)
        diff = (actions.double() - z).unsqueeze(-1)  # [N, D, 1]
        per_dim = -0.5 * (diff / log_scale.exp()).square() - log_scale - _LOG_SQRT_2PI
        return per_dim.sum(1)
    scaled = z.unsqueeze(1) / temps.view(1, -1, 1)  # [N, K, P]
    if isinstance(dist, BernoulliDistribution):
        sign = 2.0 * actions.double().unsqueeze(1) - 1.0  # [N, 1, D]
        return F.logsigmoid(sign * scaled).sum(-1)
    total = th.zeros(z.shape[0], temps.numel(), dtype=th.float64, device=z.device)
    for c, logits in enumerate(th.split(scaled, _component_splits(dist, z.shape[1]), dim=-1)):
        index = actions[:, c].long().view(-1, 1, 1).expand(-1, temps.numel(), 1)
        total += F.log_softmax(logits, dim=-1).gather(-1, index).squeeze(-1)
    return total


def tempered_entropy(
    dist: Distribution, params: th.Tensor, log_std: th.Tensor | None, temperature: float
) -> th.Tensor:
    """``[N]`` float64: the entropy (nats) of each step's action distribution at ``temperature``."""
    z = params.double()
    if isinstance(dist, DiagGaussianDistribution):
        assert log_std is not None
        per_step = (log_std.double() + math.log(temperature) + 0.5 + _LOG_SQRT_2PI).sum()
        return per_step.expand(z.shape[0])
    scaled = z / temperature
    if isinstance(dist, BernoulliDistribution):
        p = th.sigmoid(scaled)
        return (-(p * F.logsigmoid(scaled) + (1 - p) * F.logsigmoid(-scaled))).sum(-1)
    assert isinstance(dist, CategoricalDistribution | MultiCategoricalDistribution)
    total = th.zeros(z.shape[0], dtype=th.float64, device=z.device)
    for logits in th.split(scaled, _component_splits(dist, z.shape[1]), dim=-1):
        logp = F.log_softmax(logits, dim=-1)
        total -= (logp.exp() * logp).sum(-1)
    return total
