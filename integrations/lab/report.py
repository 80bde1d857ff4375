"""Summaries, tables and figures of a ``metactl compare``/``demo`` output folder.

Reads only the files the runs wrote (the format of :mod:`metactl.integrations.lab.rundir`),
so it works on a finished or an interrupted run, and needs neither torch nor TRL.

:func:`write_report` writes ``summary.json``, ``report.md`` and (with matplotlib)
``report.png`` into ``OUT``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from metactl.integrations.lab.rundir import (
    METRICS_FILE,
    REPORT_MD,
    REPORT_PNG,
    ROLLOUTS_FILE,
    SUMMARY_FILE,
    label_for_dir,
    read_jsonl,
    read_meta,
    read_result,
    run_dirs,
)


def mean_ci95(values: list[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95% Student-t confidence interval ``(mean, low, high)``.

    With one value the interval is the value itself (no spread can be estimated).
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(arr.mean())
    if arr.size == 1:
        return (m, m, m)
    from scipy import stats

    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return (m, m - half, m + half)


def _label_order(out: Path) -> list[str]:
    labels = read_meta(out).get("labels")
    return [str(x) for x in labels] if isinstance(labels, list) else []


def collect(out: Path) -> dict[str, Any]:
    """Gather every run's result and curve in ``out`` into the summary dict.

    Finished runs (with ``result.json``) enter the statistics; unfinished ones are
    listed under ``"incomplete"`` with the last step they logged.
    """
    meta = read_meta(out)
    finished: dict[str, list[dict[str, Any]]] = {}
    incomplete: list[dict[str, Any]] = []
    for rd in run_dirs(out):
        res = read_result(rd)
        if res is not None:
            finished.setdefault(str(res["controller"]), []).append(res)
            continue
        recs = read_jsonl(rd / METRICS_FILE)
        last = max((int(r.get("step", 0)) for r in recs), default=0)
        incomplete.append({"run": str(rd.relative_to(out)), "last_step": last})
    order = _label_order(out)
    labels = [x for x in order if x in finished] + sorted(x for x in finished if x not in order)
    controllers: dict[str, Any] = {}
    for label in labels:
        rs = sorted(finished[label], key=lambda r: int(r["seed"]))
        final = [float(r["final_accuracy"]) for r in rs]
        auc = [float(r["auc"]) for r in rs]
        wall = [float(r["wall_time_s"]) for r in rs]
        fm, flo, fhi = mean_ci95(final)
        am, alo, ahi = mean_ci95(auc)
        controllers[label] = {
            "kind": rs[0].get("kind"),
            "seeds": [int(r["seed"]) for r in rs],
            "initial_accuracy": [float(r["initial_accuracy"]) for r in rs],
            "final_accuracy": final,
            "final_accuracy_mean": fm,
            "final_accuracy_ci95": [flo, fhi],
            "auc": auc,
            "auc_mean": am,
            "auc_ci95": [alo, ahi],
            "wall_time_s": wall,
            "wall_time_mean_s": float(np.mean(wall)),
        }
    expected = meta.get("expected_runs")
    n_done = sum(len(v) for v in finished.values())
    return {
        "task": meta.get("config", {}).get("task"),
        "difficulty": meta.get("config", {}).get("difficulty"),
        "steps": meta.get("config", {}).get("steps"),
        "command": meta.get("command"),
        "versions": meta.get("versions", {}),
        "complete": bool(expected is not None and n_done == expected and not incomplete),
        "finished_runs": n_done,
        "expected_runs": expected,
        "incomplete": incomplete,
        "controllers": controllers,
    }


def _fmt_ci(m: float, ci: list[float], scale: float = 100.0) -> str:
    if math.isnan(m):
        return "n/a"
    if ci[0] == ci[1]:
        return f"{m * scale:.1f}"
    return f"{m * scale:.1f} [{ci[0] * scale:.1f}, {ci[1] * scale:.1f}]"


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (accuracies in percent)."""
    rows = [
        "| controller | seeds | start acc % | final acc % (mean [95% CI]) | AUC % (mean [95% CI]) | wall s / run |",
        "|---|---|---|---|---|---|",
    ]
    for label, c in summary["controllers"].items():
        start = float(np.mean(c["initial_accuracy"])) * 100
        rows.append(
            f"| {label} | {len(c['seeds'])} | {start:.1f} | "
            f"{_fmt_ci(c['final_accuracy_mean'], c['final_accuracy_ci95'])} | "
            f"{_fmt_ci(c['auc_mean'], c['auc_ci95'])} | {c['wall_time_mean_s']:.0f} |"
        )
    return "\n".join(rows)


