"""Seams: how the round's temperature and the virtual scores reach TRL's loss forwards.

A seam does three things for :class:`~metactl.integrations.trl.MetaGRPOTrainer`::

    seam.set_temperature(T)                   # round start: TRL's loss forwards score at T
    with seam.armed(virtual, completion_length):
        loss = ...                            # TRL's loss forward(s) of one micro-batch
    per_token = seam.take(batch_size)         # [B, L, K] scores of the completion tokens

Three seams exist, one module each, and :func:`choose_seam` picks the first that the installed
TRL passes a probe with:

- ``"logits"`` (:mod:`._seam_logits`): TRL materialises the logits for its loss (1.0-1.14); a
  forward hook on the policy folds them. No extra model forward nor LM-head pass.
- ``"fused-tiles"`` (:mod:`._seam_fused`): TRL's fused chunked LM head (1.15 with Triton, 1.16);
  every logits tile it projects is also folded. No extra projection.
- ``"hidden-states"`` (:mod:`._seam_hidden`): the fallback for anything else; a forward hook on
  the backbone, then metactl's own from-hidden op (one extra LM-head pass over completion
  tokens).

The probe runs TRL's own log-prob forward (``_get_per_token_logps_and_entropies``, the one
private method the seams rely on) on a few tokens at two temperatures with the seam armed, and
checks TRL's log-probs and entropies and the seam's virtual scores against ``log_softmax`` of the
policy's own logits. A seam that fails it is never used; if TRL's loss itself does not follow the
temperature, no seam can work and :func:`choose_seam` raises naming the supported range.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from metactl.integrations.torch._dispatch import Implementation

from ._trl_private import SUPPORTED

PROBE_TEMPERATURES = (0.5, 2.0)
PROBE_VIRTUAL = (0.7, 1.3)


class LossDoesNotFollow(RuntimeError):
    """TRL's own loss forward does not score at the temperature the seam set."""


class NonFiniteLogits(ValueError):
    """The policy's own logits are NaN or inf: the model is broken, whatever the TRL release."""


class SeamDoesNotFit(RuntimeError):
    """A seam cannot reach TRL's loss forward on this release or configuration (the expected
    failures: what the seam needs is not there, or TRL's forward does not show it)."""


class SeamClock:
    """The time a seam's own work takes, summed over a round (``meta/seam_seconds``).

    On a GPU each piece of work is bracketed by CUDA events, read when the round ends (the
    controller's update has already waited for the scores, so reading them stalls nothing);
    elsewhere, the host clock around the work.
    """

    def __init__(self) -> None:
        self._seconds = 0.0
        self._events: list[tuple[Any, Any]] = []

    @contextmanager
    def timing(self, device: torch.device) -> Iterator[None]:
        """Count the block's work on ``device``."""
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((start, end))
        else:
            begin = time.perf_counter()
            try:
                yield
            finally:
                self._seconds += time.perf_counter() - begin

    def take_seconds(self) -> float:
        """The seconds counted since the last call."""
        for _, end in self._events:
            end.synchronize()
        seconds = self._seconds + sum(float(s.elapsed_time(e)) for s, e in self._events) / 1000
        self._seconds, self._events = 0.0, []
        return seconds


class Seam(ABC):
    """One way of reaching TRL's loss forwards (see the module docstring).

    Args:
        temperature: the fused heads' ``RoundTemperature`` (TRL 1.15-1.16), or None where TRL
            reads ``trainer.temperature``.

    Attributes:
        name: ``trainer.seam``, logged at construction and stored in every checkpoint record.
        cost: what the seam adds to a loss forward, in words (for the fallback's warning).
        temperature: as given.
    """

    name: str = ""
    cost: str = ""

    def __init__(self, temperature: Any = None) -> None:
        self.temperature = temperature
        #: chosen without a probe (weights not there at construction): probed at the first round
        self.probe_pending = False
        self.clock = SeamClock()
        self._armed: tuple[list[float], int] | None = None
        self._scores: list[Tensor] = []

    def set_temperature(self, value: float) -> None:
        """Make TRL's later loss forwards score at ``value``.

        Without a fused head nothing is to do: TRL reads ``trainer.temperature`` at call time,
        which the trainer sets. The fused heads read the RoundTemperature.
        """
        if self.temperature is not None:
            self.temperature.value = float(value)

    @contextmanager
    def armed(self, temperatures: Sequence[float], completion_length: int) -> Iterator[None]:
        """Score every loss forward of the block at ``temperatures`` (its last ``completion_length`` tokens)."""
        self._armed = ([float(t) for t in temperatures], int(completion_length))
        try:
            yield
        finally:
            self._armed = None

    def take(self, batch_size: int) -> Tensor:
        """The ``[B, L, K]`` fp32 scores kept since the last call (0 at unscored positions).

        Raises:
            RuntimeError: the forwards seen while armed did not cover ``batch_size`` rows.
        """
        scores, self._scores = self._scores, []
        got = sum(s.size(0) for s in scores)
        if got != batch_size:
            raise SeamDoesNotFit(
                f"seam {self.name!r}: scored {got} rollouts in the loss forwards, expected "
                f"{batch_size}; {SUPPORTED}"
            )
        out: Tensor = torch.cat(scores, dim=0)
        return out

    def keep(self, per_token: Tensor) -> None:
        """Keep one forward's ``[b, L, K]`` scores (called by the seam's hook)."""
        self._scores.append(per_token)

    @abstractmethod
    def close(self) -> None:
        """Remove the seam's hooks (a seam that failed its probe)."""


