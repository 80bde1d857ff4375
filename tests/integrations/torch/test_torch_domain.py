"""The domain of the tensor ops: what they compute exactly, and what they refuse naming it.

References are written from the equations in float64: ``log_softmax(z64 / T)[o]`` for the
scores, ``(r - mean) / (std + eps)`` for GRPO advantages, ``softmax(z64 / T)`` for sampling.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metactl.integrations.torch import (
    chunk_temperature_loglik,
    grpo_advantages,
    preferred_temperature,
    temperature_loglik,
    temperature_loglik_from_hidden,
)
from metactl.integrations.torch.loglik import OnlineTemperatureLogSoftmax
from metactl.temperature import FP32_MAX, TEMPERATURE_RANGE


def reference_logp(z: torch.Tensor, tokens: torch.Tensor, temps: list[float]) -> torch.Tensor:
    """``[..., K]`` float64 ``log softmax(z / T_k)[o]``, from the definition."""
    z = z.double()
    ids = tokens.clamp(min=0)[..., None]
    return torch.stack([torch.log_softmax(z / t, -1).gather(-1, ids)[..., 0] for t in temps], -1)


def assert_relatively_close(got: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-6) -> None:
    assert got.dtype == torch.float32 and bool(torch.isfinite(got).all())
    err = (got.double() - ref).abs()
    assert bool((err <= rtol * (1 + ref.abs())).all()), (got, ref)


# --- the temperature range: where sampling and scoring are finite in fp32 ---------------------------
def test_sampling_and_scoring_are_finite_and_exact_at_the_ends_of_the_range() -> None:
    """Logits at the documented +-1e4 (DESIGN section 5), fp32 as TRL samples and scores them."""
    gen = torch.Generator().manual_seed(0)
    z = (torch.randn(2, 6, 300, generator=gen) * 3e3).clamp(-1e4, 1e4)
    z[0, 0, 0], z[0, 0, 1] = 1e4, -1e4
    tokens = torch.randint(0, 300, (2, 6), generator=gen)
    tokens[0, 0] = 1  # the -1e4 logit: the lowest log-probability
    mask = torch.ones(2, 6)
    temps = list(TEMPERATURE_RANGE)
    assert temps == [0.01, 100.0]
    got = temperature_loglik(z, tokens, mask, temps, reduction="none")
    assert_relatively_close(got, reference_logp(z, tokens, temps))
    for t in temps:  # sampling: softmax(z / T) in fp32, then a draw
        probs = torch.softmax(z / torch.tensor(t, dtype=torch.float32), dim=-1)
        assert bool(torch.isfinite(probs).all())
        ref = torch.softmax(z.double() / t, dim=-1)
        assert float((probs.double() - ref).abs().max()) < 1e-6
        draws = torch.multinomial(probs.view(-1, 300), 1, generator=gen)
        assert bool(((draws >= 0) & (draws < 300)).all())
    # The margin: at T = 0.01 scores stay finite up to |z| = FP32_MAX * 0.01 / 2 ~ 1.7e36.
    big = torch.tensor([[[1.7e36, -1.7e36, 0.0]]])
    one = torch.ones(1, 1)
    got = temperature_loglik(big, torch.tensor([[1]]), one, [0.01])
    assert_relatively_close(got, reference_logp(big, torch.tensor([[1]]), [0.01])[0])


def test_temperatures_outside_the_range_are_refused_naming_the_argument() -> None:
    z = torch.randn(1, 3, 20)
    tokens, mask = torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3)
    # Why: below the range fp32 sampling breaks (issue 24: Fixed(1e-45) in torch.multinomial).
    tiny = torch.tensor(1e-45, dtype=torch.float32)
    assert not bool(torch.isfinite(torch.softmax(z / tiny, dim=-1)).all())
    for bad in (1e-45, 0.005, 150.0, 1e300, 0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"temperatures must lie in \[0\.01, 100\]") as info:
            temperature_loglik(z, tokens, mask, [1.0, bad])
        assert f"got [{bad}]" in str(info.value)
        with pytest.raises(ValueError, match=r"temperatures must lie in \[0\.01, 100\]"):
            chunk_temperature_loglik(z, tokens, [bad])
    with pytest.raises(ValueError, match=r"bounds must satisfy .*\[0\.01, 100\].*1e-45"):
        preferred_temperature(z, tokens, mask, bounds=(1e-45, 1.0))
    with pytest.raises(ValueError, match=r"bounds must satisfy .*\[0\.01, 100\].*1000"):
        preferred_temperature(z, tokens, mask, bounds=(1.0, 1000.0))


# --- finite logits whose fp32 differences overflow --------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_row_spanning_more_than_fp32_is_scored_exactly(dtype: torch.dtype) -> None:
    """z_o - max z = -6e38 overflows fp32, but (z_o - max z) / T is -6e36 at T = 100: finite."""
    z = torch.tensor([[[3e38, -3e38, 0.0, 1.0], [2.0, 1.0, -3e38, 3e38]]]).to(dtype)
    tokens = torch.tensor([[1, 3]])
    mask = torch.ones(1, 2)
    temps = [100.0, 50.0, 20.0]
    got = temperature_loglik(z, tokens, mask, temps, reduction="none")
    assert_relatively_close(got, reference_logp(z, tokens, temps))
    mean = temperature_loglik(z, tokens, mask, temps)
    assert_relatively_close(mean, reference_logp(z, tokens, temps).mean(1))


def test_the_online_fold_scores_a_row_spanning_more_than_fp32_and_masked_tiles() -> None:
    """OnlineTemperatureLogSoftmax (the fused LM head's accumulator), tile by tile."""
    z = torch.tensor([[3e38, 1.0, -3e38, 0.0], [-math.inf, -math.inf, 0.5, -1.0]])
    tokens = torch.tensor([2, 3])
    temps = [100.0, 25.0]
    acc = OnlineTemperatureLogSoftmax(tokens, [1 / t for t in temps])
    for v0 in (0, 2):  # row 1's first tile is all -inf (a masked vocabulary)
        acc.fold(z[:, v0 : v0 + 2].clone(), v0)
    assert_relatively_close(acc.log_probs(), reference_logp(z, tokens, temps))


@pytest.mark.parametrize(
    ("row", "token", "dtype", "temps", "named"),
    [
        # the log-probability itself, -6e38 at T = 1, lies beyond fp32
        (
            [3e38, -3e38, 0.0],
            1,
            torch.float32,
            [1.0, 100.0],
            r"logits at scored position \(0, 1\) put the scored token 1 6e\+38 below the row's "
            r"maximum, so its log-probability at temperature\(s\) \[1\.0\] .*beyond fp32",
        ),
        # fp64 logits beyond the fp32 range in which the scores are computed
        (
            [1e39, 0.0, 1.0],
            2,
            torch.float64,
            [1.0],
            r"logits hold 1e\+39 at scored position \(0, 1\) \(vocabulary index 0\), beyond the "
            r"fp32 range",
        ),
        ([0.0, math.nan, 1.0], 0, torch.float32, [1.0], r"logits hold NaN at scored position"),
        ([0.0, math.inf, 1.0], 0, torch.float32, [1.0], r"logits hold \+inf at scored position"),
        (
            [0.0, -math.inf, 1.0],
            1,
            torch.float32,
            [1.0],
            r"logits hold -inf at the scored token 1 of scored position \(0, 1\)",
        ),
    ],
)
def test_logits_outside_the_domain_are_refused_saying_why(
    row: list[float], token: int, dtype: torch.dtype, temps: list[float], named: str
) -> None:
    z = torch.zeros(1, 2, 3, dtype=dtype)
    z[0, 1] = torch.tensor(row, dtype=dtype)
    tokens = torch.tensor([[0, token]])
    with pytest.raises(ValueError, match=named):
        temperature_loglik(z, tokens, torch.ones(1, 2), temps)
    with pytest.raises(ValueError, match=named):
        chunk_temperature_loglik(z, tokens, temps)


def test_from_hidden_names_the_projected_logits() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    weight = torch.tensor([[1.0, 0.0], [math.nan, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"the logits hidden @ weight\.T \+ bias hold NaN"):
        temperature_loglik_from_hidden(
            hidden, weight, None, torch.tensor([[0, 2]]), torch.ones(1, 2), [1.0]
        )


# --- masks are 0/1 ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "dtype", "shown"),
    [
        (math.nan, torch.float32, "nan"),
        (-1, torch.long, "-1"),
        (2, torch.int32, "2"),
        (0.5, torch.float32, "0.5"),
    ],
)
def test_a_mask_that_is_not_0_or_1_is_refused_naming_it(
    bad: float, dtype: torch.dtype, shown: str
) -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 10, generator=gen)
    tokens = torch.randint(0, 10, (2, 3), generator=gen)
    mask = torch.ones(2, 3, dtype=dtype)
    mask[1, 2] = bad
    named = rf"mask must hold only 0 and 1 \(1 = scored\), got {shown} at \(1, 2\)"
    with pytest.raises(ValueError, match=named):
        temperature_loglik(z, tokens, mask, [1.0])
    with pytest.raises(ValueError, match=named):
        chunk_temperature_loglik(z, tokens, [1.0], mask=mask)
    # validate=False promises no host sync: the caller checks, and non-zero counts as scored
    unchecked = chunk_temperature_loglik(z, tokens, [1.0], mask=mask, validate=False)
    assert unchecked.shape == (2, 3, 1)
    with pytest.raises(ValueError, match=named):
        preferred_temperature(z, tokens, mask)
    hidden, weight = torch.randn(2, 3, 4, generator=gen), torch.randn(10, 4, generator=gen)
    with pytest.raises(ValueError, match=named):
        temperature_loglik_from_hidden(hidden, weight, None, tokens, mask, [1.0])


def test_bool_int_and_float_masks_of_0_and_1_score_the_same_tokens() -> None:
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(2, 4, 12, generator=gen)
    tokens = torch.randint(0, 12, (2, 4), generator=gen)
    scored = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)
    ref = reference_logp(z, tokens, [0.5, 2.0]) * scored[..., None]
    want = ref.sum(1) / scored.sum(1, keepdim=True)
    for mask in (scored, scored.long(), scored.float(), scored.double()):
        got = temperature_loglik(z, tokens, mask, [0.5, 2.0])
        assert_relatively_close(got, want)


