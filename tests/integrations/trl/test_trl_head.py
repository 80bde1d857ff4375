"""The LM-head pieces of MetaGRPOTrainer, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from trl.kernels import ChunkedLogProbFunction, chunked_logprob

from metactl.integrations.trl._head import RoundTemperature, TileFold, check_kernel
from metactl.integrations.trl._round import preferred_temperatures


def test_round_temperature_is_read_at_division_time():
    t = RoundTemperature(0.5)
    assert 1 / t == 2.0
    t.value = 2.0
    assert 1 / t == 0.5 and float(t) == 2.0


def reference_logp(z: torch.Tensor, targets: torch.Tensor, temps: list[float]) -> torch.Tensor:
    """``[N, K]`` float64 ``log softmax(z / T_k)[target]``, written from the definition."""
    z = z.double()
    return torch.stack(
        [torch.log_softmax(z / t, -1).gather(-1, targets[:, None])[:, 0] for t in temps], -1
    )


@pytest.mark.parametrize(
    ("dtype", "softcap", "scale"),
    [(torch.float32, None, 1.0), (torch.float32, 5.0, 0.9), (torch.bfloat16, None, 1.3)],
)
def test_tile_fold_scores_trl_kernel_tiles_exactly(dtype, softcap, scale):
    """Two blocks of rows (TRL's 4096-row blocks), three vocabulary tiles, unscored rows skipped."""
    gen = torch.Generator().manual_seed(0)
    n, hidden_size, vocab = 4100, 8, 11
    hidden = torch.randn(n, hidden_size, generator=gen).to(dtype)
    weight = torch.randn(vocab, hidden_size, generator=gen).to(dtype)
    bias = torch.randn(vocab, generator=gen).to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    scored = torch.rand(n, generator=gen) < 0.7
    temps = [0.5, 1.0, 1.7]
    fold = TileFold(temps, scored, vocab_size=vocab)
    with fold.installed():
        logp = ChunkedLogProbFunction.apply(
            hidden, weight, bias, targets, 0.8, 4, softcap, scale, ()
        )[0]
    got = fold.scores()

    # the logits as the model computes them in its dtype (bf16 logits are rounded to bf16)
    z = (hidden @ weight.t() + bias).double() * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    tol = 1e-5 if dtype == torch.float32 else 1e-4
    assert got.shape == (int(scored.sum()), 3) and got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), reference_logp(z, targets, temps)[scored], atol=tol, rtol=tol
    )
    # TRL's own output is untouched by the fold (still at its own temperature 0.8)
    want = reference_logp(z, targets, [0.8])[:, 0]
    torch.testing.assert_close(logp.double(), want, atol=tol, rtol=tol)


def test_tile_fold_refuses_a_kernel_that_showed_too_few_rows():
    gen = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(5, 3, generator=gen), torch.randn(7, 3, generator=gen)
    targets = torch.tensor([0, 1, 2, 3, 4])
    fold = TileFold([1.0], torch.ones(6, dtype=torch.bool), vocab_size=7)  # expects 6 rows
    with fold.installed():
        ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 4, None, 1.0, ())
    with pytest.raises(RuntimeError, match="5 of 6 rows"):
        fold.scores()


def test_tile_fold_is_uninstalled_after_an_error():
    original = (chunked_logprob._forward_tile, chunked_logprob._forward_kernel)
    fold = TileFold([1.0], torch.ones(1, dtype=torch.bool), vocab_size=7)
    with pytest.raises(ZeroDivisionError), fold.installed():
        assert chunked_logprob._forward_tile is not original[0]
        _ = 1 / 0
    assert (chunked_logprob._forward_tile, chunked_logprob._forward_kernel) == original


def test_preferred_temperature_recovers_the_vertex_in_beta():
    virtual = np.array([0.6, 0.8, 1.0, 1.2, 1.5])
    beta = 1 / virtual
    best_beta = np.array([1 / 0.9, 1 / 1.3, 1 / 0.4])  # last one lies off the grid
    loglik = -((beta[None, :] - best_beta[:, None]) ** 2)
    pref = preferred_temperatures(loglik, virtual)
    np.testing.assert_allclose(pref[:2], [0.9, 1.3], rtol=1e-9)
    assert pref[2] == pytest.approx(0.6)  # clamped to the grid's edge


def test_kernel_probe_names_the_supported_trl_when_internals_change(monkeypatch):
    check_kernel(torch.device("cpu"))  # the installed TRL passes
    monkeypatch.delattr(chunked_logprob, "_forward_tile")  # as if TRL renamed it
    with pytest.raises(RuntimeError, match=r"supports trl>=1\.16,<1\.17"):
        check_kernel(torch.device("cpu"))
