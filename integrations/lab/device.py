"""Where a run trains: the device policy behind ``--device``."""

from __future__ import annotations

from typing import Literal

Device = Literal["cpu", "cuda"]
"""Where a run trains: ``cpu`` (float32) or ``cuda`` (bf16 autocast)."""


def resolve_device(device: str) -> Device:
    """The device ``--device`` names: ``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``.

    Raises:
        ValueError: an unknown name, or ``cuda`` without a visible CUDA device (one line
            naming the fix).
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device; use --device cpu (or auto)")
        return "cuda"
    raise ValueError(f"--device: expected auto, cpu or cuda, got {device!r}")
