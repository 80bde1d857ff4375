"""The ``"hidden-states"`` seam: the fallback for a TRL whose loss forward shows no logits nor tiles.

For a TRL after the tested range whose internals moved, or an option that bypasses both fast
seams (e.g. ``use_liger_kernel=True`` on TRL 1.14, whose chunked loss reads the backbone and the
LM head weight directly): a forward hook on the policy's backbone (``model.base_model``, which
every causal LM and TRL's chunked heads call as a module) keeps the final hidden states of the
armed loss forwards, and :func:`metactl.integrations.torch.hidden_rows_loglik` projects the
completion tokens' rows through the LM head once more, tile by tile (Triton on GPU), at the K
virtual temperatures. The loss temperature is followed as TRL reads it: ``trainer.temperature``,
or the fused head's :class:`~._seam_fused.RoundTemperature`.
"""

from __future__ import annotations

from typing import Any

import torch

from metactl.integrations.torch import hidden_rows_loglik
from metactl.integrations.torch._dispatch import Implementation

from ._seam import Seam, SeamDoesNotFit


class HiddenStatesSeam(Seam):
    """Scores the completion tokens from the backbone's output (see the module docstring).

    Args:
        trainer: the trainer.
        policy: the policy's transformers model (the base model under PEFT).
        temperature: the fused heads' RoundTemperature, or None when TRL reads
            ``trainer.temperature``.
        implementation: the projection-and-fold implementation.
    """

    name = "hidden-states"
    cost = (
        "one extra LM-head pass over the completion tokens of every loss forward: measured "
        "1.22x GRPOTrainer's time against 1.18x-1.19x for the fast seams, on a tiny CPU model "
        "with a 32k vocabulary"
    )

    def __init__(
        self, trainer: Any, policy: Any, temperature: Any, implementation: Implementation
    ) -> None:
        super().__init__(temperature)
        self.implementation: Implementation = implementation
        self._policy = policy
        config = policy.config.get_text_config().to_dict()
        self._softcap: float | None = config.get("final_logit_softcapping")
        scale = config.get("logit_scale")
        self._logit_scale = 1.0 if scale is None else float(scale)
        backbone = policy.base_model  # transformers: the policy itself when it has none
        if backbone is policy:
            raise SeamDoesNotFit(f"{type(policy).__name__} has no backbone module to hook")
        self._handle = backbone.register_forward_hook(self._score, with_kwargs=True)

    def _score(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if self._armed is None:
            return
        temperatures, length = self._armed
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is None or mask is None:
            raise SeamDoesNotFit(
                "the backbone is not called with input_ids and attention_mask keywords"
            )
        head = self._policy.get_output_embeddings()
        with self.clock.timing(head.weight.device):
            self._score_rows(head, output.last_hidden_state, ids, mask, temperatures, length)

    def _score_rows(
        self,
        head: Any,
        last_hidden: Any,
        ids: Any,
        mask: Any,
        temperatures: list[float],
        length: int,
    ) -> None:
        """One extra LM-head pass over the scored completion rows, at every temperature."""
        hidden = last_hidden[:, -length - 1 : -1].to(head.weight.device)
        scored = mask[:, -length:].to(head.weight.device) != 0
        tokens = ids[:, -length:].to(head.weight.device)
        rows = hidden_rows_loglik(
            hidden[scored],
            head.weight,
            head.bias,
            tokens[scored].long(),
            temperatures,
            logit_scale=self._logit_scale,
            softcap=self._softcap,
            implementation=self.implementation,
        )
        per_token = torch.zeros(*scored.shape, len(temperatures), device=rows.device)
        per_token[scored] = rows
        self.keep(per_token)

    def close(self) -> None:
        self._handle.remove()
