"""Virtual-temperature log-likelihoods against a float64 reference written from the equation.

Tolerances. The op upcasts the (fp32, bf16 or fp16) logits to fp32 exactly and computes
``beta (z_o - m) - log sum_v exp(beta (z_v - m))`` in fp32. The reference below uses the
*same* logits upcast to float64, so the only difference is fp32 rounding (u = 2**-24 ~ 6e-8):
the first term carries a relative error of a few u, the log of a sum of V terms in (0, 1]
(with a 1 at the max) an absolute error of a few u times log2(V). So per token
``|op - ref| <= 64 u (1 + |ref|)`` (about 4e-6 (1 + |ref|)), where 64 u covers a few roundings
per term plus the summation tree; reductions add one more rounding per summed token.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metactl import DependencyNotInstalled
from metactl.integrations.torch import (
    chunk_temperature_loglik,
    default_chunk_size,
    hidden_rows_loglik,
    temperature_loglik,
    temperature_loglik_from_hidden,
)
from metactl.integrations.torch.loglik import OnlineTemperatureLogSoftmax

U = 2.0**-24
TEMPS = [0.05, 0.1, 0.3, 0.7, 1.0, 1.5, 3.0, 10.0]


def reference_logp(logits: torch.Tensor, tokens: torch.Tensor, temps: list[float]) -> torch.Tensor:
    """``log softmax(z / T)[o] = z_o / T - log sum_v exp(z_v / T)`` in float64, ``[..., K]``."""
    z = logits.double()
    out = []
    for temp in temps:
        s = z / temp
        top = s.max(dim=-1, keepdim=True).values
        log_norm = top.squeeze(-1) + (s - top).exp().sum(dim=-1).log()
        out.append(s.gather(-1, tokens.clamp(min=0)[..., None]).squeeze(-1) - log_norm)
    return torch.stack(out, dim=-1)


def tolerance(ref: torch.Tensor) -> torch.Tensor:
    """``16 u (1 + |ref|)``: see the module docstring."""
    return 16 * U * (1 + ref.abs())


def make_batch(
    dtype: torch.dtype,
    scale: float,
    seed: int = 0,
    batch: int = 4,
    length: int = 16,
    vocab: int = 257,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits in [-1e4, 1e4] (extremes included), tokens half sampled half uniform, padded mask."""
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(batch, length, vocab, generator=gen) * scale).clamp(-1e4, 1e4)
    z[0, 0, 0], z[0, 0, 1] = 1e4, -1e4
    z = z.to(dtype)
    probs = torch.softmax(z.double() / max(scale, 1.0), dim=-1).reshape(-1, vocab)
    sampled = torch.multinomial(probs, 1, generator=gen).reshape(batch, length)
    uniform = torch.randint(0, vocab, (batch, length), generator=gen)
    tokens = torch.where(torch.arange(length) % 2 == 0, sampled, uniform)
    tokens[0, 0] = 1  # the -1e4 logit: the extreme low log-probability
    mask = torch.ones(batch, length, dtype=torch.bool)
    if batch >= 3:
        mask[1, length // 2 :] = False  # right padding
        mask[2] = False  # an empty row
    tokens[~mask] = -100  # padding ids outside the vocabulary are fine where unscored
    return z, tokens, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [1.0, 30.0, 3e3])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_per_token_matches_float64_reference(
    dtype: torch.dtype, scale: float, chunk_size: int | None
) -> None:
    z, tokens, mask = make_batch(dtype, scale)
    out = temperature_loglik(z, tokens, mask, TEMPS, reduction="none", chunk_size=chunk_size)
    ref = reference_logp(z, tokens, TEMPS) * mask[..., None]
    assert out.shape == (*tokens.shape, len(TEMPS)) and out.dtype == torch.float32
    assert ((out.double() - ref).abs() <= tolerance(ref)).all()
    assert (out[~mask] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mean_and_sum_match_reference_and_empty_rows_give_zero(dtype: torch.dtype) -> None:
    z, tokens, mask = make_batch(dtype, 100.0, seed=1)
    ref = reference_logp(z, tokens, TEMPS) * mask[..., None]
    count = mask.sum(dim=1, keepdim=True).clamp(min=1).double()
    ref_sum, ref_mean = ref.sum(dim=1), ref.sum(dim=1) / count
    out_sum = temperature_loglik(z, tokens, mask, TEMPS, reduction="sum", chunk_size=5)
    out_mean = temperature_loglik(z, tokens, mask, torch.tensor(TEMPS))
    # one more rounding per summed token: 16 u (1 + sum_t |ref_t|)
    bound = 16 * U * (1 + ref.abs().sum(dim=1))
    assert ((out_sum.double() - ref_sum).abs() <= bound).all()
    assert ((out_mean.double() - ref_mean).abs() <= bound / count).all()
    assert out_mean.shape == (4, len(TEMPS))
    assert (out_mean[2] == 0).all() and (out_sum[2] == 0).all()


def test_unscored_positions_are_never_read() -> None:
    z, tokens, mask = make_batch(torch.float32, 5.0)
    dirty = z.clone()
    dirty[~mask] = math.nan
    tokens_dirty = tokens.clone()
    tokens_dirty[~mask] = 10**9
    clean = temperature_loglik(z, tokens, mask, TEMPS)
    assert torch.equal(temperature_loglik(dirty, tokens_dirty, mask.int(), TEMPS), clean)
    assert torch.equal(temperature_loglik(z, tokens, mask.float(), TEMPS), clean)


def test_non_contiguous_logits_slice() -> None:
    z, tokens, mask = make_batch(torch.bfloat16, 10.0, length=17)
    sliced = z[:, :-1]  # what a causal LM's shift produces: not viewable as [B*L, V]
    out = temperature_loglik(sliced, tokens[:, 1:], mask[:, 1:], [0.5, 2.0], reduction="none")
    ref = reference_logp(sliced, tokens[:, 1:], [0.5, 2.0]) * mask[:, 1:, None]
    assert ((out.double() - ref).abs() <= tolerance(ref)).all()


def test_chunk_function_matches_full_op() -> None:
    z, tokens, mask = make_batch(torch.bfloat16, 20.0)
    full = temperature_loglik(z, tokens, mask, TEMPS, reduction="none")
    per_chunk = chunk_temperature_loglik(z, tokens, TEMPS, mask=mask)  # [B, L, V] -> [B, L, K]
    assert torch.equal(per_chunk, full)
    rows, ids, scored = z.reshape(-1, z.shape[-1]), tokens.reshape(-1), mask.reshape(-1)
    flat = chunk_temperature_loglik(rows[scored][:9], ids[scored][:9], TEMPS)  # [c, V] -> [c, K]
    assert torch.equal(flat, full.reshape(-1, len(TEMPS))[scored][:9])


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_from_hidden_equals_loglik_of_projected_logits(with_bias: bool, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(3, 10, 24, generator=gen, dtype=dtype)
    weight = torch.randn(301, 24, generator=gen, dtype=dtype) * 2
    bias = torch.randn(301, generator=gen, dtype=dtype) if with_bias else None
    tokens = torch.randint(0, 301, (3, 10), generator=gen)
    mask = torch.rand(3, 10, generator=gen) < 0.7
    logits = F.linear(hidden, weight, bias)
    for reduction in ("mean", "sum", "none"):
        want = temperature_loglik(logits, tokens, mask, TEMPS, reduction=reduction)
        got = temperature_loglik_from_hidden(
            hidden, weight, bias, tokens, mask, TEMPS, reduction=reduction, chunk_size=4
        )
        # the chunked matmul may round a logit differently from the full one (a few u of |z|,
        # amplified by 1/T in z_o / T and in logsumexp), on top of the op's own rounding
        eps = torch.finfo(dtype).eps
        bound = 16 * eps * float(logits.abs().max()) / min(TEMPS) + tolerance(want)
        assert ((got - want).abs() <= bound).all()


def test_from_hidden_bf16_matches_within_bf16_rounding_of_logits() -> None:
    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(2, 8, 16, generator=gen).bfloat16()
    weight = torch.randn(97, 16, generator=gen).bfloat16()
    tokens = torch.randint(0, 97, (2, 8), generator=gen)
    mask = torch.ones(2, 8)
    logits = F.linear(hidden, weight)
    want = temperature_loglik(logits, tokens, mask, [0.5, 1.0, 2.0], reduction="none")
    got = temperature_loglik_from_hidden(
        hidden, weight, None, tokens, mask, [0.5, 1.0, 2.0], reduction="none", chunk_size=3
    )
    # a logit may land one bf16 step (2**-8 relative) apart; times 1/T and twice (z_o and lse)
    bound = 2 * 2**-8 * float(logits.float().abs().max()) / 0.5
    assert (got - want).abs().max() <= bound


def test_no_gradient_flows_into_inputs() -> None:
    z, tokens, mask = make_batch(torch.float32, 1.0)
    z.requires_grad_(True)
    out = temperature_loglik(z, tokens, mask, [1.0, 2.0])
    assert not out.requires_grad and out.grad_fn is None
    assert not chunk_temperature_loglik(z[0], tokens[0].clamp(min=0), [1.0]).requires_grad
    hidden = torch.randn(4, 16, 8, requires_grad=True)
    weight = torch.randn(257, 8, requires_grad=True)
    out = temperature_loglik_from_hidden(hidden, weight, None, tokens, mask, [1.0])
    assert not out.requires_grad and out.grad_fn is None


def test_default_chunk_size_is_2_mib_of_fp32_and_a_32nd_of_the_rows() -> None:
    assert default_chunk_size(32000) == 2 * 2**20 // (4 * 32000) == 16
    assert default_chunk_size(151936) == 3
    assert default_chunk_size(32000, 4096) == 16
    assert default_chunk_size(32000, 100) == 4
    assert default_chunk_size(10**9) == 1


def test_more_temperatures_than_rows_and_single_temperature() -> None:
    z, tokens, mask = make_batch(torch.float32, 3.0, batch=1, length=1, vocab=5)
    temps = [0.05 * 1.2**k for k in range(40)]
    out = temperature_loglik(z, tokens, mask, temps)
    ref = reference_logp(z, tokens, temps)[:, 0]
    assert ((out.double() - ref).abs() <= tolerance(ref)).all()
    assert temperature_loglik(z, tokens, mask, (1.0,)).shape == (1, 1)


def _bad(**change: object) -> dict[str, object]:
    z, tokens, mask = make_batch(torch.float32, 1.0, batch=2, length=3, vocab=7)
    kwargs: dict[str, object] = {"logits": z, "tokens": tokens, "mask": mask, "temperatures": [1.0]}
    kwargs.update(change)
    return kwargs


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"logits": torch.zeros(2, 3)}, "logits"),
        ({"logits": torch.zeros(2, 3, 7, 1)}, "logits"),
        ({"logits": torch.zeros(2, 3, 7, dtype=torch.long)}, "logits"),
        ({"tokens": torch.zeros(2, 4, dtype=torch.long)}, "tokens"),
        ({"tokens": torch.zeros(2, 3)}, "tokens"),
        ({"mask": torch.ones(3, 2)}, "mask"),
        ({"temperatures": []}, "temperatures"),
        ({"temperatures": [1.0, 0.0]}, "temperatures"),
        ({"temperatures": [-1.0]}, "temperatures"),
        ({"temperatures": [math.nan]}, "temperatures"),
        ({"temperatures": [math.inf]}, "temperatures"),
        ({"temperatures": torch.ones(2, 2)}, "temperatures"),
        ({"tokens": torch.full((2, 3), 7)}, "tokens"),
        ({"tokens": torch.full((2, 3), -1)}, "tokens"),
        ({"reduction": "max"}, "reduction"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(
    change: dict[str, object], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        temperature_loglik(**_bad(**change))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_scored_logits_raise(value: float) -> None:
    z, tokens, mask = make_batch(torch.bfloat16, 1.0)
    z[1, 2, tokens[1, 2]] = value  # at the scored token itself
    with pytest.raises(ValueError, match=r"logits.*\(1, 2\)"):
        temperature_loglik(z, tokens, mask, [1.0])
    with pytest.raises(ValueError, match="logits"):
        chunk_temperature_loglik(z, tokens, [1.0], mask=mask)
    hidden = torch.randn(4, 16, 3)
    hidden[0, 5, 0] = math.nan
    with pytest.raises(ValueError, match="logits"):
        temperature_loglik_from_hidden(hidden, torch.randn(257, 3), None, tokens, mask, [1.0])


def test_neg_inf_elsewhere_in_a_row_is_a_zero_probability() -> None:
    z, tokens, mask = make_batch(torch.float32, 1.0)
    z[0, 3, (tokens[0, 3] + 1) % 257] = -math.inf  # a vocabulary entry masked out
    out = temperature_loglik(z, tokens, mask, [0.5, 1.0], reduction="none")
    ref = reference_logp(z, tokens, [0.5, 1.0]) * mask[..., None]
    assert ((out.double() - ref).abs() <= tolerance(ref)).all()


def test_from_hidden_bad_head_shapes() -> None:
    hidden, tokens, mask = (
        torch.randn(2, 3, 4),
        torch.zeros(2, 3, dtype=torch.long),
        torch.ones(2, 3),
    )
    with pytest.raises(ValueError, match="weight"):
        temperature_loglik_from_hidden(hidden, torch.randn(5, 3), None, tokens, mask, [1.0])
    with pytest.raises(ValueError, match="bias"):
        temperature_loglik_from_hidden(
            hidden, torch.randn(5, 4), torch.randn(4), tokens, mask, [1.0]
        )
    with pytest.raises(ValueError, match="hidden"):
        temperature_loglik_from_hidden(
            torch.randn(6, 4), torch.randn(5, 4), None, tokens, mask, [1.0]
        )
    with pytest.raises(ValueError, match="dtype"):
        temperature_loglik_from_hidden(
            hidden, torch.randn(5, 4).double(), None, tokens, mask, [1.0]
        )


def test_dependency_error_names_the_extra() -> None:
    err = DependencyNotInstalled("torch", "torch")
    assert "metactl[torch]" in str(err)


@pytest.mark.parametrize(("scale", "softcap"), [(1.0, None), (0.5, 3.0)])
def test_hidden_rows_loglik_online_tiles_match_float64_reference(
    scale: float, softcap: float | None
) -> None:
    gen = torch.Generator().manual_seed(11)
    hidden = torch.randn(13, 6, generator=gen) * 3
    weight = torch.randn(37, 6, generator=gen)
    bias = torch.randn(37, generator=gen)
    tokens = torch.randint(0, 37, (13,), generator=gen)
    temps = [0.05, 0.6, 1.0, 2.5, 10.0]
    z = (hidden.double() @ weight.double().T + bias.double()) * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    want = torch.stack(
        [torch.log_softmax(z / t, -1).gather(-1, tokens[:, None])[:, 0] for t in temps], -1
    )
    # Several row blocks and vocabulary tiles (with a ragged last tile) exercise the online update.
    got = hidden_rows_loglik(
        hidden,
        weight,
        bias,
        tokens,
        temps,
        logit_scale=scale,
        softcap=softcap,
        token_chunk=5,
        vocab_chunk=8,
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)


def test_online_log_softmax_folds_tiles_a_few_rows_at_a_time() -> None:
    """Tiles folded in row slices (as the TRL tile fold does) give the full-row log-softmax."""
    gen = torch.Generator().manual_seed(12)
    z = torch.randn(9, 23, generator=gen, dtype=torch.float64) * 4
    tokens = torch.randint(0, 23, (9,), generator=gen)
    temps = [0.3, 1.0, 4.0]
    acc = OnlineTemperatureLogSoftmax(tokens, [1 / t for t in temps])
    for v0 in range(0, 23, 10):  # tiles of 10, 10, 3 columns
        for r0 in range(0, 9, 4):  # rows 0-3, 4-7, 8
            tile = z[r0 : r0 + 4, v0 : v0 + 10].float().clone()
            acc.fold(tile, v0, slice(r0, r0 + tile.shape[0]))
    want = torch.stack(
        [torch.log_softmax(z / t, -1).gather(-1, tokens[:, None])[:, 0] for t in temps], -1
    )
    torch.testing.assert_close(acc.log_probs().double(), want, rtol=1e-5, atol=1e-5)
