"""Tensor ops shared by every torch integration of metactl.

Virtual-temperature log-likelihoods (TAMPO's meta signal), each rollout's
likelihood-maximising temperature, and GRPO advantages::

    from metactl.integrations.torch import temperature_loglik

    loglik = temperature_loglik(logits, tokens, mask, [0.6, 0.8, 1.0, 1.2])  # [B, 4]

All ops compute in fp32 whatever the dtype of the logits, never materialise a
``[K, B, L, V]`` tensor (extra memory is one chunk of rows times ``V``), and
return detached tensors: no gradient flows into the model through them. See
``docs/virtual-temperatures.md``.

Raises:
    metactl.DependencyNotInstalled: if torch is not installed
        (``pip install "metactl[torch]"``).
"""

from __future__ import annotations

import importlib.util

from metactl.errors import DependencyNotInstalled

if importlib.util.find_spec("torch") is None:  # pragma: no cover - depends on the environment
    raise DependencyNotInstalled("torch", "torch")

from metactl.integrations.torch.advantages import grpo_advantages
from metactl.integrations.torch.loglik import (
    DEFAULT_CHUNK_BYTES,
    chunk_temperature_loglik,
    default_chunk_size,
    hidden_rows_loglik,
    temperature_loglik,
    temperature_loglik_from_hidden,
)
from metactl.integrations.torch.preferred import preferred_temperature

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "chunk_temperature_loglik",
    "default_chunk_size",
    "grpo_advantages",
    "hidden_rows_loglik",
    "preferred_temperature",
    "temperature_loglik",
    "temperature_loglik_from_hidden",
]
