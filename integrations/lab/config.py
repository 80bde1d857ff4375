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
      - kind: informativeness  # mc.Informativeness(ema=0.1, scale=0.02, top_p=1.0, min_ess=0.5)
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
    Informativeness,
    MetaGradient,
    Schedule,
    SlidingWindowUCB,
)
from metactl.errors import require
from metactl.integrations.lab.rundir import NotRegularFile, folder_names, not_utf8, read_regular
from metactl.integrations.lab.testbed.tasks import DIFFICULTY_RANGES, MAX_EVAL_SIZE, max_eval_size
from metactl.integrations.lab.testbed.warmstart import WarmStartConfig
from metactl.spaces import Box, Discrete
from metactl.temperature import TEMPERATURE_RANGE

require("pydantic", "lab")

from pydantic import (  # noqa: E402
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)

Outcome = Literal["mean_reward", "informative_fraction"]
"""The reward of a bandit controller's Outcome feedback (``MetaGRPOTrainer(outcome=...)``)."""

#: The most seeds of one experiment (``seeds: N``), and the largest seed (numpy's, 2**32 - 1).
MAX_SEEDS = 1000
MAX_SEED = 2**32 - 1
#: The most GRPO steps of one run.
MAX_STEPS = 1_000_000
#: The largest config file read (bytes): a config is a few lines.
MAX_CONFIG_BYTES = 1 << 20
#: The most values (mappings, lists, scalars) of a config, each counted wherever it appears:
#: a YAML alias repeats its anchor's values, and nine levels of nine aliases a billion times.
MAX_CONFIG_VALUES = 100_000
#: The most field errors one message lists, and the longest one shown (characters).
MAX_ERRORS_SHOWN = 5
MAX_ERROR_CHARS = 300
#: The first confirmation seed. Seeds below it are development seeds, run while choosing a
#: task, a setting or a controller option; seeds from it up are confirmation seeds, run only
#: by a config declared ``evidence: confirmation``, once every choice is fixed.
FIRST_CONFIRMATION_SEED = 10_000

Evidence = Literal["development", "confirmation"]
"""Which seeds a config runs: development (for choosing) or confirmation (for the verdict)."""


def _not_bool(value: Any) -> Any:
    # YAML's `true` is a bool, and pydantic would read it as 1.0: refuse it for numbers.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got a boolean ({value})")
    return value


def _sane_temperature(value: float) -> float:
    lo, hi = TEMPERATURE_RANGE
    if not lo <= value <= hi:
        raise ValueError(f"a temperature must be in [{lo:g}, {hi:g}]")
    return value


Real = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]
"""A finite number (not a boolean)."""

Int = Annotated[int, Strict()]
"""An integer (not a boolean, a float or a string)."""

Temperature = Annotated[Real, Field(gt=0), AfterValidator(_sane_temperature)]
"""A sampling temperature: finite, > 0 and within :data:`TEMPERATURE_RANGE`."""

Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]
"""A seed numpy takes: 0..2**32 - 1."""


def seed_evidence(seed: int) -> Evidence:
    """Whether ``seed`` is a development or a confirmation seed."""
    return "development" if seed < FIRST_CONFIRMATION_SEED else "confirmation"


def seed_rule() -> str:
    """The seed split in words, for messages and reports."""
    return (
        f"development seeds are 0..{FIRST_CONFIRMATION_SEED - 1}, confirmation seeds "
        f"{FIRST_CONFIRMATION_SEED} and above"
    )


_SEED_FIX: dict[str, str] = {
    "development": "confirmation seeds run only from a config with evidence: confirmation, "
    "once every setting is chosen",
    "confirmation": f"use seeds from {FIRST_CONFIRMATION_SEED} up, or evidence: development "
    "to choose settings",
}


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
    ema: Real = Field(default=0.05, gt=0, le=1)
    top_p: Real = Field(default=0.7, ge=0, le=1)
    normaliser: Literal["sparsemax", "softmax"] = "sparsemax"
    warmup_steps: Int = Field(default=0, ge=0, le=MAX_STEPS)

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


