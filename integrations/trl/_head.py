"""The LM-head side of MetaGRPOTrainer: a temperature that follows the round, and virtual scores.

TRL 1.16 computes every log-probability (policy, old, reference) with a fused, chunked LM head
built once by ``trl.trainer.utils.add_fused_lm_head(model, temperature=...)``, which captures the
temperature in a closure. :class:`RoundTemperature` is passed there instead of a float: the
kernel reads it as ``1 / temperature`` on every call, so setting ``RoundTemperature.value`` at a
generation boundary moves every later log-prob to the new temperature::

    temp = RoundTemperature(1.0)
    refit_fused_head(model, temp, cast_lm_head_to_fp32=False, outputs=("log_probs", "entropy"))
    temp.value = 0.8                          # every fused forward from now on runs at T = 0.8

:class:`HiddenTap` keeps the backbone's last hidden state of the forwards TRL already makes for the
loss, so that :func:`virtual_loglik` scores the completions at the controller's virtual
temperatures from it (one no-grad pass over the LM head, chunked; no extra model forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import add_fused_lm_head, maybe_gather_lm_head_ctx

from metactl.integrations.torch import hidden_rows_loglik


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
            "MetaGRPOTrainer supports trl>=1.16,<1.17"
        )
    del model.forward  # back to the class's forward, then let TRL patch it again
    add_fused_lm_head(
        model, temperature=temperature, cast_lm_head_to_fp32=cast_lm_head_to_fp32, outputs=outputs
    )


def check_kernel_follows_temperature() -> None:
    """Probe TRL's chunked kernel with a :class:`RoundTemperature` at two values.

    Raises:
        RuntimeError: the installed TRL does not read the temperature at call time, so a changing
            temperature cannot be followed (an unsupported TRL version).
    """
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 4, generator=gen)
    weight = torch.randn(5, 4, generator=gen)
    targets = torch.tensor([0, 2, 4])
    logits = hidden @ weight.t()
    temp = RoundTemperature(1.0)
    for value in (0.5, 2.0):
        temp.value = value
        got = ChunkedLogProbFunction.apply(hidden, weight, None, targets, temp, 8, None, 1.0, ())[0]
        want = torch.log_softmax(logits / value, -1).gather(-1, targets[:, None])[:, 0]
        if not torch.allclose(got, want, atol=1e-5):
            raise RuntimeError(
                "the installed TRL's fused LM head does not follow a changing temperature; "
                "MetaGRPOTrainer supports trl>=1.16,<1.17"
            )


class HiddenTap:
    """Keeps the backbone's last hidden states of the fused log-prob forwards made while ``active``.

    TRL's fused LM head is installed as the policy's instance ``forward``; the tap wraps it to
    arm itself for calls with ``fused_lm_head=True`` (TRL's log-prob forwards), and a hook on
    the backbone keeps that call's last hidden state. Wrapping the instance ``forward`` rather
    than hooking the module also works under PEFT, which calls the wrapped model's ``forward``
    directly (module hooks on it would never run). Must be built after :func:`refit_fused_head`.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.active = False
        self.hidden: list[Tensor] = []
        self._armed = False
        fused_forward = vars(model)["forward"]

        def forward(*args: Any, **kwargs: Any) -> Any:
            self._armed = self.active and bool(kwargs.get("fused_lm_head"))
            try:
                return fused_forward(*args, **kwargs)
            finally:
                self._armed = False

        model.forward = forward
        model.base_model.register_forward_hook(self._keep)

    def _keep(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._armed:
            self.hidden.append(output.last_hidden_state.detach())
            self._armed = False

    def take(self, batch_size: int) -> Tensor:
        """The hidden states captured since the last call, concatenated over the batch.

        Raises:
            RuntimeError: the captured rows do not number ``batch_size``.
        """
        hidden = torch.cat(self.hidden, dim=0) if self.hidden else None
        self.hidden = []
        if hidden is None or hidden.size(0) != batch_size:
            got = 0 if hidden is None else hidden.size(0)
            raise RuntimeError(
                f"HiddenTap: captured {got} rows of hidden states, expected {batch_size}"
            )
        return hidden


def logit_transform(config: Any) -> tuple[float, float | None]:
    """``(logit_scale, final_logit_softcapping)`` as TRL's fused head reads them from ``config``."""
    text = config.get_text_config()
    cfg = vars(text)
    scale = cfg.get("logit_scale")
    if scale is None:
        scale = cfg.get("output_multiplier")
    if scale is None:
        scale = cfg.get("lm_head_multiplier")
    if scale is None and cfg.get("logits_scaling") is not None:
        scaling = cfg["logits_scaling"]
        scale = scaling if text.model_type == "hyperclovax" else 1 / scaling
    return (1.0 if scale is None else float(scale)), cfg.get("final_logit_softcapping")


@torch.no_grad()
def virtual_loglik(
    hidden: Tensor,
    lm_head: torch.nn.Module,
    tokens: Tensor,
    mask: Tensor,
    temperatures: Sequence[float],
    *,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    fp32: bool = False,
) -> tuple[Tensor, Tensor]:
    """Sum of completion-token log-probs at each virtual temperature, and token counts.

    Args:
        hidden: ``[B, C, H]`` hidden states at the positions that predict ``tokens``.
        lm_head: the output embedding (its ``weight`` and ``bias`` are read directly).
        tokens: ``[B, C]`` completion token ids.
        mask: ``[B, C]`` non-zero where a token is scored.
        temperatures: the ``K`` virtual temperatures.
        logit_scale, softcap: the model's logit transform (as TRL's fused head applies it).
        fp32: project in fp32 (``cast_lm_head_to_fp32``) rather than in the hidden dtype.

    Returns:
        ``([B, K] fp32 sums, [B] fp32 token counts)``; the mean is ``sums / counts``.
    """
    weight, bias = lm_head.weight, lm_head.bias
    if isinstance(weight, DTensor):
        weight = weight.full_tensor()
        bias = None if bias is None else bias.full_tensor()
    sel = mask.bool()
    rows = torch.arange(tokens.size(0), device=tokens.device).unsqueeze(1).expand_as(tokens)[sel]
    with maybe_gather_lm_head_ctx(weight, bias):
        logp = hidden_rows_loglik(
            hidden[sel],
            weight,
            bias,
            tokens[sel],
            temperatures,
            logit_scale=logit_scale,
            softcap=softcap,
            compute_dtype=torch.float32 if fp32 else None,
        )
    sums = torch.zeros(tokens.size(0), len(temperatures), dtype=torch.float32, device=logp.device)
    sums.index_add_(0, rows, logp)
    return sums, sel.sum(-1).float()
