"""The LM-head side of MetaGRPOTrainer: a temperature that follows the round, and virtual scores.

TRL 1.16 computes every log-probability (policy, old, reference) with a fused, chunked LM head
built once by ``trl.trainer.utils.add_fused_lm_head(model, temperature=...)``, which captures the
temperature in a closure. :class:`RoundTemperature` is passed there instead of a float: the
kernel reads it as ``1 / temperature`` on every call, so setting ``RoundTemperature.value`` at a
generation boundary moves every later log-prob to the new temperature::

    temp = RoundTemperature(1.0)
    refit_fused_head(model, temp, cast_lm_head_to_fp32=False, outputs=("log_probs", "entropy"))
    temp.value = 0.8                          # every fused forward from now on runs at T = 0.8

:class:`VirtualScoreTap` scores the completions at the controller's virtual temperatures inside
the loss forwards TRL already makes: while it is armed, every logits tile that TRL's kernel
projects for its own log-probs is also folded into K online log-softmaxes (:class:`TileFold`),
so each tile of logits is computed once, and there is no extra model forward nor LM-head pass.
On CUDA/XPU the fold is a Triton kernel launched right after TRL's own on the same tile (same
stream); on CPU it is chunked torch code (``implementation="auto"``; ``"torch"`` or
``"triton"`` force one, see :mod:`metactl.integrations.torch._dispatch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from trl.kernels import ChunkedLogProbFunction, chunked_logprob
from trl.trainer.utils import add_fused_lm_head

from metactl.integrations.torch import DEFAULT_CHUNK_BYTES
from metactl.integrations.torch._dispatch import (
    IMPLEMENTATIONS,
    Implementation,
    resolve_implementation,
)
from metactl.integrations.torch.loglik import OnlineTemperatureLogSoftmax, logit_transform_

if TYPE_CHECKING:
    from metactl.integrations.torch._triton_fold import TritonFold

UNSUPPORTED = "MetaGRPOTrainer supports trl>=1.16,<1.17"


class RoundTemperature:
    """The sampling temperature of the current generation round, shared by reference.

    TRL's fused LM head divides the logits by ``temperature`` through ``1 / temperature`` at each
    call; this object answers that division with its current ``value``.
    """

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def __rtruediv__(self, other: float) -> float:
        return other / self.value

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"RoundTemperature({self.value})"


def refit_fused_head(
    model: Any,
    temperature: RoundTemperature,
    *,
    cast_lm_head_to_fp32: bool,
    outputs: tuple[str, ...],
) -> None:
    """Replace the fused LM head TRL installed on ``model`` by one that reads ``temperature``.

    Must run before accelerate wraps ``model.forward`` (i.e. in the trainer's ``__init__``).

    Raises:
        RuntimeError: ``model`` does not carry TRL's fused head (an unsupported TRL version).
    """
    if "forward" not in vars(model):
        raise RuntimeError(
            f"{type(model).__name__} has no fused LM head installed by TRL's add_fused_lm_head; "
            + UNSUPPORTED
        )
    del model.forward  # back to the class's forward, then let TRL patch it again
    add_fused_lm_head(
        model,
        temperature=temperature,  # TRL only computes 1 / temperature
        cast_lm_head_to_fp32=cast_lm_head_to_fp32,
        outputs=outputs,
    )


def check_kernel(device: torch.device, *, implementation: Implementation = "auto") -> None:
    """Probe TRL's chunked log-prob kernel on ``device`` before training relies on it.

    The kernel must read a :class:`RoundTemperature` at call time (two values are tried), and a
    :class:`TileFold` installed around it must see every tile and score the virtual
    temperatures exactly (checked against ``log_softmax`` over a few token and vocabulary tiles).
    The fold runs as it will in training: on a GPU, TRL's Triton kernel and ours.

    Args:
        device: the device of the policy's LM head.
        implementation: the :class:`TileFold` implementation to probe.

    Raises:
        RuntimeError: the installed TRL's kernel does not behave so (an unsupported version).
        ImportError, ValueError: the fold's ``implementation`` cannot run on ``device`` (e.g.
            Triton not installed on a GPU machine).
    """
    gen = torch.Generator().manual_seed(0)
    # halves: every logit is exact in any matmul precision (TF32 included)
    hidden = (torch.randint(-3, 4, (6, 4), generator=gen) / 2).to(device)
    weight = (torch.randint(-3, 4, (7, 4), generator=gen) / 2).to(device)
    targets = torch.tensor([0, 2, 6, 1, 3, 5], device=device)
    logits = hidden @ weight.t()
    temp, virtual = RoundTemperature(1.0), [0.7, 1.3]
    try:
        for value in (0.5, 2.0):
            temp.value = value
            fold = TileFold(
                virtual,
                torch.ones(6, dtype=torch.bool, device=device),
                vocab_size=7,
                implementation=implementation,
            )
            with fold.installed():
                got = ChunkedLogProbFunction.apply(
                    hidden, weight, None, targets, temp, 3, None, 1.0, ()
                )[0]
            want = torch.log_softmax(logits / value, -1).gather(-1, targets[:, None])[:, 0]
            scores = fold.scores()
            want_virtual = torch.stack(
                [
                    torch.log_softmax(logits / t, -1).gather(-1, targets[:, None])[:, 0]
                    for t in virtual
                ],
                -1,
            )
            if not (
                torch.allclose(got, want, atol=1e-4)
                and torch.allclose(scores, want_virtual, atol=1e-4)
            ):
                raise RuntimeError("the kernel's log-probs or the folded virtual scores are wrong")
    except (AttributeError, TypeError, RuntimeError) as err:
        raise RuntimeError(
            f"the installed TRL's fused LM head cannot be followed at a changing temperature, "
            f"nor scored at virtual temperatures ({err}); {UNSUPPORTED}"
        ) from err


class TileFold:
    """The virtual-temperature scores of one call of TRL's chunked log-prob kernel.

    TRL's kernel projects the hidden states a block of (at most 4096) rows at a time, sweeping
    the vocabulary in tiles, and folds each tile into its own online log-softmax through the
    module function ``_forward_tile`` (``_forward_kernel`` with Triton). While
    :meth:`installed` is active both are wrapped so that the same tile is then folded into K
    online log-softmaxes per block of rows. Only the scored rows are folded:

    - ``"torch"``: a few rows at a time (a 2 MiB fp32 copy, in cache for all K passes), into an
      :class:`~metactl.integrations.torch.loglik.OnlineTemperatureLogSoftmax`;
    - ``"triton"``: by one launch of our kernel per tile, queued right after TRL's kernel on
      the same stream, reading TRL's tile in place (a program per row; unscored rows return at
      once), with no host synchronisation.

    Args:
        temperatures: the ``K`` virtual temperatures.
        scored: ``[N]`` bool over the rows the kernel will see: which of them to score.
        vocab_size: ``V``, for the check that every tile was seen.
        implementation: ``"auto"`` (Triton for CUDA/XPU tensors, torch otherwise), ``"torch"``
            or ``"triton"`` (CUDA/XPU, or CPU under ``TRITON_INTERPRET=1``).

    Raises:
        ValueError, ImportError: as ``resolve_implementation`` for the device of ``scored``.
    """

    def __init__(
        self,
        temperatures: Sequence[float],
        scored: Tensor,
        vocab_size: int,
        *,
        implementation: Implementation = "auto",
    ) -> None:
        self.betas = [1.0 / t for t in temperatures]
        self.scored = scored
        self.vocab_size = vocab_size
        self.implementation = resolve_implementation(implementation, scored.device)
        self._blocks: list[_RowBlock] = []
        self._next_row = 0
        self._work = torch.empty(0, dtype=torch.float32, device=scored.device)
        self._raw = torch.empty(0, device=scored.device)
        if self.implementation == "triton":  # made once: a copy to the GPU waits for it
            self._beta_row = torch.tensor(self.betas, dtype=torch.float32, device=scored.device)
            self._active = scored.to(torch.int8)

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Wrap TRL's tile folds (process-wide, for the duration of the block)."""
        tile_fn, kernel = chunked_logprob._forward_tile, chunked_logprob._forward_kernel
        chunked_logprob._forward_tile = _then(tile_fn, self.fold)
        chunked_logprob._forward_kernel = _ThenLaunch(kernel, self.fold)
        try:
            yield
        finally:
            chunked_logprob._forward_tile, chunked_logprob._forward_kernel = tile_fn, kernel

    def fold(
        self,
        tile: Tensor,
        tile_stride: int,
        targets: Tensor,
        running_max: Tensor,
        sum_exp: Tensor,
        x_sum_exp: Tensor,
        sq_sum_exp: Tensor,
        z_sum: Tensor,
        max_before_target: Tensor,
        target_logit: Tensor,
        vocab_start: int,
        n_cols: int,
        *,
        logit_scale: float,
        softcap: float,
        HAS_SOFTCAP: bool,
        **flags: Any,
    ) -> None:
        """Fold one ``[n, n_cols]`` tile (TRL's arguments to ``_forward_tile``, read only)."""
        if self.implementation == "triton":
            self._fold_triton(
                tile,
                tile_stride,
                targets,
                vocab_start,
                n_cols,
                logit_scale,
                softcap if HAS_SOFTCAP else None,
            )
            return
        if vocab_start == 0:  # the kernel starts the next block of rows
            n = targets.shape[0]
            rows = torch.nonzero(self.scored[self._next_row : self._next_row + n])[:, 0]
            self._next_row += n
            self._blocks.append(
                _RowBlock(rows, OnlineTemperatureLogSoftmax(targets[rows], self.betas))
            )
        block = self._blocks[-1]
        rows, acc = block.rows, block.acc
        assert isinstance(acc, OnlineTemperatureLogSoftmax)  # the torch path's blocks hold these
        if vocab_start != block.columns:
            raise RuntimeError(f"TileFold: tile at column {vocab_start}, expected {block.columns}")
        block.columns += n_cols
        step = max(1, DEFAULT_CHUNK_BYTES // (4 * n_cols))
        if self._work.numel() < step * n_cols:
            self._work = torch.empty(step * n_cols, dtype=torch.float32, device=tile.device)
            self._raw = torch.empty(step * n_cols, dtype=tile.dtype, device=tile.device)
        for start in range(0, rows.numel(), step):
            sub = rows[start : start + step]
            z = self._work[: sub.numel() * n_cols].view(sub.numel(), n_cols)
            if tile.dtype == torch.float32:
                torch.index_select(tile, 0, sub, out=z)
            else:
                raw = self._raw[: z.numel()].view_as(z)
                z.copy_(torch.index_select(tile, 0, sub, out=raw))
            logit_transform_(z, logit_scale, softcap if HAS_SOFTCAP else None)
            acc.fold(z, vocab_start, slice(start, start + sub.numel()))

    def _fold_triton(
        self,
        tile: Tensor,
        tile_stride: int,
        targets: Tensor,
        vocab_start: int,
        n_cols: int,
        logit_scale: float,
        softcap: float | None,
    ) -> None:
        """The tile folded by the Triton kernel, for every row of the block flagged as scored."""
        from metactl.integrations.torch._triton_fold import TritonFold

        if vocab_start == 0:
            n = targets.shape[0]
            active = self._active[self._next_row : self._next_row + n]
            self._next_row += n
            self._blocks.append(_RowBlock(active, TritonFold(targets, self._beta_row)))
        block = self._blocks[-1]
        if vocab_start != block.columns:
            raise RuntimeError(f"TileFold: tile at column {vocab_start}, expected {block.columns}")
        block.columns += n_cols
        state = block.acc
        assert isinstance(state, TritonFold)  # the Triton path's blocks hold these
        state.fold(
            tile,
            vocab_start,
            n_cols,
            row_stride=tile_stride,
            active=block.rows,
            logit_scale=logit_scale,
            softcap=softcap,
        )

    def scores(self) -> Tensor:
        """``[S, K]`` fp32 log-probabilities of the scored rows, in row order.

        Raises:
            RuntimeError: the kernel did not show every row and every vocabulary tile.
        """
        complete = all(block.columns == self.vocab_size for block in self._blocks)
        if self._next_row != self.scored.numel() or not complete:
            raise RuntimeError(
                f"TileFold: the kernel showed {self._next_row} of {self.scored.numel()} rows "
                f"(vocabulary covered per block: {[block.columns for block in self._blocks]} of "
                f"{self.vocab_size}); {UNSUPPORTED}"
            )
        if not self._blocks:
            return torch.zeros(0, len(self.betas), device=self.scored.device)
        scores = torch.cat([block.acc.log_probs() for block in self._blocks])
        # the Triton fold keeps a state for every row: drop the unscored ones
        return scores[self.scored] if self.implementation == "triton" else scores


@dataclass
class _RowBlock:
    """One of the kernel's blocks of rows: which to score, their scores, the columns seen.

    ``rows``: the indices of the scored rows (torch), or an int8 flag per row (Triton).
    """

    rows: Tensor
    acc: OnlineTemperatureLogSoftmax | TritonFold
    columns: int = 0


def _then(first: Callable[..., Any], then: Callable[..., Any]) -> Callable[..., None]:
    def both(*args: Any, **kwargs: Any) -> None:
        first(*args, **kwargs)
        then(*args, **kwargs)

    return both


class _ThenLaunch:
    """``kernel[grid](...)`` followed by ``then(...)`` with the same arguments (Triton launches)."""

    def __init__(self, kernel: Any, then: Callable[..., Any]) -> None:
        self.kernel, self.then = kernel, then

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        return _then(self.kernel[grid], self.then)


class VirtualScoreTap:
    """Scores the policy's fused log-prob forwards at virtual temperatures while armed.

    TRL's fused LM head is the policy's instance ``forward``; the tap wraps it. A call with
    ``fused_lm_head=True`` made while ``temperatures`` is set runs with a :class:`TileFold`
    installed, and its per-token scores are kept. Wrapping the instance ``forward`` (rather than
    hooking the module) also works under PEFT, which calls the wrapped model's ``forward``
    directly. Must be built after :func:`refit_fused_head`::

        tap = VirtualScoreTap(policy)
        tap.temperatures = [0.6, 0.8, 1.0]
        loss = ...                                   # TRL's loss forward(s) of a micro-batch
        tap.temperatures = None
        per_token = tap.take(batch_size)             # [B, L - 1, K], 0 at unscored positions

    Args:
        model: the policy, after :func:`refit_fused_head`.
        implementation: the :class:`TileFold` implementation (``"auto"``: Triton on CUDA/XPU,
            torch otherwise); an attribute, read at each armed forward.

    Raises:
        ValueError: ``implementation`` is not ``"auto"``, ``"torch"`` or ``"triton"``.
    """

    def __init__(self, model: torch.nn.Module, *, implementation: Implementation = "auto") -> None:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
            )
        self.implementation: Implementation = implementation
        self.temperatures: Sequence[float] | None = None
        self._scores: list[Tensor] = []
        fused_forward = vars(model)["forward"]

        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.temperatures is None or not kwargs.get("fused_lm_head"):
                return fused_forward(*args, **kwargs)
            labels = kwargs.get("shift_labels")
            if labels is None:
                labels = kwargs["labels"][:, 1:]
            # looked up per call, as TRL does: FSDP and PEFT may replace the head after patching
            weight = model.get_output_embeddings().weight  # type: ignore[operator]
            mask = labels.to(weight.device) != -100
            if chunked_logprob._use_triton(weight.device):  # TRL projects the labelled rows only
                scored = torch.ones(int(mask.sum()), dtype=torch.bool, device=mask.device)
            else:  # TRL projects every row
                scored = mask.reshape(-1)
            fold = TileFold(
                self.temperatures, scored, weight.shape[0], implementation=self.implementation
            )
            with fold.installed():
                out = fused_forward(*args, **kwargs)
            per_token = mask.new_zeros(*mask.shape, len(fold.betas), dtype=torch.float32)
            per_token[mask] = fold.scores()
            self._scores.append(per_token)
            return out

        model.forward = forward

    def take(self, batch_size: int) -> Tensor:
        """The per-token scores kept since the last call, ``[B, L - 1, K]`` over the batch.

        Raises:
            RuntimeError: the kept rows do not number ``batch_size``.
        """
        scores = torch.cat(self._scores, dim=0) if self._scores else None
        self._scores = []
        if scores is None or scores.size(0) != batch_size:
            got = 0 if scores is None else scores.size(0)
            raise RuntimeError(f"VirtualScoreTap: scored {got} rows, expected {batch_size}")
        return scores
