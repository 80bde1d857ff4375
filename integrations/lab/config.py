"""The validated configuration of ``metactl compare`` (and ``metactl demo``).

A YAML (or JSON) file names the task, the budget, the seeds and the controllers
to compare. Controllers are listed by a ``kind`` field; this is a file format
only: in Python, :meth:`ControllerSpec.build` returns the controller object::

    task: addition
    difficulty: 2
    steps: 150
    seeds: 3
    controllers:
      - kind: tampo            # mc.TAMPO(ema=0.05, top_p=0.7)
      - kind: fixed
        temperature: 0.6
      - kind: schedule         # mc.Schedule.linear(0.9, 1.5, steps=<steps>)
        start: 0.9
        end: 1.5

Every field is checked before any training starts; a bad file raises
:class:`ConfigError` whose message names the offending field, e.g.
``controllers[1] (fixed).temperature: Input should be greater than 0 (got -0.5)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from metactl.controllers import (
    PAPER_TEMPERATURES,
    TAMPO,
    Controller,
    EntropyTarget,
    Fixed,
    MetaGradient,
    Schedule,
    SlidingWindowUCB,
)
from metactl.errors import require
from metactl.integrations.lab.rundir import folder_names
from metactl.integrations.lab.testbed.tasks import DIFFICULTY_RANGES
from metactl.integrations.lab.testbed.warmstart import WarmStartConfig
from metactl.spaces import Box, Discrete

require("pydantic", "lab")

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator  # noqa: E402

Outcome = Literal["mean_reward", "informative_fraction"]
"""The reward of a bandit controller's Outcome feedback (``MetaGRPOTrainer(outcome=...)``)."""

Temperature = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A sampling temperature: finite and > 0."""


class ConfigError(ValueError):
    """A compare configuration is invalid; the message names every bad field."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, description="Label in tables and plots.")

    def default_name(self) -> str:
        raise NotImplementedError

    def label(self) -> str:
        """The name shown in reports: ``name`` if given, else a readable default."""
        return self.name if self.name else self.default_name()

    def trainer_outcome(self) -> Outcome:
        """What ``MetaGRPOTrainer(outcome=...)`` gives this controller as its Outcome reward."""
        return "mean_reward"

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        """Construct the controller.

        Args:
            seed: the controller's seed.
            steps: the run's training steps (used by schedules).
            vocab_size: the model's vocabulary size (used by EntropyTarget).
        """
        raise NotImplementedError


def _grid(values: Sequence[float] | None) -> Discrete:
    return Discrete(PAPER_TEMPERATURES if values is None else list(values))


class TAMPOSpec(_Spec):
    """``mc.TAMPO`` (the paper's rule) over a temperature grid (default 0.6..1.5)."""

    kind: Literal["tampo"]
    temperatures: list[Temperature] | None = Field(default=None, min_length=2)
    ema: float = Field(default=0.05, gt=0, le=1)
    top_p: float = Field(default=0.7, ge=0, le=1)
    normaliser: Literal["sparsemax", "softmax"] = "sparsemax"
    warmup_steps: int = Field(default=0, ge=0)

    def default_name(self) -> str:
        return "TAMPO"

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        return TAMPO(
            _grid(self.temperatures),
            ema=self.ema,
            top_p=self.top_p,
            normaliser=self.normaliser,
            warmup_steps=self.warmup_steps,
            seed=seed,
        )


class MetaGradientSpec(_Spec):
    """``mc.MetaGradient`` on a Discrete grid or a continuous (log-scale) Box of temperatures."""

    kind: Literal["meta_gradient"]
    space: Literal["discrete", "box"] = "discrete"
    temperatures: list[Temperature] | None = Field(
        default=None, min_length=2, description="Discrete grid (default 0.6..1.5)."
    )
    low: Temperature = Field(default=0.6, description="Box lower bound.")
    high: Temperature = Field(default=1.5, description="Box upper bound.")
    lr: float = Field(default=0.05, gt=0)
    entropy_bonus: float = Field(default=0.0, ge=0)
    prob_floor: float = Field(default=0.0, ge=0, lt=1)
    ema: float = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _check_box(self) -> MetaGradientSpec:
        if self.space == "box" and not self.low < self.high:
            raise ValueError(f"low must be < high, got low={self.low}, high={self.high}")
        return self

    def default_name(self) -> str:
        return f"MetaGradient ({self.space})"

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        space: Discrete | Box
        space = (
            _grid(self.temperatures)
            if self.space == "discrete"
            else Box(self.low, self.high, log=True)
        )
        return MetaGradient(
            space,
            lr=self.lr,
            entropy_bonus=self.entropy_bonus,
            prob_floor=self.prob_floor,
            ema=self.ema,
            seed=seed,
        )