def _reference(model: Any, ids: Tensor, mask: Tensor, length: int) -> Tensor:
    """The policy's own fp64 logits at the positions predicting the last ``length`` tokens."""
    logits: Tensor = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return logits[:, -length - 1 : -1].double()


def _close(got: Tensor, want: Tensor, mask: Tensor, tol: float) -> bool:
    sel = mask.bool()
    return bool(torch.allclose(got.double()[sel], want[sel], atol=tol, rtol=tol))


def probe(trainer: Any, seam: Seam) -> None:
    """Check on a few tokens that ``seam`` follows TRL's loss (see the module docstring).

    Raises:
        NonFiniteLogits: the policy's own logits are NaN or inf (checked first: then nothing
            else can be judged).
        LossDoesNotFollow: TRL's log-probs or entropies are not those at the set temperature.
        SeamDoesNotFit: the seam saw no forward or scored the virtual temperatures wrongly.
    """
    model = trainer.model
    head = model.get_output_embeddings()
    weight = head.weight  # under ZeRO-3 partitioned (shape [0]) outside the forward
    vocab, device = head.out_features, weight.device
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 7), generator=gen).to(device)
    mask = torch.ones_like(ids)
    mask[1, -1] = 0  # a padded completion token: never scored
    length = 4
    completion = mask[:, -length:]
    tol = 1e-3 if weight.dtype == torch.float32 else 5e-2
    was_training = model.training
    model.eval()
    saved = trainer.temperature
    try:
        with torch.no_grad():
            logits = _reference(model, ids, mask, length)
            if not bool(torch.isfinite(logits).all()):
                raise NonFiniteLogits(
                    "model: the policy's logits are NaN/inf on a probe input (its weights hold "
                    "NaN/inf values?); MetaGRPOTrainer cannot check how TRL's loss follows the "
                    "temperature, nor can the model train. Check the checkpoint or its dtype."
                )
            targets = ids[:, -length:, None]
            for value in PROBE_TEMPERATURES:
                trainer.temperature = value
                seam.set_temperature(value)
                with seam.armed(PROBE_VIRTUAL, length):
                    out = trainer._get_per_token_logps_and_entropies(
                        model, ids, mask, length, compute_entropy=True
                    )
                logp_ref = torch.log_softmax(logits / value, -1)
                entropy_ref = -(logp_ref.exp() * logp_ref).sum(-1)
                if not (
                    _close(out[0], logp_ref.gather(-1, targets)[..., 0], completion, tol)
                    and _close(out[1], entropy_ref, completion, tol)
                ):
                    raise LossDoesNotFollow(
                        f"TRL's loss log-probs are not those at temperature {value}"
                    )
                scores = seam.take(ids.size(0))
                want = torch.stack(
                    [
                        torch.log_softmax(logits / t, -1).gather(-1, targets)[..., 0]
                        for t in PROBE_VIRTUAL
                    ],
                    -1,
                )
                if not _close(scores, want, completion[..., None].expand_as(want), tol):
                    raise SeamDoesNotFit("its virtual scores differ from log_softmax of the logits")
    finally:
        trainer.temperature = saved
        seam.set_temperature(saved)
        model.train(was_training)


