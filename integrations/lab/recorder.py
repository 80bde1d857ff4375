"""A run's trainer callbacks: the :class:`Recorder` of its files, and TRL's set for the lab."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metactl.errors import require

require("transformers", "lab")

from transformers import TrainerCallback  # noqa: E402
from transformers.integrations import TensorBoardCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback, ProgressCallback  # noqa: E402

from metactl.integrations.lab.config import CompareConfig  # noqa: E402
from metactl.integrations.lab.probe import probe_rollouts  # noqa: E402
from metactl.integrations.lab.rundir import METRICS_FILE, ROLLOUTS_FILE, append_jsonl  # noqa: E402
from metactl.integrations.lab.testbed.tasks import Task  # noqa: E402
from metactl.integrations.lab.testbed.warmstart import evaluate  # noqa: E402
from metactl.metric_keys import TEMPERATURE, meta_key  # noqa: E402


def _jsonable(v: Any) -> Any:
    if isinstance(v, int | float | str | bool) or v is None:
        return None if isinstance(v, float) and not math.isfinite(v) else v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else None


class Recorder(TrainerCallback):  # type: ignore[misc]  # transformers is Any to mypy
    """Writes TRL's logs, evaluates held-out accuracy and probes rollouts.

    Every log goes to ``metrics.jsonl``; every ``eval_every`` steps (and at the last) the
    held-out accuracy joins ``metrics.jsonl`` and ``curve``, and a probe batch at the
    temperature last logged goes to ``rollouts.jsonl``.
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        tokenizer: Any,
        task: Task,
        cfg: CompareConfig,
        generator: Any,
        curve: list[tuple[int, float]],
        on_step: Callable[[], None] | None = None,
    ) -> None:
        """Record into ``run_dir``.

        Args:
            run_dir: the run's folder.
            tokenizer: the model's tokenizer.
            task: the task (held-out set, probe prompts and reward).
            cfg: the compare config (``eval_every``, ``steps``, ``num_generations``).
            generator: the probe's private ``torch.Generator``.
            curve: ``(step, held-out accuracy)`` pairs, appended to at each evaluation.
            on_step: called after every training step (progress bars).
        """
        self.metrics_path = run_dir / METRICS_FILE
        self.rollouts_path = run_dir / ROLLOUTS_FILE
        self.tokenizer = tokenizer
        self.task = task
        self.cfg = cfg
        self.generator = generator
        self.curve = curve
        self.on_step = on_step
        self.temperature = 1.0

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs:
            key = meta_key(TEMPERATURE)
            if key in logs:
                self.temperature = float(logs[key])
            rec = {"step": state.global_step, **{k: _jsonable(v) for k, v in logs.items()}}
            append_jsonl(self.metrics_path, rec)

    def on_step_end(
        self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
    ) -> None:
        step = state.global_step
        if self.on_step is not None:
            self.on_step()
        if step % self.cfg.eval_every == 0 or step == self.cfg.steps:
            acc = evaluate(model, self.tokenizer, self.task)
            self.curve.append((step, acc))
            append_jsonl(self.metrics_path, {"step": step, "eval/accuracy": acc})
            probe = probe_rollouts(
                model,
                self.tokenizer,
                self.task,
                temperature=self.temperature,
                num_generations=self.cfg.trainer.num_generations,
                generator=self.generator,
            )
            append_jsonl(self.rollouts_path, {"step": step, **probe})


def set_lab_callbacks(trainer: Any, run_dir: Path) -> None:
    """Quiet TRL's printing (the job's progress bar replaces it) and log TensorBoard in the run.

    TensorBoard writes under ``run_dir/tensorboard``: TRL's ``output_dir`` is scratch,
    deleted when the run ends.
    """
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(run_dir / "tensorboard")
