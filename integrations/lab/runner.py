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

A run without a valid ``result.json`` (none, or torn, empty, or not matching the config)
was interrupted; :func:`run_compare` reruns it when ``resume=True`` and keeps the finished
ones. Runs are independent: ``workers > 1`` trains several at once in separate processes (one
torch thread each), with the same results as one after another; a worker dies with the job's
process, however that dies (``kill -9`` included).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from metactl.integrations.lab.config import CompareConfig
from metactl.integrations.lab.rundir import (
    METRICS_FILE,
    PREFERRED_BOUNDS,
    ROLLOUTS_FILE,
    RunRef,
    append_jsonl,
    expected_result,
    folder_error,
    folder_names,
    is_out_of_space,
    prepare_out,
    run_dir_for,
    run_ref,
    write_result,
)
from metactl.integrations.lab.testbed.tasks import Task, make_task
from metactl.integrations.lab.testbed.warmstart import evaluate, warm_start

PROBE_PROMPTS = 16

Device = Literal["cpu", "cuda"]
"""Where a run trains: ``cpu`` (float32) or ``cuda`` (bf16 autocast)."""


def resolve_device(device: str) -> Device:
    """The device ``--device`` names: ``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``.

    Raises:
        ValueError: an unknown name, or ``cuda`` without a visible CUDA device (one line
            naming the fix).
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device; use --device cpu (or auto)")
        return "cuda"
    raise ValueError(f"--device: expected auto, cpu or cuda, got {device!r}")


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
    pref = preferred_temperature(logits, tokens, mask, bounds=PREFERRED_BOUNDS)
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

    class Recorder(TrainerCallback):  # type: ignore[misc]  # transformers is Any to mypy
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

    from metactl.integrations.trl import MetaGRPOTrainer

    spec = cfg.controllers[index]
    label = spec.label()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
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
        reward_funcs=task.reward_func,
        args=args,
        train_dataset=task.train,
        processing_class=tok,
        controller=controller,
        outcome=spec.trainer_outcome(),
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
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback":
            # Under the run folder (TRL's output_dir is scratch, deleted when the run ends).
            callback.logging_dir = str(run_dir / "tensorboard")
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
    return run_ref(run_dir_for(out, label, seed), label, seed, expect)


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


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the job's process ``parent`` dies.

    On Linux the kernel sends SIGKILL when the parent dies, however it dies
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread watches the parent pid. The parent is
    checked once more after arming, in case it died before.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _run_in_worker(
    cfg_data: dict[str, Any], index: int, seed: int, run_dir: str, device: Device
) -> dict[str, Any]:
    """One run in a worker process (spawned: a fresh interpreter, one torch thread)."""
    import warnings

    import torch
    import transformers

    from metactl.integrations.lab.config import CompareConfig

    # Workers run side by side on the CPU cores: one thread each avoids oversubscription.
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*")
    transformers.utils.logging.disable_progress_bar()
    cfg = CompareConfig.model_validate(cfg_data)
    return run_one(cfg, index, seed, Path(run_dir), device=device)


def _result_line(label: str, seed: int, res: dict[str, Any]) -> str:
    return (
        f"{label:>24} seed {seed}: held-out accuracy {res['initial_accuracy']:.1%} -> "
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
        device: where runs train (``cpu`` or ``cuda``; see :func:`resolve_device`).
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

    def say(line: str) -> None:
        if bar is not None:
            bar.write(line)
        else:
            print(line, flush=True)

    try:
        if workers == 1:
            for i, s in jobs:
                if bar is not None:
                    bar.set_postfix_str(f"{labels[i]} seed {s}")
                step = None if bar is None else (lambda: bar.update(1))
                res = run_one(
                    cfg, i, s, run_dir_for(out_p, labels[i], s), on_step=step, device=device
                )
                say(_result_line(labels[i], s, res))
                write_report(out_p, figure=False)
        else:
            _run_parallel(cfg, out_p, jobs, labels, device, workers, bar, say)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        write_report(out_p, figure=figure)
        raise
    if bar is not None:
        bar.close()
    return write_report(out_p, figure=figure)


def _run_parallel(
    cfg: CompareConfig,
    out: Path,
    jobs: list[tuple[int, int]],
    labels: list[str],
    device: Device,
    workers: int,
    bar: Any,
    say: Callable[[str], None],
) -> None:
    """Train ``jobs`` in ``workers`` spawned processes; report each run as it finishes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    from metactl.integrations.lab.report import write_report

    cfg_data = cfg.model_dump(mode="json")
    others = set(multiprocessing.active_children())
    # spawn, not fork: torch and its thread pools are not fork-safe. Each worker dies with this
    # process (SIGKILL included), so none trains on into a folder a --resume may rerun.
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        pending: dict[Future[dict[str, Any]], tuple[int, int]] = {
            pool.submit(
                _run_in_worker, cfg_data, i, s, str(run_dir_for(out, labels[i], s)), device
            ): (i, s)
            for i, s in jobs
        }
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i, s = pending.pop(future)
                    res = future.result()
                    if bar is not None:
                        bar.update(cfg.steps)
                    say(_result_line(labels[i], s, res))
                    write_report(out, figure=False)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            # Stop the runs in flight too: a worker left training after the job ended would
            # write into a run folder that a --resume may be rerunning. Their folders hold no
            # result.json, so they count as unfinished and --resume reruns them.
            for worker in set(multiprocessing.active_children()) - others:
                worker.terminate()
            raise