def can_run_now(policy: Any) -> bool:
    """Whether the policy can run a forward before training: not under DeepSpeed ZeRO-3 (its
    weights are partitioned until the engine is built) nor with weights on the meta device."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    meta = any(p.device.type == "meta" for p in policy.parameters())
    return not (is_deepspeed_zero3_enabled() or meta)


def _unprobed(trainer: Any, policy: Any, temperature: Any, implementation: Implementation) -> Seam:
    """The release's fast seam by feature detection, its probe left to the first round.

    ``temperature``: the fused heads' RoundTemperature, or None (TRL without a fused head).
    """
    from ._seam_fused import FusedTileSeam
    from ._seam_logits import LogitsSeam

    make = LogitsSeam if temperature is None else FusedTileSeam
    seam: Seam = make(trainer, policy, temperature, implementation)
    seam.probe_pending = True
    warnings.warn(
        f"MetaGRPOTrainer cannot probe TRL's loss forward at construction (the policy's weights "
        f"are partitioned or on the meta device, as under DeepSpeed ZeRO-3); it takes the "
        f"{seam.name!r} seam, chosen by what the installed TRL provides, and probes it at the "
        f"first round, before any update. {SUPPORTED}.",
        UserWarning,
        stacklevel=3,
    )
    return seam


def probe_at_first_round(trainer: Any, seam: Seam) -> None:
    """The probe of a seam taken unprobed at construction (:func:`choose_seam`), run before the
    first round's generation: the engine (DeepSpeed ZeRO-3) is built by then, and the policy's
    forward gathers its weights.

    Raises:
        RuntimeError: the seam fails the probe (before any update), naming the supported range.
    """
    try:
        probe(trainer, seam)
    except (SeamDoesNotFit, LossDoesNotFollow) as err:
        raise RuntimeError(
            f"MetaGRPOTrainer's {seam.name!r} seam, taken without a probe at construction (the "
            f"policy's weights were partitioned or on the meta device, as under DeepSpeed "
            f"ZeRO-3), fails its probe at the first round, before any update ({err}); {SUPPORTED}"
        ) from err
    seam.probe_pending = False


def choose_seam(
    trainer: Any, policy: Any, implementation: Implementation, *, hidden_only: str | None = None
) -> Seam:
    """The first seam that the installed TRL passes :func:`probe` with.

    Only the failures a seam is expected to meet (:class:`SeamDoesNotFit`: what it needs is not
    in this TRL, or TRL's forward does not show it) send the choice to the next seam, and the
    fallback's warning names each of them; any other error (a bug) propagates.

    Args:
        trainer: the MetaGRPOTrainer, after ``GRPOTrainer.__init__``.
        policy: the policy's transformers model (the base model under PEFT).
        implementation: the fold implementation (``"auto"``, ``"torch"``, ``"triton"``).
        hidden_only: why TRL's loss forward computes from the hidden states and shows neither
            logits nor tiles (e.g. a Liger loss), skipping the fast seams; None to try them.

    Returns:
        The seam; a warning naming it, its cost and what sent the choice there when it is the
        fallback. A policy that cannot run a forward yet (DeepSpeed ZeRO-3, meta weights) gets
        the release's fast seam with a warning, probed at the first round
        (:func:`probe_at_first_round`).

    Raises:
        NonFiniteLogits: (a ``ValueError``) the policy's logits are NaN or inf.
        RuntimeError: TRL's loss does not follow the temperature (no seam can), naming the
            supported range and what each seam reported; or only the hidden-states seam fits
            (``hidden_only``) while the policy cannot run a forward yet.
    """
    from ._seam_fused import FusedTileSeam, follow_fused_heads, fused_head_installed
    from ._seam_hidden import HiddenStatesSeam
    from ._seam_logits import LogitsSeam

    failures: list[str] = []
    fused = fused_head_installed(policy)
    try:  # TRL's fused heads captured their temperature: every seam needs them refitted
        temperature = follow_fused_heads(trainer, policy) if fused else None
    except SeamDoesNotFit as err:
        raise RuntimeError(
            f"the installed TRL's fused LM head cannot follow a changing temperature ({err}); "
            f"{SUPPORTED}"
        ) from err
    if not can_run_now(policy):
        if hidden_only:
            raise RuntimeError(
                f"MetaGRPOTrainer cannot score the virtual temperatures here: {hidden_only}, so "
                "only the hidden-states seam could, and it projects through the LM head outside "
                "TRL's forward, where the policy's weights are partitioned or on the meta device "
                "(DeepSpeed ZeRO-3). Set use_liger_kernel=False, or use ZeRO-2 or FSDP2."
            )
        return _unprobed(trainer, policy, temperature, implementation)
    candidates: list[Any] = [] if hidden_only else [FusedTileSeam if fused else LogitsSeam]
    candidates.append(HiddenStatesSeam)
    for make in candidates:
        try:
            seam: Seam = make(trainer, policy, temperature, implementation)
        except SeamDoesNotFit as err:
            failures.append(f"{make.name}: {err}")
            continue
        try:
            probe(trainer, seam)
        except LossDoesNotFollow as err:
            seam.close()
            raise RuntimeError(
                f"the installed TRL's loss cannot follow a temperature that changes every round "
                f"({err}); {SUPPORTED}"
            ) from err
        except SeamDoesNotFit as err:
            seam.close()
            failures.append(f"{seam.name}: {err}")
            continue
        except BaseException:
            seam.close()
            raise
        if make is HiddenStatesSeam:
            reasons = "; ".join(failures) or hidden_only
            warnings.warn(
                f"MetaGRPOTrainer scores the virtual temperatures through the {seam.name!r} seam "
                f"({seam.cost}), since the fast seams do not fit this TRL or configuration "
                f"({reasons}). See docs/trl.md.",
                UserWarning,
                stacklevel=3,
            )
        return seam
    raise RuntimeError(
        "no seam can score the virtual temperatures on the installed TRL ("
        + "; ".join(failures)
        + f"); {SUPPORTED}"
    )
