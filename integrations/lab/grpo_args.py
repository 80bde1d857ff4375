"""The mapping from a compare config to one run's ``trl.GRPOConfig``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metactl.integrations.lab.config import CompareConfig
from metactl.integrations.lab.device import Device


def grpo_config(
    cfg: CompareConfig,
    run_dir: Path,
    seed: int,
    *,
    max_completion_length: int,
    device: Device = "cpu",
) -> Any:
    """The ``trl.GRPOConfig`` of one run.

    Args:
        cfg: the compare config (trainer settings, steps).
        run_dir: the run's folder (TRL's scratch output under ``trainer/``).
        seed: the run's seed (data order and sampling).
        max_completion_length: the task's completion budget.
        device: ``cpu`` trains in float32 (bf16 autocast is slower and inexact on a CPU);
            ``cuda`` trains with bf16 autocast.
    """
    from trl.trainer.grpo_config import GRPOConfig

    g = cfg.trainer.num_generations
    return GRPOConfig(
        output_dir=str(run_dir / "trainer"),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.trainer.prompts_per_step * g,
        num_generations=g,
        max_completion_length=max_completion_length,
        learning_rate=cfg.trainer.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=cfg.trainer.beta,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to=cfg.trainer.report_to,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        save_strategy="no",
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
    )
