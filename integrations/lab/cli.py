"""The ``metactl`` command line: ``demo``, ``compare`` and ``plot``.

``metactl demo`` trains a tiny language model with GRPO on a synthetic task and
compares TAMPO with fixed temperatures; ``metactl compare CONFIG.yaml`` runs any
set of controllers; ``metactl plot RUN_DIR`` redraws the report of a finished or
interrupted run. This module imports only the core: the lab's dependencies (``metactl[lab]``)
are checked when a command runs, and a missing one is reported in one line.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import metactl
from metactl.errors import DependencyNotInstalled, require

if TYPE_CHECKING:
    from metactl.integrations.lab.config import CompareConfig

#: What the lab imports beyond the core; each is installed by ``metactl[lab]``.
LAB_MODULES = ("pydantic", "yaml", "torch", "transformers", "trl", "datasets", "tokenizers")


#: ``metactl demo``'s default ``--workers``: two runs at once where there are two cores.
DEMO_WORKERS = min(2, os.cpu_count() or 1)


def _default_out(kind: str) -> Path:
    return Path("metactl-runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def _command_line(argv: Sequence[str] | None) -> str:
    """The command as typed, prefixed with ``cd <where it ran>`` so it works from anywhere."""
    args = list(sys.argv[1:] if argv is None else argv)
    return f"cd {shlex.quote(os.getcwd())} && {shlex.join(['metactl', *args])}"


def _fail(message: str) -> int:
    """Print a one-line error (it names the fix) and return the bad-input exit status.

    Characters that would drive the terminal (an ANSI escape in a label or a path, a bidi
    override, a newline) are printed escaped.
    """
    from metactl.integrations.lab.rundir import printable

    print(f"metactl: {printable(message)}", file=sys.stderr)
    return 2


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    """The table, where the report is, and last the verdict line (paired differences, MDD)."""
    from metactl.integrations.lab.paired import verdict_line
    from metactl.integrations.lab.report import summary_table

    print()
    print(summary_table(summary))
    print()
    if not summary["complete"]:
        print(
            f"(incomplete: {summary['finished_runs']} of {summary['expected_runs']} runs finished)"
        )
    print(
        f"report: {out / 'report.md'}  figure: {out / 'report.png'}  summary: {out / 'summary.json'}"
    )
    print(verdict_line(summary.get("verdict")))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(
    cfg: CompareConfig, out: Path, args: argparse.Namespace, argv: Sequence[str] | None
) -> int:
    import importlib.util
    import warnings

    import torch
    import transformers

    from metactl.integrations.lab.device import resolve_device
    from metactl.integrations.lab.rundir import RunFolderError, check_out
    from metactl.integrations.lab.runner import run_compare
    from metactl.integrations.lab.testbed.warmstart import WarmStartCacheError

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        return _fail(str(exc))
    if cfg.trainer.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        return _fail(
            "trainer.report_to: tensorboard needs the tensorboard package "
            "(pip install tensorboard), or set report_to: none"
        )
    meta = {"config": cfg.model_dump(mode="json"), "labels": [c.label() for c in cfg.controllers]}
    try:  # before anything is printed or written
        check_out(out, meta, resume=args.resume)
    except RunFolderError as exc:
        return _fail(str(exc))

    figure = not args.no_plot
    if figure and importlib.util.find_spec("matplotlib") is None:
        print(
            'metactl: matplotlib is not installed, so no report.png (pip install "metactl[lab]"); '
            "summary.json and report.md are written as usual",
            file=sys.stderr,
        )
        figure = False

    # The testbed's model is tiny: one thread per run is as fast as several and does not
    # oversubscribe a busy machine (spinning threads can slow a step tenfold).
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*")
    # The job's own progress bar is the only one (no "Loading weights" bars per run).
    transformers.utils.logging.disable_progress_bar()
    print(
        f"metactl: {len(cfg.controllers)} controllers x {len(cfg.seed_list())} {cfg.evidence} "
        "seeds, "
        f"{cfg.steps} GRPO steps each, task {cfg.task} (difficulty {cfg.difficulty}), "
        f"{device}, {args.workers} worker(s) -> {out}",
        flush=True,
    )
    # `kill` (a scheduler's stop) ends a job as Ctrl-C does: workers stopped, report written.
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_compare(
            cfg,
            out,
            command=_command_line(argv),
            resume=args.resume,
            progress=not args.no_progress,
            figure=figure,
            device=device,
            workers=args.workers,
        )
    except (RunFolderError, WarmStartCacheError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print(f"\nmetactl: interrupted; finished runs and the report are in {out}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    _print_summary(summary, out)
    return 0


def _out(args: argparse.Namespace, kind: str) -> Path:
    """The ``--out`` folder, or the default one when ``--out`` is not given."""
    return _default_out(kind) if args.out is None else Path(args.out)


def _with_overrides(cfg: CompareConfig, args: argparse.Namespace) -> CompareConfig:
    """``cfg`` with ``--seeds``/``--steps`` applied, validated again.

    Raises:
        ConfigError: the overridden config is invalid.
    """
    from metactl.integrations.lab.config import parse_config

    updates: dict[str, Any] = {}
    if args.seeds is not None:
        updates["seeds"] = args.seeds
    if args.steps is not None:
        updates["steps"] = args.steps
    if not updates:
        return cfg
    return parse_config({**cfg.model_dump(mode="json"), **updates})


def _cmd_demo(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from metactl.integrations.lab.config import ConfigError, demo_config

    try:
        cfg = _with_overrides(demo_config(quick=args.quick), args)
    except ConfigError as exc:
        return _fail(str(exc))
    return _run(cfg, _out(args, "demo"), args, argv)


def _cmd_compare(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from metactl.integrations.lab.config import ConfigError, load_config

    try:
        cfg = _with_overrides(load_config(args.config), args)
    except ConfigError as exc:
        return _fail(str(exc))
    return _run(cfg, _out(args, "compare"), args, argv)


def _cmd_plot(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    import importlib.util

    from metactl.integrations.lab.report import write_report
    from metactl.integrations.lab.rundir import (
        CONFIG_FILE,
        RUNS_DIR,
        RunFolderError,
        folder_error,
    )

    out = Path(args.run_dir)
    try:
        is_run_folder = (out / RUNS_DIR).exists() or (out / CONFIG_FILE).exists()
    except OSError as exc:  # e.g. a name longer than the file system takes
        return _fail(
            f"plot: {out}: cannot read it ({exc.strerror}); pass the --out folder of a demo or compare run"
        )
    if not is_run_folder:
        return _fail(
            f"plot: {out} is not a metactl run folder (no {RUNS_DIR}/ or {CONFIG_FILE} inside); "
            "pass the --out folder of a demo or compare run"
        )
    try:
        summary = write_report(out, figure=importlib.util.find_spec("matplotlib") is not None)
    except RunFolderError as exc:
        return _fail(f"plot: {exc}")
    except OSError as exc:
        return _fail(f"plot: {folder_error(out, exc)}")
    _print_summary(summary, out)
    return 0


def _folder(text: str) -> str:
    """A folder argument: any non-blank path."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder, got {text!r}")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _small_count(text: str) -> int:
    """A count of processes or threads: 1..1024."""
    value = _positive_int(text)
    if value > 1024:
        raise argparse.ArgumentTypeError(f"expected at most 1024, got {value}")
    return value