class InformativenessSpec(_Spec):
    """``mc.Informativeness`` over a temperature grid (default 0.6..1.5): the temperature at which
    the most prompt groups have unequal rewards, estimated from the round's own rollouts."""

    kind: Literal["informativeness"]
    temperatures: list[Temperature] | None = Field(default=None, min_length=2)
    ema: Real = Field(default=0.1, gt=0, le=1)
    scale: Real = Field(default=0.02, gt=0, le=1e6)
    top_p: Real = Field(default=1.0, ge=0, le=1)
    min_ess: Real = Field(default=0.5, gt=0, le=1)

    def default_name(self) -> str:
        return "Informativeness"

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        return Informativeness(
            _grid(self.temperatures),
            ema=self.ema,
            scale=self.scale,
            top_p=self.top_p,
            min_ess=self.min_ess,
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
    lr: Real = Field(default=0.05, gt=0, le=100)
    entropy_bonus: Real = Field(default=0.0, ge=0, le=100)
    prob_floor: Real = Field(default=0.0, ge=0, lt=1)
    ema: Real = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _check_box(self) -> MetaGradientSpec:
        if self.space == "box" and not self.low < self.high:
            raise ValueError(f"low must be < high, got low={self.low}, high={self.high}")
        return self

    def default_name(self) -> str:
        return f"MetaGradient ({self.space})"

    def temperature_space(self) -> Discrete | Box:
        """The temperatures it learns over: the grid, or a log-scale Box from low to high."""
        if self.space == "discrete":
            return _grid(self.temperatures)
        return Box(self.low, self.high, log=True)

    def build(self, *, seed: int, steps: int, vocab_size: int) -> Controller:
        return MetaGradient(
            self.temperature_space(),
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
    window: Int = Field(default=160, ge=1, le=MAX_STEPS)
    epsilon: Real = Field(default=0.5, ge=0, le=1)
    bonus: Real = Field(default=1.0, ge=0, le=1e6)
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
    steps: Int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Default: the run's steps."
    )

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
    boundaries: list[Annotated[Int, Field(ge=1, le=MAX_STEPS)]] = Field(min_length=1)
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
    target: Real | None = Field(
        default=None, gt=0, le=100, description="Nats; default: set by warmup."
    )
    warmup: Int = Field(default=10, ge=1, le=MAX_STEPS)

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
    | InformativenessSpec
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
    "informativeness",
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

    learning_rate: Real = Field(default=1e-4, gt=0, le=1)
    prompts_per_step: Int = Field(default=16, ge=1, le=4096)
    num_generations: Int = Field(default=8, ge=2, le=1024)
    beta: Real = Field(default=0.0, ge=0, le=1e3)
    report_to: Literal["none", "tensorboard"] = Field(
        default="none",
        description="TRL's report_to per run; tensorboard logs under the run's tensorboard/.",
    )


class WarmStartSettings(BaseModel):
    """The supervised warm start every run begins from (shipped, or cached on disk).

    ``steps`` trains a fixed number of steps, the same weights on every CPU; without it the
    warm start stops at the first check reaching ``target_accuracy``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: Literal["tiny", "small", "medium"] = WarmStartConfig.size  # type: ignore[assignment]
    seed: Seed = WarmStartConfig.seed
    steps: Int | None = Field(default=None, ge=1, le=MAX_STEPS)
    target_accuracy: Real | None = Field(
        default=None, gt=0, le=1, description=f"Default {WarmStartConfig.target_accuracy}."
    )
    max_steps: Int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description=f"Default {WarmStartConfig.max_steps}."
    )
    misconception: Real = Field(
        default=WarmStartConfig.misconception,
        description="Fraction of examples taught a last-digit-shifted answer (checked by "
        "WarmStartConfig: in [0, 1), exact-answer tasks).",
    )

    @model_validator(mode="after")
    def _one_stopping_rule(self) -> WarmStartSettings:
        stop_fields = [
            name for name in ("max_steps", "target_accuracy") if getattr(self, name) is not None
        ]
        if self.steps is not None and stop_fields:
            raise ValueError(
                f"steps: a fixed-length warm start has no stopping rule; drop "
                f"{', '.join(sorted(stop_fields))} or steps"
            )
        return self


class CompareConfig(BaseModel):
    """What ``metactl compare`` runs: every controller on the same task and seeds.

    Attributes:
        task: testbed task (``addition``, ``sorting``, ``countdown``).
        difficulty: the task's difficulty knob.
        steps: GRPO steps (rounds) per run.
        evidence: ``development`` (the default: seeds below
            :data:`FIRST_CONFIRMATION_SEED`, for choosing settings) or ``confirmation``
            (seeds from it up, for the verdict once every choice is fixed). A seed of the
            other kind is refused.
        seeds: how many seeds (at most :data:`MAX_SEEDS`: ``0..n-1`` in a development
            config, ``10000..10000+n-1`` in a confirmation one), or an explicit list.
        eval_every: steps between held-out evaluations (the learning curve).
        eval_size: held-out prompts per evaluation, at most the task's distinct held-out
            prompts (:func:`~metactl.integrations.lab.testbed.tasks.max_eval_size`).
        trainer: GRPO settings.
        warm_start: warm-start settings.
        baseline: the controller label the report's verdict compares every controller with
            (:mod:`~metactl.integrations.lab.paired`); default: the best fixed temperature by
            mean AUC on the seeds that ran, chosen after the fact.
        random_reward: None (the task's verifier), or a probability in (0, 1): every
            completion's reward is then 1 with that probability, drawn independently of the
            completion (:func:`~metactl.integrations.lab.testbed.tasks.random_reward`), the
            negative control on which no temperature helps.
        controllers: the controllers to compare (distinct labels).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = "addition"
    difficulty: Int = 2
    steps: Int = Field(default=150, ge=1, le=MAX_STEPS)
    evidence: Evidence = "development"
    seeds: Int | list[Seed] = 3
    eval_every: Int = Field(default=10, ge=1)
    eval_size: Int = Field(default=200, ge=1, le=MAX_EVAL_SIZE)
    trainer: TrainerSettings = TrainerSettings()
    warm_start: WarmStartSettings = WarmStartSettings()
    random_reward: Real | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="A control: every completion's reward is 1 with this probability, else 0, "
        "drawn at random (seeded by the run's seed) whatever the completion says.",
    )
    controllers: list[ControllerSpec] = Field(min_length=1)
    baseline: str | None = Field(
        default=None,
        description="The label every controller is compared with in the report's verdict "
        "(default: the best fixed temperature by mean AUC, chosen after the fact).",
    )

    @model_validator(mode="after")
    def _check(self) -> CompareConfig:
        if self.task not in DIFFICULTY_RANGES:
            raise ValueError(f"task: expected one of {list(DIFFICULTY_RANGES)}, got {self.task!r}")
        lo, hi = DIFFICULTY_RANGES[self.task]
        if not lo <= self.difficulty <= hi:
            raise ValueError(f"difficulty: {self.task} takes {lo}..{hi}, got {self.difficulty}")
        if isinstance(self.seeds, int) and not 1 <= self.seeds <= MAX_SEEDS:
            raise ValueError(f"seeds: need 1..{MAX_SEEDS} seeds, got {self.seeds}")
        available = max_eval_size(self.task, self.difficulty)
        if self.eval_size > available:
            raise ValueError(
                f"eval_size: {self.task} at difficulty {self.difficulty} has {available} "
                f"distinct held-out prompts, got eval_size {self.eval_size}; set eval_size "
                f"to at most {available}"
            )
        if isinstance(self.seeds, list) and (
            not 1 <= len(self.seeds) <= MAX_SEEDS or len(set(self.seeds)) != len(self.seeds)
        ):
            shown = self.seeds if len(self.seeds) <= 10 else f"{len(self.seeds)} seeds"
            raise ValueError(f"seeds: need a list of 1..{MAX_SEEDS} distinct seeds, got {shown}")
        wrong = [s for s in self.seed_list() if seed_evidence(s) != self.evidence]
        if wrong:
            other = "confirmation" if self.evidence == "development" else "development"
            raise ValueError(
                f"seeds: {wrong[0]} is a {other} seed in a config with evidence: "
                f"{self.evidence} ({seed_rule()}); {_SEED_FIX[self.evidence]}"
            )
        labels = [c.label() for c in self.controllers]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(
                f"controllers: labels must be distinct (set `name:`), repeated: {dupes}"
            )
        folder_names(labels)  # each label its own run folder (raises naming the clash)
        if self.baseline is not None and self.baseline not in labels:
            raise ValueError(
                f"baseline: {self.baseline!r} is not a controller label of this config; "
                f"expected one of {labels}"
            )
        self.warm_start_config()  # the warm start's own checks (misconception needs a task)
        return self

    def warm_start_config(self) -> WarmStartConfig:
        """The warm-start settings this config implies (task, difficulty and ``warm_start``)."""
        settings = {k: v for k, v in self.warm_start.model_dump().items() if v is not None}
        return WarmStartConfig(task=self.task, difficulty=self.difficulty, **settings)

    def seed_list(self) -> list[int]:
        """The seeds as a list (``seeds: n`` counts from the first seed of ``evidence``)."""
        if isinstance(self.seeds, list):
            return list(self.seeds)
        first = 0 if self.evidence == "development" else FIRST_CONFIRMATION_SEED
        return list(range(first, first + self.seeds))

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


def _short_repr(value: Any) -> str:
    """A repr of a scalar input for an error, at most about 80 characters, built in O(80) time.

    A string is cut before its repr is taken (a config's value can be megabytes), and an
    integer too long to print in full (Python refuses over 4300 digits) is described.
    """
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else f"{value[:60]!r}... ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _cut(line: str) -> str:
    if len(line) <= MAX_ERROR_CHARS:
        return line
    return f"{line[: MAX_ERROR_CHARS - 20]}... ({len(line)} characters)"


def _format_errors(err: ValidationError) -> str:
    lines = []
    errors = err.errors(include_url=False, include_context=False)
    for e in errors:
        if e["type"] == "int_type" and isinstance(e.get("input"), list):
            continue  # the int branch of `int | list[...]`: the list branch says what is wrong
        parts: list[str] = []
        for p in e["loc"]:
            if isinstance(p, str) and (p == "int" or p.startswith("list[")):
                continue  # which branch of a union (e.g. seeds: int | list[int])
            if isinstance(p, int):
                parts.append(f"[{p}]")
            elif parts and parts[-1].startswith("[") and p in CONTROLLER_KINDS:
                parts.append(f" ({p})")
            else:
                parts.append(("." if parts else "") + str(p))
        where = "".join(parts) or "config"
        got = e.get("input")
        # No repr of a mapping or a list: it may be huge (or, from Python, shared many times).
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {_short_repr(got)})"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(_cut(msg if not e["loc"] else f"{where}: {msg}{shown}"))
    if len(lines) > MAX_ERRORS_SHOWN:
        more = len(lines) - MAX_ERRORS_SHOWN
        lines = [*lines[:MAX_ERRORS_SHOWN], f"and {more} more error{'s' if more > 1 else ''}"]
    # One line, so that the command's error is one line too.
    return "invalid compare config: " + "; ".join(lines)


