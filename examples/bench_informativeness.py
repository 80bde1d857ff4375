"""What mc.Informativeness adds to a GRPO step at the testbed's sizes: no forward, one numpy update.

The testbed's tiny Qwen2 on its addition task (16 prompts x 8 completions per step, the lab's
defaults), trained in one process by plain ``GRPOTrainer`` and by ``MetaGRPOTrainer`` with
``mc.TAMPO`` and with ``mc.Informativeness``, alternated over the repeats. Informativeness needs
no extra forward or generation: it reads the virtual scores TAMPO already computes, plus each
row's reward, prompt group and length (two more gathered columns). Its extra cost is the
round's feedback (gather, Counterfactual, the sharpness diagnostic) and the controller's
update, both timed inside the run and again in isolation on the run's own feedback. Prints one
JSON object per result; the ratios are to the median plain GRPO step of the same process run
(target: Informativeness's update plus feedback under 0.02 of a step)::

    python examples/bench_informativeness.py
    python examples/bench_informativeness.py --steps 8 --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PrinterCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

import metactl as mc
from metactl.integrations.lab.testbed import make_model, make_task, make_tokenizer
from metactl.integrations.trl import MetaGRPOTrainer
from metactl.integrations.trl._round import RoundStats


@dataclass
class Args:
    steps: int = 6
    """training steps per run (the first is dropped as warm-up)"""
    repeats: int = 2
    """runs of each trainer, alternated"""
    prompts: int = 16
    group_size: int = 8
    seed: int = 0
    threads: int = 1
    isolated: int = 200
    """repeats of the isolated update timing"""


class StepTimes(TrainerCallback):  # type: ignore[misc]
    """Wall time of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def train(kind: str, args: Args) -> dict[str, Any]:
    """One run: step times, and (MetaGRPOTrainer) its feedback and update times and feedbacks."""
    tok = make_tokenizer()
    task = make_task("addition", difficulty=2, seed=args.seed, n_train=512)
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.prompts * args.group_size,
            num_generations=args.group_size,
            max_completion_length=task.max_completion_length,
            max_steps=args.steps,
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            seed=args.seed,
            use_cpu=True,
            bf16=False,  # the testbed's CPU setting (grpo_args.py)
            gradient_checkpointing=False,
            disable_tqdm=True,
        )
        common: dict[str, Any] = dict(
            model=make_model(tok, seed=args.seed),
            reward_funcs=task.reward_func,
            args=config,
            train_dataset=task.train,
            processing_class=tok,
        )
        timer = StepTimes()
        feedback_s: list[float] = []
        update_s: list[float] = []
        feedbacks: list[mc.Counterfactual] = []
        if kind == "grpo":
            trainer = GRPOTrainer(**common)
        else:
            controller: Any = (
                mc.TAMPO(seed=args.seed) if kind == "tampo" else mc.Informativeness(seed=args.seed)
            )
            trainer = MetaGRPOTrainer(**common, controller=controller)
            update = controller.update

            def timed_update(fb: Any) -> Any:
                start = time.perf_counter()
                out = update(fb)
                update_s.append(time.perf_counter() - start)
                feedbacks.append(fb)
                return out

            controller.update = timed_update
            build = RoundStats.feedback

            def timed_feedback(self: RoundStats, *a: Any, **kw: Any) -> Any:
                start = time.perf_counter()
                out = build(self, *a, **kw)
                feedback_s.append(time.perf_counter() - start)
                return out

            RoundStats.feedback = timed_feedback  # type: ignore[method-assign]
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(timer)
        try:
            trainer.train()
        finally:
            if kind != "grpo":
                RoundStats.feedback = build  # type: ignore[method-assign]
    return {
        "steps": timer.times[1:],
        "feedback": feedback_s[1:],
        "update": update_s[1:],
        "feedbacks": feedbacks,
    }


def isolated_update_seconds(kind: str, feedback: mc.Counterfactual, repeats: int) -> float:
    """Median time of one update on ``feedback``'s arrays, re-decided by a fresh controller."""
    times = []
    ctl: Any = mc.TAMPO(seed=0) if kind == "tampo" else mc.Informativeness(seed=0)
    for _ in range(repeats):
        d = ctl.sample()
        fb = mc.Counterfactual(
            d,
            feedback.loglik,
            feedback.advantages,
            rewards=feedback.rewards,
            groups=feedback.groups,
            lengths=feedback.lengths,
        )
        start = time.perf_counter()
        ctl.update(fb)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    runs: dict[str, list[dict[str, Any]]] = {"grpo": [], "tampo": [], "informativeness": []}
    for _ in range(args.repeats):
        for kind in runs:
            runs[kind].append(train(kind, args))
    step = {k: statistics.median(t for r in v for t in r["steps"]) for k, v in runs.items()}
    print(json.dumps({"result": "grpo_step", "median_step_s": step["grpo"], **vars(args)}))
    for kind in ("tampo", "informativeness"):
        feedback = statistics.median(t for r in runs[kind] for t in r["feedback"])
        update = statistics.median(t for r in runs[kind] for t in r["update"])
        fb = runs[kind][0]["feedbacks"][-1]
        isolated = isolated_update_seconds(kind, fb, args.isolated)
        print(
            json.dumps(
                {
                    "result": kind,
                    "rollouts": int(fb.advantages.size),
                    "arms": int(fb.loglik.shape[1]),
                    "median_step_s": step[kind],
                    "step_ratio_to_grpo": step[kind] / step["grpo"],
                    "feedback_s": feedback,
                    "update_s": update,
                    "update_isolated_s": isolated,
                    "feedback_plus_update_fraction_of_grpo_step": (feedback + update)
                    / step["grpo"],
                    "extra_forward": False,
                }
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default
        )
    main(Args(**vars(parser.parse_args())))
