"""Summaries, tables and figures of a ``metactl compare``/``demo`` output folder.

Reads only the files the runs wrote (the format of :mod:`metactl.integrations.lab.rundir`),
so it works on a finished or an interrupted run, and needs neither torch nor TRL. Which runs
finished, which are unfinished and which are missing is decided once, by
:func:`metactl.integrations.lab.rundir.list_runs`; the summary, the table and the figure all
use that answer.

:func:`write_report` writes ``summary.json``, ``report.md`` and (with matplotlib)
``report.png`` into ``OUT``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metactl.integrations.lab.paired import mean_ci95, verdict, verdict_line, verdict_table
from metactl.integrations.lab.rundir import (
    PREFERRED_BOUNDS,
    REPORT_MD,
    REPORT_PNG,
    SUMMARY_FILE,
    RunRef,
    atomic_write,
    check_files,
    expected_runs,
    logged_arm,
    printable,
    read_meta,
    read_metrics,
    read_rollouts,
    shown,
)
from metactl.integrations.lab.temperature_course import temperature_blocks, temperature_curve
from metactl.metric_keys import MEAN, SIGMA, TEMPERATURE, meta_key, prob_key
from metactl.spaces import Box

if TYPE_CHECKING:
    from metactl.integrations.lab.config import ControllerSpec


def _interval(low: float | None, high: float | None) -> list[float] | None:
    return None if low is None or high is None else [low, high]


def _label_order(out: Path, runs: list[RunRef]) -> list[str]:
    labels = read_meta(out).get("labels")
    order = [str(x) for x in labels] if isinstance(labels, list) else []
    for run in runs:
        if run.label not in order:
            order.append(run.label)
    return order


def _last_step(run: RunRef) -> int:
    return max((int(r["step"]) for r in read_metrics(run.path)), default=0)


def seed_kinds(seeds: list[int]) -> dict[str, list[int]]:
    """The seeds of a folder by kind: ``{"development": [...], "confirmation": [...]}``."""
    from metactl.integrations.lab.config import seed_evidence

    kinds: dict[str, list[int]] = {}
    for seed in sorted(set(seeds)):
        kinds.setdefault(seed_evidence(seed), []).append(seed)
    return kinds


def _seed_ranges(seeds: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    parts: list[str] = []
    start = prev = seeds[0]
    for seed in [*seeds[1:], None]:
        if seed is not None and seed == prev + 1:
            prev = seed
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if seed is not None:
            start = prev = seed
    return ", ".join(parts)


def evidence_line(summary: dict[str, Any]) -> str:
    """What kind of seeds the result used, in words (development results are not a verdict)."""
    kinds: dict[str, list[int]] = summary.get("evidence") or {}
    said = {
        "development": "development seeds {} (settings may have been chosen on them)",
        "confirmation": "confirmation seeds {} (never used to choose a setting)",
    }
    parts = [said[kind].format(_seed_ranges(seeds)) for kind, seeds in kinds.items() if seeds]
    return "Seeds: " + ("; ".join(parts) if parts else "none") + "."


def collect(out: Path) -> dict[str, Any]:
    """Gather every run's result and curve in ``out`` into the summary dict.

    Finished runs (with ``result.json``) enter the statistics; unfinished ones (a folder
    without it) are listed under ``"incomplete"`` with the last step they logged, and runs the
    config expects but that never started under ``"missing"``. An unfinished run whose
    ``result.json`` does not count (torn, empty, not matching the config) says why under
    ``"problem"``. A single seed has no confidence interval: its ``*_ci95`` is None.

    Raises:
        metactl.integrations.lab.rundir.RunFolderError: a file of ``out`` is corrupted (names
            the file and line).
    """
    meta = read_meta(out)
    runs = check_files(out)
    order = _label_order(out, runs)
    finished: dict[str, list[dict[str, Any]]] = {}
    runs_per_label: dict[str, int] = {}
    incomplete: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for run in runs:
        runs_per_label[run.label] = runs_per_label.get(run.label, 0) + 1
        where = {"run": run.path.relative_to(out).as_posix(), "label": run.label, "seed": run.seed}
        if run.result is not None:
            finished.setdefault(run.label, []).append(run.result)
        elif run.status == "unfinished":
            problem = {} if run.problem is None else {"problem": run.problem}
            incomplete.append({**where, "last_step": _last_step(run), **problem})
        else:
            missing.append(where)
    controllers: dict[str, Any] = {}
    for label in (x for x in order if x in finished):
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
            "final_accuracy_ci95": _interval(flo, fhi),
            "auc": auc,
            "auc_mean": am,
            "auc_ci95": _interval(alo, ahi),
            "wall_time_s": wall,
            "wall_time_mean_s": float(np.mean(wall)),
        }
    # Counted from the config's labels x seeds when it names them (every run listed once).
    expected = len(runs) if expected_runs(meta) else meta.get("expected_runs")
    n_done = sum(len(v) for v in finished.values())
    config = meta.get("config", {}) if isinstance(meta.get("config"), dict) else {}
    named = config.get("baseline")
    steps = config.get("steps")
    return {
        "task": config.get("task"),
        "difficulty": config.get("difficulty"),
        "steps": config.get("steps"),
        "command": meta.get("command"),
        "versions": meta.get("versions", {}),
        "complete": bool(expected is not None and n_done == expected and not incomplete),
        "finished_runs": n_done,
        "expected_runs": expected,
        "labels": order,
        "runs_per_label": runs_per_label,
        "evidence": seed_kinds([run.seed for run in runs]),
        "incomplete": incomplete,
        "missing": missing,
        "controllers": controllers,
        "random_reward": config.get("random_reward"),
        # Each controller against one baseline, paired by seed (metactl.integrations.lab.paired).
        "verdict": verdict(controllers, named if isinstance(named, str) else None),
        "temperature": (
            temperature_blocks(runs, int(steps)) if isinstance(steps, int) and steps > 0 else None
        ),
        "drift": _drifts(out, runs, steps) if config.get("random_reward") is not None else None,
    }


def _drifts(out: Path, runs: list[RunRef], steps: Any) -> dict[str, Any]:
    """On a random-reward control, each learning controller's drift (temperature_course.drift)."""
    from metactl.integrations.lab.temperature_course import DRIFT_WINDOW, drift, first_decision_mean

    if not isinstance(steps, int) or steps < DRIFT_WINDOW:
        return {}
    result: dict[str, Any] = {}
    for label, spec in _specs(out).items():
        if spec.kind in ("fixed", "schedule", "piecewise"):
            continue  # a preset course cannot drift
        d = drift([r for r in runs if r.label == label], first_decision_mean(spec, steps), steps)
        if d is not None:
            result[label] = d
    return result


