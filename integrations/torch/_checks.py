"""Input validation shared by the tensor ops: every failure is a ``ValueError`` naming the argument."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from metactl.temperature import FP32_MAX, is_temperature, temperature_rule

REDUCTIONS = ("mean", "sum", "none")


def shape(t: Tensor) -> tuple[int, ...]:
    """The shape of ``t`` as a plain tuple (for messages)."""
    return tuple(t.shape)


def check_reduction(reduction: str) -> None:
    """Raise unless ``reduction`` is one of ``"mean"``, ``"sum"``, ``"none"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_chunk_size(chunk_size: int | None) -> None:
    """Raise unless ``chunk_size`` is None or a positive int."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def check_float(t: Tensor, name: str) -> None:
    """Raise unless ``t`` is a floating-point tensor."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_tokens_mask(
    tokens: Tensor,
    mask: Tensor | None,
    lead: tuple[int, ...],
    source: str,
    *,
    mask_values: bool = True,
) -> None:
    """Raise unless ``tokens`` (integer) and ``mask`` have shape ``lead`` (the leading dims of ``source``).

    ``mask`` must hold only 0 and 1 (bool, integer or float): a -1, a 2 or a NaN is refused
    naming its position rather than silently taken as "scored". That costs one host sync for a
    non-bool mask; ``mask_values=False`` skips it (shapes are still checked).
    """
    if not isinstance(tokens, Tensor):
        raise ValueError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
    if shape(tokens) != lead:
        raise ValueError(f"tokens must have shape {lead} to match {source}, got {shape(tokens)}")
    if mask is None:
        return
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if shape(mask) != lead:
        raise ValueError(
            f"mask must have the shape of tokens {shape(tokens)} (and {source}), got {shape(mask)}"
        )
    if mask.dtype == torch.bool or not mask_values:
        return
    if mask.is_complex():
        raise ValueError(
            f"mask must be a bool, integer or float tensor of 0 and 1, got {mask.dtype}"
        )
    # NaN != 0 and NaN != 1: a NaN is refused too, never taken as "scored".
    not_binary = (mask != 0) & (mask != 1)
    if bool(not_binary.any()):
        at = tuple(int(i) for i in not_binary.nonzero()[0])
        raise ValueError(
            f"mask must hold only 0 and 1 (1 = scored), got {mask[at].item()!r} at {at} "
            f"({int(not_binary.sum())} such entries)"
        )


def check_sequence_logits(logits: Tensor, tokens: Tensor, mask: Tensor) -> None:
    """Raise unless logits is ``[B, L, V]`` float with ``V >= 1`` and tokens, mask are ``[B, L]``."""
    check_float(logits, "logits")
    if logits.dim() != 3 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [B, L, V] with V >= 1, got {shape(logits)}")
    check_tokens_mask(tokens, mask, shape(logits)[:2], f"logits {shape(logits)}")


def inverse_temperatures(temperatures: Sequence[float] | Tensor) -> list[float]:
    """``[1 / T_1, ..., 1 / T_K]`` as Python floats, after checking every ``T_k`` is a temperature.

    That is, in ``metactl.temperature.TEMPERATURE_RANGE`` (``[0.01, 100]``), the one rule for
    every temperature metactl samples or scores at.
    """
    if isinstance(temperatures, Tensor):
        if temperatures.dim() != 1:
            raise ValueError(f"temperatures must be 1-D [K], got shape {shape(temperatures)}")
        values = [float(t) for t in temperatures.detach().cpu().double().tolist()]
    else:
        try:
            values = [float(t) for t in temperatures]
        except (TypeError, ValueError) as err:
            raise ValueError(f"temperatures must be a 1-D sequence of numbers: {err}") from None
    if not values:
        raise ValueError("temperatures must hold at least one temperature, got K = 0")
    bad = [t for t in values if not is_temperature(t)]
    if bad:
        raise ValueError(f"temperatures must lie {temperature_rule()}, got {bad} in {values}")
    return [1.0 / t for t in values]


def check_tokens_in_vocab(scored_tokens: Tensor, vocab_size: int) -> None:
    """Raise if a scored token id lies outside ``[0, vocab_size)`` (one host sync)."""
    if scored_tokens.numel() == 0:
        return
    low, high = int(scored_tokens.min()), int(scored_tokens.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"tokens at scored positions must lie in [0, {vocab_size}) (the vocabulary of the logits), "
            f"got ids in [{low}, {high}]; unscored (mask = 0) positions may hold any id, e.g. -100"
        )


def check_finite_rows(values: Tensor, explain: Callable[[int, list[int]], str]) -> None:
    """Raise if a row of ``values`` ``[N, K]`` is not finite, saying why (one host sync).

    Args:
        values: per-token log-probabilities of the scored tokens.
        explain: ``(row, columns) -> message``: why row ``row`` is not finite at the
            temperatures of ``columns`` (see :func:`why_not_finite`).
    """
    finite = torch.isfinite(values).all(dim=-1)
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0, 0])
    columns = [int(k) for k in (~torch.isfinite(values[first])).nonzero()[:, 0]]
    count = int((~finite).sum())
    raise ValueError(f"{explain(first, columns)} ({count} scored tokens affected)")


def why_not_finite(
    row: Tensor,
    token: int,
    at: tuple[int, ...],
    temperatures: Sequence[float],
    name: str = "logits",
) -> str:
    """Why ``log softmax(row / T)[token]`` is not finite in fp32 at ``temperatures``, for a message.

    The scores are computed in fp32 and are finite for every row of logits in their domain: no
    NaN or +inf, no -inf at the scored token (-inf elsewhere, a top-k mask, is fine), every value
    within fp32 (``|z| <= 3.4e38``, which matters for fp64 logits), and a log-probability
    ``-(max z - z_o) / T - log sum ...`` that fp32 can hold.

    Args:
        row: ``[V]`` the logits of one scored position, in their own dtype.
        token: the scored token id.
        at: the position, for the message.
        temperatures: the temperatures at which the score is not finite.
        name: what the row is, for the message (``"logits"``).
    """
    values = row.detach().double().cpu()
    where = f"scored position {at}"
    nan = values.isnan().nonzero()
    if nan.numel():
        return f"{name} hold NaN at {where} (vocabulary index {int(nan[0, 0])})"
    pos_inf = values.isposinf().nonzero()
    if pos_inf.numel():
        return f"{name} hold +inf at {where} (vocabulary index {int(pos_inf[0, 0])})"
    target = float(values[token])
    if target == -math.inf:
        return f"{name} hold -inf at the scored token {token} of {where}: its probability is 0"
    huge = (values.abs() > FP32_MAX) & values.isfinite()
    if huge.any():
        v = int(huge.nonzero()[0, 0])
        return (
            f"{name} hold {float(values[v])!r} at {where} (vocabulary index {v}), beyond the "
            f"fp32 range (|z| <= {FP32_MAX:.4g}) in which the scores are computed"
        )
    gap = float(values.max()) - target
    temperatures = [float(f"{t:.7g}") for t in temperatures]  # 1 / (1 / T) rounds
    return (
        f"{name} at {where} put the scored token {token} {gap:.4g} below the row's maximum, so "
        f"its log-probability at temperature(s) {temperatures} (about {-gap / min(temperatures):.4g}) "
        f"lies beyond fp32 (>= {-FP32_MAX:.4g}); rescale the logits"
    )
