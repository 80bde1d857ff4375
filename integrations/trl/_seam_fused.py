"""The ``"fused-tiles"`` seam: TRL's fused, chunked LM head (1.15 with Triton, 1.16).

TRL computes every log-probability (policy, old, reference) with a fused LM head built once by
``trl.trainer.utils.add_fused_lm_head(model, temperature=...)``, which captures the temperature.
:func:`follow_fused_heads` rebuilds both heads (policy and reference) with a
:class:`RoundTemperature`, which the kernel reads as ``1 / temperature`` on every call, so
setting its ``value`` at a generation boundary moves every later log-prob to the new
temperature; the seam's probe proves it on the installed TRL::

    temp = follow_fused_heads(trainer, policy)     # in the trainer's __init__
    temp.value = 0.8                               # every fused forward from now on runs at T = 0.8

:class:`FusedTileSeam` scores the completions at the virtual temperatures inside the loss
forwards TRL already makes: while armed, every logits tile that TRL's kernel projects for its own
log-probs is also folded into K online log-softmaxes (:class:`TileFold`), so each tile of logits
is computed once: no extra model forward nor LM-head pass. The model's ``forward`` is never
replaced (accelerate's mixed precision rebinds it): module hooks on the model install the fold
around TRL's private kernel module ``trl.kernels.chunked_logprob`` (its
``_forward_tile``/``_forward_kernel``, reached through :mod:`._trl_private`) for the duration of
one armed forward. On CUDA/XPU the fold is a Triton kernel launched right after TRL's own on the
same tile (same stream); on CPU it is chunked torch code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import is_peft_model
from torch import Tensor

from metactl.integrations.torch import DEFAULT_CHUNK_BYTES
from metactl.integrations.torch._dispatch import Implementation, resolve_implementation
from metactl.integrations.torch.loglik import OnlineTemperatureLogSoftmax, logit_transform_

from ._seam import Seam, SeamClock, SeamDoesNotFit
from ._trl_private import SUPPORTED, kernel_tile_functions, tile_functions_replaced

if TYPE_CHECKING:
    from metactl.integrations.torch._triton_fold import TritonFold


def fused_head_installed(policy: Any) -> bool:
    """Whether TRL patched ``policy`` with its fused LM head (an instance ``forward``, TRL >= 1.15)."""
    from trl.trainer import utils

    return "add_fused_lm_head" in vars(utils) and "forward" in vars(policy)


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


def follow_fused_heads(trainer: Any, policy: Any) -> RoundTemperature:
    """Rebuild TRL's fused LM heads (policy, and reference if any) to read one RoundTemperature.

    Runs in the trainer's ``__init__``, before accelerate wraps the policy's ``forward``.

    Raises:
        SeamDoesNotFit: a model does not carry TRL's fused head.
    """
    temperature = RoundTemperature(trainer.temperature)
    cast = trainer.args.cast_lm_head_to_fp32
    _refit(policy, temperature, cast, ("log_probs", "entropy"))
    if trainer.ref_model is not None:
        ref = trainer.accelerator.unwrap_model(trainer.ref_model)
        _refit(
            ref.get_base_model() if is_peft_model(ref) else ref, temperature, cast, ("log_probs",)
        )
    return temperature


def _refit(
    model: Any, temperature: RoundTemperature, cast_lm_head_to_fp32: bool, outputs: tuple[str, ...]
) -> None:
    from trl.trainer.utils import add_fused_lm_head

    if "forward" not in vars(model):
        raise SeamDoesNotFit(
            f"{type(model).__name__} has no fused LM head installed by TRL's add_fused_lm_head"
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
        SeamDoesNotFit: the installed TRL's kernel is not there or does not behave so.
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
        from trl.kernels import ChunkedLogProbFunction

        for value in (0.5, 2.0):
            temp.value = value
            fold = TileFold(
                virtual,
                torch.ones(6, dtype=torch.bool, device=device),
                vocab_size=7,
                device=device,
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
    except (ImportError, AttributeError, TypeError, RuntimeError) as err:
        raise SeamDoesNotFit(
            f"the installed TRL's fused LM head cannot be followed at a changing temperature, "
            f"nor scored at virtual temperatures ({err}); {SUPPORTED}"
        ) from err


class FusedTileSeam(Seam):
    """Folds every tile TRL's fused LM head projects in the policy's armed forwards.

    Two module hooks on the model TRL's loss forward calls (``trainer.model``: the policy, or its
    PEFT wrapper, whose hooks fire under DDP, FSDP and DeepSpeed, which all call the module): a
    forward pre-hook that, for a call with ``fused_lm_head=True`` made while armed, installs a
    :class:`TileFold` around TRL's kernel (:meth:`TileFold.installed`, for the duration of that
    forward), and a forward hook that removes it and keeps the scores. The model's ``forward`` is
    never replaced: accelerate's mixed precision, gradient checkpointing and sharding rebind or
    wrap ``forward`` as they like, and the hooks stay on the module.

    Args:
        trainer: the trainer (its ``model``, the module TRL's loss forward calls, is hooked).
        policy: the policy's transformers model, after :func:`follow_fused_heads` (its LM head
            is read per call, as TRL does: FSDP and PEFT may replace it after patching).
        temperature: the :class:`RoundTemperature` the fused heads read.
        implementation: the :class:`TileFold` implementation (``"auto"``: Triton on CUDA/XPU,
            torch otherwise).

    Raises:
        SeamDoesNotFit: TRL's kernel module is not there or does not behave as the fold
            expects (:func:`check_kernel`).
    """

    name = "fused-tiles"
    cost = "no extra projection: folds the logits tiles TRL's fused LM head computes"

    def __init__(
        self,
        trainer: Any,
        policy: Any,
        temperature: RoundTemperature,
        implementation: Implementation,
    ) -> None:
        super().__init__(temperature)
        from ._trl_private import kernel_projects_labelled_rows_only

        self.implementation: Implementation = implementation
        self._policy = policy
        head = policy.get_output_embeddings().weight
        check_kernel(head.device, implementation=implementation)
        # which rows TRL projects: the labelled ones where Triton runs (always, on 1.15)
        self._compact = kernel_projects_labelled_rows_only
        self._betas: tuple[list[float], Tensor] | None = None
        self._open: tuple[TileFold, Tensor, int, ExitStack] | None = None
        module = trainer.model
        self._handles = [
            module.register_forward_pre_hook(self._before, with_kwargs=True),
            module.register_forward_hook(self._after, always_call=True),
        ]

    def _beta_row(self, temperatures: list[float], device: torch.device) -> Tensor:
        """The virtual ``1 / T`` on ``device``, copied once per round rather than per forward."""
        if self._betas is None or self._betas[0] != temperatures:
            row = torch.tensor([1.0 / t for t in temperatures], dtype=torch.float32, device=device)
            self._betas = (temperatures, row)
        return self._betas[1]

    def _before(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        """Install a :class:`TileFold` for an armed fused forward (TRL's loss forward)."""
        self._drop_open()  # a forward that raised never reached :meth:`_after`
        if self._armed is None or not kwargs.get("fused_lm_head"):
            return
        temperatures, length = self._armed
        labels = kwargs.get("shift_labels")
        if labels is None:
            if kwargs.get("labels") is None:
                raise SeamDoesNotFit("TRL's fused forward was called without labels")
            labels = kwargs["labels"][:, 1:]
        head = self._policy.get_output_embeddings()
        weight = head.weight
        mask = labels.to(weight.device) != -100
        fold = TileFold(
            temperatures,
            None if self._compact(weight.device) else mask.reshape(-1),
            # the layer's size, not the weight's shape: ZeRO-3 partitions the weight outside
            # the forward (shape [0]) and gathers it only for the kernel
            head.out_features,
            device=weight.device,
            beta_row=self._beta_row(temperatures, weight.device),
            implementation=self.implementation,
            clock=self.clock,
        )
        stack = ExitStack()
        stack.enter_context(fold.installed())
        self._open = (fold, mask, length, stack)

    def _after(self, module: Any, args: Any, output: Any) -> None:
        """Remove the fold of this forward and keep its ``[b, L, K]`` scores."""
        if self._open is None:
            return
        fold, mask, length, stack = self._open
        self._open = None
        stack.close()
        with self.clock.timing(mask.device):
            scored = mask[:, -length:, None].expand(-1, -1, len(fold.betas))
            per_token = torch.zeros(scored.shape, dtype=torch.float32, device=mask.device)
            # the last `length` positions hold every labelled row: sync-free scatter
            per_token.masked_scatter_(scored, fold.scores())
            self.keep(per_token)

    def _drop_open(self) -> None:
        if self._open is not None:
            self._open[3].close()
            self._open = None

    @contextmanager
    def armed(self, temperatures: Sequence[float], completion_length: int) -> Iterator[None]:
        """As :meth:`Seam.armed`; TRL's kernel is left as it was even if a forward raised."""
        try:
            with super().armed(temperatures, completion_length):
                yield
        finally:
            self._drop_open()

    def close(self) -> None:
        self._drop_open()
        for handle in self._handles:
            handle.remove()


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
        scored: ``[N]`` bool over the rows the kernel will see: which of them to score; None
            scores every row it shows (TRL's compact path, which projects labelled rows only).
        vocab_size: ``V``, for the check that every tile was seen.
        implementation: ``"auto"`` (Triton for CUDA/XPU tensors, torch otherwise), ``"torch"``
            or ``"triton"`` (CUDA/XPU, or CPU under ``TRITON_INTERPRET=1``).
        clock: the seam's clock, which counts the time of every tile's fold; None counts none.

    Raises:
        ValueError, ImportError: as ``resolve_implementation`` for the device of ``scored``.
    """

    def __init__(
        self,
        temperatures: Sequence[float],
        scored: Tensor | None,
        vocab_size: int,
        *,
        device: torch.device,
        beta_row: Tensor | None = None,
        implementation: Implementation = "auto",
        clock: SeamClock | None = None,
    ) -> None:
        self.clock = clock
        self.betas = [1.0 / t for t in temperatures]
        self.scored = scored
        self.vocab_size = vocab_size
        self.implementation = resolve_implementation(implementation, device)
        self._blocks: list[_RowBlock] = []
        self._next_row = 0
        self._work = torch.empty(0, dtype=torch.float32, device=device)
        self._raw = torch.empty(0, device=device)
        if self.implementation == "triton":
            # the caller's copy, made once per round: a copy to the GPU waits for the host
            self._beta_row = (
                torch.tensor(self.betas, dtype=torch.float32, device=device)
                if beta_row is None
                else beta_row
            )
            self._active = None if scored is None else scored.to(torch.int8)

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Wrap TRL's tile folds (process-wide, for the duration of the block: one forward).

        Raises:
            AttributeError: TRL's kernel module has no ``_forward_kernel`` (its internals moved).
        """
        # 1.15 has the Triton kernel only; 1.16 added the torch tile for other devices
        wrap = {"_forward_kernel": _ThenLaunch, "_forward_tile": _then}
        originals = kernel_tile_functions()
        fold = self.fold if self.clock is None else self._timed_fold
        with tile_functions_replaced(
            {name: wrap[name](original, fold) for name, original in originals.items()}
        ):
            yield

    def _timed_fold(self, tile: Tensor, *args: Any, **kwargs: Any) -> None:
        assert self.clock is not None  # installed() passes this fold only with a clock
        with self.clock.timing(tile.device):
            self.fold(tile, *args, **kwargs)

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
            rows = (
                torch.arange(n, device=targets.device)
                if self.scored is None
                else torch.nonzero(self.scored[self._next_row : self._next_row + n])[:, 0]
            )
            self._next_row += n
            self._blocks.append(
                _RowBlock(rows, OnlineTemperatureLogSoftmax(targets[rows], self.betas))
            )
        block = self._blocks[-1]
        block_rows, acc = block.rows, block.acc
        # the torch path's blocks hold these
        assert block_rows is not None and isinstance(acc, OnlineTemperatureLogSoftmax)
        if vocab_start != block.columns:
            raise SeamDoesNotFit(
                f"TileFold: tile at column {vocab_start}, expected {block.columns}"
            )
        block.columns += n_cols
        step = max(1, DEFAULT_CHUNK_BYTES // (4 * n_cols))
        if self._work.numel() < step * n_cols:
            self._work = torch.empty(step * n_cols, dtype=torch.float32, device=tile.device)
            self._raw = torch.empty(step * n_cols, dtype=tile.dtype, device=tile.device)
        for start in range(0, block_rows.numel(), step):
            sub = block_rows[start : start + step]
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
            active = (
                None if self._active is None else self._active[self._next_row : self._next_row + n]
            )
            self._next_row += n
            self._blocks.append(_RowBlock(active, TritonFold(targets, self._beta_row)))
        block = self._blocks[-1]
        if vocab_start != block.columns:
            raise SeamDoesNotFit(
                f"TileFold: tile at column {vocab_start}, expected {block.columns}"
            )
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
            SeamDoesNotFit: the kernel did not show every row and every vocabulary tile.
        """
        complete = all(block.columns == self.vocab_size for block in self._blocks)
        expected = self._next_row if self.scored is None else self.scored.numel()
        if self._next_row != expected or not complete:
            raise SeamDoesNotFit(
                f"TileFold: the kernel showed {self._next_row} of {expected} rows "
                f"(vocabulary covered per block: {[block.columns for block in self._blocks]} of "
                f"{self.vocab_size}); {SUPPORTED}"
            )
        if not self._blocks:
            return torch.zeros(0, len(self.betas), device=self._work.device)
        scores = torch.cat([block.acc.log_probs() for block in self._blocks])
        if self.implementation == "triton" and self.scored is not None:
            return scores[self.scored]  # the Triton fold keeps a state for every row
        return scores


@dataclass
class _RowBlock:
    """One of the kernel's blocks of rows: which to score, their scores, the columns seen.

    ``rows``: the indices of the scored rows (torch), or an int8 flag per row (Triton).
    """

    rows: Tensor | None
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