def _expanded_size(data: Any, limit: int) -> int:
    """How many values ``data`` holds once shared containers are repeated, counted up to ``limit + 1``.

    YAML aliases make one list or mapping appear in many places; validation (and any repr)
    visits each place, so a 1 KB file of nested aliases can stand for a billion values. This
    counts each container once (a depth-first pass with the size of each remembered), in time
    linear in the file.

    Raises:
        ConfigError: a container holds itself (an alias inside its own anchor).
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # containers whose values are being counted
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        value, counted = stack.pop()
        if not isinstance(value, dict | list):
            continue
        key = id(value)
        children = list(value.values()) if isinstance(value, dict) else value
        if counted:
            total = 1 + sum(sizes.get(id(c), 1) for c in children)
            sizes[key] = min(total, limit + 1)
            open_.discard(key)
            continue
        if key in sizes:
            continue
        if key in open_:
            raise ConfigError(
                "invalid compare config: a value holds itself (a YAML alias inside its own "
                "anchor); write the value out"
            )
        open_.add(key)
        stack.append((value, True))
        stack.extend((c, False) for c in children if isinstance(c, dict | list))
    return sizes.get(id(data), 1)


def parse_config(data: Any) -> CompareConfig:
    """Validate a mapping (e.g. parsed YAML) into a :class:`CompareConfig`.

    Raises:
        ConfigError: naming each invalid field (the first :data:`MAX_ERRORS_SHOWN`, values
            cut short), or holding more than :data:`MAX_CONFIG_VALUES` values once shared
            containers (YAML aliases) are counted wherever they appear, or holding itself.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid compare config: expected a mapping at the top level, got {type(data).__name__}"
        )
    if _expanded_size(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise ConfigError(
            f"invalid compare config: more than {MAX_CONFIG_VALUES} values once its YAML aliases "
            "are expanded (a compare config holds a few dozen); write it without aliases that "
            "repeat other aliases"
        )
    try:
        cfg = CompareConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    except RecursionError:
        raise ConfigError("invalid compare config: nested too deeply") from None
    cfg.check_controllers()
    return cfg


def load_config(path: str | Path) -> CompareConfig:
    """Read and validate a YAML (``.yaml``/``.yml``) or JSON compare config.

    The file is read only when it is a regular file (or a link to one) of at most
    :data:`MAX_CONFIG_BYTES`: a FIFO or a device such as ``/dev/zero`` is refused unread.

    Raises:
        ConfigError: the file is unreadable, not a regular file, too large, not UTF-8, not
            YAML/JSON (names the line), holds a key twice (names the key and line), nested too
            deeply, or invalid (names the field); the message is one line.
    """
    p = Path(path)
    try:
        raw = read_regular(p, MAX_CONFIG_BYTES, follow_links=True)
    except NotRegularFile as exc:
        raise ConfigError(
            f"config {p}: {exc}; pass a YAML or JSON file (a compare config is a few lines)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}, {not_utf8(raw, exc)}; save the config as UTF-8") from None
    try:
        data = _parse_text(p, text)
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to be a compare config") from None
    return parse_config(data)


def _parse_text(p: Path, text: str) -> Any:
    """The data of a config file's text: JSON for ``.json``, else YAML.

    Raises:
        ConfigError: a syntax error, naming the file, line and column.
    """
    if p.suffix == ".json":
        try:
            return json.loads(text, object_pairs_hook=lambda pairs: _json_object(p, pairs))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{p}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})"
            ) from None
        except ConfigError:
            raise
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise ConfigError(f"{p}: not valid JSON ({' '.join(str(exc).split())})") from None
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml is in the lab extra
        from metactl.errors import DependencyNotInstalled

        raise DependencyNotInstalled("pyyaml", "lab") from exc
    try:
        return yaml.load(text, Loader=_loader(yaml))  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = "" if mark is None else f", line {mark.line + 1}, column {mark.column + 1}"
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise ConfigError(f"{p}{where}: not valid YAML ({problem})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(exc).split())})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(exc).split())})") from None