# --- GRPO advantages in float64 ---------------------------------------------------------------------
def reference_advantages(rewards: list[float], group: int, eps: float, scale: str) -> np.ndarray:
    """``(r_i - mean_g) / (std_g + eps)`` in float64, std unbiased (TRL's), 0 for equal groups."""
    r = np.asarray(rewards, dtype=np.float64)
    groups = r.reshape(-1, group)
    centred = groups - groups.mean(axis=1, keepdims=True)
    if scale == "none":
        out = centred
    else:
        std = groups.std(axis=1, ddof=1, keepdims=True) if scale == "group" else r.std(ddof=1)
        out = centred / (std + eps)
    equal = (groups == groups[:, :1]).all(axis=1, keepdims=True)
    return np.where(equal, 0.0, out).reshape(-1)


@pytest.mark.parametrize(
    ("rewards", "group", "scale", "dtype"),
    [
        ([3e38, 3e38, 3e38, 1.0], 4, "group", torch.float32),  # issue 24: NaN on main
        ([3e38, 3e38, 3e38, 1.0], 2, "batch", torch.float32),
        ([3.3e38, -3.3e38, 1.0, 2.0], 2, "group", torch.float32),
        ([6e4, 6e4, 6e4, -6e4], 4, "group", torch.float16),
        ([3e38, 3e38, -3e38, -3e38], 4, "none", torch.float32),
    ],
)
def test_grpo_advantages_of_rewards_near_the_fp32_maximum_are_finite_and_exact(
    rewards: list[float], group: int, scale: str, dtype: torch.dtype
) -> None:
    got = grpo_advantages(torch.tensor(rewards, dtype=dtype), group, scale=scale)
    assert got.dtype == dtype and bool(torch.isfinite(got).all())
    ref = reference_advantages(rewards, group, 1e-4, scale)
    tol = 1e-3 if dtype == torch.float16 else 1e-6
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=tol, atol=tol)


def test_unscaled_advantages_beyond_the_dtype_are_refused_naming_rewards() -> None:
    rewards = torch.tensor([3e38, 3e38, 3e38, -3e38])  # r - mean = -4.5e38 beyond fp32
    assert -4.5e38 < -FP32_MAX
    with pytest.raises(ValueError, match=r"rewards: the advantage at index 3 is -4\.5e\+38"):
        grpo_advantages(rewards, 4, scale="none")
    # the same rewards in float64 are fine
    got = grpo_advantages(rewards.double(), 4, scale="none")
    np.testing.assert_allclose(got.numpy(), reference_advantages(rewards.tolist(), 4, 0, "none"))
    with pytest.raises(ValueError, match="rewards: their means and standard deviations overflow"):
        grpo_advantages(torch.tensor([1e308, 1e308, -1e308, 1.0], dtype=torch.float64), 4)
