"""TRL's DEFAULT GRPOConfig (bf16, gradient checkpointing) with MetaGRPOTrainer, on a GPU: one JSON line.

    python examples/gpu_trl_defaults.py                   # on a GPU (TRL 1.16: the fused-tiles seam)
    python examples/gpu_trl_defaults.py --device cpu --max-steps 2 --hidden-size 64 --layers 2
                                                          # a smoke check on CPU (bf16 autocast)

A small Qwen2 built from a config (no downloads) and the testbed's character tokenizer, on a
verifiable toy reward (the fraction of digits in the completion). Three runs with the same
seed, each on the release's default GRPOConfig with only the device and sizes set:

- ``grpo``: ``GRPOTrainer(temperature=T)``;
- ``fixed``: ``MetaGRPOTrainer(controller=mc.Fixed(T))``, which must train as ``grpo`` does
  (on CPU bit for bit; on a GPU, up to the kernels' own nondeterminism: ``max_abs_diff``);
- ``tampo``: ``MetaGRPOTrainer(controller=mc.TAMPO(seed))``, the temperature changing every round.

Printed: one JSON object with the versions, the seam, each run's seconds and peak GPU memory,
the logged losses, the TAMPO temperatures and final meta-policy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import transformers
import trl
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForCausalLM
from trl import GRPOConfig, GRPOTrainer

import metactl as mc
from metactl.integrations.lab.testbed import make_tokenizer
from metactl.integrations.trl import MetaGRPOTrainer


@dataclass
class Args:
    device: str = "cuda"
    """cuda | cpu (a smoke check: CPU bf16 autocast, slow)"""
    seed: int = 0
    max_steps: int = 10
    temperature: float = 0.7
    """T of the grpo and fixed runs"""
    hidden_size: int = 512
    layers: int = 4
    vocab_size: int = 32768
    """rows of the LM head (the tokenizer uses the first few): a realistic vocabulary cost"""
    per_device_train_batch_size: int = 32
    num_generations: int = 8
    max_completion_length: int = 64
    output_dir: str = "runs/gpu_trl_defaults"


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=type(f.default), default=f.default
        )
    return Args(**vars(parser.parse_args()))


def digit_reward(prompts: list[Any], completions: list[str], **kwargs: Any) -> list[float]:
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def make_model(args: Args, tokenizer: Any) -> Qwen2ForCausalLM:
    torch.manual_seed(args.seed)  # visible seeding: the same weights in every run
    config = Qwen2Config(
        vocab_size=max(args.vocab_size, len(tokenizer)),
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden_size // 64),
        num_key_value_heads=max(1, args.hidden_size // 128),
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return Qwen2ForCausalLM(config)


def default_config(args: Args, name: str, **extra: Any) -> GRPOConfig:
    """The release's defaults (bf16 and gradient checkpointing on) with the device and sizes set."""
    return GRPOConfig(
        output_dir=f"{args.output_dir}/{name}",
        use_cpu=args.device == "cpu",
        per_device_train_batch_size=args.per_device_train_batch_size,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        max_steps=args.max_steps,
        seed=args.seed,
        logging_steps=1,  # every step's loss to compare (changes no number)
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **extra,
    )


def run(
    args: Args, name: str, cls: type, tokenizer: Any, **kwargs: Any
) -> tuple[Any, dict[str, Any]]:
    extra = {"temperature": args.temperature} if cls is GRPOTrainer else {}
    config = default_config(args, name, **extra)
    dataset = Dataset.from_dict({"prompt": [f"{i}+{i + 1}=" for i in range(512)]})
    trainer = cls(
        model=make_model(args, tokenizer),
        reward_funcs=digit_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        **kwargs,
    )
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    result = {
        "seconds": round(time.perf_counter() - start, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "bf16": config.bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "loss": [h["loss"] for h in logs],
        "grad_norm": [h["grad_norm"] for h in logs],
    }
    return trainer, result


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU visible; pass --device cpu for a smoke check")
    tokenizer = make_tokenizer()
    _, grpo = run(args, "grpo", GRPOTrainer, tokenizer)
    fixed_trainer, fixed = run(
        args, "fixed", MetaGRPOTrainer, tokenizer, controller=mc.Fixed(args.temperature)
    )
    tampo_trainer, tampo = run(
        args, "tampo", MetaGRPOTrainer, tokenizer, controller=mc.TAMPO(seed=args.seed)
    )
    pairs = list(
        zip(grpo["loss"] + grpo["grad_norm"], fixed["loss"] + fixed["grad_norm"], strict=True)
    )
    temperatures = [
        h["meta/temperature"] for h in tampo_trainer.state.log_history if "meta/temperature" in h
    ]
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                "versions": {
                    "trl": trl.__version__,
                    "transformers": transformers.__version__,
                    "torch": torch.__version__,
                },
                "args": dataclasses.asdict(args),
                "seam": fixed_trainer.seam,
                "fixed_equals_grpo": fixed["loss"] == grpo["loss"]
                and fixed["grad_norm"] == grpo["grad_norm"],
                "fixed_max_abs_diff": max(abs(a - b) for a, b in pairs),
                "tampo_finite": all(math.isfinite(x) for x in tampo["loss"] + tampo["grad_norm"]),
                "tampo_temperatures": temperatures,
                "tampo_probs": [round(float(p), 4) for p in tampo_trainer.controller.probs],
                "grpo": grpo,
                "fixed": fixed,
                "tampo": tampo,
            }
        )
    )


if __name__ == "__main__":
    main()
