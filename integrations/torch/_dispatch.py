"""Which code folds the K temperatures: a Triton kernel on GPUs, chunked torch code on CPUs.

``implementation="auto"`` (the default of every op) picks Triton for tensors on CUDA (ROCm
included) or XPU devices, where the chunked torch code is launch-bound (about 100x slower
than the kernel), and torch elsewhere, where that code is tuned for the CPU caches.
``"torch"`` and ``"triton"`` force one; ``"triton"`` also runs on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1``), which is how the kernel is tested without a GPU.

Nothing here imports Triton: it is imported on first use of the kernel.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Literal

import torch

__all__ = ["IMPLEMENTATIONS", "Implementation", "interpreting", "resolve_implementation"]

Implementation = Literal["auto", "torch", "triton"]
IMPLEMENTATIONS: tuple[Implementation, ...] = ("auto", "torch", "triton")
TRITON_DEVICES = ("cuda", "xpu")
"""Device types whose tensors Triton kernels run on (ROCm tensors are ``cuda`` ones)."""


@functools.cache
def triton_installed() -> bool:
    """Whether ``import triton`` can succeed (looked up once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``), read now.

    Triton reads the variable when it wraps a function with ``triton.jit``, so a kernel built
    after the variable changed follows it (see ``_triton_fold._kernel``).
    """
    import triton

    knobs = getattr(triton, "knobs", None)  # triton >= 3.4; before, the variable itself
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_implementation(implementation: str, device: torch.device) -> Literal["torch", "triton"]:
    """The implementation that runs for tensors on ``device``.

    ``"auto"`` is ``"triton"`` on CUDA/XPU devices and ``"torch"`` elsewhere. On a CUDA/XPU
    device without Triton installed, ``"auto"`` raises rather than silently running the torch
    code, which is about 100x slower there; pass ``"torch"`` to accept that.

    Args:
        implementation: ``"auto"``, ``"torch"`` or ``"triton"``.
        device: the device of the logits (or hidden states) to score.

    Returns:
        ``"torch"`` or ``"triton"``.

    Raises:
        ValueError: ``implementation`` is none of the three, or is ``"triton"`` for a tensor
            that Triton cannot run on (a CPU tensor outside the interpreter).
        ImportError: Triton is needed (``"triton"``, or ``"auto"`` on a GPU) but not installed.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    on_gpu = device.type in TRITON_DEVICES
    if implementation == "torch" or (implementation == "auto" and not on_gpu):
        return "torch"
    if not triton_installed():
        raise ImportError(
            f"implementation={implementation!r} on a {device.type} tensor needs Triton, which is "
            "not installed: pip install triton (torch's Linux CUDA wheels ship it), or pass "
            "implementation='torch' to run the chunked torch code instead (tuned for CPU caches; "
            "on a GPU about 100x slower)"
        )
    if not on_gpu and not interpreting():
        raise ValueError(
            "implementation='triton' runs on CUDA or XPU tensors, or on CPU tensors under "
            f"Triton's interpreter (TRITON_INTERPRET=1); got a {device.type} tensor"
        )
    return "triton"