class SlidingWindowUCBSpec(_Spec):
    """``mc.SlidingWindowUCB`` (Agent57's meta-controller) learning from each round's Outcome.

    ``outcome`` picks that reward: ``mean_reward`` (the round's mean reward) or
    ``informative_fraction`` (the fraction of prompt groups whose rewards differ, i.e. that
    have a nonzero GRPO advantage).
    """

    kind: Literal["sliding_window_ucb"]
    temperatures: list[Temperature] | None = Field(default=None, min_length=2)
    window: int = Field(default=160, ge=1)
    epsilon: float = Field(default=0.5, ge=0, le=1)
    bonus: float = Field(default=1.0, ge=0)
    outcome: Outcome = "mean_reward"

    def default_name(self) -> str:
        return "SW-UCB" if self.outcome == "mean_reward" else "SW-UCB (informative)"

    def trainer_outcome(self) -> Outcome:
        return self.outcome

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        return SlidingWindowUCB(
            _grid(self.temperatures),
            window=self.window,
            epsilon=self.epsilon,
            bonus=self.bonus,
            seed=seed,
        )


class ScheduleSpec(_Spec):
    """``mc.Schedule``: linear (the paper's 0.9 -> 1.5 baseline) or cosine over the run."""

    kind: Literal["schedule"]
    shape: Literal["linear", "cosine"] = "linear"
    start: Temperature = 0.9
    end: Temperature = 1.5
    steps: int | None = Field(default=None, ge=1, description="Default: the run's steps.")

    def default_name(self) -> str:
        return f"{self.shape} {self.start:g}-{self.end:g}"

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        n = self.steps or steps
        if self.shape == "linear":
            return Schedule.linear(self.start, self.end, steps=n)
        return Schedule.cosine(self.start, self.end, steps=n)


class PiecewiseSpec(_Spec):
    """``mc.Schedule.piecewise``: ``values[0]`` until step ``boundaries[0]``, then ``values[1]``...

    E.g. a hot start then a cold finish: ``boundaries: [75]``, ``values: [1.0, 0.6]``.
    """

    kind: Literal["piecewise"]
    boundaries: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    values: list[Temperature] = Field(min_length=2)

    @model_validator(mode="after")
    def _check_lengths(self) -> PiecewiseSpec:
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"values: need one more than boundaries ({len(self.boundaries)} + 1), "
                f"got {len(self.values)}"
            )
        if sorted(set(self.boundaries)) != self.boundaries:
            raise ValueError(f"boundaries: must increase strictly, got {self.boundaries}")
        return self

    def default_name(self) -> str:
        phases = [f"{v:g}" for v in self.values]
        return "piecewise " + " -> ".join(
            f"{phase}@{step}" for phase, step in zip(phases, [0, *self.boundaries], strict=True)
        )

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        return Schedule.piecewise(self.boundaries, self.values)


class EntropyTargetSpec(_Spec):
    """``mc.EntropyTarget``: closed-loop temperature toward a target token entropy."""

    kind: Literal["entropy_target"]
    low: Temperature = 0.6
    high: Temperature = 1.5
    target: float | None = Field(default=None, gt=0, description="Nats; default: set by warmup.")
    warmup: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _check_box(self) -> EntropyTargetSpec:
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got low={self.low}, high={self.high}")
        return self

    def default_name(self) -> str:
        return "EntropyTarget"

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        return EntropyTarget(
            Box(self.low, self.high),
            vocab_size=vocab_size,
            target=self.target,
            warmup=self.warmup,
            seed=seed,
        )


class FixedSpec(_Spec):
    """``mc.Fixed``: one temperature for the whole run (plain GRPO)."""

    kind: Literal["fixed"]
    temperature: Temperature

    def default_name(self) -> str:
        return f"T={self.temperature:g}"

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        return Fixed(self.temperature)


ControllerSpec = Annotated[
    TAMPOSpec
    | MetaGradientSpec
    | SlidingWindowUCBSpec
    | ScheduleSpec
    | PiecewiseSpec
    | EntropyTargetSpec
    | FixedSpec,
    Field(discriminator="kind"),
]
"""One entry of ``controllers:``, chosen by its ``kind``."""

CONTROLLER_KINDS: tuple[str, ...] = (
    "tampo",
    "meta_gradient",
    "sliding_window_ucb",
    "schedule",
    "piecewise",
    "entropy_target",
    "fixed",
)


class TrainerSettings(BaseModel):
    """GRPO settings shared by every run (passed to ``trl.GRPOConfig``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(default=1e-4, gt=0)
    prompts_per_step: int = Field(default=16, ge=1)
    num_generations: int = Field(default=8, ge=2)
    beta: float = Field(default=0.0, ge=0)
    report_to: Literal["none", "tensorboard"] = Field(
        default="none",
        description="TRL's report_to per run; tensorboard logs under the run's tensorboard/.",
    )


class WarmStartSettings(BaseModel):
    """The supervised warm start every run begins from (cached on disk)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: Literal["tiny", "small", "medium"] = WarmStartConfig.size  # type: ignore[assignment]
    seed: int = Field(default=WarmStartConfig.seed, ge=0)
    target_accuracy: float = Field(default=WarmStartConfig.target_accuracy, gt=0, le=1)
    max_steps: int = Field(default=WarmStartConfig.max_steps, ge=1)
    misconception: float = Field(
        default=WarmStartConfig.misconception,
        description="Fraction of examples taught a last-digit-shifted answer (checked by "
        "WarmStartConfig: in [0, 1), exact-answer tasks).",
    )