def _json_object(p: Path, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object of a config, refusing a key given twice (JSON would keep the last)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ConfigError(
                f"{p}: not valid JSON (key {key!r} given twice in an object); keep one"
            )
        obj[key] = value
    return obj


#: The tag of YAML's merge key (``<<: *base``), whose merged keys a mapping may override.
MERGE_TAG = "tag:yaml.org,2002:merge"


def _loader(yaml: Any) -> Any:
    """PyYAML's ``SafeLoader``, refusing a key given twice in a mapping (YAML keeps the last).

    ``steps: 2`` then ``steps: 1000000`` would otherwise train a million steps silently.
    Keys merged in with ``<<:`` may be overridden, as YAML intends.
    """

    class ConfigLoader(yaml.SafeLoader):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} given twice (first on line {first[key]}); keep one",
                        key_node.start_mark,
                    )
                first[key] = line
            return super().construct_mapping(node, deep=deep)

    return ConfigLoader


#: The demo's warm start: 2-digit addition, this many steps (shipped, :mod:`.testbed.shipped`).
DEMO_WARM_START_STEPS = 650


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
            "warm_start": {"steps": DEMO_WARM_START_STEPS},
            "controllers": [
                {"kind": "tampo"},
                {"kind": "fixed", "temperature": 0.6},
                {"kind": "fixed", "temperature": 1.0},
                {"kind": "fixed", "temperature": 1.4},
            ],
        }
    )
