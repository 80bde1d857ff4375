"""GRPO advantages, with the conventions of TRL's ``GRPOTrainer``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["grpo_advantages"]

SCALES = ("group", "batch", "none")


@torch.no_grad()
def grpo_advantages(
    rewards: Tensor, group_size: int, *, eps: float = 1e-4, scale: str = "group"
) -> Tensor:
    """Group-relative advantages ``A_i = (r_i - mean_group) / (std + eps)``.

    Consecutive blocks of ``group_size`` rewards form a group (the completions of one prompt),
    as in TRL. The standard deviation is TRL's: unbiased (Bessel's correction, ``torch.std``),
    and 0 for a group (or batch) of one element.

    Args:
        rewards: ``[N]`` finite rewards (float; integers are converted to fp32).
        group_size: completions per prompt ``G``; ``N`` must be a multiple of it.
        eps: added to the std before dividing (TRL uses 1e-4).
        scale: ``"group"`` divides by each group's std, ``"batch"`` by the std of all ``N``
            rewards (TRL's ``scale_rewards="batch"``), ``"none"`` does not divide.

    Returns:
        ``[N]`` advantages in the float dtype of ``rewards``, detached. A group whose rewards
        are all equal gets exactly 0.

    Raises:
        ValueError: ``rewards`` not 1-D or empty or non-finite, ``group_size`` not a positive
            divisor of ``N``, ``eps`` negative or non-finite, unknown ``scale``.
    """
    r = _check(rewards, group_size, eps, scale)
    grouped = r.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
    centred = torch.where(constant, torch.zeros_like(r), centred.reshape(-1))
    if scale == "none":
        return centred
    std = _std(grouped, dim=1).repeat_interleave(group_size) if scale == "group" else _std(r)
    # An all-equal group is exactly 0, also when its std + eps is 0 (eps = 0): never 0 / 0.
    return torch.where(constant, centred, centred / (std + eps))


def _std(x: Tensor, dim: int | None = None) -> Tensor:
    """Unbiased std (``torch.std``) over ``dim``, or 0 where a single element is reduced."""
    n = x.numel() if dim is None else x.shape[dim]
    if n < 2:
        return (
            torch.zeros((), dtype=x.dtype, device=x.device)
            if dim is None
            else x.new_zeros(x.shape[0])
        )
    return x.std() if dim is None else x.std(dim=dim)


def _check(rewards: Tensor, group_size: int, eps: float, scale: str) -> Tensor:
    """Validated ``rewards`` as a 1-D float tensor."""
    if not isinstance(rewards, Tensor):
        raise ValueError(f"rewards must be a torch.Tensor, got {type(rewards).__name__}")
    if rewards.dim() != 1 or rewards.numel() == 0:
        raise ValueError(f"rewards must have shape [N] with N >= 1, got {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if rewards.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)}: N = {rewards.numel()} is not divisible by "
            f"group_size = {group_size}"
        )
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if not (isinstance(eps, int | float) and 0.0 <= eps < float("inf")):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    r = rewards.detach() if rewards.is_floating_point() else rewards.detach().float()
    if not bool(torch.isfinite(r).all()):
        raise ValueError("rewards must be finite (NaN or inf found)")
    return r