def report_markdown(summary: dict[str, Any], figure: bool) -> str:
    """The ``report.md`` text: table, completeness, command and versions."""
    lines = [
        f"# metactl compare: {summary.get('task')} (difficulty {summary.get('difficulty')}), "
        f"{summary.get('steps')} GRPO steps",
        "",
        "Held-out greedy accuracy after training (final) and the area under the held-out "
        "accuracy curve (AUC, mean accuracy over training), mean over seeds with a 95% "
        "Student-t confidence interval.",
        "",
        summary_table(summary),
        "",
    ]
    if not summary["complete"]:
        lines += [
            f"**Incomplete run**: {summary['finished_runs']} of {summary.get('expected_runs')} "
            "runs finished; statistics cover finished runs only.",
            "",
        ]
        for inc in summary["incomplete"]:
            lines.append(f"- unfinished: `{inc['run']}` (last logged step {inc['last_step']})")
        lines.append("")
    if figure:
        lines += [f"![report]({REPORT_PNG})", ""]
    lines += ["## Reproduce", "", "```", str(summary.get("command")), "```", "", "## Versions", ""]
    for k, v in sorted(summary.get("versions", {}).items()):
        lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"


def _curves(out: Path) -> dict[str, list[list[tuple[int, float]]]]:
    """Held-out accuracy curves per controller label (finished and unfinished runs)."""
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    for rd in run_dirs(out):
        res = read_result(rd)
        if res is not None:
            curves.setdefault(str(res["controller"]), []).append(
                [(int(s), float(a)) for s, a in res["curve"]]
            )
            continue
        recs = [r for r in read_jsonl(rd / METRICS_FILE) if "eval/accuracy" in r]
        label = label_for_dir(out, rd)
        if recs:
            curves.setdefault(label, []).append(
                [(int(r["step"]), float(r["eval/accuracy"])) for r in recs]
            )
    return curves


def _meta_policy(
    out: Path, label: str
) -> tuple[list[float], list[float], np.ndarray[Any, np.dtype[np.float64]], list[int]] | None:
    """(arm values, sampled temperature per step, probs[steps, K], steps) of one run of ``label``."""
    for rd in run_dirs(out):
        if label_for_dir(out, rd) != label:
            continue
        recs = read_jsonl(rd / METRICS_FILE)
        arms = sorted(
            {k[len("meta/prob/") :] for r in recs for k in r if k.startswith("meta/prob/")},
            key=float,
        )
        if not arms:
            continue
        steps: list[int] = []
        rows: list[list[float]] = []
        temps: list[float] = []
        for r in recs:
            if f"meta/prob/{arms[0]}" in r:
                steps.append(int(r["step"]))
                rows.append([float(r.get(f"meta/prob/{a}") or 0.0) for a in arms])
                temps.append(float(r.get("meta/temperature") or math.nan))
        return [float(a) for a in arms], temps, np.asarray(rows, dtype=np.float64), steps
    return None


def _preferred(out: Path) -> tuple[list[float], list[float]]:
    """Preferred temperatures of positive and negative advantage probe rollouts (all runs)."""
    pos: list[float] = []
    neg: list[float] = []
    for rd in run_dirs(out):
        for r in read_jsonl(rd / ROLLOUTS_FILE):
            for a, p in zip(r.get("advantage", []), r.get("preferred", []), strict=False):
                (pos if a > 0 else neg).append(float(p))
    return pos, neg


