"""MetaGRPOTrainer on the installed TRL release, whichever seam it uses (run on every release by nox).

Each test compares against GRPOTrainer itself or against an independent float64 recomputation
from the policy's weights, so that it holds on 1.0 (logits), 1.16 (fused tiles) and the fallback.
"""

from __future__ import annotations

import ast
import copy
import functools
import math
import subprocess
import sys
import warnings
from typing import Any

import pytest
import torch
from conftest import digit_reward, make_config, make_dataset, meta_trainer
from trl import GRPOTrainer

import metactl as mc
from metactl.integrations.trl import MetaGRPOTrainer
from metactl.integrations.trl._seam_fused import RoundTemperature
from metactl.integrations.trl._seam_hidden import HiddenStatesSeam

LOGGED = ("loss", "reward", "grad_norm", "entropy")
T = 0.7


def history(trainer: Any) -> list[dict[str, float | None]]:
    # a step without generation (num_iterations > 1) logs no reward
    return [{k: h.get(k) for k in LOGGED} for h in trainer.state.log_history if "loss" in h]


CONFIGS = {
    "plain": {},
    "iterations-beta": {"num_iterations": 2, "beta": 0.1, "steps_per_generation": 1},
    "accumulation": {"gradient_accumulation_steps": 2, "per_device_train_batch_size": 4},
}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_fixed_trains_bit_identically_to_grpo_trainer(tokenizer, model_path, tmp_path, overrides):
    def train(cls: type, **kwargs: Any) -> list[dict[str, float]]:
        temperature = {"temperature": T} if cls is GRPOTrainer else {}
        args = make_config(tmp_path / cls.__name__, max_steps=4, **temperature, **overrides)
        trainer = cls(
            model=model_path,
            reward_funcs=digit_reward,
            args=args,
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            **kwargs,
        )
        trainer.train()
        return history(trainer)

    plain = train(GRPOTrainer)
    meta = train(MetaGRPOTrainer, controller=mc.Fixed(T))
    assert len(plain) == 4 and all(math.isfinite(h["loss"]) for h in plain)
    assert meta == plain  # every logged value, bit for bit


class Rounds:
    """Each training round's rollouts as generated, and the feedback the controller received."""

    def __init__(self, trainer: Any) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []
        self.models: list[torch.nn.Module] = []
        self.temperatures: list[float] = []
        self.feedback: list[mc.Counterfactual] = []
        self.entropy: list[float] = []
        generate = trainer._generate_and_score_completions
        update = trainer.controller.update

        def recording_generate(inputs: Any) -> Any:
            batch = generate(inputs)
            if trainer.model.training:
                self.batches.append({k: v for k, v in batch.items() if torch.is_tensor(v)})
                # the policy of this round's first pass (no optimizer step since generation), in
                # float64, as a plain model: TRL's patched instance forward is not copied
                policy = trainer.model
                twin = type(policy)(policy.config).double().eval()
                twin.load_state_dict(policy.state_dict())
                self.models.append(twin)
                self.temperatures.append(trainer.temperature)
            return batch

        def recording_update(feedback: Any) -> Any:
            self.feedback.append(feedback)
            return update(feedback)

        trainer._generate_and_score_completions = recording_generate
        trainer.controller.update = recording_update


def float64_scores(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], temperatures: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per rollout: mean ``log softmax(z / T_k)[token]`` over its completion tokens, ``[N, K]``,
    and the mean token entropy at each temperature, ``[N, K]`` summed (with the token count)."""
    completion, mask = batch["completion_ids"], batch["completion_mask"].double()
    ids = torch.cat([batch["prompt_ids"], completion], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        z = model(input_ids=ids, attention_mask=attention).logits[:, -completion.size(1) - 1 : -1]
    logp = torch.stack([torch.log_softmax(z / t, -1) for t in temperatures], 0)
    token = logp.gather(-1, completion[None, ..., None].expand(len(temperatures), -1, -1, 1))[
        ..., 0
    ]
    mean_logp = (token * mask).sum(-1) / mask.sum(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return mean_logp.T, entropy


def test_counterfactual_rows_equal_a_float64_recomputation_paired_with_their_advantage(
    tokenizer, model, tmp_path
):
    """Two micro-batches per round (TRL shuffles the generation batch): match rows, not order."""
    args = make_config(tmp_path, max_steps=4, steps_per_generation=2, gradient_accumulation_steps=2)
    trainer = meta_trainer(tokenizer, model, args, controller=mc.TAMPO(seed=0))
    rounds = Rounds(trainer)
    trainer.train()

    assert len(rounds.feedback) == len(rounds.batches) == 4
    for feedback, batch, policy in zip(rounds.feedback, rounds.batches, rounds.models, strict=True):
        want, _ = float64_scores(policy, batch, feedback.decision.virtual.tolist())
        advantages = batch["advantages"].double()
        got = torch.tensor(feedback.loglik)
        assert got.shape == want.shape == (8, 10)
        # each feedback row is some rollout's row: the nearest recomputed row, one to one
        nearest = torch.cdist(got, want).argmin(dim=1)
        assert sorted(nearest.tolist()) == list(range(8))
        torch.testing.assert_close(got, want[nearest], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(
            torch.tensor(feedback.advantages), advantages[nearest], atol=1e-6, rtol=0
        )
    assert len(set(rounds.temperatures)) > 1


def test_logged_entropy_is_the_entropy_at_the_round_temperature(tokenizer, model, tmp_path):
    args = make_config(tmp_path, max_steps=4, steps_per_generation=1, gradient_accumulation_steps=1)
    trainer = meta_trainer(tokenizer, model, args, controller=mc.TAMPO(seed=0))
    rounds = Rounds(trainer)
    trainer.train()

    logged = [h["entropy"] for h in trainer.state.log_history if "entropy" in h]
    assert len(logged) == 4 and len(set(rounds.temperatures)) > 1
    for got, batch, policy, temperature in zip(
        logged, rounds.batches, rounds.models, rounds.temperatures, strict=True
    ):
        _, entropy = float64_scores(policy, batch, [temperature])
        mask = batch["completion_mask"].double()
        want = float((entropy[0] * mask).sum() / mask.sum())
        assert got == pytest.approx(want, abs=1e-4)


def twin(tokenizer: Any, model: Any, tmp_path: Any, name: str) -> Any:
    args = make_config(
        tmp_path / name, max_steps=3, steps_per_generation=1, gradient_accumulation_steps=1
    )
    return meta_trainer(tokenizer, copy.deepcopy(model), args, controller=mc.TAMPO(seed=0))


def test_fallback_seam_gives_the_scores_of_the_fast_seam(tokenizer, model, tmp_path):
    """Two identical runs, one through the release's own seam, one through the fallback."""

    def train(fallback: bool) -> Rounds:
        trainer = twin(tokenizer, model, tmp_path, f"fallback-{fallback}")  # seeds torch
        assert trainer.seam in {"logits", "fused-tiles"}  # every tested release has a fast seam
        if fallback:  # as construction picks it when the fast seam does not fit
            own = trainer._seam
            own.close()
            trainer._seam = HiddenStatesSeam(trainer, trainer.model, own.temperature, "torch")
        rounds = Rounds(trainer)
        trainer.train()
        return rounds

    fast, fallback = train(False), train(True)
    assert fast.temperatures == fallback.temperatures
    assert len(fast.feedback) == len(fallback.feedback) == 3
    for a, b in zip(fast.feedback, fallback.feedback, strict=True):
        torch.testing.assert_close(
            torch.tensor(a.loglik), torch.tensor(b.loglik), atol=1e-5, rtol=1e-5
        )
        assert a.advantages.tolist() == b.advantages.tolist()


