"""The random-reward control: rewards independent of the completion, seeded, validated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metactl.integrations.lab.config import ConfigError, parse_config

pytest.importorskip("datasets")

from metactl.integrations.lab.testbed.tasks import (
    RANDOM_REWARD_STREAM,
    random_reward,
)


def _cfg(**top: Any) -> dict[str, Any]:
    return {"controllers": [{"kind": "fixed", "temperature": 1.0}], **top}


def _draws(seed: int, n: int, rate: float) -> list[float]:
    """The Bernoulli(rate) draws the control promises, written from its docstring."""
    u = np.random.default_rng((seed, RANDOM_REWARD_STREAM)).random(n)
    return [1.0 if x < rate else 0.0 for x in u]


def test_rewards_ignore_the_completions_and_follow_the_seeded_stream() -> None:
    right = random_reward(0.3, seed=7)
    wrong = random_reward(0.3, seed=7)
    first = right(prompts=["12+34="] * 5, completions=["046"] * 5, answer=["046"] * 5)
    other = wrong(prompts=["12+34="] * 5, completions=["999"] * 5, answer=["046"] * 5)
    assert first == other == _draws(7, 5, 0.3)
    # Later calls continue the same stream (one draw per completion, in order).
    assert right(prompts=["a"] * 3, completions=["x"] * 3) == _draws(7, 8, 0.3)[5:]
    assert random_reward(0.3, seed=8)(prompts=["a"] * 40, completions=["x"] * 40) != _draws(
        7, 40, 0.3
    )


def test_the_reward_rate_is_the_probability_of_a_one() -> None:
    n, rate = 20_000, 0.3
    rewards = random_reward(rate, seed=0)(prompts=["a"] * n, completions=["x"] * n)
    assert set(rewards) == {0.0, 1.0}
    # Binomial(20000, 0.3): SD of the mean 0.0032; 5 SD either side.
    assert abs(float(np.mean(rewards)) - rate) < 5 * (rate * (1 - rate) / n) ** 0.5


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5, True])
def test_a_rate_outside_zero_one_is_refused(rate: Any) -> None:
    with pytest.raises(ValueError, match=r"random_reward\(rate\): must be in \(0, 1\)"):
        random_reward(rate, seed=0)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (0, "random_reward: Input should be greater than 0 (got 0)"),
        (1, "random_reward: Input should be less than 1 (got 1)"),
        (True, "random_reward: Value error, expected a number, got a boolean"),
        ("half", "random_reward: Input should be a valid number"),
        (float("nan"), "random_reward: Input should be a finite number"),
    ],
)
def test_the_config_field_is_validated_naming_it(value: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_cfg(random_reward=value))
    assert needle.replace("Value error, ", "") in str(info.value)


def test_the_config_field_defaults_to_the_task_verifier() -> None:
    assert parse_config(_cfg()).random_reward is None
    assert parse_config(_cfg(random_reward=0.5)).random_reward == 0.5


def test_a_run_trains_on_the_random_rewards(tmp_path: Path) -> None:
    """Two real GRPO steps: the logged training reward is the seeded draws', not the verifier's."""
    pytest.importorskip("trl")
    from metactl.integrations.lab.runner import run_one

    cfg = parse_config(
        _cfg(
            difficulty=2,
            steps=2,
            eval_every=2,
            eval_size=8,
            trainer={"prompts_per_step": 4, "num_generations": 4},
            warm_start={"steps": 650},  # the demo's, shipped: nothing trains before GRPO
            random_reward=0.3,
        )
    )
    run_one(cfg, 0, 5, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["reward"] for r in records if "reward" in r]
    draws = _draws(5, 32, 0.3)
    assert logged == pytest.approx([np.mean(draws[:16]), np.mean(draws[16:])], abs=1e-6)
