"""MetaGRPOTrainer with the installed release's DEFAULT GRPOConfig (run on every release by nox).

GRPOConfig defaults to bf16 autocast and gradient checkpointing: accelerate then rebinds the
policy's ``forward`` (mixed precision) and transformers checkpoints its layers. The other
matrix tests turn both off for speed and exactness; these leave them as users get them
(:func:`conftest.default_config`: only ``use_cpu`` and sizes set; torch's CPU autocast runs bf16).
"""

from __future__ import annotations

from typing import Any

import torch
from conftest import default_config, digit_reward, make_dataset, meta_trainer
from trl import GRPOTrainer

import metactl as mc
from metactl.integrations.trl import MetaGRPOTrainer

T = 0.7


def test_the_default_config_is_bf16_with_gradient_checkpointing(tmp_path):
    """What the tests below claim to run (a release that changes its defaults shows here)."""
    args = default_config(tmp_path)
    assert args.bf16 and args.gradient_checkpointing and args.use_cpu


def train(cls: type, model_path: str, tokenizer: Any, tmp_path: Any, **kwargs: Any) -> Any:
    temperature = {"temperature": T} if cls is GRPOTrainer else {}
    trainer = cls(
        model=model_path,
        reward_funcs=digit_reward,
        args=default_config(tmp_path / cls.__name__, **temperature),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        **kwargs,
    )
    trainer.train()
    return trainer


def test_fixed_trains_bit_identically_to_grpo_trainer_with_the_default_config(
    tokenizer, model_path, tmp_path
):
    plain = train(GRPOTrainer, model_path, tokenizer, tmp_path)
    meta = train(MetaGRPOTrainer, model_path, tokenizer, tmp_path, controller=mc.Fixed(T))
    logs = [
        [
            (h["loss"], h["grad_norm"], h["reward"], h["entropy"])
            for h in t.state.log_history
            if "loss" in h
        ]
        for t in (plain, meta)
    ]
    assert len(logs[0]) == 2 and logs[1] == logs[0]  # every logged value, bit for bit
    want, got = plain.model.state_dict(), meta.model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)  # the trained weights, bit for bit
    # the run did train: the weights moved from the checkpoint
    start = type(plain.model).from_pretrained(model_path).state_dict()
    assert any(not torch.equal(start[k], want[k]) for k in start)


def policy_scores(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    temperatures: list[float],
    *,
    autocast: bool,
) -> torch.Tensor:
    """``[N, K]`` mean ``log softmax(z / T_k)[token]`` per rollout, written from the definition,
    with the logits ``z`` of ``model`` as training computes them: under bf16 autocast
    (``autocast``; accelerate's mixed precision) or in the model's own dtype (DeepSpeed's bf16,
    which casts the weights)."""
    completion, mask = batch["completion_ids"], batch["completion_mask"].double()
    ids = torch.cat([batch["prompt_ids"], completion], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        z = model(input_ids=ids, attention_mask=attention).logits
    z = z[:, -completion.size(1) - 1 : -1].double()
    rows = []
    for t in temperatures:
        token = torch.log_softmax(z / t, -1).gather(-1, completion[..., None])[..., 0]
        rows.append((token * mask).sum(-1) / mask.sum(-1))
    return torch.stack(rows, -1)


def test_tampo_trains_with_the_default_config(tokenizer, model, tmp_path):
    """Two rounds of TAMPO; each round's Counterfactual rows are that round's policy's scores."""
    trainer = meta_trainer(tokenizer, model, default_config(tmp_path), controller=mc.TAMPO(seed=0))
    seen: list[tuple[dict[str, torch.Tensor], torch.nn.Module, float]] = []
    feedback: list[mc.Counterfactual] = []
    generate, update = trainer._generate_and_score_completions, trainer.controller.update

    def recording_generate(inputs: Any) -> Any:
        batch = generate(inputs)
        if trainer.model.training:
            twin = type(trainer.model)(trainer.model.config).eval()  # float32, no patched forward
            twin.load_state_dict(trainer.model.state_dict())
            seen.append(
                ({k: v for k, v in batch.items() if torch.is_tensor(v)}, twin, trainer.temperature)
            )
        return batch

    def recording_update(fb: Any) -> Any:
        feedback.append(fb)
        return update(fb)

    trainer._generate_and_score_completions = recording_generate
    trainer.controller.update = recording_update
    trainer.train()

    assert len(feedback) == len(seen) == 2 and trainer.controller.step == 2
    for fb, (batch, policy, temperature) in zip(feedback, seen, strict=True):
        assert fb.decision.value == temperature
        want = policy_scores(policy, batch, fb.decision.virtual.tolist(), autocast=True)
        got = torch.tensor(fb.loglik)
        assert got.shape == want.shape == (4, 10)
        # the rows in any order (TRL shuffles within a round): match each to its nearest
        nearest = torch.cdist(got, want).argmin(dim=1)
        assert sorted(nearest.tolist()) == list(range(4))
        error = float((got - want[nearest]).abs().max())
        # fp32 rounding of the same bf16 logits, far below what tells neighbouring arms apart
        step = float((want[:, 1:] - want[:, :-1]).abs().min())
        assert error < 1e-5 and error < step / 10
