"""Synthetic verifiable reasoning tasks with a difficulty knob.

Every task is a set of short prompts with a checkable answer:

- ``"addition"``: ``"47+85="`` -> ``"132"``, ``"07+05="`` -> ``"012"``; difficulty =
  digits per operand.
- ``"sorting"``: ``"sort:3142="`` -> ``"1234"``; difficulty = list length.
- ``"countdown"``: ``"3,5,7>+022:"`` -> any expression using each number once that
  equals the target, e.g. ``"3*5+7"``; difficulty = how many numbers.

Every prompt and reference answer of a task has the same length (numbers are
zero-padded). TRL left-pads prompts of unequal length and its training forward
does not pass position ids, so with variable-length prompts the tokens would be
scored at other positions than they were sampled at; fixed lengths avoid that.

Problems are split into train and held-out evaluation sets by a stable hash of
the prompt, so no evaluation prompt ever appears in training, whatever the seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TASKS: tuple[str, ...] = ("addition", "sorting", "countdown")
#: Tasks whose reward is an exact match with one reference answer.
EXACT_ANSWER_TASKS: tuple[str, ...] = ("addition", "sorting")

RewardFunc = Callable[..., list[float]]


def _text(completion: Any) -> str:
    """The text of a TRL completion (a string, or a conversational message list)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def exact_match_reward(
    prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str], **kwargs: Any
) -> list[float]:
    """TRL reward function: 1.0 when the completion equals ``answer`` (whitespace-stripped).

    Signature as TRL's ``GRPOTrainer`` calls it: dataset columns (here ``answer``)
    arrive as keyword arguments, one entry per completion.
    """
    return [
        float(_text(c).strip() == str(a).strip()) for c, a in zip(completions, answer, strict=True)
    ]


def _eval_arith(expr: str) -> int | None:
    """Evaluate ``expr`` made of non-negative integers and ``+ - *`` (usual precedence)."""
    if not expr or any(ch not in "0123456789+-*" for ch in expr):
        return None
    total = 0
    sign = 1
    term: int | None = None
    number = ""
    for ch in expr + "+":
        if ch.isdigit():
            number += ch
            continue
        if not number:
            return None  # two operators in a row, or a leading/trailing operator
        value = int(number)
        number = ""
        term = value if term is None else term * value
        if ch == "*":
            continue
        total += sign * term
        term = None
        sign = 1 if ch == "+" else -1
    return total


def countdown_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    numbers: Sequence[str],
    target: Sequence[int],
    **kwargs: Any,
) -> list[float]:
    """TRL reward function for countdown: 1.0 for a valid expression hitting the target.

    Valid means: only digits and ``+ - *``, every given number used exactly once, and
    the value (usual precedence) equal to ``target``.
    """
    out: list[float] = []
    for c, nums, tgt in zip(completions, numbers, target, strict=True):
        expr = _text(c).strip()
        value = _eval_arith(expr)
        used = sorted(expr.replace("+", " ").replace("-", " ").replace("*", " ").split())
        ok = value is not None and value == int(tgt) and used == sorted(nums.split(","))
        out.append(float(ok))
    return out


@dataclass(frozen=True)
class Task:
    """A verifiable task: datasets, reward function and generation length.

    Attributes:
        name: one of :data:`TASKS`.
        difficulty: the task's knob (digits, list length, count of numbers).
        seed: the seed the datasets were drawn with.
        train: ``datasets.Dataset`` with a ``"prompt"`` column (plus ``"answer"`` and
            task-specific columns, which TRL passes to the reward function).
        eval: held-out ``datasets.Dataset``, disjoint prompts, same columns.
        reward_func: TRL reward function ``(prompts, completions, **columns) -> list[float]``.
        max_completion_length: tokens a full answer needs, ``<eos>`` included, plus slack.
    """

    name: str
    difficulty: int
    seed: int
    train: Any
    eval: Any
    reward_func: RewardFunc
    max_completion_length: int

    def score(self, completions: Sequence[str], split: str = "eval") -> list[float]:
        """Rewards of ``completions``, one per row of ``split`` in order."""
        ds = self.eval if split == "eval" else self.train
        columns = {k: ds[k] for k in ds.column_names if k != "prompt"}
        return self.reward_func(prompts=ds["prompt"], completions=list(completions), **columns)


#: Mixed into a run's seed for the random-reward stream, so that it never shares draws with the
#: data order or the sampling of the same seed.
RANDOM_REWARD_STREAM = 0x52414E44


