"""The one fp32 step of the scores that can overflow on finite logits: ``beta (z_o - m)``.

``z_o - m`` (the scored logit below its row's maximum) overflows fp32 once the row spans more
than 3.4e38, although ``beta (z_o - m)`` still fits for ``beta <= 1``; the other terms cannot
overflow (``exp(beta (z - m)) <= 1``, so ``log sum_v exp(...)`` lies in ``[0, log V]``).
Halving both ends first keeps the difference finite and costs no precision: ``z / 2`` is exact
(unless it is subnormal, below 1e-38), so ``(z_o / 2 - m / 2) (2 beta)`` rounds exactly like
``(z_o - m) beta``. Plain fp32 (no fp64), so it runs on every device.
"""

from __future__ import annotations

from torch import Tensor


def scaled_gap(target: Tensor, row_max: Tensor, betas: Tensor) -> Tensor:
    """``beta_k (z_o - m)`` ``[rows, K]`` in fp32, finite whenever the exact value is.

    Args:
        target: ``[rows]`` the scored logits ``z_o`` (fp32).
        row_max: ``[rows]`` their rows' maxima ``m`` (fp32).
        betas: ``[K]`` fp32 inverse temperatures.
    """
    return (target * 0.5 - row_max * 0.5)[:, None] * (betas * 2.0)