def _fmt_ci(m: float, ci: list[float] | None, scale: float = 100.0) -> str:
    if math.isnan(m):
        return "n/a"
    if ci is None:
        return f"{m * scale:.1f}"
    return f"{m * scale:.1f} [{ci[0] * scale:.1f}, {ci[1] * scale:.1f}]"


def table_cell(text: str) -> str:
    """``text`` as one Markdown table cell: shown escaped (:func:`~.rundir.shown`), ``|`` as ``\\|``."""
    return shown(text).replace("|", "\\|")


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (accuracies in percent), one row per expected controller.

    The seeds column says how many runs finished, ``k of n`` when some did not; a controller
    with no finished run has a row of ``n/a``. A single seed shows a mean without an interval.
    Labels are escaped (:func:`table_cell`), so a ``|`` or a newline in one keeps the table whole.
    """
    rows = [
        "| controller | seeds | start acc % | final acc % (mean [95% CI]) | AUC % (mean [95% CI]) | wall s / run |",
        "|---|---|---|---|---|---|",
    ]
    labels = list(summary.get("labels") or summary["controllers"])
    labels += [x for x in summary["controllers"] if x not in labels]
    per_label = summary.get("runs_per_label") or {}
    for label in labels:
        c = summary["controllers"].get(label)
        done = len(c["seeds"]) if c else 0
        of = per_label.get(label)
        seeds = f"{done}" if of is None or of == done else f"{done} of {of}"
        if c is None:
            rows.append(f"| {table_cell(label)} | {seeds} | n/a | n/a | n/a | n/a |")
            continue
        start = float(np.mean(c["initial_accuracy"])) * 100
        rows.append(
            f"| {table_cell(label)} | {seeds} | {start:.1f} | "
            f"{_fmt_ci(c['final_accuracy_mean'], c['final_accuracy_ci95'])} | "
            f"{_fmt_ci(c['auc_mean'], c['auc_ci95'])} | {c['wall_time_mean_s']:.0f} |"
        )
    return "\n".join(rows)


def temperature_table(course: dict[str, Any]) -> str:
    """Mean sampled temperature per block of steps, one row per controller (Markdown)."""
    heads = [f"{first}-{last}" for first, last in course["blocks"]]
    rows = [
        "| controller | " + " | ".join(f"steps {h}" for h in heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for label, means in course["controllers"].items():
        cells = ["n/a" if m is None else f"{m:.2f}" for m in means]
        rows.append(f"| {table_cell(label)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def report_markdown(summary: dict[str, Any], figure: bool) -> str:
    """The ``report.md`` text: table, completeness, command and versions."""
    lines = [
        f"# metactl compare: {summary.get('task')} (difficulty {summary.get('difficulty')}), "
        f"{summary.get('steps')} GRPO steps",
        "",
        "Held-out greedy accuracy after training (final) and the area under the held-out "
        "accuracy curve (AUC, mean accuracy over training), mean over seeds with a 95% "
        "Student-t confidence interval (none with a single seed).",
        "",
        evidence_line(summary),
        "",
    ]
    if summary.get("random_reward") is not None:
        lines += [
            f"**Random-reward control**: every completion's training reward was 1 with probability "
            f"{summary['random_reward']:g}, else 0, drawn independently of the completion; the "
            "held-out accuracy is still scored against the right answers.",
            "",
        ]
    lines += [summary_table(summary), ""]
    v = summary.get("verdict")
    if v is not None:
        lines += [
            "## Verdict",
            "",
            f"Baseline: **{table_cell(v['baseline'])}** ({v['why']}). Each controller minus the "
            "baseline, in accuracy points, paired by seed on the seeds both finished: the mean "
            "difference with its 95% Student-t interval, and the minimum detectable difference "
            "(the true difference a two-sided 5% test on these seeds detects with 80% power; "
            "an interval holding 0 rules out only differences larger than about this). Reading "
            "on AUC: better / worse when the interval excludes 0, else not resolved.",
            "",
            verdict_table(v, table_cell) if v["rows"] else "(only the baseline finished runs)",
            "",
            f"`{verdict_line(v)}`",
            "",
        ]
    drifts = summary.get("drift")
    if drifts:
        from metactl.integrations.lab.temperature_course import DRIFT_MARGIN

        lines += [
            "## Drift on the random-reward control",
            "",
            "Drift of a controller on a seed: its mean sampled temperature over the last rounds "
            "minus T0, the expected temperature of its first decision (before any feedback). It "
            f"does not drift if the 95% interval of the mean drift lies inside +-{DRIFT_MARGIN:g}; "
            "it drifts if the interval excludes 0 (and is not inside); otherwise it is not "
            "resolved (more seeds are needed).",
            "",
            "| controller | seeds | rounds | T0 | late mean T | drift [95% CI] | drifts? |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, d in drifts.items():
            ci = d["drift_ci95"]
            interval = "" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"
            verdict_text = d["reading"]
            lines.append(
                f"| {table_cell(label)} | {len(d['seeds'])} | {d['window'][0]}-{d['window'][1]} | "
                f"{d['t0']:.3f} | {d['late_mean']:.3f} | {d['drift']:+.3f}{interval} | "
                f"{verdict_text} |"
            )
        lines.append("")
    course = summary.get("temperature")
    if course is not None:
        lines += ["## Temperature over training", "", temperature_table(course), ""]
    if not summary["complete"]:
        lines += [
            f"**Incomplete run**: {summary['finished_runs']} of {summary.get('expected_runs')} "
            "runs finished; statistics cover finished runs only.",
            "",
        ]
        for inc in summary["incomplete"]:
            why = f"; {inc['problem']}" if inc.get("problem") else ""
            run = printable(inc["run"])
            lines.append(f"- unfinished: `{run}` (last logged step {inc['last_step']}{why})")
        for miss in summary.get("missing", []):
            lines.append(f"- not started: `{printable(miss['run'])}`")
        lines.append("")
    if figure:
        lines += [f"![report]({REPORT_PNG})", ""]
    lines += ["## Reproduce", "", "```", str(summary.get("command")), "```", "", "## Versions", ""]
    for k, v in sorted(summary.get("versions", {}).items()):
        lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"


Curve = list[tuple[int, float]]


def _curve(run: RunRef) -> Curve:
    if run.result is not None:
        return [(int(s), float(a)) for s, a in run.result["curve"]]
    recs = [r for r in read_metrics(run.path) if "eval/accuracy" in r]
    return [(int(r["step"]), float(r["eval/accuracy"])) for r in recs]


def _specs(out: Path) -> dict[str, ControllerSpec]:
    """The controller entries of ``out``'s config by label (one that does not validate left out)."""
    # Imported here: the config module checks for the lab's training dependencies, which the
    # tables and the summary do not need.
    from pydantic import TypeAdapter, ValidationError

    from metactl.integrations.lab.config import ControllerSpec

    config = read_meta(out).get("config")
    entries = config.get("controllers") if isinstance(config, dict) else None
    adapter: TypeAdapter[ControllerSpec] = TypeAdapter(ControllerSpec)
    specs: dict[str, ControllerSpec] = {}
    for entry in entries if isinstance(entries, list) else []:
        try:
            spec = adapter.validate_python(entry)
        except ValidationError:
            continue  # drawn without what its entry says (sigma band, emphasis)
        specs[spec.label()] = spec
    return specs


