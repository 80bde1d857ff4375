"""vLLM generation through a stand-in shaped like TRL's VLLMGeneration (every release, by nox).

vLLM itself needs a GPU; :mod:`vllm_standin` copies what GRPOTrainer uses of TRL's object (the
``temperature`` read at every ``generate``, the colocate and server backends). Every round must
be sampled at the controller's temperature, with TRL's old log-probs (its own forward at the
trainer's temperature) equal to the sampling log-probs; a backend that ignores the temperature
is caught by that check and, at run time, by MetaGRPOTrainer itself.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import digit_reward, make_config, make_dataset, meta_trainer
from trl import GRPOTrainer
from vllm_standin import StaleVLLMGeneration, StandInVLLMGeneration, use_standin

import metactl as mc

MODES = ["colocate", "server"]


def record_batches(trainer: Any) -> list[dict[str, torch.Tensor]]:
    batches: list[dict[str, torch.Tensor]] = []
    generate = trainer._generate_and_score_completions

    def recording(inputs: Any) -> Any:
        batch = generate(inputs)
        if trainer.model.training:
            batches.append({k: v for k, v in batch.items() if torch.is_tensor(v)})
        return batch

    trainer._generate_and_score_completions = recording
    return batches


def assert_sampled_where_scored(batch: dict[str, torch.Tensor]) -> None:
    """The sampling log-probs (the backend's, at the temperature it sampled at) equal TRL's old
    log-probs (its forward at the trainer's temperature) on every completion token."""
    mask = batch["completion_mask"].bool()
    sampling, old = batch["sampling_per_token_logps"][mask], batch["old_per_token_logps"][mask]
    torch.testing.assert_close(sampling, old, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_every_round_is_sampled_at_the_controllers_temperature(tokenizer, model, tmp_path, mode):
    args = make_config(tmp_path, max_steps=3, steps_per_generation=1)
    trainer = meta_trainer(tokenizer, model, args, controller=mc.TAMPO(seed=3))
    generation = StandInVLLMGeneration(trainer, mode)
    use_standin(trainer, generation)
    decided: list[float] = []
    sample = trainer.controller.sample

    def recording_sample() -> Any:
        decision = sample()
        decided.append(decision.value)
        return decision

    trainer.controller.sample = recording_sample
    batches = record_batches(trainer)
    trainer.train()

    assert len(decided) == 3 and len(set(decided)) > 1  # the temperature did change
    assert generation.temperatures_read == decided
    for batch in batches:
        assert_sampled_where_scored(batch)


@pytest.mark.parametrize("mode", MODES)
def test_a_backend_that_ignores_the_temperature_is_caught(
    tokenizer, model, model_path, tmp_path, mode
):
    # the test's own check catches it: plain GRPOTrainer at 0.7 with a backend stuck at 1.0
    trainer = GRPOTrainer(
        model=model_path,
        reward_funcs=digit_reward,
        args=make_config(tmp_path / "plain", max_steps=1, temperature=0.7),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    stale = StaleVLLMGeneration(trainer, mode)
    stale._built_with = 1.0
    use_standin(trainer, stale)
    batches = record_batches(trainer)
    trainer.train()  # GRPOTrainer itself says nothing
    with pytest.raises(AssertionError):
        assert_sampled_where_scored(batches[0])

    # and MetaGRPOTrainer stops at the first round it sees generated at another temperature
    meta = meta_trainer(tokenizer, model, make_config(tmp_path / "meta"), controller=mc.Fixed(0.7))
    use_standin(meta, StaleVLLMGeneration(meta, mode))  # built at args.temperature, 1.0
    with pytest.raises(
        RuntimeError,
        match=r"vLLM generated this round at temperature 1\.0, but the controller chose 0\.7",
    ):
        meta.train()
