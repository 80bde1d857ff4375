"""Each rollout's preferred temperature: the exact maximiser of its mean log-likelihood.

With ``beta = 1 / T`` the mean log-likelihood of a rollout is concave in ``beta``::

    l(beta)   = mean_t [ beta z_{t,o_t} - logsumexp(beta z_t) ]
    l'(beta)  = mean_t ( z_{t,o_t} - E_{p_t}[z_t] ),      p_t = softmax(beta z_t)
    l''(beta) = -mean_t Var_{p_t}[z_t]  <= 0

so ``l'`` is non-increasing and its root (clamped to the bounds) is the unique maximiser.
It is found by safeguarded Newton steps on ``beta`` inside a bracket that shrinks at every
step, with a (geometric) bisection whenever the Newton step leaves the bracket.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from metactl.integrations.torch._checks import (
    check_chunk_size,
    check_sequence_logits,
    check_tokens_in_vocab,
)
from metactl.integrations.torch.loglik import default_chunk_size
from metactl.temperature import is_temperature, temperature_rule

__all__ = ["preferred_temperature"]

_MAX_ITER = 60
_RTOL = 1e-6


def _rows_slope(logits: Tensor, tokens: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token ``z_o - E_p[z]`` and ``Var_p[z]`` under ``p = softmax(beta z)``, in fp32.

    Both are shift-invariant, so they are computed on ``d = z - max z <= 0`` (two-pass variance),
    with the max taken in the logits' dtype (at least fp32). A logit at ``-inf`` (a top-k mask)
    has probability 0 and adds nothing to either sum.

    Args:
        logits: ``[c, V]`` rows of logits, any float dtype.
        tokens: ``[c]`` valid ids.
        beta: ``[c]`` inverse temperature of each row.

    Returns:
        ``(slope [c], variance [c])``.
    """
    m = logits.amax(dim=-1, keepdim=True).to(torch.promote_types(logits.dtype, torch.float32))
    d = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    torch.sub(logits, m, out=d)
    w = torch.mul(d, beta[:, None]).exp_()  # unnormalised p
    s = w.sum(dim=-1)
    seen = w > 0  # 0 * -inf would be NaN: entries of probability 0 contribute 0
    mean = torch.where(seen, w * d, 0.0).sum(dim=-1) / s
    var = torch.where(seen, w * (d - mean[:, None]).square_(), 0.0).sum(dim=-1) / s
    return d.gather(-1, tokens[:, None]).squeeze(-1) - mean, var


def _slope(
    logits: Tensor, b: Tensor, t: Tensor, ids: Tensor, beta: Tensor, size: int
) -> tuple[Tensor, Tensor]:
    """``(sum_t l'_t, sum_t -l''_t)`` per row ``[B]``, over the scored tokens listed by ``(b, t)``."""
    grad = torch.zeros_like(beta)
    curv = torch.zeros_like(beta)
    for i in range(0, ids.numel(), size):
        j = min(i + size, ids.numel())
        g, h = _rows_slope(logits[b[i:j], t[i:j]], ids[i:j], beta[b[i:j]])
        grad.index_add_(0, b[i:j], g)
        curv.index_add_(0, b[i:j], h)
    return grad, curv


