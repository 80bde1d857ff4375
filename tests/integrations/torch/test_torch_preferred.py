"""preferred_temperature: recovers sampling temperatures and equals the argmax of the exact likelihood."""

from __future__ import annotations

import math

import pytest
import torch

from metactl.integrations.torch import preferred_temperature, temperature_loglik


def sampled_rollouts(
    temps: list[float], length: int, vocab: int = 64, scale: float = 3.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row b: random logits per token and tokens sampled from softmax(z / temps[b])."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(temps), length, vocab, generator=gen) * scale
    t = torch.tensor(temps)[:, None, None]
    probs = torch.softmax(logits.double() / t, dim=-1).reshape(-1, vocab)
    tokens = torch.multinomial(probs, 1, generator=gen).reshape(len(temps), length)
    return logits, tokens


def exact_mean_loglik(
    logits: torch.Tensor, tokens: torch.Tensor, temps: torch.Tensor
) -> torch.Tensor:
    """``l_T(b) = mean_t [z_o / T - logsumexp(z / T)]`` in float64 for each T: ``[B, G]``."""
    z = logits.double()[:, :, None, :] / temps.double()[None, None, :, None]  # [B, L, G, V]
    idx = tokens[:, :, None, None].expand(-1, -1, temps.numel(), 1)
    return (z.gather(-1, idx).squeeze(-1) - torch.logsumexp(z, dim=-1)).mean(dim=1)


def test_recovers_sampling_temperatures_within_a_few_percent() -> None:
    temps = [0.4, 0.8, 1.3, 2.5]
    logits, tokens = sampled_rollouts(temps, length=3000)
    found = preferred_temperature(logits, tokens, torch.ones_like(tokens))
    assert found.shape == (4,) and found.dtype == torch.float32
    assert torch.allclose(found, torch.tensor(temps), rtol=0.04), found


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_equals_argmax_of_a_fine_grid_of_the_exact_likelihood(dtype: torch.dtype) -> None:
    logits, tokens = sampled_rollouts([0.3, 0.9, 1.7, 6.0], length=40, vocab=50, seed=1)
    logits = logits.to(dtype)
    mask = torch.ones_like(tokens)
    mask[1, 25:] = 0
    tokens[1, 25:] = -100
    found = preferred_temperature(logits, tokens, mask, chunk_size=13)
    grid = torch.logspace(math.log10(0.05), math.log10(10.0), 2001, dtype=torch.float64)
    rows = [
        (logits[[b]][mask[[b]] != 0][None], tokens[[b]][mask[[b]] != 0][None]) for b in range(4)
    ]
    ll = torch.cat([exact_mean_loglik(z, o, grid) for z, o in rows])  # [B, G]
    best = grid[ll.argmax(dim=1)]
    step = math.log(10.0 / 0.05) / 2000  # grid spacing in log T
    assert (torch.log(found.double() / best).abs() <= step).all(), (found, best)
    # the found temperature is at least as likely as every grid point, up to fp32 rounding
    at_found = torch.cat([exact_mean_loglik(z, o, found[[b]]) for b, (z, o) in enumerate(rows)])
    assert (at_found[:, 0] >= ll.max(dim=1).values - 1e-6).all()


def test_agrees_with_temperature_loglik_around_the_optimum() -> None:
    logits, tokens = sampled_rollouts([0.7, 1.5], length=200, seed=2)
    mask = torch.ones_like(tokens)
    found = preferred_temperature(logits, tokens, mask)
    for b in range(2):
        t = float(found[b])
        ll = temperature_loglik(logits[[b]], tokens[[b]], mask[[b]], [t * 0.98, t, t * 1.02])[0]
        assert ll[1] >= ll[0] and ll[1] >= ll[2]


def test_bounds_empty_rows_and_flat_likelihood() -> None:
    logits, _ = sampled_rollouts([1.0, 1.0, 1.0, 1.0], length=20)
    greedy = logits.argmax(dim=-1)
    tokens = greedy.clone()
    tokens[1] = logits[1].argmin(dim=-1)  # least likely tokens: likelihood rises with T
    mask = torch.ones_like(tokens)
    mask[2] = 0  # empty row
    logits[3] = 0.0  # constant logits: flat likelihood
    found = preferred_temperature(logits, tokens, mask, bounds=(0.1, 5.0))
    assert found[0] == pytest.approx(0.1) and found[1] == pytest.approx(5.0)
    assert math.isnan(float(found[2])) and found[3] == pytest.approx(5.0)


def test_no_gradient_and_bad_inputs() -> None:
    logits, tokens = sampled_rollouts([1.0], length=5)
    logits.requires_grad_(True)
    mask = torch.ones_like(tokens)
    assert not preferred_temperature(logits, tokens, mask).requires_grad
    for bounds in [(0.0, 1.0), (2.0, 1.0), (1.0, math.inf), (1.0,)]:
        with pytest.raises(ValueError, match="bounds"):
            preferred_temperature(logits, tokens, mask, bounds=bounds)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask"):
        preferred_temperature(logits, tokens, mask[:, :3])
    with pytest.raises(ValueError, match="tokens"):
        preferred_temperature(logits, tokens + 64, mask)
    bad = logits.detach().clone()
    bad[0, 2, 5] = math.nan
    with pytest.raises(ValueError, match="logits"):
        preferred_temperature(bad, tokens, mask)


def test_top_k_masked_logits_are_accepted_as_by_temperature_loglik() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 9, generator=gen) * 2
    tokens = torch.randint(0, 9, (3, 6), generator=gen)
    mask = torch.ones(3, 6)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, logits.topk(4, -1).indices, True)
    keep |= torch.nn.functional.one_hot(tokens, 9).bool()
    masked = logits.masked_fill(~keep, -math.inf)
    got = preferred_temperature(masked, tokens, mask, bounds=(0.05, 10.0))
    # Independent: the maximiser of l_T on a fine grid in float64 (-inf entries have p = 0).
    grid = torch.exp(torch.linspace(math.log(0.05), math.log(10.0), 4001, dtype=torch.float64))
    z = masked.double()[None] / grid[:, None, None, None]
    ll = z.log_softmax(-1).gather(-1, tokens[None, ..., None].expand(len(grid), -1, -1, 1))
    best = grid[ll.squeeze(-1).mean(-1).argmax(0)]
    torch.testing.assert_close(got.double(), best, rtol=2e-3, atol=0)
    assert torch.isfinite(temperature_loglik(masked, tokens, mask, [0.5, 1.0])).all()


def test_finite_logits_that_overflow_fp32_are_not_blamed_on_nan() -> None:
    logits = torch.tensor([[[1e39, 0.0, -1.0]]], dtype=torch.float64)
    with pytest.raises(ValueError, match="finite but span more than fp32") as err:
        preferred_temperature(logits, torch.tensor([[1]]), torch.ones(1, 1))
    assert "NaN" not in str(err.value)
    with pytest.raises(ValueError, match="NaN or inf"):
        preferred_temperature(
            torch.tensor([[[math.nan, 0.0]]]), torch.tensor([[1]]), torch.ones(1, 1)
        )