def _box(spec: ControllerSpec | None) -> Box | None:
    """The Box a continuous controller learns over (to draw sigma in temperature), else None."""
    from metactl.integrations.lab.config import MetaGradientSpec

    space = spec.temperature_space() if isinstance(spec, MetaGradientSpec) else None
    return space if isinstance(space, Box) else None


def _box_of(out: Path, label: str) -> Box | None:
    """The Box the controller ``label`` of ``out``'s config learns over, else None."""
    return _box(_specs(out).get(label))


def _is_tampo(spec: ControllerSpec | None) -> bool:
    """Whether the figure puts this controller first and draws it bold: TAMPO, by its kind."""
    return spec is not None and spec.kind == "tampo"


def parse_meta_policy(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What ``metrics.jsonl`` records hold of a meta-policy: arm probabilities, or mean and sigma.

    The names are those of :mod:`metactl.metric_keys` as a trainer logs them
    (``meta/prob/<T>``, ``meta/mean``, ``meta/sigma``, ``meta/temperature``).
    """
    temperature = meta_key(TEMPERATURE)
    arms = sorted({arm for r in recs for k in r if (arm := logged_arm(k)) is not None}, key=float)
    if arms:
        keys = [meta_key(prob_key(a)) for a in arms]
        rows = [r for r in recs if keys[0] in r]
        return {
            "kind": "discrete",
            "arms": [float(a) for a in arms],
            "steps": [int(r["step"]) for r in rows],
            "probs": np.asarray(
                [[float(r.get(k) or 0.0) for k in keys] for r in rows], dtype=np.float64
            ),
            "temps": [float(r.get(temperature) or math.nan) for r in rows],
        }
    mean, sigma = meta_key(MEAN), meta_key(SIGMA)
    rows = [r for r in recs if r.get(mean) is not None and r.get(sigma) is not None]
    if rows:
        return {
            "kind": "box",
            "steps": [int(r["step"]) for r in rows],
            "mean": np.asarray([float(r[mean]) for r in rows]),
            "sigma": np.asarray([float(r[sigma]) for r in rows]),
            "temps": [float(r.get(temperature) or math.nan) for r in rows],
        }
    return None


#: The most points of one line (or columns of a heatmap) drawn: the figure is about 2,000
#: pixels wide, and drawing a million-step run point by point takes minutes.
MAX_DRAWN_POINTS = 2000


def _thin(n: int) -> list[int]:
    """The indices of at most :data:`MAX_DRAWN_POINTS` of ``n`` points, evenly spread, ends kept."""
    if n <= MAX_DRAWN_POINTS:
        return list(range(n))
    return sorted({round(i * (n - 1) / (MAX_DRAWN_POINTS - 1)) for i in range(MAX_DRAWN_POINTS)})


def _meta_policy(run: RunRef) -> dict[str, Any] | None:
    """What one run logged of its meta-policy (:func:`parse_meta_policy` of its metrics), thinned
    to :data:`MAX_DRAWN_POINTS` steps for drawing."""
    policy = parse_meta_policy(read_metrics(run.path))
    if policy is None:
        return None
    keep = _thin(len(policy["steps"]))
    for key in ("steps", "temps"):
        policy[key] = [policy[key][i] for i in keep]
    for key in ("probs", "mean", "sigma"):
        if key in policy:
            policy[key] = policy[key][keep]
    return policy


def _preferred(runs: list[RunRef]) -> dict[str, Any]:
    """Preferred temperatures of positive/negative advantage probe rollouts, bound hits apart."""
    lo, hi = PREFERRED_BOUNDS
    out: dict[str, Any] = {"positive": [], "negative": [], "at_low": 0, "at_high": 0}
    for run in runs:
        for r in read_rollouts(run.path):
            for a, p in zip(r.get("advantage", []), r.get("preferred", []), strict=False):
                p = float(p)
                if p <= lo * (1 + 1e-3):
                    out["at_low"] += 1
                elif p >= hi * (1 - 1e-3):
                    out["at_high"] += 1
                else:
                    out["positive" if a > 0 else "negative"].append(p)
    return out


def _legend(label: str) -> str:
    """A label as matplotlib draws it literally: escaped (:func:`shown`), ``$`` not mathtext."""
    return shown(label).replace("$", r"\$")


def _curve_stats(
    curves: list[Curve],
) -> tuple[list[int], list[tuple[float, float | None, float | None]]]:
    """The steps of ``curves`` to draw and, at each, :func:`mean_ci95` of the accuracies there.

    Linear in the points: each is put under its step once, and the statistics are taken at
    the :data:`MAX_DRAWN_POINTS` steps drawn (:func:`_thin`), so a million-step curve draws.
    """
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, accuracy in curve:
            by_step.setdefault(step, []).append(accuracy)
    steps = sorted(by_step)
    drawn = [steps[i] for i in _thin(len(steps))]
    return drawn, [mean_ci95(by_step[s]) for s in drawn]


def _plot_curves(
    ax: Any, summary: dict[str, Any], runs: list[RunRef], specs: dict[str, ControllerSpec]
) -> None:
    per_label = summary.get("runs_per_label") or {}
    for label in summary["labels"]:
        mine = [r for r in runs if r.label == label]
        done = [_curve(r) for r in mine if r.status == "finished"]
        color = None
        if done:
            steps, stats = _curve_stats(done)
            m = np.array([x[0] for x in stats])
            of = per_label.get(label, len(done))
            n = f"n={len(done)}" if of == len(done) else f"n={len(done)} of {of}"
            lw = 2 if _is_tampo(specs.get(label)) else 1.3
            (line,) = ax.plot(steps, m * 100, label=f"{_legend(label)} ({n})", lw=lw)
            color = line.get_color()
            # A band only where at least two seeds give an interval.
            band = [
                (s, low, high)
                for s, (_, low, high) in zip(steps, stats, strict=True)
                if low is not None and high is not None
            ]
            if band:  # an accuracy lies in [0, 1]: so does its band (the t interval may not)
                ax.fill_between(
                    [b[0] for b in band],
                    [max(0.0, b[1]) * 100 for b in band],
                    [min(1.0, b[2]) * 100 for b in band],
                    color=color,
                    alpha=0.15,
                )
        for run in mine:
            curve = _curve(run) if run.status == "unfinished" else []
            curve = [curve[i] for i in _thin(len(curve))]
            if curve:
                (line,) = ax.plot(
                    [s for s, _ in curve],
                    [a * 100 for _, a in curve],
                    ls="--",
                    lw=1,
                    color=color,
                    label=f"{_legend(label)} seed {run.seed} (unfinished)",
                )
                color = line.get_color()
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out greedy accuracy (%)")
    ax.set_title("Learning curves (mean; 95% CI band where 2+ seeds)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no curve yet: no empty legend
        ax.legend(fontsize=8)


def _plot_meta_policy(
    fig: Any, ax: Any, summary: dict[str, Any], runs: list[RunRef], specs: dict[str, ControllerSpec]
) -> None:
    order = sorted(summary["labels"], key=lambda lab: not _is_tampo(specs.get(lab)))  # TAMPO first
    found = None
    for label in order:
        candidates = [r for r in runs if r.label == label and r.status != "missing"]
        candidates.sort(key=lambda r: (r.status != "finished", r.seed))
        for run in candidates:
            policy = _meta_policy(run)
            if policy is not None:
                found = (run, policy)
                break
        if found:
            break
    if found is None:
        ax.text(0.5, 0.5, "no meta-policy logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    run, mp = found
    which = f"seed {run.seed}" + (", unfinished" if run.status != "finished" else "")
    steps = mp["steps"]
    if mp["kind"] == "discrete":
        arms = mp["arms"]
        k = len(arms)
        image = ax.imshow(
            mp["probs"].T,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, k - 0.5),
            vmin=0.0,
        )
        fig.colorbar(image, ax=ax, label="probability of the arm")
        idx = [
            float(np.interp(t, arms, np.arange(k))) if math.isfinite(t) else math.nan
            for t in mp["temps"]
        ]
        ax.plot(steps, idx, "w.", ms=3, label="sampled temperature")
        ax.set_yticks(range(k))
        ax.set_yticklabels([f"{a:g}" for a in arms])
        ax.set_ylabel("temperature arm")
    else:
        mean, sigma = mp["mean"], mp["sigma"]
        (line,) = ax.plot(steps, mean, lw=1.5, label="policy median")
        box = _box(specs.get(run.label))
        if box is not None:
            u = box.to_unconstrained(mean)
            ax.fill_between(
                steps,
                box.from_unconstrained(u - sigma),
                box.from_unconstrained(u + sigma),
                color=line.get_color(),
                alpha=0.2,
                label="±1 sigma (in the unconstrained coordinate)",
            )
        ax.plot(steps, mp["temps"], "k.", ms=3, label="sampled temperature")
        ax.set_ylabel("temperature")
    ax.set_xlabel("GRPO step")
    ax.set_title(f"{_legend(run.label)} meta-policy ({which})")
    ax.legend(fontsize=8, loc="upper right")


def _plot_temperatures(ax: Any, summary: dict[str, Any], runs: list[RunRef]) -> None:
    """Every controller's mean sampled temperature over training (10-step bins, over seeds)."""
    drew = False
    for label in summary["labels"]:
        centres, means = temperature_curve([r for r in runs if r.label == label])
        if centres:
            n = len((summary["controllers"].get(label) or {}).get("seeds", []))
            ax.plot(centres, means, marker=".", ms=3, lw=1.3, label=f"{_legend(label)} (n={n})")
            drew = True
    if not drew:
        ax.text(0.5, 0.5, "no temperature logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("sampled temperature")
    ax.set_title("Temperature over training (mean over finished seeds, 10-step bins)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_preferred(ax: Any, runs: list[RunRef]) -> None:
    pref = _preferred(runs)
    lo, hi = PREFERRED_BOUNDS
    at_bounds = (
        f"{pref['at_low']} at T*={lo:g}, {pref['at_high']} at T*={hi:g} (search bounds, not drawn)"
    )
    if pref["positive"] or pref["negative"]:
        bins = np.geomspace(lo, hi, 41)
        for name in ("negative", "positive"):
            data = pref[name]
            if data:
                ax.hist(
                    data,
                    bins=bins,
                    alpha=0.55,
                    weights=np.full(len(data), 1.0 / len(data)),
                    label=f"{name} advantage (n={len(data)})",
                )
        ax.set_xscale("log")
        ax.set_xlabel("preferred temperature T* = argmax_T loglik_T")
        ax.set_ylabel("fraction of rollouts (inside the bounds)")
        ax.legend(fontsize=8, title=at_bounds, title_fontsize=7)
    elif pref["at_low"] or pref["at_high"]:
        ax.text(0.5, 0.5, at_bounds, ha="center", va="center", transform=ax.transAxes, fontsize=8)
    labels = sorted({run.label for run in runs})
    pooled = (
        f"pooled over {len(labels)} controllers" if len(labels) > 1 else labels[0] if labels else ""
    )
    ax.set_title(f"Preferred temperature of probe rollouts (paper Fig. 4)\n{pooled}, every seed")


def plot_report(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``report.png``: accuracy curves, every controller's temperature over training, the
    meta-policy, and the paper's Figure 4.

    Learning curves are the mean over finished seeds with a 95% band where two or more seeds
    exist, clipped to [0, 100]%; unfinished runs are dashed and labelled. The temperature panel
    shows each controller's mean sampled temperature in 10-step bins. Figure 4 pools the probe
    rollouts of every controller and seed, and its title says so. The meta-policy is the first TAMPO run's
    (else the first run that logged one): a heatmap with a colour bar for a Discrete policy,
    the median with a one-sigma band for a continuous (Box) one. Preferred temperatures at the
    search bounds are counted in the legend rather than drawn.

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

    runs = check_files(out)
    specs = _specs(out)
    fig, grid = plt.subplots(2, 2, figsize=(16, 9.6))
    axes = grid.ravel()
    _plot_curves(axes[0], summary, runs, specs)
    _plot_temperatures(axes[1], summary, runs)
    _plot_meta_policy(fig, axes[2], summary, runs, specs)
    _plot_preferred(axes[3], [r for r in runs if r.status != "missing"])
    fig.tight_layout()
    path = out / REPORT_PNG
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def write_report(out: str | Path, *, figure: bool = True) -> dict[str, Any]:
    """Write ``summary.json``, ``report.md`` and ``report.png`` for the runs in ``out``.

    Args:
        out: a compare/demo output folder (finished or interrupted).
        figure: also draw ``report.png`` (needs matplotlib).

    Every file is written atomically (:func:`~metactl.integrations.lab.rundir.atomic_write`):
    a crash or a full disk leaves the previous report whole.

    Returns:
        The summary dict (as written to ``summary.json``).

    Raises:
        metactl.integrations.lab.rundir.RunFolderError: a file of ``out`` is corrupted.
        OSError: a report file cannot be written (e.g. a full disk).
    """
    out_p = Path(out)
    summary = collect(out_p)
    drew = False
    if figure:
        plot_report(out_p, summary)
        drew = True
    atomic_write(out_p / SUMMARY_FILE, json.dumps(summary, indent=2))
    atomic_write(out_p / REPORT_MD, report_markdown(summary, drew))
    return summary