@torch.no_grad()
def preferred_temperature(
    logits: Tensor,
    tokens: Tensor,
    mask: Tensor,
    *,
    bounds: tuple[float, float] = (0.05, 10.0),
    chunk_size: int | None = None,
) -> Tensor:
    """Each rollout's likelihood-maximising temperature ``T*_b = argmax_T l_T(b)`` within ``bounds``.

    ``l_T(b)`` is the mean log-probability of the scored tokens of row ``b`` at temperature ``T``
    (what :func:`temperature_loglik` computes). It is concave in ``beta = 1/T``, so the answer is
    exact up to a relative tolerance of 1e-6 in ``beta``: safeguarded Newton steps with a
    bisection fallback, usually 4 to 8 passes over the scored logits (plus 2 for the bounds).

    Args:
        logits: ``[B, L, V]`` logits, any float dtype; computation is in fp32.
        tokens: ``[B, L]`` integer ids (any id at unscored positions).
        mask: ``[B, L]`` of 0 and 1, 1 = scored.
        bounds: ``(low, high)`` temperatures, ``low < high``, both in
            ``metactl.temperature.TEMPERATURE_RANGE`` (``[0.01, 100]``).
        chunk_size: scored tokens per chunk (default as in :func:`temperature_loglik`).

    Returns:
        ``[B]`` fp32 temperatures in ``[low, high]``. The bound is returned when the likelihood
        keeps increasing up to it, e.g. ``low`` for a rollout of argmax tokens; ``high`` when the
        likelihood is flat (constant logits). Rows with no scored token give NaN.

    Raises:
        ValueError: wrong ranks or shapes, bad bounds, scored ids outside ``[0, V)``, NaN or
            +inf in the logits of a scored position or -inf at its scored token (``-inf``
            elsewhere in the row, a top-k mask, is fine), or finite logits whose spread
            overflows fp32 (said so).
    """
    check_sequence_logits(logits, tokens, mask)
    check_chunk_size(chunk_size)
    low, high = _check_bounds(bounds)
    b, t = (mask != 0).nonzero(as_tuple=True)
    ids = tokens[b, t].long()
    check_tokens_in_vocab(ids, logits.shape[-1])
    size = chunk_size or default_chunk_size(logits.shape[-1], ids.numel())

    def slope(beta: Tensor) -> tuple[Tensor, Tensor]:
        grad, curv = _slope(logits, b, t, ids, beta, size)
        if not bool(torch.isfinite(grad).all() & torch.isfinite(curv).all()):
            raise ValueError(_why_not_finite(logits, b, t, ids, size))
        return grad, curv

    batch = logits.shape[0]
    lo = torch.full((batch,), 1.0 / high, device=logits.device)  # beta bracket [lo, hi]
    hi = torch.full((batch,), 1.0 / low, device=logits.device)
    beta = _newton(slope, lo, hi)
    empty = torch.bincount(b, minlength=batch) == 0
    return torch.where(empty, torch.full_like(beta, math.nan), 1.0 / beta)


Slope = Callable[[Tensor], tuple[Tensor, Tensor]]


def _newton(slope: Slope, lo: Tensor, hi: Tensor) -> Tensor:
    """Root of the non-increasing ``l'(beta)`` in ``[lo, hi]`` per row (an end if it has none).

    Args:
        slope: ``beta [B] -> (l'(beta), -l''(beta))`` per row, each up to a positive row factor.
        lo: ``[B]`` lower end of the bracket.
        hi: ``[B]`` upper end.

    Returns:
        ``[B]`` maximiser of ``l`` in ``[lo, hi]``.
    """
    g_lo, _ = slope(lo)
    g_hi, _ = slope(hi)
    start = torch.ones_like(lo).clamp_(min=lo, max=hi)  # T = 1
    # l' <= 0 from lo on: lo (also a flat l); l' >= 0 up to hi: hi; else the root is inside
    beta = torch.where(g_lo <= 0, lo, torch.where(g_hi >= 0, hi, start))
    done = (g_lo <= 0) | (g_hi >= 0)
    for _ in range(_MAX_ITER):
        if bool(done.all()):
            break
        g, h = slope(beta)
        lo = torch.where(g > 0, beta, lo)  # root above beta
        hi = torch.where(g > 0, hi, beta)
        step = beta + g / h  # Newton: beta - l'/l''
        inside = torch.isfinite(step) & (step > lo) & (step < hi)
        new = torch.where(inside, step, (lo * hi).sqrt())
        converged = ((new - beta).abs() <= _RTOL * beta) | (hi - lo <= _RTOL * beta) | (g == 0)
        beta = torch.where(done, beta, new)
        done = done | converged
    return beta


def _why_not_finite(logits: Tensor, b: Tensor, t: Tensor, ids: Tensor, size: int) -> str:
    """Why the slope at some scored position is not finite, for the error message."""
    for i in range(0, ids.numel(), size):
        rows = logits[b[i : i + size], t[i : i + size]]
        target = rows.gather(-1, ids[i : i + size, None]).squeeze(-1)
        bad = rows.isnan().any(dim=-1) | rows.isposinf().any(dim=-1) | target.isneginf()
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0]) + i
            return (
                "logits hold NaN or inf at scored positions (NaN or +inf in the row, or -inf "
                f"at the scored token), first at {(int(b[first]), int(t[first]))}"
            )
    return (
        "logits at scored positions are finite but span more than fp32 can hold (a scored "
        "token's logit lies more than ~3.4e38 below its row's max, so its log-likelihood "
        "overflows fp32); rescale the logits"
    )


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """``(low, high)`` as floats, after checking ``low < high``, both in ``TEMPERATURE_RANGE``."""
    try:
        low, high = (float(x) for x in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"bounds must be a pair (low, high) of temperatures, got {bounds!r}"
        ) from None
    if not (is_temperature(low) and is_temperature(high) and low < high):
        raise ValueError(
            f"bounds must satisfy low < high, both temperatures {temperature_rule()}, "
            f"got {bounds!r}"
        )
    return low, high
