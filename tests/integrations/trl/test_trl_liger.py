"""``use_liger_kernel=True`` on every release (run by nox with liger-kernel installed).

TRL 1.0-1.13 train with a fused linear GRPO loss (Liger's, then TRL's own) built with the
trainer's temperature; TRL 1.14 scores through its chunked loss; 1.15-1.16 only apply Liger's
layer kernels. Liger's model patching is its Triton kernels (GPU only), so it is off here
(``liger_kernel_config`` with every kernel off); the GRPO loss, which runs on CPU, is on.
``bf16`` is off as in the other matrix tests (exact comparisons, fast); the default config is
tested in test_trl_defaults.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import digit_reward, make_config, make_dataset, meta_trainer
from test_trl_matrix import Rounds, float64_scores
from trl import GRPOTrainer

import metactl as mc
from metactl.integrations.trl import MetaGRPOTrainer, _trl_private

pytest.importorskip("liger_kernel")

T = 0.7
NO_PATCHING = {
    "rope": False,
    "swiglu": False,
    "cross_entropy": False,
    "fused_linear_cross_entropy": False,
    "rms_norm": False,
}
"""Liger's model patching off: its layer kernels are Triton, which does not run on CPU."""


def liger_config(tmp_path: Any, **overrides: Any) -> Any:
    kwargs = {"use_liger_kernel": True, "liger_kernel_config": NO_PATCHING, "max_steps": 2}
    return make_config(tmp_path, **{**kwargs, **overrides})


def test_fixed_with_liger_trains_bit_identically_to_grpo_trainer_with_liger(
    tokenizer, model_path, tmp_path
):
    """The loss at the controller's temperature, not at the one it was built with (1.0)."""

    def train(cls: type, name: str, **kwargs: Any) -> Any:
        temperature = {"temperature": kwargs.pop("temperature")} if cls is GRPOTrainer else {}
        trainer = cls(
            model=model_path,
            reward_funcs=digit_reward,
            args=liger_config(tmp_path / name, **temperature),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            **kwargs,
        )
        trainer.train()
        return [(h["loss"], h["grad_norm"]) for h in trainer.state.log_history if "loss" in h]

    plain = train(GRPOTrainer, "plain", temperature=T)
    meta = train(MetaGRPOTrainer, "meta", controller=mc.Fixed(T))
    assert len(plain) == 2 and meta == plain  # bit for bit
    # the loss does depend on the temperature: at 1.0, Liger's build-time value here, it differs
    stale = train(GRPOTrainer, "stale", temperature=1.0)
    assert stale != plain


def test_tampo_with_liger_trains_every_loss_at_its_round_temperature(tokenizer, model, tmp_path):
    trainer = meta_trainer(
        tokenizer, model, liger_config(tmp_path, max_steps=3), controller=mc.TAMPO(seed=1)
    )
    losses = _trl_private.temperature_losses(trainer)
    at_call: list[float] = []
    for loss in losses.values():  # what each of Liger's loss calls reads
        loss.register_forward_pre_hook(lambda module, args: at_call.append(module.temperature))
    rounds = Rounds(trainer)
    trainer.train()

    assert len(rounds.feedback) == 3
    if losses:  # TRL 1.0-1.13: every loss call at its round's temperature
        assert trainer.seam == "hidden-states"
        assert at_call == rounds.temperatures
    for feedback, batch, policy in zip(rounds.feedback, rounds.batches, rounds.models, strict=True):
        want, _ = float64_scores(policy, batch, feedback.decision.virtual.tolist())
        got = torch.tensor(feedback.loglik)
        nearest = torch.cdist(got, want).argmin(dim=1)
        assert sorted(nearest.tolist()) == list(range(got.shape[0]))
        torch.testing.assert_close(got, want[nearest], atol=2e-5, rtol=1e-5)
