"""The ``"logits"`` seam: TRL materialises the logits of its loss forward (1.0-1.14).

TRL's loss forward calls the policy, takes ``outputs.logits``, divides them by
``trainer.temperature`` (read at call time, so the loss follows the round with nothing more) and
scores the completion tokens. A forward hook on the policy module (a public torch mechanism; it
fires under DDP, FSDP, DeepSpeed and PEFT, which all call the module) sees the same logits while
the seam is armed and folds them at the K virtual temperatures with
:func:`metactl.integrations.torch.temperature_loglik` (Triton on GPU): no extra model forward, no
extra LM-head pass, never a ``[K, rows, V]`` tensor.
"""

from __future__ import annotations

from typing import Any

import torch

from metactl.integrations.torch import temperature_loglik
from metactl.integrations.torch._dispatch import Implementation

from ._seam import Seam, SeamDoesNotFit


class LogitsSeam(Seam):
    """Folds the logits of the policy's armed forwards (see the module docstring).

    Args:
        trainer: the trainer (its ``model``, the module TRL's loss forward calls, is hooked).
        policy: unused (the hook is on ``trainer.model``, the PEFT wrapper included).
        temperature: None (TRL reads ``trainer.temperature``).
        implementation: the fold implementation.
    """

    name = "logits"
    cost = "no extra forward: folds the logits TRL's loss forward computes"

    def __init__(
        self, trainer: Any, policy: Any, temperature: Any, implementation: Implementation
    ) -> None:
        super().__init__(temperature)
        self.implementation: Implementation = implementation
        self._handle = trainer.model.register_forward_hook(self._fold, with_kwargs=True)

    def _fold(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if self._armed is None:
            return
        temperatures, length = self._armed
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        logits = output.get("logits") if isinstance(output, dict) else None  # a ModelOutput
        if ids is None or mask is None or logits is None:
            raise SeamDoesNotFit(
                "TRL's loss forward does not call the policy with input_ids and attention_mask "
                "keywords and get logits back"
            )
        logits = logits[:, -length - 1 : -1]
        with self.clock.timing(logits.device):
            per_token = temperature_loglik(
                logits,
                ids[:, -length:],
                mask[:, -length:],
                temperatures,
                reduction="none",
                implementation=self.implementation,
            )
            self.keep(per_token.to(torch.float32))

    def close(self) -> None:
        self._handle.remove()