def test_a_trl_whose_loss_ignores_the_temperature_is_refused_naming_the_range(
    tokenizer, model, tmp_path, monkeypatch
):
    """As if a future TRL scored its loss at a fixed temperature: one error, no traceback noise."""
    inner = GRPOTrainer._get_per_token_logps_and_entropies

    @functools.wraps(inner)  # the same signature
    def at_fixed_temperature(self: Any, *args: Any, **kwargs: Any) -> Any:
        saved, self.temperature = self.temperature, 1.0
        try:
            return inner(self, *args, **kwargs)
        finally:
            self.temperature = saved

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", at_fixed_temperature)
    # a fused head reads its own temperature object: as if TRL stopped computing 1 / temperature
    monkeypatch.setattr(RoundTemperature, "__rtruediv__", lambda self, other: other / 1.0)
    with pytest.raises(RuntimeError, match=r"cannot follow a temperature.*supports trl>=1\.0"):
        twin(tokenizer, model, tmp_path, "fixed")


def test_a_grpo_trainer_without_the_methods_relied_on_is_refused(
    tokenizer, model, tmp_path, monkeypatch
):
    monkeypatch.delattr(GRPOTrainer, "_calculate_rewards")
    with pytest.raises(
        RuntimeError, match=r"GRPOTrainer\._calculate_rewards is missing.*trl>=1\.0"
    ):
        twin(tokenizer, model, tmp_path, "moved")


def test_a_controller_that_already_decided_warns(tokenizer, model, tmp_path):
    used = mc.TAMPO(seed=0)
    used.sample()
    used.sample()
    args = make_config(tmp_path, max_steps=1)
    with pytest.warns(UserWarning, match=r"already made 2 decisions.*new controller"):
        meta_trainer(tokenizer, copy.deepcopy(model), args, controller=used)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        meta_trainer(tokenizer, model, args, controller=mc.TAMPO(seed=0))


def test_import_touches_no_private_trl_module():
    """``import metactl.integrations.trl`` works on every release: TRL's kernel module is tried
    only when a trainer is built (and only on a release with a fused LM head)."""
    code = (
        "import sys, metactl.integrations.trl as m; "
        "print(sorted(k for k in sys.modules if k.startswith('metactl.integrations.trl.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = ast.literal_eval(out.strip())
    assert "metactl.integrations.trl._seam_fused" not in loaded
    assert "metactl.integrations.trl.trainer" in loaded


def test_a_policy_that_cannot_run_yet_gets_the_fast_seam_probed_at_the_first_round(
    tokenizer, model, tmp_path, monkeypatch
):
    """Under DeepSpeed ZeRO-3 the weights are partitioned until training: no probe forward at
    construction, the probe at the first round (the real ZeRO-3 runs: test_trl_zero3.py)."""
    from metactl.integrations.trl import _seam

    with torch.device("meta"):
        on_meta = type(model)(model.config)
    assert not _seam.can_run_now(on_meta) and _seam.can_run_now(model)
    probed = meta_trainer(tokenizer, copy.deepcopy(model), make_config(tmp_path / "a")).seam
    monkeypatch.setattr(_seam, "can_run_now", lambda policy: False)  # as ZeRO-3 would say
    with pytest.warns(UserWarning, match=rf"cannot probe .* takes the '{probed}' seam"):
        trainer = meta_trainer(tokenizer, model, make_config(tmp_path / "b", max_steps=1))
    assert trainer.seam == probed
    probes: list[Any] = []
    real_probe = _seam.probe

    def counted_probe(*args: Any) -> None:
        probes.append(args)
        real_probe(*args)

    monkeypatch.setattr(_seam, "probe", counted_probe)
    trainer.train()
    assert len(probes) == 1 and trainer.state.global_step == 1
