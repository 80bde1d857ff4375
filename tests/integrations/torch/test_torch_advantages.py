"""grpo_advantages against hand computations with TRL's conventions (unbiased std, eps = 1e-4)."""

from __future__ import annotations

import math

import pytest
import torch

from metactl.integrations.torch import grpo_advantages


def test_group_scale_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, 1.0, 2.0, 4.0, 0.0], dtype=torch.float64)
    # group 1: mean 2/3, unbiased std sqrt(((1/3)^2 + (2/3)^2 + (1/3)^2) / 2) = sqrt(1/3)
    # group 2: mean 2, unbiased std sqrt((0 + 4 + 4) / 2) = 2
    s1, eps = math.sqrt(1 / 3), 1e-4
    want = [
        1 / 3 / (s1 + eps),
        -2 / 3 / (s1 + eps),
        1 / 3 / (s1 + eps),
        0.0,
        2 / (2 + eps),
        -2 / (2 + eps),
    ]
    got = grpo_advantages(rewards, 3)
    assert got.dtype == torch.float64
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)


def test_batch_and_none_scales_by_hand() -> None:
    rewards = torch.tensor([1.0, 3.0, 2.0, 2.0])
    # centred within groups: [-1, 1, 0, 0]; batch mean 2, unbiased std sqrt(2 / 3)
    centred = torch.tensor([-1.0, 1.0, 0.0, 0.0])
    assert torch.equal(grpo_advantages(rewards, 2, scale="none"), centred)
    want = centred / (math.sqrt(2 / 3) + 0.5)
    assert torch.allclose(grpo_advantages(rewards, 2, scale="batch", eps=0.5), want)


def test_constant_groups_give_exact_zeros() -> None:
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.3, 0.9, 0.3])
    for scale in ("group", "batch", "none"):
        got = grpo_advantages(rewards, 3, scale=scale)
        assert (got[:6] == 0).all()
        assert (got[6:] != 0).all()


def test_group_of_one_and_integer_rewards() -> None:
    assert torch.equal(grpo_advantages(torch.tensor([1.0, 5.0]), 1), torch.zeros(2))
    got = grpo_advantages(torch.tensor([0, 1, 1, 1]), 2)
    assert got.dtype == torch.float32 and got[1] > 0 and got[2] == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rewards": torch.zeros(2, 2), "group_size": 2}, "rewards"),
        ({"rewards": torch.zeros(0), "group_size": 2}, "rewards"),
        ({"rewards": torch.tensor([1.0, math.nan]), "group_size": 2}, "rewards"),
        ({"rewards": torch.zeros(5), "group_size": 2}, "group_size"),
        ({"rewards": torch.zeros(4), "group_size": 0}, "group_size"),
        ({"rewards": torch.zeros(4), "group_size": 2, "scale": "prompt"}, "scale"),
        ({"rewards": torch.zeros(4), "group_size": 2, "eps": -1.0}, "eps"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(
    kwargs: dict[str, object], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        grpo_advantages(**kwargs)  # type: ignore[arg-type]


def test_an_all_equal_group_is_exactly_zero_even_with_eps_zero() -> None:
    out = grpo_advantages(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2, eps=0.0)
    assert out[:2].tolist() == [0.0, 0.0]
    torch.testing.assert_close(out[2:], torch.tensor([-1.0, 1.0]) / math.sqrt(2))
    flat = grpo_advantages(torch.ones(4), 2, eps=0.0, scale="batch")
    assert flat.tolist() == [0.0] * 4
