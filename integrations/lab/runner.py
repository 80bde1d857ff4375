"""Orchestrate a compare job: train each run through ``MetaGRPOTrainer`` and write its files.

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

A run without a valid ``result.json`` (none, or torn, empty, or not matching the config)
was interrupted; :func:`run_compare` reruns it when ``resume=True`` and keeps the finished
ones. Runs are independent: ``workers > 1`` trains several at once in separate processes (one
torch thread each), with the same results as one after another; a worker dies with the job's
process, however that dies (``kill -9`` included).

The pieces live apart: the device policy in :mod:`~metactl.integrations.lab.device`, the
``GRPOConfig`` of a run in :mod:`~metactl.integrations.lab.grpo_args`, the Figure-4 probe in
:mod:`~metactl.integrations.lab.probe`, the trainer callbacks in
:mod:`~metactl.integrations.lab.recorder` and the worker processes in
:mod:`~metactl.integrations.lab.scheduling`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metactl.integrations.lab.config import CompareConfig
from metactl.integrations.lab.device import Device
from metactl.integrations.lab.grpo_args import grpo_config
from metactl.integrations.lab.rundir import (
    METRICS_FILE,
    RunRef,
    append_jsonl,
    expected_result,
    folder_error,
    folder_names,
    fresh_run_dir,
    is_out_of_space,
    prepare_out,
    run_dir_for,
    run_ref,
    shown,
    write_result,
)
from metactl.integrations.lab.scheduling import run_parallel
from metactl.integrations.lab.testbed.tasks import make_task, random_reward
from metactl.integrations.lab.testbed.warmstart import evaluate, warm_start


def run_one(
    cfg: CompareConfig,
    index: int,
    seed: int,
    run_dir: Path,
    *,
    on_step: Callable[[], None] | None = None,
    device: Device = "cpu",
) -> dict[str, Any]:
    """Train one (controller, seed) run and write its files; return its result.

    Args:
        cfg: the compare config.
        index: which of ``cfg.controllers``.
        seed: the run's seed (GRPO data order and sampling, controller seed).
        run_dir: folder for the run's files (emptied first).
        on_step: called after every training step (progress bars).
        device: where to train (``cpu`` or ``cuda``).
    """
    import shutil

    from metactl.integrations.lab.probe import probe_generator
    from metactl.integrations.lab.recorder import Recorder, set_lab_callbacks
    from metactl.integrations.trl import MetaGRPOTrainer

    spec = cfg.controllers[index]
    label = spec.label()
    fresh_run_dir(run_dir)  # refuses a folder reached through a link: deletes nothing outside
    model, tok, ws_meta = warm_start(cfg.warm_start_config(), device=device)
    model = model.to(device)  # before the first evaluation; the trainer keeps it there
    task = make_task(
        cfg.task, difficulty=cfg.difficulty, seed=cfg.warm_start.seed, n_eval=cfg.eval_size
    )
    if len(task.eval) != cfg.eval_size:  # the config's check (max_eval_size) makes this rare
        raise ValueError(
            f"eval_size: {cfg.task} at difficulty {cfg.difficulty} gave {len(task.eval)} "
            f"distinct held-out prompts, not {cfg.eval_size}; lower eval_size"
        )
    controller = spec.build(seed=seed, steps=cfg.steps, vocab_size=len(tok))
    args = grpo_config(
        cfg, run_dir, seed, max_completion_length=task.max_completion_length, device=device
    )
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    acc0 = evaluate(model, tok, task)
    curve.append((0, acc0))
    append_jsonl(run_dir / METRICS_FILE, {"step": 0, "eval/accuracy": acc0})
    trainer = MetaGRPOTrainer(
        model=model,
        reward_funcs=(
            task.reward_func
            if cfg.random_reward is None
            else random_reward(cfg.random_reward, seed)
        ),
        args=args,
        train_dataset=task.train,
        processing_class=tok,
        controller=controller,
        outcome=spec.trainer_outcome(),
        per_arm_metrics=True,  # the report draws each arm's probability (meta/prob/<T>)
        callbacks=[
            Recorder(
                run_dir=run_dir,
                tokenizer=tok,
                task=task,
                cfg=cfg,
                generator=probe_generator(seed),
                curve=curve,
                on_step=on_step,
            )
        ],
    )
    set_lab_callbacks(trainer, run_dir)
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
        "device": device,
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


def _run_state(cfg: CompareConfig, out: Path, index: int, seed: int) -> RunRef:
    """Whether run ``(index, seed)`` of ``cfg`` finished in ``out`` (a valid, matching result)."""
    spec = cfg.controllers[index]
    label = spec.label()
    expect = expected_result(label, seed, kind=spec.kind, steps=cfg.steps)
    return run_ref(run_dir_for(out, label, seed), label, seed, expect, eval_every=cfg.eval_every)


def planned_jobs(cfg: CompareConfig, out: Path, *, resume: bool) -> list[tuple[int, int]]:
    """The ``(controller index, seed)`` runs still to train, seed by seed.

    Every controller on seed 0 comes first, so an interrupted job still holds side-by-side
    comparisons; with ``resume``, runs that already finished in ``out`` are left out (a run
    whose ``result.json`` is torn, empty or does not match the config has not finished).
    """
    jobs = [(i, s) for s in cfg.seed_list() for i in range(len(cfg.controllers))]
    if resume:
        jobs = [(i, s) for i, s in jobs if _run_state(cfg, out, i, s).status != "finished"]
    return jobs


def _say_torn(cfg: CompareConfig, out: Path, jobs: list[tuple[int, int]]) -> None:
    """One line naming the runs ``--resume`` reruns although they hold a ``result.json``."""
    torn = [ref for ref in (_run_state(cfg, out, i, s) for i, s in jobs) if ref.problem]
    if torn:
        listed = "; ".join(
            f"{ref.path.relative_to(out).as_posix()} ({ref.problem})" for ref in torn
        )
        print(
            f"metactl: --resume: rerunning {len(torn)} run(s) whose result.json does not count: "
            f"{listed}",
            file=sys.stderr,
            flush=True,
        )


def _result_line(label: str, seed: int, res: dict[str, Any]) -> str:
    return (
        f"{shown(label):>24} seed {seed}: held-out accuracy {res['initial_accuracy']:.1%} -> "
        f"{res['final_accuracy']:.1%} ({res['wall_time_s']:.0f} s)"
    )


def run_compare(
    cfg: CompareConfig,
    out: str | Path,
    *,
    command: str = "",
    resume: bool = False,
    progress: bool = True,
    figure: bool = True,
    device: Device = "cpu",
    workers: int = 1,
) -> dict[str, Any]:
    """Run every controller of ``cfg`` on every seed and write the report files.

    Runs go seed by seed (every controller on seed 0 first), so an interrupted job
    still holds side-by-side comparisons. After each run ``summary.json`` and
    ``report.md`` are rewritten; ``report.png`` is drawn at the end (and on
    interruption). ``KeyboardInterrupt`` writes the report of what finished and is
    re-raised.

    The job holds ``out``'s lock throughout (a second job into it is refused). With
    ``resume``, runs whose ``result.json`` is torn, empty or does not match the config are
    rerun, and one line on stderr names them.

    Args:
        cfg: the validated config.
        out: output folder: new or empty, or (with ``resume``) one holding this config.
        command: the command line, recorded in ``config.json`` and ``report.md``.
        resume: keep runs of ``out`` that already finished (same config) instead of
            rerunning them.
        progress: show a progress bar over all steps of all runs when stdout and stderr are
            terminals; otherwise (a redirected log) only a line per finished run is printed.
        figure: draw ``report.png``.
        device: where runs train (``cpu`` or ``cuda``; see
            :func:`~metactl.integrations.lab.device.resolve_device`).
        workers: runs trained at once, each in its own process with one torch thread.

    Returns:
        The summary dict.

    Raises:
        metactl.integrations.lab.rundir.RunFolderError: ``out`` cannot hold this experiment
            or another job is writing it (raised before anything is written), or the disk
            filled up (one line naming the folder; it resumes once space is freed).
    """
    if workers < 1:
        raise ValueError(f"workers: expected a positive integer, got {workers}")
    out_p = Path(out)
    labels = [s.label() for s in cfg.controllers]
    seeds = cfg.seed_list()
    meta = {
        "config": cfg.model_dump(mode="json"),
        "command": command,
        "versions": versions(),
        "device": device,
        "labels": labels,
        "seeds": seeds,
        "folders": folder_names(labels),
        "expected_runs": len(labels) * len(seeds),
    }
    lock = prepare_out(out_p, meta, resume=resume)
    try:
        return _compare_locked(cfg, out_p, resume, progress, figure, device, workers)
    except OSError as exc:
        if is_out_of_space(exc):
            raise folder_error(out_p, exc) from None
        raise
    finally:
        lock.release()


def _compare_locked(
    cfg: CompareConfig,
    out_p: Path,
    resume: bool,
    progress: bool,
    figure: bool,
    device: Device,
    workers: int,
) -> dict[str, Any]:
    """The body of :func:`run_compare`, once ``out_p`` is prepared and locked."""
    from metactl.integrations.lab.report import write_report

    labels = [s.label() for s in cfg.controllers]
    seeds = cfg.seed_list()
    # Build the warm start before the progress bar (it may train once, then it is cached).
    warm_start(cfg.warm_start_config(), verbose=False, device=device)
    jobs = planned_jobs(cfg, out_p, resume=resume)
    if resume:
        _say_torn(cfg, out_p, jobs)
    done_before = len(labels) * len(seeds) - len(jobs)
    # A bar redraws with carriage returns: only on a terminal, never into a redirected log.
    bar = None
    if progress and sys.stdout.isatty() and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(labels) * len(seeds) * cfg.steps,
            desc="metactl",
            unit="step",
            dynamic_ncols=True,
            initial=done_before * cfg.steps,
        )

    def finished(i: int, s: int, res: dict[str, Any]) -> None:
        line = _result_line(labels[i], s, res)
        if bar is not None:
            bar.write(line)
        else:
            print(line, flush=True)
        write_report(out_p, figure=False)

    def finished_in_worker(i: int, s: int, res: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(cfg.steps)  # a worker's steps are not seen one by one
        finished(i, s, res)

    try:
        if workers == 1:
            for i, s in jobs:
                if bar is not None:
                    bar.set_postfix_str(f"{shown(labels[i])} seed {s}")
                step = None if bar is None else (lambda: bar.update(1))
                res = run_one(
                    cfg, i, s, run_dir_for(out_p, labels[i], s), on_step=step, device=device
                )
                finished(i, s, res)
        else:
            # This module's run_one as it is now, so that a replacement reaches the workers.
            run_parallel(
                cfg,
                out_p,
                jobs,
                device=device,
                workers=workers,
                on_done=finished_in_worker,
                train=run_one,
            )
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        write_report(out_p, figure=figure)
        raise
    if bar is not None:
        bar.close()
    return write_report(out_p, figure=figure)