def plot_report(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``report.png``: accuracy curves with 95% bands, TAMPO's meta-policy, Figure 4.

    Raises:
        metactl.DependencyNotInstalled: matplotlib is missing (``pip install "metactl[lab]"``).
    """
    try:
        import matplotlib
    except ImportError as exc:
        from metactl.errors import DependencyNotInstalled

        raise DependencyNotInstalled("matplotlib", "lab") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    curves = _curves(out)
    order = list(summary["controllers"]) + [k for k in curves if k not in summary["controllers"]]
    for label in order:
        runs = curves.get(label, [])
        if not runs:
            continue
        steps = sorted({s for run in runs for s, _ in run})
        per_step = [[a for run in runs for s2, a in run if s2 == s] for s in steps]
        stats = [mean_ci95(v) for v in per_step]
        m = np.array([x[0] for x in stats])
        lo = np.array([x[1] for x in stats])
        hi = np.array([x[2] for x in stats])
        (line,) = ax.plot(
            steps, m * 100, label=f"{label} (n={len(runs)})", lw=2 if "TAMPO" in label else 1.3
        )
        ax.fill_between(steps, lo * 100, hi * 100, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out greedy accuracy (%)")
    ax.set_title("Learning curves (mean, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1]
    tampo = next((lab for lab in order if "tampo" in lab.lower()), None)
    mp = _meta_policy(out, tampo) if tampo else None
    if mp is None:  # no TAMPO run: show the first controller that logged a meta-policy
        for lab in order:
            mp = _meta_policy(out, lab)
            if mp is not None:
                tampo = lab
                break
    if mp is not None:
        arms, temps, probs, steps_mp = mp
        k = len(arms)
        ax.imshow(
            probs.T,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            extent=(steps_mp[0] - 0.5, steps_mp[-1] + 0.5, -0.5, k - 0.5),
            vmin=0.0,
        )
        idx = [
            float(np.interp(t, arms, np.arange(k))) if math.isfinite(t) else math.nan for t in temps
        ]
        ax.plot(steps_mp, idx, "w.", ms=3, label="sampled temperature")
        ax.set_yticks(range(k))
        ax.set_yticklabels([f"{a:g}" for a in arms])
        ax.set_ylabel("temperature arm")
        ax.set_xlabel("GRPO step")
        ax.set_title(f"{tampo} meta-policy (first seed)")
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no meta-policy logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()

    ax = axes[2]
    pos, neg = _preferred(out)
    if pos or neg:
        bins = np.geomspace(0.05, 10.0, 41)
        for data, name in ((neg, "negative"), (pos, "positive")):
            if data:
                ax.hist(
                    data,
                    bins=bins,
                    alpha=0.55,
                    weights=np.full(len(data), 1.0 / len(data)),
                    label=f"{name} advantage (n={len(data)})",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")  # rollouts of argmax tokens pile up at the lower bound
        ax.set_xlabel("preferred temperature T* = argmax_T loglik_T")
        ax.set_ylabel("fraction of rollouts")
        ax.legend(fontsize=8)
    ax.set_title("Preferred temperature of probe rollouts (paper Fig. 4)")
    fig.tight_layout()
    path = out / REPORT_PNG
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: str | Path, *, figure: bool = True) -> dict[str, Any]:
    """Write ``summary.json``, ``report.md`` and ``report.png`` for the runs in ``out``.

    Args:
        out: a compare/demo output folder (finished or interrupted).
        figure: also draw ``report.png`` (needs matplotlib).

    Returns:
        The summary dict (as written to ``summary.json``).
    """
    out_p = Path(out)
    summary = collect(out_p)
    drew = False
    if figure:
        plot_report(out_p, summary)
        drew = True
    (out_p / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    (out_p / REPORT_MD).write_text(report_markdown(summary, drew))
    return summary
