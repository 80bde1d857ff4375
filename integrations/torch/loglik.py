"""Virtual-temperature log-likelihoods: every scored token at K temperatures, one read of its logits.

For a token ``o`` with logits ``z`` (a row of ``V`` numbers) and a temperature ``T``::

    log softmax(z / T)[o] = z_o / T - logsumexp(z / T)
                          = (z_o - m) / T - log sum_v exp((z_v - m) / T),    m = max_v z_v

The shift ``m`` is computed once per row and serves every temperature, so a chunk of rows
is read from memory (and upcast to fp32) once for all ``K`` temperatures. Extra memory is a
few buffers of ``chunk_size x V`` fp32 numbers, whatever ``K`` is; nothing of shape
``[K, B, L, V]`` (or even ``[B, L, V]``) is ever allocated.

That is the torch implementation, tuned for CPU caches. On CUDA and XPU devices the ops run a
Triton kernel instead (``implementation="auto"``; see :mod:`._dispatch` and
:mod:`._triton_fold`): one program per scored row folds the row, or a tile of it, into the
running maximum and the K sums in one pass, K exponentials per logit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from metactl.integrations.torch._checks import (
    check_chunk_size,
    check_finite_rows,
    check_float,
    check_reduction,
    check_sequence_logits,
    check_tokens_in_vocab,
    check_tokens_mask,
    inverse_temperatures,
    shape,
    why_not_finite,
)
from metactl.integrations.torch._dispatch import Implementation, resolve_implementation
from metactl.integrations.torch._fp32 import scaled_gap

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "chunk_temperature_loglik",
    "default_chunk_size",
    "hidden_rows_loglik",
    "temperature_loglik",
    "temperature_loglik_from_hidden",
]

DEFAULT_CHUNK_BYTES = 2 * 2**20
"""Default size of one fp32 chunk of rows (``chunk_size * V * 4`` bytes): 2 MiB, so that the
K passes over a chunk read it from cache rather than memory."""

Temperatures = Sequence[float] | Tensor


def default_chunk_size(
    vocab_size: int, n_rows: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> int:
    """Rows per chunk: one fp32 chunk ``[chunk_size, V]`` takes at most ``chunk_bytes``.

    With ``n_rows`` (the rows to score) the chunk is also at most ``ceil(n_rows / 32)`` rows, so
    that the few chunk buffers stay a small fraction of the logits (under 1/6 of them even for
    bf16 logits: about 10 bytes of buffers per 2 bytes of a logit row, over 32 rows).

    Args:
        vocab_size: ``V``, the length of a row of logits.
        n_rows: number of rows to score, or None.
        chunk_bytes: size bound of one fp32 chunk buffer (default 2 MiB).

    Returns:
        ``max(1, min(chunk_bytes // (4 V), ceil(n_rows / 32)))``: e.g. 16 rows for
        ``V = 32000`` and 3 for ``V = 151936``.
    """
    rows = chunk_bytes // (4 * max(1, vocab_size))
    if n_rows is not None:
        rows = min(rows, -(-n_rows // 32))
    return max(1, rows)


def _workspace(rows: int, vocab: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Two fp32 ``[rows, V]`` buffers, allocated once per call and reused by every chunk.

    Reusing them keeps the extra memory at exactly a chunk's worth, instead of leaving it to the
    allocator to recycle a fresh pair per chunk.
    """
    return (
        torch.empty(rows, vocab, dtype=torch.float32, device=device),
        torch.empty(rows, vocab, dtype=torch.float32, device=device),
    )


def _rows_logp(
    logits: Tensor,
    tokens: Tensor,
    betas: Sequence[float],
    workspace: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """``log softmax(beta_k z)[o] = beta_k (z_o - m) - log sum_v exp(beta_k (z_v - m))`` per row.

    Args:
        logits: ``[c, V]`` rows of logits, any float dtype (upcast to fp32, never modified).
        tokens: ``[c]`` valid token ids.
        betas: ``K`` inverse temperatures ``1 / T_k``.
        workspace: two fp32 buffers of at least ``[c, V]`` (see :func:`_workspace`), or None.

    Returns:
        ``[c, K]`` fp32 log-probabilities.
    """
    rows = logits.shape[0]
    d, buf = _workspace(rows, logits.shape[1], logits.device) if workspace is None else workspace
    d, buf = d[:rows], buf[:rows]
    m = logits.amax(dim=-1, keepdim=True).float()  # exact in any dtype
    # z - m <= 0 in fp32; -inf where the row spans more than fp32 holds, a term exp(-inf) = 0
    # that is exactly 0 at any beta >= 0.01 anyway
    torch.sub(logits, m, out=d)
    log_norm = torch.empty(rows, len(betas), dtype=d.dtype, device=d.device)
    for k, beta in enumerate(betas):
        torch.mul(d, beta, out=buf).exp_()
        torch.sum(buf, dim=-1, out=log_norm[:, k])
    log_norm.log_()
    beta_row = torch.tensor(betas, dtype=d.dtype, device=d.device)
    z_o = logits.gather(-1, tokens[:, None])[:, 0].float()
    return scaled_gap(z_o, m[:, 0], beta_row) - log_norm


def _map_chunks(
    n: int, chunk_size: int, k: int, rows_logp: Callable[[int, int], Tensor], device: torch.device
) -> Tensor:
    """``[n, K]`` fp32: ``rows_logp(i, j)`` (the ``[j - i, K]`` log-probs of rows i..j) over chunks."""
    out = torch.empty(n, k, dtype=torch.float32, device=device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        out[start:stop] = rows_logp(start, stop)
    return out


def _scored_positions(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(b, t)`` index tensors of the scored (non-zero) entries of a ``[B, L]`` mask."""
    b, t = (mask != 0).nonzero(as_tuple=True)
    return b, t


def _reduce(
    per_token: Tensor, b: Tensor, t: Tensor, batch: int, length: int, reduction: str
) -> Tensor:
    """Scatter ``[N, K]`` per-token values to ``[B, L, K]`` or reduce them per row to ``[B, K]``.

    Unscored positions hold 0 (``"none"``); rows without a scored token give 0 (``"mean"``, ``"sum"``).
    """
    k = per_token.shape[-1]
    if reduction == "none":
        out = per_token.new_zeros(batch, length, k)
        out[b, t] = per_token
        return out
    total = per_token.new_zeros(batch, k).index_add_(0, b, per_token)
    if reduction == "sum":
        return total
    count = torch.bincount(b, minlength=batch).clamp_(min=1).to(per_token.dtype)
    return total / count[:, None]


@torch.no_grad()
def chunk_temperature_loglik(
    logits: Tensor,
    tokens: Tensor,
    temperatures: Temperatures,
    *,
    mask: Tensor | None = None,
    validate: bool = True,
    implementation: Implementation = "auto",
) -> Tensor:
    """Per-token log-probabilities of one chunk of rows at K temperatures (the building block).

    ``out[..., k] = log softmax(logits / T_k)[..., tokens]``, computed in fp32 with the row maximum
    taken once for every temperature. Made to be called inside another chunk loop (e.g. a fused
    LM head that produces each chunk of logits once): the caller owns the chunking, this
    function only adds two fp32 buffers the size of ``logits``.

    Example, inside a loop producing ``logits_chunk`` ``[c, V]`` for ``labels`` ``[c]``::

        scored = labels != -100
        logp = chunk_temperature_loglik(logits_chunk, labels, temps, mask=scored)  # [c, K]

    Args:
        logits: ``[..., V]`` logits (fp32, bf16, fp16, fp64); not modified.
        tokens: ``[...]`` integer token ids (the leading shape of ``logits``).
        temperatures: ``K`` temperatures (sequence or 1-D tensor), each in ``[0.01, 100]``.
        mask: optional ``[...]`` mask of 0 and 1, 1 = scored. Unscored positions give 0 and their ids
            (e.g. -100) and logits are ignored. None scores every position.
        validate: check that ``mask`` holds only 0 and 1, that scored ids lie in ``[0, V)`` and
            that every scored log-probability is finite (saying why not). Costs host-device
            syncs; pass False to check the final result yourself (a non-zero mask entry then
            counts as scored).
        implementation: ``"auto"`` (Triton on CUDA/XPU, torch elsewhere), ``"torch"`` or
            ``"triton"`` (see :func:`temperature_loglik`).

    Returns:
        ``[..., K]`` fp32 log-probabilities, detached (no gradient flows into ``logits``).

    Raises:
        ValueError: bad shapes or dtypes, bad temperatures, or (with ``validate``) scored ids
            outside the vocabulary or non-finite scored log-probabilities; a bad
            ``implementation``.
        ImportError: Triton is needed but not installed.
    """
    check_float(logits, "logits")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [..., V] with V >= 1, got {shape(logits)}")
    lead = shape(logits)[:-1]
    check_tokens_mask(tokens, mask, lead, f"logits {shape(logits)}", mask_values=validate)
    betas = inverse_temperatures(temperatures)
    vocab = logits.shape[-1]
    rows = logits.reshape(-1, vocab)
    ids = tokens.reshape(-1)
    scored = None if mask is None else mask.reshape(-1) != 0
    if scored is not None:
        ids = torch.where(scored, ids, torch.zeros_like(ids))
    if validate:
        check_tokens_in_vocab(ids, vocab)
    if resolve_implementation(implementation, logits.device) == "triton":
        out = _triton_rows_logp(rows, ids.long(), betas, scored)
    else:
        out = _rows_logp(rows, ids.long(), betas)
    if scored is not None:
        out = torch.where(scored[:, None], out, torch.zeros_like(out))
    if validate:

        def explain(i: int, columns: list[int]) -> str:
            at = tuple(int(x) for x in torch.unravel_index(torch.tensor(i), lead)) if lead else ()
            return why_not_finite(rows[i], int(ids[i]), at, [1 / betas[k] for k in columns])

        check_finite_rows(out, explain=explain)
    return out.reshape(*lead, len(betas))


@torch.no_grad()
def temperature_loglik(
    logits: Tensor,
    tokens: Tensor,
    mask: Tensor,
    temperatures: Temperatures,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
    implementation: Implementation = "auto",
) -> Tensor:
    """Log-likelihood of each rollout at K virtual temperatures (TAMPO's ``l_k(i)``).

    ``l_k(b) = (1 / |tau_b|) sum_{t: mask[b, t]} log softmax(logits[b, t] / T_k)[tokens[b, t]]``

    Only scored tokens are touched. The torch implementation gathers their rows a chunk at a
    time, each chunk upcast to fp32 and read once for all K temperatures (see
    :func:`chunk_temperature_loglik`); the Triton one reads each scored row where it lies, in
    one kernel launch (one program per row, the whole vocabulary swept inside it).

    Args:
        logits: ``[B, L, V]`` logits, any float dtype; computation is in fp32.
        tokens: ``[B, L]`` integer ids; position ``t`` is scored under ``logits[:, t]``
            (shift them yourself for causal LMs).
        mask: ``[B, L]`` of 0 and 1, 1 = scored (bool, int or float; anything else, a -1 or a
            NaN, is refused). Unscored positions may hold any id (e.g. -100) and any logits
            (even NaN): they are never read.
        temperatures: ``K`` temperatures (sequence or 1-D tensor), each in
            ``metactl.temperature.TEMPERATURE_RANGE`` (``[0.01, 100]``).
        reduction: ``"mean"`` (``[B, K]``, the mean over scored tokens), ``"sum"`` (``[B, K]``)
            or ``"none"`` (``[B, L, K]`` per token, 0 at unscored positions).
        chunk_size: scored tokens per chunk; default :func:`default_chunk_size` (2 MiB fp32).
            The Triton implementation has no chunks and ignores it.
        implementation: ``"auto"`` (default: Triton for CUDA/XPU tensors, torch otherwise),
            ``"torch"`` or ``"triton"`` (CUDA/XPU tensors, or CPU tensors under
            ``TRITON_INTERPRET=1``). Both give the same numbers to fp32 rounding.

    Returns:
        fp32 tensor on the device of ``logits``, detached. A row with no scored token gives 0
        for every temperature (``"mean"`` and ``"sum"``).

    Raises:
        ValueError: wrong ranks or shapes, a mask that is not 0/1, temperatures outside
            ``[0.01, 100]``, scored token ids outside ``[0, V)``, logits of a scored row outside
            the domain (NaN or +inf in the row, -inf at the scored token, fp64 values beyond
            fp32), a log-probability below the fp32 range (the scored logit more than
            ``3.4e38 T`` below its row's maximum; the message says which), or a bad
            ``implementation`` (also ``"triton"`` for a CPU tensor outside Triton's
            interpreter). Every finite fp32 (bf16, fp16) row is scored exactly otherwise, even
            one spanning more than fp32 holds (``3e38`` and ``-3e38``).
        ImportError: Triton is needed (``"triton"``, or ``"auto"`` on a GPU) but not installed.
    """
    check_sequence_logits(logits, tokens, mask)
    check_reduction(reduction)
    check_chunk_size(chunk_size)
    betas = inverse_temperatures(temperatures)
    impl = resolve_implementation(implementation, logits.device)
    batch, length, vocab = logits.shape
    b, t = _scored_positions(mask)
    ids = tokens[b, t].long()
    check_tokens_in_vocab(ids, vocab)

    def explain(i: int, columns: list[int]) -> str:
        row = logits[b[i], t[i]]
        return why_not_finite(
            row, int(ids[i]), (int(b[i]), int(t[i])), [1 / betas[k] for k in columns]
        )

    if impl == "triton":
        per_token = _triton_scored_logp(logits, b, t, ids, betas)
        check_finite_rows(per_token, explain=explain)
        return _reduce(per_token, b, t, batch, length, reduction)
    size = chunk_size or default_chunk_size(vocab, ids.numel())

    work = _workspace(min(size, ids.numel()), vocab, logits.device)

    def rows_logp(i: int, j: int) -> Tensor:
        return _rows_logp(logits[b[i:j], t[i:j]], ids[i:j], betas, work)

    per_token = _map_chunks(ids.numel(), size, len(betas), rows_logp, logits.device)
    check_finite_rows(per_token, explain=explain)
    return _reduce(per_token, b, t, batch, length, reduction)


@torch.no_grad()
def temperature_loglik_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    mask: Tensor,
    temperatures: Temperatures,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
    implementation: Implementation = "auto",
) -> Tensor:
    """:func:`temperature_loglik` of ``logits = hidden @ weight.T + bias``, never holding all logits.

    The scored rows are projected in the dtype of ``hidden``/``weight`` (as the LM head would),
    a block of rows at a time, sweeping the vocabulary in tiles with an online logsumexp (see
    :func:`hidden_rows_loglik`): the LM head weight is read once per block, and extra memory is a
    tile, whatever K is.

    Args:
        hidden: ``[B, L, H]`` final hidden states (float).
        weight: ``[V, H]`` LM head weight (same dtype and device as ``hidden``).
        bias: ``[V]`` LM head bias, or None.
        tokens: ``[B, L]`` integer ids, as in :func:`temperature_loglik`.
        mask: ``[B, L]`` of 0 and 1, 1 = scored.
        temperatures: ``K`` temperatures, each in ``[0.01, 100]``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as in :func:`temperature_loglik`.
        chunk_size: scored rows per block; default :data:`TOKEN_CHUNK` (4096).
        implementation: ``"auto"``, ``"torch"`` or ``"triton"``, as in
            :func:`temperature_loglik`. With Triton each vocabulary tile is projected by cuBLAS
            and folded by the kernel (see :func:`hidden_rows_loglik`).

    Returns:
        Same as :func:`temperature_loglik` on the projected logits.

    Raises:
        ValueError: as :func:`temperature_loglik`, plus mismatched ``hidden``/``weight``/``bias``
            shapes or dtypes.
        ImportError: Triton is needed but not installed.
    """
    _check_head(hidden, weight, bias)
    check_tokens_mask(tokens, mask, shape(hidden)[:2], f"hidden {shape(hidden)}")
    check_reduction(reduction)
    check_chunk_size(chunk_size)
    betas = inverse_temperatures(temperatures)  # validate before any work
    resolve_implementation(implementation, hidden.device)
    batch, length, _ = hidden.shape
    vocab = weight.shape[0]
    b, t = _scored_positions(mask)
    ids = tokens[b, t].long()
    check_tokens_in_vocab(ids, vocab)
    per_token = hidden_rows_loglik(
        hidden[b, t],
        weight,
        bias,
        ids,
        temperatures,
        token_chunk=chunk_size,
        implementation=implementation,
    )

    def explain(i: int, columns: list[int]) -> str:
        # the one row of logits, projected as the LM head would (for the message only)
        h = hidden[b[i], t[i]][None]
        row = F.linear(h, weight, bias)[0]
        return why_not_finite(
            row,
            int(ids[i]),
            (int(b[i]), int(t[i])),
            [1 / betas[k] for k in columns],
            name="the logits hidden @ weight.T + bias",
        )

    check_finite_rows(per_token, explain=explain)
    return _reduce(per_token, b, t, batch, length, reduction)


TOKEN_CHUNK = 4096
"""Default rows of hidden states per block of :func:`hidden_rows_loglik` (the LM head weight is
read once per block)."""
TILE_BYTES = 8 * 2**20
"""Default size of one fp32 ``[rows, vocab tile]`` tile of :func:`hidden_rows_loglik`: 8 MiB."""
TRITON_TILE_COLS = 32768
"""Default vocabulary columns per tile of :func:`hidden_rows_loglik` with Triton: TRL's tile
(4096 x 32768 in the projection's dtype), few enough launches for the GPU to stay busy."""


@torch.no_grad()
def hidden_rows_loglik(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    temperatures: Temperatures,
    *,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    compute_dtype: torch.dtype | None = None,
    token_chunk: int | None = None,
    vocab_chunk: int | None = None,
    implementation: Implementation = "auto",
) -> Tensor:
    """Per-token ``log softmax(z / T_k)[o]`` for rows of hidden states, tiled over the vocabulary.

    ``z = g(logit_scale * (hidden @ weight.T + bias))`` with ``g`` the identity or the softcap
    ``c tanh(z / c)``. Rows are taken ``token_chunk`` at a time; for each block the vocabulary is
    swept in tiles with an online logsumexp that one running maximum serves for all K
    temperatures (``beta_k > 0``)::

        m' = max(m, max_v z_v),  s_k <- s_k exp(beta_k (m - m')) + sum_v exp(beta_k (z_v - m'))
        log p_k = beta_k (z_o - m) - log s_k

    so the LM head weight is read once per block of rows, as in TRL's fused LM head, instead of
    once per small chunk of rows. With Triton, each tile is projected by cuBLAS into one
    reused buffer in the projection's dtype and folded by the kernel (one launch per tile).

    Args:
        hidden: ``[N, H]`` hidden states (float).
        weight: ``[V, H]`` LM head weight; bias: ``[V]`` or None.
        tokens: ``[N]`` valid token ids in ``[0, V)`` (not checked here).
        temperatures: ``K`` temperatures, each in ``[0.01, 100]``.
        logit_scale, softcap: the model's logit transform (1 and None for a plain LM head).
        compute_dtype: dtype of the projection (default: that of ``hidden``); scores are fp32.
        token_chunk: rows per block (default :data:`TOKEN_CHUNK`).
        vocab_chunk: vocabulary columns per tile (default: a tile of :data:`TILE_BYTES` fp32;
            with Triton :data:`TRITON_TILE_COLS`).
        implementation: ``"auto"``, ``"torch"`` or ``"triton"``, as in
            :func:`temperature_loglik`.

    Returns:
        ``[N, K]`` fp32, detached.
    """
    betas = inverse_temperatures(temperatures)
    n, vocab = hidden.shape[0], weight.shape[0]
    dtype = hidden.dtype if compute_dtype is None else compute_dtype
    if resolve_implementation(implementation, hidden.device) == "triton":
        return _triton_hidden_rows_logp(
            hidden,
            weight,
            bias,
            tokens,
            betas,
            logit_scale,
            softcap,
            dtype,
            token_chunk,
            vocab_chunk,
        )
    out = torch.empty(n, len(betas), dtype=torch.float32, device=hidden.device)
    rows_per_block = min(token_chunk or TOKEN_CHUNK, max(n, 1))
    cols = vocab_chunk or max(1, TILE_BYTES // (4 * rows_per_block))
    w = weight.to(dtype)
    b = None if bias is None else bias.to(dtype)
    for start in range(0, n, rows_per_block):
        h = hidden[start : start + rows_per_block].to(dtype)
        acc = OnlineTemperatureLogSoftmax(tokens[start : start + rows_per_block], betas)
        for v0 in range(0, vocab, cols):
            v1 = min(v0 + cols, vocab)
            z = F.linear(h, w[v0:v1], None if b is None else b[v0:v1]).float()
            acc.fold(logit_transform_(z, logit_scale, softcap), v0)
        out[start : start + h.shape[0]] = acc.log_probs()
    return out


def _triton_scored_logp(
    logits: Tensor, b: Tensor, t: Tensor, ids: Tensor, betas: Sequence[float]
) -> Tensor:
    """``[N, K]`` log-probs of the scored rows ``logits[b, t]``, read in place by one launch.

    Row ``i`` starts at element ``b_i s_0 + t_i s_1`` of ``logits`` (strides ``s``): nothing is
    gathered or copied, whatever the layout of ``logits``.
    """
    from metactl.integrations.torch._triton_fold import TritonFold

    s0, s1, s2 = logits.stride()
    state = TritonFold(ids, torch.tensor(betas, dtype=torch.float32, device=logits.device))
    state.fold(
        logits,
        0,
        logits.shape[-1],
        row_offsets=b * s0 + t * s1,
        aligned_offsets=s0 % 16 == 0 and s1 % 16 == 0,
        col_stride=s2,
    )
    logp: Tensor = state.log_probs()
    return logp


def _triton_rows_logp(
    rows: Tensor, ids: Tensor, betas: Sequence[float], scored: Tensor | None
) -> Tensor:
    """``[N, K]`` log-probs of every row of ``rows`` ``[N, V]`` whose ``scored`` flag is set.

    Unscored rows are skipped by the kernel (their values are garbage, masked by the caller).
    """
    from metactl.integrations.torch._triton_fold import TritonFold

    state = TritonFold(ids, torch.tensor(betas, dtype=torch.float32, device=rows.device))
    state.fold(
        rows,
        0,
        rows.shape[-1],
        row_stride=rows.stride(0),
        col_stride=rows.stride(1),
        active=None if scored is None else scored.to(torch.int8),
    )
    logp: Tensor = state.log_probs()
    return logp


def _triton_hidden_rows_logp(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    betas: Sequence[float],
    logit_scale: float,
    softcap: float | None,
    dtype: torch.dtype,
    token_chunk: int | None,
    vocab_chunk: int | None,
) -> Tensor:
    """:func:`hidden_rows_loglik` with cuBLAS tiles folded by the Triton kernel.

    As in TRL's fused LM head: a block of rows at a time, each ``[rows, cols]`` vocabulary tile
    projected into one reused buffer in ``dtype`` (``addmm`` with the bias: the logits are
    rounded once, as ``F.linear`` rounds them), then folded into the rows' state.
    """
    from metactl.integrations.torch._triton_fold import TritonFold

    n, vocab = hidden.shape[0], weight.shape[0]
    out = torch.empty(n, len(betas), dtype=torch.float32, device=hidden.device)
    rows_per_block = min(token_chunk or TOKEN_CHUNK, max(n, 1))
    cols = min(vocab_chunk or TRITON_TILE_COLS, vocab)
    buf = torch.empty(rows_per_block * cols, dtype=dtype, device=hidden.device)
    beta_row = torch.tensor(betas, dtype=torch.float32, device=hidden.device)
    w = weight.to(dtype)
    b = None if bias is None else bias.to(dtype)
    for start in range(0, n, rows_per_block):
        h = hidden[start : start + rows_per_block].to(dtype)
        state = TritonFold(tokens[start : start + rows_per_block], beta_row)
        for v0 in range(0, vocab, cols):
            v1 = min(v0 + cols, vocab)
            tile = buf[: h.shape[0] * (v1 - v0)].view(h.shape[0], v1 - v0)
            if b is None:
                torch.mm(h, w[v0:v1].t(), out=tile)
            else:
                torch.addmm(b[v0:v1], h, w[v0:v1].t(), out=tile)
            state.fold(
                tile, v0, v1 - v0, row_stride=v1 - v0, logit_scale=logit_scale, softcap=softcap
            )
        out[start : start + h.shape[0]] = state.log_probs()
    return out


def logit_transform_(z: Tensor, logit_scale: float, softcap: float | None) -> Tensor:
    """``z <- g(logit_scale * z)`` in place, ``g`` the identity or the softcap ``c tanh(z / c)``."""
    if logit_scale != 1.0:
        z.mul_(logit_scale)
    if softcap is not None:
        z.div_(softcap).tanh_().mul_(softcap)
    return z


class OnlineTemperatureLogSoftmax:
    """``log softmax(z / T_k)[o]`` of a block of rows whose logits arrive in vocabulary tiles.

    One running maximum serves every temperature (``beta_k = 1 / T_k > 0``)::

        m' = max(m, max_v z_v),  s_k <- s_k exp(beta_k (m - m')) + sum_v exp(beta_k (z_v - m'))
        log p_k = beta_k (z_o - m) - log s_k

    so each tile is read once for all K temperatures, by whoever produces it: the loop of
    :func:`hidden_rows_loglik`, or a fused LM head that already projects the tiles (the TRL
    integration folds TRL's own tiles)::

        acc = OnlineTemperatureLogSoftmax(tokens, [0.6, 1.0, 1.4])
        for v0 in range(0, V, cols):
            acc.fold(logits_tile_fp32, v0)     # [rows, cols] logits of columns v0..v0+cols
        logp = acc.log_probs()                 # [rows, K]

    Args:
        tokens: ``[rows]`` token ids, each in ``[0, V)``.
        betas: the ``K`` inverse temperatures.
    """

    def __init__(self, tokens: Tensor, betas: Sequence[float]) -> None:
        rows, device = tokens.shape[0], tokens.device
        self.tokens = tokens.long()
        self.betas = list(betas)
        self._beta_row = torch.tensor(self.betas, dtype=torch.float32, device=device)
        self.max = torch.full((rows,), -torch.inf, dtype=torch.float32, device=device)
        self.sums = torch.zeros(rows, len(self.betas), dtype=torch.float32, device=device)
        self.target = torch.zeros(rows, dtype=torch.float32, device=device)
        self._buf = torch.empty(0, dtype=torch.float32, device=device)

    def fold(self, z: Tensor, vocab_start: int, rows: slice = slice(None)) -> None:
        """Fold the fp32 logits ``z`` ``[r, c]`` of columns ``vocab_start..vocab_start + c``.

        ``z`` is overwritten (it is the caller's scratch). ``rows`` selects the block's rows that
        ``z`` holds (all of them by default), so a tile can be folded a few rows at a time.
        """
        cols = z.shape[1]
        o = self.tokens[rows]
        m, sums = self.max[rows], self.sums[rows]
        in_tile = (o >= vocab_start) & (o < vocab_start + cols)
        picked = z.gather(1, (o - vocab_start).clamp(0, cols - 1)[:, None])[:, 0]
        self.target[rows] = torch.where(in_tile, picked, self.target[rows])
        m_new = torch.maximum(m, z.amax(dim=1))
        # a row masked to -inf so far leaves m' = -inf: shift it by 0 instead, since
        # -inf - (-inf) would be NaN (its terms are exp(-inf) = 0 and its sums stay 0)
        shift = torch.where(m_new == -torch.inf, 0.0, m_new)
        sums.mul_(torch.exp((m - shift)[:, None] * self._beta_row))  # exp(-inf) = 0 at first
        z.sub_(shift[:, None])
        if self._buf.numel() < z.numel():
            self._buf = torch.empty(z.numel(), dtype=torch.float32, device=z.device)
        tile = self._buf[: z.numel()].view_as(z)
        for k, beta in enumerate(self.betas):
            sums[:, k] += torch.mul(z, beta, out=tile).exp_().sum(dim=1)
        m.copy_(m_new)

    def log_probs(self) -> Tensor:
        """``[rows, K]`` fp32 log-probabilities of the tokens from the tiles folded so far."""
        return scaled_gap(self.target, self.max, self._beta_row) - self.sums.log()


def _check_head(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """Raise unless hidden ``[B, L, H]``, weight ``[V, H]``, bias ``[V]`` agree in shape and dtype."""
    check_float(hidden, "hidden")
    check_float(weight, "weight")
    if hidden.dim() != 3:
        raise ValueError(f"hidden must have shape [B, L, H], got {shape(hidden)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[2] or weight.shape[0] < 1:
        raise ValueError(
            f"weight must have shape [V, H] with H = {hidden.shape[2]} (from hidden "
            f"{shape(hidden)}), got {shape(weight)}"
        )
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight dtype {weight.dtype} must match hidden dtype {hidden.dtype}")
    if bias is None:
        return
    check_float(bias, "bias")
    if shape(bias) != (weight.shape[0],):
        raise ValueError(f"bias must have shape [V] = ({weight.shape[0]},), got {shape(bias)}")
    if bias.dtype != weight.dtype:
        raise ValueError(f"bias dtype {bias.dtype} must match weight dtype {weight.dtype}")
