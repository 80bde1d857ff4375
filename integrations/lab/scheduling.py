"""Worker processes: train a job's runs side by side, each worker dying with the job.

Each run trains in a spawned process with one torch thread, so the results equal those of
the runs trained one after another; a worker dies with the job's process, however that dies
(``kill -9`` included).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metactl.integrations.lab.config import CompareConfig
from metactl.integrations.lab.device import Device
from metactl.integrations.lab.rundir import run_dir_for

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
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


TrainFn = Callable[..., dict[str, Any]]
"""``runner.run_one``'s signature: ``(cfg, index, seed, run_dir, *, device) -> result``."""


def run_in_worker(
    train: TrainFn, cfg_data: dict[str, Any], index: int, seed: int, run_dir: str, device: Device
) -> dict[str, Any]:
    """One run in a worker process (spawned: a fresh interpreter, one torch thread).

    ``train`` arrives pickled by reference (its module and name): the function the job was
    given, so a replacement of ``runner.run_one`` (a test's fake) trains in the workers too.
    """
    import warnings

    import torch
    import transformers

    # Workers run side by side on the CPU cores: one thread each avoids oversubscription.
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*")
    transformers.utils.logging.disable_progress_bar()
    cfg = CompareConfig.model_validate(cfg_data)
    return train(cfg, index, seed, Path(run_dir), device=device)


def run_parallel(
    cfg: CompareConfig,
    out: Path,
    jobs: list[tuple[int, int]],
    *,
    device: Device,
    workers: int,
    on_done: Callable[[int, int, dict[str, Any]], None],
    train: TrainFn,
) -> None:
    """Train ``jobs`` in ``workers`` spawned processes, calling ``on_done`` as each finishes.

    Args:
        cfg: the compare config.
        out: the job's output folder (each run in its :func:`run_dir_for` folder).
        jobs: the ``(controller index, seed)`` runs to train.
        device: where the runs train.
        workers: processes at once.
        on_done: called in this process with each finished run's result.
        train: trains one run (``runner.run_one``); a module-level function, since the
            workers receive it pickled by reference.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    labels = [s.label() for s in cfg.controllers]
    cfg_data = cfg.model_dump(mode="json")
    others = set(multiprocessing.active_children())
    # spawn, not fork: torch and its thread pools are not fork-safe. Each worker dies with this
    # process (SIGKILL included), so none trains on into a folder a --resume may rerun.
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        pending: dict[Future[dict[str, Any]], tuple[int, int]] = {
            pool.submit(
                run_in_worker, train, cfg_data, i, s, str(run_dir_for(out, labels[i], s)), device
            ): (i, s)
            for i, s in jobs
        }
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i, s = pending.pop(future)
                    on_done(i, s, future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            # Stop the runs in flight too: a worker left training after the job ended would
            # write into a run folder that a --resume may be rerunning. Their folders hold no
            # result.json, so they count as unfinished and --resume reruns them.
            for worker in set(multiprocessing.active_children()) - others:
                worker.terminate()
            raise