class _OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line that says where help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``metactl`` command."""
    parser = _OneLineErrorParser(
        prog="metactl",
        description="Adaptive temperature for RL training: demos, comparisons and reports.",
    )
    parser.add_argument("--version", action="version", version=f"metactl {metactl.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--out", type=_folder, help="output folder (default: metactl-runs/<command>-<time>)"
        )
        p.add_argument(
            "--seeds",
            type=_positive_int,
            help="number of seeds (0..N-1, or 10000..10000+N-1 in an evidence: confirmation config)",
        )
        p.add_argument(
            "--steps", type=_positive_int, help="GRPO steps per run (overrides the config)"
        )
        p.add_argument(
            "--resume",
            action="store_true",
            help="continue the experiment in --out (same config): keep its finished runs",
        )
        p.add_argument(
            "--device",
            choices=("auto", "cpu", "cuda"),
            default="auto",
            help="where runs train: cuda (bf16) when available with auto (default), "
            "else cpu (float32)",
        )
        p.add_argument(
            "--workers",
            type=_small_count,
            default=1,
            help="runs trained at once, each in its own process with one torch thread "
            "(default 1, demo: up to 2; up to the CPU cores)",
        )
        p.add_argument(
            "--threads",
            type=_small_count,
            default=1,
            help="torch CPU threads of the main process (default 1)",
        )
        p.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bar (there is none when output is not a terminal)",
        )
        p.add_argument("--no-plot", action="store_true", help="skip report.png")

    demo = sub.add_parser(
        "demo",
        help="GRPO on a tiny LM: TAMPO against fixed temperatures 0.6, 1.0, 1.4",
        description="Train a tiny causal LM with GRPO (MetaGRPOTrainer) on 2-digit addition, "
        "comparing TAMPO with fixed temperatures 0.6, 1.0 and 1.4. 3 seeds (about 10 minutes on "
        "2 CPU cores); --quick: 1 seed.",
    )
    demo.add_argument("--quick", action="store_true", help="one seed (about 2 minutes)")
    run_options(demo)
    # The demo is a first look: its runs train side by side on up to two cores (same results).
    demo.set_defaults(workers=DEMO_WORKERS)
    demo.set_defaults(func=_cmd_demo)

    compare = sub.add_parser(
        "compare",
        help="run the controllers of a YAML config side by side",
        description="Run every controller of CONFIG (YAML or JSON) on the same task and seeds. "
        "See docs/testbed.md for the format.",
    )
    compare.add_argument("config", help="compare config (.yaml, .yml or .json)")
    run_options(compare)
    compare.set_defaults(func=_cmd_compare)

    plot = sub.add_parser(
        "plot",
        help="rewrite summary.json, report.md and report.png of a run folder",
        description="Regenerate the report of a finished or interrupted run folder.",
    )
    plot.add_argument("run_dir", type=_folder, help="the --out folder of a demo or compare run")
    plot.set_defaults(func=_cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metactl`` console script.

    Returns:
        The exit status: 0 success, 1 missing dependency, 2 bad input, 130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for module in LAB_MODULES:
            require(module, "lab")
        status: int = args.func(args, argv)
    except DependencyNotInstalled as exc:
        print(f"metactl: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
