"""Warm-start arithmetic that no CPU's vector unit changes: float64 with snapped weights.

A float32 step of the testbed model differs in its last bits from one CPU to another:
the vector width changes the order of every sum, and each vector unit has its own
``exp`` and ``cos``. Training amplifies that noise step after step (a measured warm
start differed by 12 points of accuracy between two CPU kernels). The warm start
therefore trains inside :func:`float64_exact`, where those differences are about
1e-16 of a value, and rounds every weight to :data:`SIGNIFICANT_BITS` significant bits
after each step (:func:`snap_`), which rounds a difference that small away: two CPUs
then hold the same weights after every step, unless a weight lands within 1e-16 of
a rounding boundary (odds about 1e-11 per weight and step). The snapped weights are
exact float32 numbers, so the model is returned in float32 without another rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType
from typing import Any

#: Significant bits a weight keeps after every warm-start step (float32 keeps 24).
SIGNIFICANT_BITS = 16


def snap_(tensor: Any, bits: int = SIGNIFICANT_BITS) -> None:
    """Round a float64 ``tensor`` in place to ``bits`` significant bits (Veltkamp's split).

    ``c = x (2^(53 - bits) + 1)``, ``x <- c - (c - x)``: three correctly rounded IEEE
    operations, so the result is the same on every machine and device.
    """
    c = tensor * (2.0 ** (53 - bits) + 1.0)
    tensor.copy_(c - (c - tensor))


def _rms_norm(self: Any, hidden: Any) -> Any:
    """Qwen2RMSNorm without its float32 cast: ``w * h / sqrt(mean(h^2) + eps)``."""
    import torch

    variance = hidden.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden * torch.rsqrt(variance + self.variance_epsilon))


def _rotary(self: Any, x: Any, position_ids: Any) -> Any:
    """Qwen2's rotary cos and sin in float64, from inverse frequencies computed by libm."""
    import torch

    dim = 2 * self.inv_freq.numel()
    base = self.config.rope_parameters["rope_theta"]
    inv_freq = torch.tensor(
        [1.0 / math.pow(base, i / dim) for i in range(0, dim, 2)],
        dtype=torch.float64,
        device=x.device,
    )
    freqs = position_ids[..., None].to(torch.float64) * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    scale = self.attention_scaling
    return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)


@contextmanager
def float64_exact(model: Any) -> Iterator[Any]:
    """``model`` computing in float64 end to end inside the block, float32 again after it.

    transformers' Qwen2 casts its RMS norms and rotary embedding to float32 whatever the
    model's dtype; inside the block those two modules compute in float64 instead (the
    same equations). Attention is SDPA, which keeps the input's dtype. The caller keeps
    the weights float32-exact (:func:`snap_`), so the cast back loses nothing.
    """
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, Qwen2RotaryEmbedding

    if model.config._attn_implementation != "sdpa":
        raise ValueError(
            f"float64_exact(model): needs SDPA attention (eager attention's softmax casts "
            f"to float32), got {model.config._attn_implementation!r}"
        )
    patched = []
    for module in model.modules():
        if isinstance(module, Qwen2RMSNorm):
            module.forward = MethodType(_rms_norm, module)
            patched.append(module)
        elif isinstance(module, Qwen2RotaryEmbedding):
            module.forward = MethodType(_rotary, module)
            patched.append(module)
    model.double()
    try:
        yield model
    finally:
        model.float()
        for module in patched:
            del module.forward