def random_reward(rate: float, seed: int) -> RewardFunc:
    """A TRL reward function that ignores the completion: r_i ~ Bernoulli(rate), i.i.d.

    A negative control: no temperature can raise its expected reward (``rate`` at every
    temperature), so a controller that moves on it has followed noise or its own bias. The draws
    come from a private ``np.random.default_rng((seed, RANDOM_REWARD_STREAM))``, one per
    completion in the order TRL asks, so a run is reproduced by its seed.

    Args:
        rate: the probability of reward 1, in (0, 1).
        seed: the run's seed.

    Raises:
        ValueError: ``rate`` is not in (0, 1), or ``seed`` is negative.
    """
    if isinstance(rate, bool) or not 0.0 < float(rate) < 1.0:
        raise ValueError(f"random_reward(rate): must be in (0, 1), got {rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"random_reward(seed): must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng((seed, RANDOM_REWARD_STREAM))

    def random_reward(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        return [float(x) for x in rng.random(len(completions)) < rate]

    return random_reward


def _is_eval(prompt: str) -> bool:
    """Stable 1-in-5 split by prompt hash: True for held-out evaluation prompts."""
    return zlib.crc32(prompt.encode()) % 5 == 0


def _addition(rng: np.random.Generator, d: int) -> dict[str, Any]:
    a, b = (int(x) for x in rng.integers(0, 10**d, size=2))
    return {"prompt": f"{a:0{d}d}+{b:0{d}d}=", "answer": f"{a + b:0{d + 1}d}"}


def _sorting(rng: np.random.Generator, n: int) -> dict[str, Any]:
    digits = [int(x) for x in rng.integers(0, 10, size=n)]
    return {
        "prompt": "sort:" + "".join(map(str, digits)) + "=",
        "answer": "".join(map(str, sorted(digits))),
    }


def _countdown(rng: np.random.Generator, n: int) -> dict[str, Any]:
    nums = [int(x) for x in rng.integers(1, 10, size=n)]
    ops = [str(o) for o in rng.choice(["+", "-", "*"], size=n - 1)]
    expr = str(nums[0]) + "".join(o + str(x) for o, x in zip(ops, nums[1:], strict=True))
    target = _eval_arith(expr)
    shown = sorted(nums)
    numbers = ",".join(map(str, shown))
    width = len(str(9**n)) + 1  # sign and digits of the largest possible target
    shown_target = f"{target:+0{width}d}"
    return {
        "prompt": f"{numbers}>{shown_target}:",
        "answer": expr,
        "numbers": numbers,
        "target": target,
    }


_GENERATORS: dict[str, tuple[Callable[[np.random.Generator, int], dict[str, Any]], RewardFunc]] = {
    "addition": (_addition, exact_match_reward),
    "sorting": (_sorting, exact_match_reward),
    "countdown": (_countdown, countdown_reward),
}

#: Difficulty range of each task: digits per operand, list length, count of numbers.
DIFFICULTY_RANGES: dict[str, tuple[int, int]] = {
    "addition": (1, 6),
    "sorting": (2, 12),
    "countdown": (2, 5),
}


#: The most held-out prompts a compare config may ask for (``eval_size``).
MAX_EVAL_SIZE = 10_000

#: Distinct held-out prompts of the problem spaces that hold fewer than :data:`MAX_EVAL_SIZE`
#: (counted by enumerating each space; the tests count them again). Every other space holds
#: more than :data:`MAX_EVAL_SIZE`.
HELD_OUT_PROMPTS: dict[tuple[str, int], int] = {
    ("addition", 1): 27,
    ("addition", 2): 2061,
    ("sorting", 2): 19,
    ("sorting", 3): 197,
    ("sorting", 4): 1969,
    ("countdown", 2): 27,
    ("countdown", 3): 410,
    ("countdown", 4): 4182,
}


def max_eval_size(name: str, difficulty: int) -> int:
    """The largest ``n_eval`` :func:`make_task` fills with distinct held-out prompts.

    The smaller of the task's count of distinct held-out prompts and :data:`MAX_EVAL_SIZE`.
    """
    return min(HELD_OUT_PROMPTS.get((name, difficulty), MAX_EVAL_SIZE), MAX_EVAL_SIZE)


def _answer_tokens(name: str, d: int) -> int:
    if name == "addition":
        return d + 1  # zero-padded sum
    if name == "sorting":
        return d
    return 2 * d - 1


def make_task(
    name: str = "addition",
    *,
    difficulty: int = 2,
    seed: int = 0,
    n_train: int = 4000,
    n_eval: int = 200,
) -> Task:
    """Build a task's train and held-out evaluation sets.

    Args:
        name: ``"addition"``, ``"sorting"`` or ``"countdown"``.
        difficulty: digits per operand (addition, 1-6), list length (sorting, 2-12),
            count of numbers (countdown, 2-5).
        seed: seed of the problem draws (a private ``np.random.Generator``).
        n_train: training rows (drawn with replacement from the train half).
        n_eval: held-out rows (distinct prompts when the problem space allows).

    Returns:
        The :class:`Task`.
    """
    from datasets import Dataset

    if name not in _GENERATORS:
        raise ValueError(f"make_task(name): unknown task {name!r}; expected one of {list(TASKS)}")
    lo, hi = DIFFICULTY_RANGES[name]
    if not lo <= difficulty <= hi:
        raise ValueError(f"make_task(difficulty): {name} takes {lo}..{hi}, got {difficulty}")
    gen, reward = _GENERATORS[name]
    rng = np.random.default_rng(seed)
    train: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    seen_eval: set[str] = set()
    for _ in range(100 * (n_train + n_eval)):
        if len(train) >= n_train and len(evals) >= n_eval:
            break
        row = gen(rng, difficulty)
        if _is_eval(row["prompt"]):
            if len(evals) < n_eval and row["prompt"] not in seen_eval:
                seen_eval.add(row["prompt"])
                evals.append(row)
        elif len(train) < n_train:
            train.append(row)
    if not evals:
        raise ValueError(f"make_task: {name} at difficulty {difficulty} has no held-out problems")
    return Task(
        name=name,
        difficulty=difficulty,
        seed=seed,
        train=Dataset.from_list(train),
        eval=Dataset.from_list(evals),
        reward_func=reward,
        max_completion_length=_answer_tokens(name, difficulty) + 2,
    )
