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

    Computed in float64 (any finite rewards, even near the float32 maximum, give finite
    advantages), returned in the dtype of ``rewards``.

    Returns:
        ``[N]`` advantages in the float dtype of ``rewards``, detached. A group whose rewards
        are all equal gets exactly 0.

    Raises:
        ValueError: ``rewards`` not 1-D or empty or non-finite, ``group_size`` not a positive
            divisor of ``N``, ``eps`` negative or non-finite, unknown ``scale``; with
            ``scale="none"``, an advantage ``r - mean`` beyond the dtype of ``rewards``.
    """
    r = _check(rewards, group_size, eps, scale)
    # In float64: a float32 mean (or std) of rewards near 3.4e38 overflows, although every
    # advantage is of order 1; float64 holds every sum and square of float32 (or float16) rewards.
    r64 = r.double()
    grouped = r64.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
    centred = torch.where(constant, torch.zeros_like(r64), centred.reshape(-1))
    if scale == "none":
        return _in_dtype(centred, r.dtype)
    std = _std(grouped, dim=1).repeat_interleave(group_size) if scale == "group" else _std(r64)
    # An all-equal group is exactly 0, also when its std + eps is 0 (eps = 0): never 0 / 0.
    return _in_dtype(torch.where(constant, centred, centred / (std + eps)), r.dtype)


def _in_dtype(advantages: Tensor, dtype: torch.dtype) -> Tensor:
    """``advantages`` (float64) in ``dtype``, or ``ValueError`` if one is not finite there.

    Only ``scale="none"`` can overflow: ``r - mean`` of float32 rewards reaches 6.8e38. A
    scaled advantage is at most ``sqrt(N)`` in absolute value.
    """
    if not bool(torch.isfinite(advantages).all()):  # float64 rewards near 1.8e308
        raise ValueError(
            "rewards: their means and standard deviations overflow float64 (rewards near "
            "1.8e308); scale them down"
        )
    out = advantages.to(dtype)
    overflow = ~torch.isfinite(out)
    if bool(overflow.any()):
        i = int(overflow.nonzero()[0, 0])
        raise ValueError(
            f"rewards: the advantage at index {i} is {float(advantages[i]):.4g}, not finite in "
            f"{dtype} (scale='none' does not divide by the std); pass float64 rewards or scale "
            "them down"
        )
    return out


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
