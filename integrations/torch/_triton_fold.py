"""The Triton kernel: fold rows of logits into K online log-softmaxes, one pass for all K.

For a row of logits ``z`` (after the model's transform ``g``, see below) and ``K`` inverse
temperatures ``beta_k = 1 / T_k > 0``, the state of a row is its running maximum ``m``, ``K``
sums ``s_k`` and its target logit ``z_o``. A block of columns updates it as::

    m'  = max(m, max_v z_v)                         one maximum serves every k:
    s_k <- s_k 2^(c_k (m - m')) + sum_v 2^(c_k (z_v - m'))     max_v beta_k z_v = beta_k max_v z_v
    log softmax(beta_k z)[o] = beta_k (z_o - m) - log s_k,     c_k = log2(e) beta_k

so every logit is read once (any float dtype, upcast to fp32) and costs ``K`` exponentials,
the floor. The state lives in memory between calls, so a row can be folded in one call (the
whole vocabulary, :func:`~metactl.integrations.torch.temperature_loglik`) or tile by tile as a
fused LM head produces them (``temperature_loglik_from_hidden``'s cuBLAS tiles, TRL's tiles in
``metactl.integrations.trl``). ``g(z) = c tanh(s z / c)`` (softcap ``c``, logit scale ``s``)
or ``s z``: the order TRL's kernel uses; the round temperature TRL divides by afterwards is no
part of the virtual scores.

Layout, and why (no GPU was available to tune it, so these are reasoned choices):

- One program per scored row; rows are named by an index tensor of element offsets (or a
  row stride and an ``active`` flag per row), so unscored rows are never read and nothing is
  copied or gathered.
- Columns in blocks of :data:`BLOCK_V` = 4096 with :data:`NUM_WARPS` = 8 warps: 16 fp32
  values per thread per live vector (``z``, ``z - m'`` and one exponential at a time). Compiled
  for sm_90 by Triton 3.9 (K in {1, 10, 17}, with and without softcap), that is 40 to 80
  registers per thread and no spills, so several programs fit on an SM to hide the loads;
  the PTX holds exactly K ``ex2`` per logit (plus one for the softcap).
- The K temperatures are an unrolled ``tl.static_range(K)`` (``K`` is a constexpr, any value)
  over a ``[BLOCK_V]`` vector: exactly K exponentials per logit. Triton has no arrays of
  scalars, so the K sums are one ``[K_PAD]`` vector (next power of two) updated with
  ``tl.where`` per k; that costs ``K * K_PAD`` register operations per block, not per logit.
  Computing the exponentials on a ``[K_PAD, BLOCK_V]`` broadcast instead would waste
  ``K_PAD - K`` exponentials per logit (60% more at K = 10) and hold ``K_PAD x BLOCK_V``
  values in registers.
- ``exp2`` with ``log2(e)`` folded into ``c_k``, applied to ``z - m'`` (exact up to one
  rounding): multiplying first (``c_k z - c_k m'``) would lose the low digits at ``|z| ~ 1e4``.
- Its own running maximum rather than TRL's: TRL's is in units of ``z / T_round`` and rounded
  there, and keeping ours costs one comparison per logit next to ``3 K`` operations.
- ``tanh`` from ``exp2`` (not every Triton has ``tl.tanh``): ``(1 - e) / (1 + e)`` with
  ``e = 2^(-2 log2(e) |x|)`` never overflows; its absolute error is about one fp32 rounding,
  below the rounding of ``z - m'`` that follows.

Cost model (Hopper): the exponentials run on the special-function units, 16 per clock per
SM, about 4e12/s on an H100 or H200, so K = 10 over 8192 x 151936 logits takes about 3 ms;
reading them (2.5 GB of bf16) takes 0.5 ms, hidden behind the exponentials.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from metactl.integrations.torch._dispatch import interpreting
from metactl.integrations.torch._fp32 import scaled_gap

__all__ = ["BLOCK_V", "NUM_WARPS", "TritonFold"]

BLOCK_V = 4096
"""Columns per block of a program (a power of two)."""
NUM_WARPS = 8
"""Warps per program: ``BLOCK_V / (32 NUM_WARPS)`` = 16 values per thread."""


def _fold_rows(  # type: ignore[no-untyped-def]  # Triton reads the annotations
    z_ptr,
    row_offsets_ptr,
    row_stride,
    col_stride,
    active_ptr,
    tokens_ptr,
    betas_ptr,
    max_ptr,
    sums_ptr,
    target_ptr,
    vocab_start,
    n_cols,
    logit_scale,
    softcap,
    K: tl.constexpr,
    K_PAD: tl.constexpr,
    HAS_ROW_OFFSETS: tl.constexpr,
    ALIGNED_OFFSETS: tl.constexpr,
    HAS_ACTIVE: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    # Program p folds columns [0, n_cols) of its row (vocabulary ids vocab_start + v) into the
    # state of row p: max_ptr[p], sums_ptr[p, :K], target_ptr[p].
    p = tl.program_id(0).to(tl.int64)
    if HAS_ACTIVE:
        if tl.load(active_ptr + p) == 0:
            return
    if HAS_ROW_OFFSETS:
        offset = tl.load(row_offsets_ptr + p)
        if ALIGNED_OFFSETS:  # lets the compiler vectorise the loads, as for a row stride
            offset = tl.multiple_of(offset, 16)
        row_ptr = z_ptr + offset
    else:
        row_ptr = z_ptr + p * row_stride
    ks = tl.arange(0, K_PAD)
    # padded lanes get c = 1: finite factors on sums that stay 0 and are never stored
    # log2(e) as a literal: a jit function may only read globals that are constexprs
    c = tl.load(betas_ptr + ks, mask=ks < K, other=1.0) * 1.4426950408889634
    s = tl.load(sums_ptr + p * K + ks, mask=ks < K, other=0.0)
    m = tl.load(max_ptr + p)
    target = tl.load(target_ptr + p)
    local = tl.load(tokens_ptr + p) - vocab_start
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        inside = cols < n_cols
        z = tl.load(row_ptr + cols * col_stride, mask=inside, other=0.0).to(tl.float32)
        z = z * logit_scale
        if HAS_SOFTCAP:
            x = z / softcap
            e = tl.exp2(-2.8853900817779268 * tl.abs(x))  # exp(-2|x|)
            t = (1.0 - e) / (1.0 + e)
            z = softcap * tl.where(x < 0, -t, t)
        if (local >= start) & (local < start + BLOCK_V) & (local < n_cols):
            # the very value summed below, so that log p <= 0 holds to rounding
            target = tl.sum(tl.where(cols == local, z, 0.0), axis=0)
        z = tl.where(inside, z, -float("inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        # a block of -inf only (masked vocabulary) leaves m' = -inf: shift by 0 instead, since
        # -inf - (-inf) would be NaN; its terms are exp2(-inf) = 0 and s is still 0
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)
        s = s * tl.exp2(c * (m - shift))
        d = z - shift
        for k in tl.static_range(K):
            part = tl.sum(tl.exp2(d * (tl.load(betas_ptr + k) * 1.4426950408889634)), axis=0)
            s += tl.where(ks == k, part, 0.0)
        m = m_new
    tl.store(max_ptr + p, m)
    tl.store(sums_ptr + p * K + ks, s, mask=ks < K)
    tl.store(target_ptr + p, target)


@functools.cache
def _kernel(interpret: bool) -> Any:
    """``triton.jit(_fold_rows)``, one per interpreter mode.

    ``triton.jit`` reads ``TRITON_INTERPRET`` when it wraps a function, so the kernel is wrapped
    on first use for each mode (the argument is the cache key) rather than at import: tests can
    set the variable whatever was imported before.
    """
    del interpret
    return triton.jit(_fold_rows)


def _on_device(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Make ``device`` the current CUDA/XPU device for the duration of a launch."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    if device.type == "xpu":
        return torch.xpu.device(device)
    return contextlib.nullcontext()


class TritonFold:
    """K online log-softmaxes of ``P`` rows whose logits arrive in column tiles, by the kernel.

    ``log softmax(beta_k z)[o]`` for each row, from its state ``(m, s_1..s_K, z_o)``; each
    :meth:`fold` launches one kernel over the ``P`` rows::

        state = TritonFold(tokens, betas)                # [P] ids, [K] fp32 1/T_k, same device
        for v0 in range(0, V, cols):
            state.fold(tile, v0, cols, row_stride=tile.stride(0))   # [P, cols] logits
        logp = state.log_probs()                         # [P, K] fp32

    Args:
        tokens: ``[P]`` integer token ids (vocabulary ids; only rows folded are read).
        betas: ``[K]`` fp32 inverse temperatures, on the device of the logits.
    """

    def __init__(self, tokens: Tensor, betas: Tensor) -> None:
        rows, device = tokens.shape[0], tokens.device
        self.tokens = tokens.contiguous()
        self.betas = betas.to(device=device, dtype=torch.float32).contiguous()
        self.max = torch.full((rows,), -torch.inf, dtype=torch.float32, device=device)
        self.sums = torch.zeros(rows, self.betas.shape[0], dtype=torch.float32, device=device)
        self.target = torch.zeros(rows, dtype=torch.float32, device=device)

    def fold(
        self,
        z: Tensor,
        vocab_start: int,
        n_cols: int,
        *,
        row_offsets: Tensor | None = None,
        aligned_offsets: bool = False,
        row_stride: int = 0,
        col_stride: int = 1,
        active: Tensor | None = None,
        logit_scale: float = 1.0,
        softcap: float | None = None,
    ) -> None:
        """Fold columns ``vocab_start .. vocab_start + n_cols`` of each row (``z`` not modified).

        Row ``p`` starts at element ``row_offsets[p]`` of ``z`` if given, else at
        ``p * row_stride``; its column ``v`` is at ``+ v * col_stride``.

        Args:
            z: the logits (any float dtype); only the rows' columns are read.
            vocab_start: vocabulary id of column 0.
            n_cols: columns to fold.
            row_offsets: ``[P]`` int64 element offsets of the rows in ``z``, or None.
            aligned_offsets: every offset is a multiple of 16 (the kernel may then load a row
                in 16-byte vectors, as it does with a row stride that is).
            row_stride: elements between rows (without ``row_offsets``).
            col_stride: elements between columns.
            active: ``[P]`` flags (bool or int8); rows with 0 are skipped (their state is
                left as it is), or None for all rows.
            logit_scale: ``s`` of the transform ``g(z) = c tanh(s z / c)`` (or ``s z``).
            softcap: ``c``, or None for no softcap.
        """
        rows, k = self.max.shape[0], self.betas.shape[0]
        if rows == 0 or n_cols == 0:
            return
        # offsets inside a row are int32 in the kernel (as in TRL's)
        if (n_cols - 1) * abs(col_stride) >= 2**31:
            raise ValueError(
                f"a row spans {(n_cols - 1) * abs(col_stride)} elements (stride {col_stride}); "
                "the Triton kernel needs rows under 2**31 elements: make the logits contiguous "
                "in the vocabulary"
            )
        # Triton launches on the current device: make it the tensors' one
        with _on_device(z.device):
            _kernel(interpreting())[(rows,)](
                z,
                z if row_offsets is None else row_offsets,
                row_stride,
                col_stride,
                self.max if active is None else active,
                self.tokens,
                self.betas,
                self.max,
                self.sums,
                self.target,
                vocab_start,
                n_cols,
                float(logit_scale),
                1.0 if softcap is None else float(softcap),
                K=k,
                K_PAD=triton.next_power_of_2(k),
                HAS_ROW_OFFSETS=row_offsets is not None,
                ALIGNED_OFFSETS=aligned_offsets,
                HAS_ACTIVE=active is not None,
                HAS_SOFTCAP=softcap is not None,
                BLOCK_V=BLOCK_V,
                num_warps=NUM_WARPS,
            )

    def log_probs(self) -> Tensor:
        """``[P, K]`` fp32: ``beta_k (z_o - m) - log s_k`` from the columns folded so far."""
        return scaled_gap(self.target, self.max, self.betas) - self.sums.log()
