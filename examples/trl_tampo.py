"""GRPO with TAMPO choosing the sampling temperature, on TRL: CleanRL-style, one file.

    python examples/trl_tampo.py                          # offline, CPU: warm-started tiny model
    python examples/trl_tampo.py --controller fixed       # the GRPOTrainer baseline at T = 1
    python examples/trl_tampo.py --no-warm-start          # from random weights (reward stays 0)
    python examples/trl_tampo.py --model Qwen/Qwen2.5-0.5B-Instruct --max-steps 200 \
        --max-completion-length 256 --num-generations 8   # a real run, on a GPU

The lines metactl adds to a plain TRL GRPO script are marked ``# metactl:``: build a
controller, and use MetaGRPOTrainer (GRPOTrainer plus ``controller=``). Everything else is
TRL: the trainer samples each generation round at the controller's temperature, scores the
rollouts at the virtual temperatures from the loss forward it already makes, updates the
controller once per round and logs ``meta/*`` through ``report_to``. See docs/trl.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PrinterCallback, TrainerCallback
from trl import GRPOConfig

import metactl as mc  # metactl:
from metactl.integrations.lab.testbed import (
    WarmStartConfig,
    evaluate,
    make_model,
    make_task,
    make_tokenizer,
    warm_start,
)
from metactl.integrations.trl import MetaGRPOTrainer  # metactl:


@dataclass
class Args:
    model: str = ""
    """hub id or local path of a causal LM; empty = the testbed's tiny local model (offline)"""
    controller: str = "tampo"
    """tampo | metagradient (continuous T in [0.3, 3]) | fixed (T = --temperature)"""
    temperature: float = 1.0
    """the temperature of --controller fixed"""
    task: str = "addition"
    """testbed task the prompts come from: addition | sorting | countdown"""
    difficulty: int = 2
    warm_start: bool = True
    """SFT warm start of the tiny model first (cached): a random model never earns a reward"""
    seed: int = 0
    max_steps: int = 60
    learning_rate: float = 1e-4
    per_device_train_batch_size: int = 64
    num_generations: int = 8
    max_completion_length: int = 0
    """0 = the task's own length"""
    steps_per_generation: int = 1
    num_iterations: int = 1
    output_dir: str = "runs/trl_tampo"
    report_to: str = "none"
    """none | tensorboard | wandb | trackio"""
    save_steps: int = 0
    """checkpoint every N steps (0 = none); resume with --resume-from"""
    resume_from: str = ""


def parse_args(argv: list[str]) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default)
    return Args(**vars(parser.parse_args(argv)))


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def math_reward(
    prompts: list[Any], completions: list[Any], answer: list[str], **kwargs: Any
) -> list[float]:
    """1.0 when the completion's final answer (``\\boxed{...}`` or its last number) is ``answer``."""
    scores = []
    for completion, target in zip(completions, answer, strict=True):
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        boxed = re.findall(r"\\boxed\{([^}]*)\}", text)
        numbers = _NUMBER.findall(boxed[-1] if boxed else text)
        scores.append(float(bool(numbers) and numbers[-1] == str(target).strip()))
    return scores


class RoundSummary(TrainerCallback):  # type: ignore[misc]
    """Print the mean reward and temperature of every ``every`` rounds."""

    def __init__(self, every: int) -> None:
        self.every, self.rewards, self.temperatures = every, [], []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs and "reward" in logs:
            self.rewards.append(logs["reward"])
            self.temperatures.append(logs.get("meta/temperature", float("nan")))
        if len(self.rewards) == self.every:
            print(
                f"rounds to {state.global_step}: mean reward {np.mean(self.rewards):.3f}, "
                f"mean temperature {np.mean(self.temperatures):.2f}",
                flush=True,
            )
            self.rewards, self.temperatures = [], []


def main(args: Args) -> None:
    # seeding
    random.seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002  (CleanRL seeding block; the library never does this)
    torch.manual_seed(args.seed)

    task = make_task(args.task, difficulty=args.difficulty, seed=args.seed)
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
        reward_funcs: Any = math_reward
    elif args.warm_start:
        model, tokenizer, _ = warm_start(
            WarmStartConfig(task=args.task, difficulty=args.difficulty, seed=args.seed)
        )
        reward_funcs = task.reward_func
    else:
        tokenizer = make_tokenizer()
        model = make_model(tokenizer, seed=args.seed)
        reward_funcs = task.reward_func

    if args.controller == "tampo":  # metactl: the paper's rule over T in 0.6..1.5
        controller: mc.Controller = mc.TAMPO(seed=args.seed)
    elif args.controller == "metagradient":  # metactl: a continuous temperature
        controller = mc.MetaGradient(mc.Box(0.3, 3.0, log=True), seed=args.seed)
    elif args.controller == "fixed":  # metactl: the baseline, GRPOTrainer's behaviour
        controller = mc.Fixed(args.temperature)
    else:
        raise ValueError(
            f"--controller: expected tampo, metagradient or fixed, got {args.controller!r}"
        )

    on_gpu = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=args.output_dir,
        seed=args.seed,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        per_device_train_batch_size=args.per_device_train_batch_size,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length or task.max_completion_length,
        steps_per_generation=args.steps_per_generation,
        num_iterations=args.num_iterations,
        logging_steps=1,  # every round's meta/temperature in the log history
        report_to=args.report_to,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        use_cpu=not on_gpu,
        bf16=on_gpu,
        gradient_checkpointing=on_gpu and bool(args.model),
        disable_tqdm=True,
    )
    trainer = MetaGRPOTrainer(  # metactl: GRPOTrainer + controller=
        model=model,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=task.train,
        processing_class=tokenizer,
        controller=controller,  # metactl:
    )
    trainer.remove_callback(PrinterCallback)  # one line per 10 rounds below, not every log
    trainer.add_callback(RoundSummary(every=10))
    held_out = not args.model  # the testbed's held-out prompts, scored by greedy decoding
    before = evaluate(model, tokenizer, task) if held_out else None
    trainer.train(resume_from_checkpoint=args.resume_from or None)

    temperatures = [
        h["meta/temperature"] for h in trainer.state.log_history if "meta/temperature" in h
    ]
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    print(f"temperatures per round: {[round(t, 3) for t in temperatures]}")
    tenth = max(1, len(rewards) // 10)
    print(
        f"mean reward, first / last {tenth} rounds: "
        f"{np.mean(rewards[:tenth]):.3f} / {np.mean(rewards[-tenth:]):.3f}"
    )
    if before is not None:
        print(f"held-out greedy accuracy: {before:.1%} -> {evaluate(model, tokenizer, task):.1%}")
    if isinstance(controller.space, mc.Discrete) and args.controller == "tampo":  # metactl:
        probs = dict(
            zip(
                controller.space.values.tolist(),
                np.round(controller.probs, 3).tolist(),
                strict=True,
            )
        )
        print(f"meta-policy: {probs}")


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
