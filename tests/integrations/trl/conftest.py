"""Fixtures for the TRL integration tests: a tiny local LM, a char tokenizer and a verifiable task.

Everything is built offline (no hub): the testbed's character-level tokenizer and tiny Qwen2.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("trl")

from datasets import Dataset
from trl import GRPOConfig

from metactl.integrations.lab.testbed import make_model, make_tokenizer


def digit_reward(prompts: list[Any], completions: list[str], **kwargs: Any) -> list[float]:
    """A dense verifiable reward: the fraction of digits in the completion."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def make_dataset(n: int = 16) -> Dataset:
    return Dataset.from_dict({"prompt": [f"{i}+{i + 1}=" for i in range(n)]})


def make_config(tmp_path: Any, **overrides: Any) -> GRPOConfig:
    """A tiny, fast GRPOConfig on CPU: 4 completions per prompt, 6 tokens each."""
    kwargs: dict[str, Any] = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 6,
        "max_steps": 3,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "bf16": False,  # GRPOConfig defaults to bf16 autocast, slow and inexact on CPU
        "gradient_checkpointing": False,
    }
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)


SIZES: dict[str, Any] = {
    "per_device_train_batch_size": 4,
    "num_generations": 4,
    "max_completion_length": 6,
    "max_steps": 2,
    "dataloader_num_workers": 0,
}
"""The only settings :func:`default_config` changes, besides ``use_cpu``: sizes."""


def default_config(tmp_path: Any, **overrides: Any) -> GRPOConfig:
    """The installed release's DEFAULT GRPOConfig (bf16 autocast and gradient checkpointing as
    they default), with only ``use_cpu`` and the sizes of :data:`SIZES` set, plus
    ``logging_steps=1`` so that every step's loss and grad norm are logged to compare (logging
    changes no number)."""
    kwargs: dict[str, Any] = {"output_dir": str(tmp_path), "use_cpu": True, "logging_steps": 1}
    kwargs.update(SIZES)
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)


def meta_trainer(tokenizer: Any, model: Any, args: GRPOConfig, **kwargs: Any) -> Any:
    """A MetaGRPOTrainer on the digit reward and the tiny dataset (``kwargs``: controller=...)."""
    from metactl.integrations.trl import MetaGRPOTrainer

    return MetaGRPOTrainer(
        model=model,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        **kwargs,
    )


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return make_tokenizer()


@pytest.fixture
def model(tokenizer: Any) -> Any:
    return make_model(tokenizer, seed=0)


@pytest.fixture(scope="session")
def model_path(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model saved to disk (TRL builds a reference model from a path when beta > 0)."""
    path = tmp_path_factory.mktemp("tiny-model")
    make_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
