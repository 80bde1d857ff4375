"""The LM-head pieces of MetaGRPOTrainer, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from metactl.integrations.trl._head import RoundTemperature, virtual_loglik
from metactl.integrations.trl._round import preferred_temperatures


def test_round_temperature_is_read_at_division_time():
    t = RoundTemperature(0.5)
    assert 1 / t == 2.0
    t.value = 2.0
    assert 1 / t == 0.5 and float(t) == 2.0


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_virtual_loglik_matches_log_softmax(softcap):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 4, 8, generator=gen)
    head = torch.nn.Linear(8, 11)
    tokens = torch.randint(0, 11, (3, 4), generator=gen)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    temps = [0.5, 1.0, 1.7]
    sums, counts = virtual_loglik(
        hidden, head, tokens, mask, temps, logit_scale=0.9, softcap=softcap
    )
    z = head(hidden).detach() * 0.9
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    want = torch.stack(
        [
            (torch.log_softmax(z / t, -1).gather(-1, tokens[..., None])[..., 0] * mask).sum(-1)
            for t in temps
        ],
        -1,
    )
    torch.testing.assert_close(sums, want, atol=1e-5, rtol=1e-5)
    assert counts.tolist() == [3.0, 1.0, 0.0]


def test_preferred_temperature_recovers_the_vertex_in_beta():
    virtual = np.array([0.6, 0.8, 1.0, 1.2, 1.5])
    beta = 1 / virtual
    best_beta = np.array([1 / 0.9, 1 / 1.3, 1 / 0.4])  # last one lies off the grid
    loglik = -((beta[None, :] - best_beta[:, None]) ** 2)
    pref = preferred_temperatures(loglik, virtual)
    np.testing.assert_allclose(pref[:2], [0.9, 1.3], rtol=1e-9)
    assert pref[2] == pytest.approx(0.6)  # clamped to the grid's edge