class CompareConfig(BaseModel):
    """What ``metactl compare`` runs: every controller on the same task and seeds.

    Attributes:
        task: testbed task (``addition``, ``sorting``, ``countdown``).
        difficulty: the task's difficulty knob.
        steps: GRPO steps (rounds) per run.
        seeds: how many seeds (0..n-1), or an explicit list.
        eval_every: steps between held-out evaluations (the learning curve).
        eval_size: held-out prompts per evaluation.
        trainer: GRPO settings.
        warm_start: warm-start settings.
        controllers: the controllers to compare (distinct labels).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = "addition"
    difficulty: int = 2
    steps: int = Field(default=150, ge=1)
    seeds: int | list[Annotated[int, Field(ge=0)]] = 3
    eval_every: int = Field(default=10, ge=1)
    eval_size: int = Field(default=200, ge=1)
    trainer: TrainerSettings = TrainerSettings()
    warm_start: WarmStartSettings = WarmStartSettings()
    controllers: list[ControllerSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CompareConfig:
        if self.task not in DIFFICULTY_RANGES:
            raise ValueError(f"task: expected one of {list(DIFFICULTY_RANGES)}, got {self.task!r}")
        lo, hi = DIFFICULTY_RANGES[self.task]
        if not lo <= self.difficulty <= hi:
            raise ValueError(f"difficulty: {self.task} takes {lo}..{hi}, got {self.difficulty}")
        if isinstance(self.seeds, int) and self.seeds < 1:
            raise ValueError(f"seeds: need at least 1, got {self.seeds}")
        if isinstance(self.seeds, list) and (
            not self.seeds or len(set(self.seeds)) != len(self.seeds)
        ):
            raise ValueError(f"seeds: need a non-empty list of distinct seeds, got {self.seeds}")
        labels = [c.label() for c in self.controllers]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(
                f"controllers: labels must be distinct (set `name:`), repeated: {dupes}"
            )
        folder_names(labels)  # each label its own run folder (raises naming the clash)
        self.warm_start_config()  # the warm start's own checks (misconception needs a task)
        return self

    def warm_start_config(self) -> WarmStartConfig:
        """The warm-start settings this config implies (task, difficulty and ``warm_start``)."""
        return WarmStartConfig(
            task=self.task, difficulty=self.difficulty, **self.warm_start.model_dump()
        )

    def seed_list(self) -> list[int]:
        """The seeds as a list."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def check_controllers(self, vocab_size: int = 64) -> None:
        """Build every controller once, so that errors surface before any training.

        Raises:
            ConfigError: naming the controller entry whose construction failed.
        """
        for i, spec in enumerate(self.controllers):
            try:
                spec.build(seed=0, steps=self.steps, vocab_size=vocab_size)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"controllers[{i}] ({spec.kind}): {exc}") from exc


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        parts: list[str] = []
        for p in e["loc"]:
            if isinstance(p, int):
                parts.append(f"[{p}]")
            elif parts and parts[-1].startswith("[") and p in CONTROLLER_KINDS:
                parts.append(f" ({p})")
            else:
                parts.append(("." if parts else "") + str(p))
        where = "".join(parts) or "config"
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{where}: {e['msg']}{shown}")
    # One line, so that the command's error is one line too.
    return "invalid compare config: " + "; ".join(lines)


def parse_config(data: Any) -> CompareConfig:
    """Validate a mapping (e.g. parsed YAML) into a :class:`CompareConfig`.

    Raises:
        ConfigError: naming each invalid field.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid compare config: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        cfg = CompareConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    cfg.check_controllers()
    return cfg


def load_config(path: str | Path) -> CompareConfig:
    """Read and validate a YAML (``.yaml``/``.yml``) or JSON compare config.

    Raises:
        ConfigError: the file is unreadable, not YAML/JSON, or invalid (names the field).
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc}") from exc
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc})") from exc
    else:
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - pyyaml ships with the trl extra
            from metactl.errors import DependencyNotInstalled

            raise DependencyNotInstalled("pyyaml", "trl") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    return parse_config(data)


def demo_config(*, quick: bool = False, seeds: int | None = None) -> CompareConfig:
    """The configuration of ``metactl demo``: TAMPO against fixed 0.6, 1.0 and 1.4.

    Args:
        quick: one seed (unless ``seeds`` is given).
        seeds: number of seeds (default 3, or 1 with ``quick``).
    """
    n = seeds if seeds is not None else (1 if quick else 3)
    return parse_config(
        {
            "task": "addition",
            "difficulty": 2,
            "seeds": n,
            "controllers": [
                {"kind": "tampo"},
                {"kind": "fixed", "temperature": 0.6},
                {"kind": "fixed", "temperature": 1.0},
                {"kind": "fixed", "temperature": 1.4},
            ],
        }
    )
