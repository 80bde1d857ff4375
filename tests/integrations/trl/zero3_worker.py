"""Worker for the DeepSpeed ZeRO-3 tests: ``python zero3_worker.py OUT_DIR MODE MODEL_PATH``.

One process trains with TRL's default GRPOConfig (bf16 and gradient checkpointing as the release
defaults, ``use_cpu`` and sizes set) plus a ZeRO-3 DeepSpeed config, on DeepSpeed's CPU
accelerator (gloo). Each run is its own process: DeepSpeed and accelerate keep process-wide
state (the process group, ``AcceleratorState``) that must not leak into other tests.

MODE:
    ``grpo``: ``GRPOTrainer(temperature=0.7)``.
    ``fixed``: ``MetaGRPOTrainer(controller=mc.Fixed(0.7))``.
    ``tampo``: ``MetaGRPOTrainer(controller=mc.TAMPO(seed=0))``, recording each round's batch,
        the policy's weights that scored it and the controller's feedback.
    ``deaf``: ``fixed`` with TRL's loss log-probs not those at the temperature set (what a
        release whose loss stopped following it would give): the first round's probe must stop
        the run before any update.
    ``liger``: ``fixed`` with ``use_liger_kernel=True``, only constructed.

Writes ``OUT_DIR/result.json`` (the log history's losses and grad norms, the seam, the
warnings, the error raised if any) and ``OUT_DIR/weights.pt`` (the gathered final weights);
``tampo`` also ``OUT_DIR/rounds.pt``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import deepspeed
import torch
from conftest import default_config, digit_reward, make_dataset
from trl import GRPOTrainer

import metactl as mc
from metactl.integrations.lab.testbed import make_tokenizer
from metactl.integrations.trl import MetaGRPOTrainer

T = 0.7
ZERO3 = {
    "zero_optimization": {"stage": 3},
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "bf16": {"enabled": "auto"},
}


def gathered(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full weights of a ZeRO-3 model (each rank holds a partition outside the forward)."""
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def main(out: str, mode: str, model_path: str) -> None:
    for key, value in {"MASTER_ADDR": "127.0.0.1", "RANK": "0", "LOCAL_RANK": "0"}.items():
        os.environ.setdefault(key, value)
    os.environ["WORLD_SIZE"] = "1"
    extra: dict[str, Any] = {}
    if mode == "liger":
        from test_trl_liger import NO_PATCHING

        extra = {"use_liger_kernel": True, "liger_kernel_config": NO_PATCHING}
    if mode == "grpo":
        extra["temperature"] = T
    args = default_config(Path(out) / "run", deepspeed=ZERO3, **extra)
    result: dict[str, Any] = {"error": None}
    cls = GRPOTrainer if mode == "grpo" else MetaGRPOTrainer
    if mode == "deaf":
        cls = deaf_trainer()
    kwargs: dict[str, Any] = {}
    if mode != "grpo":
        kwargs["controller"] = mc.TAMPO(seed=0) if mode == "tampo" else mc.Fixed(T)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer = cls(
                model=model_path,
                reward_funcs=digit_reward,
                args=args,
                train_dataset=make_dataset(),
                processing_class=make_tokenizer(),
                **kwargs,
            )
        except RuntimeError as exc:
            result["error"] = str(exc)
            trainer = None
    result["warnings"] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if trainer is not None:
        result["seam"] = trainer.seam if isinstance(trainer, MetaGRPOTrainer) else None
        rounds = record_rounds(trainer) if mode == "tampo" else None
        try:
            trainer.train()
        except RuntimeError as exc:
            result["error"] = str(exc)
        result["steps"] = trainer.state.global_step
        result["logs"] = [
            [h["loss"], h["grad_norm"]] for h in trainer.state.log_history if "loss" in h
        ]
        torch.save(gathered(trainer.model), Path(out, "weights.pt"))
        if rounds is not None:
            torch.save(rounds, Path(out, "rounds.pt"))
    Path(out, "result.json").write_text(json.dumps(result))


def deaf_trainer() -> type:
    class DeafLogProbs(MetaGRPOTrainer):
        """TRL's log-prob forward returning log-probs that are not those at the temperature set
        (here twice them): what a release whose loss stopped following it would give."""

        def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
            logps, *rest = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            return (2 * logps, *rest)

    return DeafLogProbs


def record_rounds(trainer: Any) -> list[dict[str, Any]]:
    """Each training round's batch, the weights that scored it, its temperature and feedback."""
    rounds: list[dict[str, Any]] = []
    generate, update = trainer._generate_and_score_completions, trainer.controller.update

    def recording_generate(inputs: Any) -> Any:
        batch = generate(inputs)
        if trainer.model.training:
            rounds.append(
                {
                    "batch": {k: v for k, v in batch.items() if torch.is_tensor(v)},
                    "weights": gathered(trainer.model),
                    "temperature": trainer.temperature,
                }
            )
        return batch

    def recording_update(feedback: Any) -> Any:
        rounds[-1]["virtual"] = feedback.decision.virtual.tolist()
        rounds[-1]["value"] = feedback.decision.value
        rounds[-1]["loglik"] = torch.tensor(feedback.loglik)
        return update(feedback)

    trainer._generate_and_score_completions = recording_generate
    trainer.controller.update = recording_update
    return rounds


if __name__ == "__main__":
    main(*sys.argv[1:4])
