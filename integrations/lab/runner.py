"""Run GRPO through ``MetaGRPOTrainer`` on the testbed and write each run's files.

A compare job is one run per (controller, seed), all from the same cached warm
start, on the same task and held-out set. Each run writes, in its folder (the format of
:mod:`metactl.integrations.lab.rundir`):

- ``metrics.jsonl``: one JSON object per line: TRL's logged metrics every step
  (``meta/temperature``, ``meta/prob/<T>``, rewards, ...) with ``"step"``, and the
  held-out greedy accuracy every ``eval_every`` steps (``"eval/accuracy"``).
- ``rollouts.jsonl``: at every evaluation, a probe batch of rollouts at the run's
  current temperature with each rollout's GRPO advantage and preferred temperature
  (the data of the paper's Figure 4).
- ``result.json``: written last, only when the run finished.

A run without ``result.json`` was interrupted; :func:`run_compare` reruns it when
``resume=True`` and keeps the finished ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metactl.integrations.lab.config import CompareConfig
from metactl.integrations.lab.rundir import (
    METRICS_FILE,
    RESULT_FILE,
    ROLLOUTS_FILE,
    append_jsonl,
    read_meta,
    run_dir_for,
    slug,
    write_meta,
    write_result,
)
from metactl.integrations.lab.testbed.tasks import Task, make_task
from metactl.integrations.lab.testbed.warmstart import evaluate, warm_start

PROBE_PROMPTS = 16


def sample_rollouts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    num_generations: int,
    temperature: float,
    max_new_tokens: int,
    generator: Any,
) -> tuple[list[str], Any, Any, Any]:
    """Sample ``num_generations`` completions per prompt with a private ``torch.Generator``.

    Prompts must have equal token length (true for every testbed task).

    Returns:
        ``(texts, logits, tokens, mask)``: decoded completions and, for scoring,
        untempered logits ``[N, L, V]`` of the completion positions, the completion
        tokens ``[N, L]`` and their mask ``[N, L]`` (tokens up to and including ``<eos>``).
    """
    import torch

    enc = tokenizer(prompts, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = enc.repeat_interleave(num_generations, dim=0).to(model.device)
    plen = ids.shape[1]
    eos = tokenizer.eos_token_id
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    mask_cols = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = model(input_ids=ids).logits[:, -1].float()
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = (
                    torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(ids.device)
                )
                mask_cols.append(~done)
                nxt = torch.where(done, torch.full_like(nxt, tokenizer.pad_token_id), nxt)
                ids = torch.cat([ids, nxt[:, None]], dim=1)
                done = done | (nxt == eos)
                if bool(done.all()):
                    break
            full = model(input_ids=ids).logits.float()
    finally:
        model.train(was_training)
    tokens = ids[:, plen:]
    logits = full[:, plen - 1 : -1]
    mask = torch.stack(mask_cols, dim=1).to(torch.float32)
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    return texts, logits, tokens, mask


def probe_rollouts(
    model: Any,
    tokenizer: Any,
    task: Task,
    *,
    temperature: float,
    num_generations: int,
    generator: Any,
) -> dict[str, Any]:
    """Advantages and preferred temperatures of a probe batch (the paper's Figure 4 data).

    Uses the first :data:`PROBE_PROMPTS` training prompts, ``num_generations`` each.
    Rollouts with zero advantage (groups solved or failed alike) are dropped.
    """
    from metactl.integrations.torch import grpo_advantages, preferred_temperature

    rows = task.train.select(range(PROBE_PROMPTS))
    texts, logits, tokens, mask = sample_rollouts(
        model,
        tokenizer,
        list(rows["prompt"]),
        num_generations=num_generations,
        temperature=temperature,
        max_new_tokens=task.max_completion_length,
        generator=generator,
    )
    columns = {k: [v for v in rows[k] for _ in range(num_generations)] for k in rows.column_names}
    prompts = columns.pop("prompt")
    import torch

    rewards = torch.tensor(task.reward_func(prompts=prompts, completions=texts, **columns))
    adv = grpo_advantages(rewards, num_generations)
    pref = preferred_temperature(logits, tokens, mask, bounds=(0.05, 10.0))
    keep = (adv.abs() > 1e-8) & torch.isfinite(pref)
    return {
        "temperature": temperature,
        "reward": float(rewards.mean()),
        "advantage": [round(float(a), 5) for a in adv[keep]],
        "preferred": [round(float(p), 5) for p in pref[keep]],
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, int | float | str | bool) or v is None:
        return None if isinstance(v, float) and not math.isfinite(v) else v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else None


def _callbacks(
    *,
    run_dir: Path,
    model_tok: tuple[Any, Any],
    task: Task,
    cfg: CompareConfig,
    seed: int,
    curve: list[tuple[int, float]],
    on_step: Callable[[], None] | None,
) -> list[Any]:
    import torch
    from transformers import TrainerCallback

    metrics_path = run_dir / METRICS_FILE
    rollouts_path = run_dir / ROLLOUTS_FILE
    tok = model_tok[1]
    gen = torch.Generator().manual_seed(10_000 + seed)

    class Recorder(TrainerCallback):  # type: ignore[misc]
        """Writes TRL's logs, evaluates held-out accuracy and probes rollouts."""

        def __init__(self) -> None:
            self.temperature = 1.0

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs:
                if "meta/temperature" in logs:
                    self.temperature = float(logs["meta/temperature"])
                rec = {"step": state.global_step, **{k: _jsonable(v) for k, v in logs.items()}}
                append_jsonl(metrics_path, rec)

        def on_step_end(
            self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
        ) -> None:
            step = state.global_step
            if on_step is not None:
                on_step()
            if step % cfg.eval_every == 0 or step == cfg.steps:
                acc = evaluate(model, tok, task)
                curve.append((step, acc))
                append_jsonl(metrics_path, {"step": step, "eval/accuracy": acc})
                probe = probe_rollouts(
                    model,
                    tok,
                    task,
                    temperature=self.temperature,
                    num_generations=cfg.trainer.num_generations,
                    generator=gen,
                )
                append_jsonl(rollouts_path, {"step": step, **probe})

    return [Recorder()]


def run_one(
    cfg: CompareConfig,
    index: int,
    seed: int,
    run_dir: Path,
    *,
    on_step: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train one (controller, seed) run and write its files; return its result.

    Args:
        cfg: the compare config.
        index: which of ``cfg.controllers``.
        seed: the run's seed (GRPO data order and sampling, controller seed).
        run_dir: folder for the run's files (emptied first).
        on_step: called after every training step (progress bars).
    """
    import shutil

    from trl import GRPOConfig

    from metactl.integrations.trl import MetaGRPOTrainer

    spec = cfg.controllers[index]
    label = spec.label()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    model, tok, ws_meta = warm_start(cfg.warm_start_config())
    task = make_task(
        cfg.task, difficulty=cfg.difficulty, seed=cfg.warm_start.seed, n_eval=cfg.eval_size
    )
    controller = spec.build(seed=seed, steps=cfg.steps, vocab_size=len(tok))
    g = cfg.trainer.num_generations
    args = GRPOConfig(
        output_dir=str(run_dir / "trainer"),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.trainer.prompts_per_step * g,
        num_generations=g,
        max_completion_length=task.max_completion_length,
        learning_rate=cfg.trainer.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=cfg.trainer.beta,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,  # GRPOConfig defaults to bf16 autocast: slower and inexact on CPU
        save_strategy="no",
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
    )
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    acc0 = evaluate(model, tok, task)
    curve.append((0, acc0))
    append_jsonl(run_dir / METRICS_FILE, {"step": 0, "eval/accuracy": acc0})
    trainer = MetaGRPOTrainer(
        model=model,
        reward_funcs=task.reward_func,
        args=args,
        train_dataset=task.train,
        processing_class=tok,
        controller=controller,
        callbacks=_callbacks(
            run_dir=run_dir,
            model_tok=(model, tok),
            task=task,
            cfg=cfg,
            seed=seed,
            curve=curve,
            on_step=on_step,
        ),
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # the job's progress bar replaces TRL's printing
    trainer.remove_callback(ProgressCallback)
    trainer.train()
    wall = time.perf_counter() - t0
    steps = np.array([s for s, _ in curve], dtype=np.float64)
    accs = np.array([a for _, a in curve], dtype=np.float64)
    auc = float(np.trapezoid(accs, steps) / steps[-1]) if steps[-1] > 0 else float(accs[-1])
    result = {
        "controller": label,
        "kind": spec.kind,
        "seed": seed,
        "steps": cfg.steps,
        "initial_accuracy": acc0,
        "final_accuracy": float(accs[-1]),
        "auc": auc,
        "curve": [[int(s), float(a)] for s, a in curve],
        "wall_time_s": wall,
        "warm_start": {k: ws_meta.get(k) for k in ("steps", "eval_accuracy", "version")},
        "controller_state": controller.state_dict(),
    }
    shutil.rmtree(run_dir / "trainer", ignore_errors=True)
    write_result(run_dir, result)
    return result


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a run depends on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("metactl", "torch", "transformers", "trl", "accelerate", "datasets", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_compare(
    cfg: CompareConfig,
    out: str | Path,
    *,
    command: str = "",
    resume: bool = False,
    progress: bool = True,
    figure: bool = True,
) -> dict[str, Any]:
    """Run every controller of ``cfg`` on every seed and write the report files.

    Runs go seed by seed (every controller on seed 0 first), so an interrupted job
    still holds side-by-side comparisons. After each run ``summary.json`` and
    ``report.md`` are rewritten; ``report.png`` is drawn at the end (and on
    interruption). ``KeyboardInterrupt`` writes the report of what finished and is
    re-raised.

    Args:
        cfg: the validated config.
        out: output folder (created).
        command: the command line, recorded in ``config.json`` and ``report.md``.
        resume: keep runs of ``out`` that already finished (same config) instead of
            rerunning them.
        progress: show a progress bar over all steps of all runs.
        figure: draw ``report.png``.

    Returns:
        The summary dict.
    """
    from tqdm.auto import tqdm

    from metactl.integrations.lab.report import write_report

    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    labels = [s.label() for s in cfg.controllers]
    seeds = cfg.seed_list()
    meta = {
        "config": cfg.model_dump(mode="json"),
        "command": command,
        "versions": versions(),
        "labels": labels,
        "slugs": {slug(x): x for x in labels},
        "expected_runs": len(labels) * len(seeds),
    }
    if resume and read_meta(out_p).get("config", meta["config"]) != meta["config"]:
        raise ValueError(f"--resume: {out_p} holds a different config; use another --out folder")
    write_meta(out_p, meta)

    # Build the warm start before the progress bar (it may train once, then it is cached).
    warm_start(cfg.warm_start_config(), verbose=False)
    jobs = [(i, s) for s in seeds for i in range(len(labels))]
    bar = tqdm(
        total=len(jobs) * cfg.steps,
        desc="metactl",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for i, s in jobs:
            rd = run_dir_for(out_p, labels[i], s)
            if resume and (rd / RESULT_FILE).exists():
                bar.update(cfg.steps)
                continue
            bar.set_postfix_str(f"{labels[i]} seed {s}")
            res = run_one(cfg, i, s, rd, on_step=lambda: bar.update(1))
            bar.write(
                f"{labels[i]:>24} seed {s}: held-out accuracy {res['initial_accuracy']:.1%} -> "
                f"{res['final_accuracy']:.1%} ({res['wall_time_s']:.0f} s)"
            )
            write_report(out_p, figure=False)
    except KeyboardInterrupt:
        bar.close()
        write_report(out_p, figure=figure)
        raise
    bar.close()
    return write_report(out_p, figure=figure)
