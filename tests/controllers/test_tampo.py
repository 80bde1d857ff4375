"""TAMPO against an independent computation of the paper's equations (DESIGN section 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from controllers_common import preferred_temperature_feedback
from scipy import stats

import metactl as mc


def reference_sparsemax(z: np.ndarray) -> np.ndarray:
    """Projection onto the simplex, found by bisection on tau: sum_k max(z_k - tau, 0) = 1."""
    lo, hi = z.max() - 1.0, z.max()
    for _ in range(200):
        tau = (lo + hi) / 2
        if np.maximum(z - tau, 0).sum() > 1:
            lo = tau
        else:
            hi = tau
    return np.maximum(z - (lo + hi) / 2, 0)


def reference_tampo_probs(
    batches: list[tuple[np.ndarray, np.ndarray]], alpha: float, normaliser: str
) -> list[np.ndarray]:
    """Steps 4-7 of the paper, written out: weights, a_k, EMA from 0, min-max then sum."""
    k = batches[0][0].shape[1]
    abar = np.zeros(k)
    out = []
    for loglik, adv in batches:
        if normaliser == "sparsemax":
            w = np.stack([reference_sparsemax(row) for row in loglik])
        else:
            e = np.exp(loglik - loglik.max(axis=1, keepdims=True))
            w = e / e.sum(axis=1, keepdims=True)
        a = np.array([np.mean([w[i, j] * adv[i] for i in range(len(adv))]) for j in range(k)])
        abar = (1 - alpha) * abar + alpha * a
        if abar.max() == abar.min():
            out.append(np.full(k, 1 / k))
        else:
            m = (abar - abar.min()) / (abar.max() - abar.min())
            out.append(m / m.sum())
    return out


@pytest.mark.parametrize(
    ("alpha", "normaliser"), [(0.05, "sparsemax"), (0.3, "sparsemax"), (0.1, "softmax")]
)
def test_tampo_matches_paper_equations_over_many_steps(alpha: float, normaliser: str) -> None:
    rng = np.random.default_rng(0)
    ctl = mc.TAMPO(ema=alpha, normaliser=normaliser, seed=0)  # type: ignore[arg-type]
    batches, got = [], []
    for _ in range(60):
        d = ctl.sample()
        n = int(rng.integers(1, 40))
        loglik = rng.normal(-1.5, 0.4, size=(n, 10)) * rng.uniform(0.1, 3)
        adv = rng.standard_normal(n)
        batches.append((loglik, adv))
        ctl.update(mc.Counterfactual(d, loglik, adv))
        got.append(ctl.probs)
    for p_ref, p in zip(reference_tampo_probs(batches, alpha, normaliser), got, strict=True):
        np.testing.assert_allclose(p, p_ref, rtol=1e-9, atol=1e-12)


def test_defaults_are_the_papers() -> None:
    ctl = mc.TAMPO()
    np.testing.assert_array_equal(
        ctl.space.values, [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    )
    assert (ctl.ema, ctl.top_p, ctl.normaliser, ctl.warmup_steps) == (0.05, 0.7, "sparsemax", 0)
    np.testing.assert_array_equal(ctl.probs, np.full(10, 0.1))  # pi_0 uniform


def _with_ema_advantages(ctl: mc.TAMPO, abar: list[float]) -> mc.TAMPO:
    state = json.loads(json.dumps(ctl.state_dict()))
    state["params"]["ema_advantages"] = abar
    ctl.load_state_dict(state)
    return ctl


@pytest.mark.parametrize("top_p", [0.9, 0.7, 0.5, 1.0])
def test_nucleus_sampling_frequencies(top_p: float) -> None:
    abar = [
        0.0,
        0.1,
        0.5,
        0.3,
        1.0,
    ]  # pi = m / sum m with m = abar (min 0, max 1): [0, .1, .5, .3, 1] / 1.9
    ctl = _with_ema_advantages(
        mc.TAMPO(mc.Discrete([0.6, 0.8, 1.0, 1.2, 1.4]), top_p=top_p, seed=3), abar
    )
    pi = np.array(abar) / sum(abar)
    np.testing.assert_allclose(ctl.probs, pi)
    # Expected: the smallest most-probable prefix with mass >= top_p, renormalised.
    order = np.argsort(-pi)
    keep = next(i + 1 for i in range(5) if pi[order[: i + 1]].sum() >= top_p - 1e-12)
    expected = np.zeros(5)
    expected[order[:keep]] = pi[order[:keep]]
    expected /= expected.sum()
    n = 20000
    counts = np.zeros(5)
    for _ in range(n):
        counts[int(ctl.sample().arm)] += 1
    support = expected > 0
    assert np.all(counts[~support] == 0)
    if support.sum() == 1:
        return
    p_value = stats.chisquare(counts[support], n * expected[support]).pvalue
    assert p_value > 1e-3, (counts, n * expected)


def test_top_p_zero_is_argmax() -> None:
    ctl = _with_ema_advantages(
        mc.TAMPO(mc.Discrete([0.6, 0.8, 1.0]), top_p=0.0, seed=0), [0.2, 0.9, -0.4]
    )
    assert {ctl.sample().value for _ in range(200)} == {0.8}


def test_warmup_samples_uniformly_then_follows_policy() -> None:
    ctl = _with_ema_advantages(
        mc.TAMPO(mc.Discrete([0.6, 0.8, 1.0]), top_p=0.0, warmup_steps=300, seed=0), [0, 1, 0.5]
    )
    counts = np.bincount([int(ctl.sample().arm) for _ in range(300)], minlength=3)
    assert stats.chisquare(counts).pvalue > 1e-3
    assert {ctl.sample().value for _ in range(50)} == {0.8}


def test_all_zero_advantages_is_a_reported_noop() -> None:
    ctl = mc.TAMPO(seed=0)
    d = ctl.sample()
    ctl.update(
        mc.Counterfactual(d, np.random.default_rng(0).normal(size=(8, 10)), np.linspace(-1, 1, 8))
    )
    before = ctl.ema_advantages
    metrics = ctl.update(mc.Counterfactual(ctl.sample(), np.zeros((8, 10)) - 1.0, np.zeros(8)))
    assert metrics["noop"] == 1.0
    np.testing.assert_array_equal(ctl.ema_advantages, before)


def test_metrics_report_policy_and_advantages() -> None:
    ctl = mc.TAMPO(mc.Discrete([0.6, 1.0]), ema=1.0, seed=0)
    d = ctl.sample()
    # Rollout 0 (A=+1) prefers T=1.0 outright; rollout 1 (A=-1) prefers 0.6: a = [-0.5, 0.5].
    metrics = ctl.update(
        mc.Counterfactual(d, np.array([[-5.0, 0.0], [0.0, -5.0]]), np.array([1.0, -1.0]))
    )
    assert metrics["advantage/0.6"] == pytest.approx(-0.5) and metrics[
        "advantage/1"
    ] == pytest.approx(0.5)
    assert metrics["prob/0.6"] == 0.0 and metrics["prob/1"] == 1.0
    assert metrics["num_rollouts"] == 2.0 and metrics["noop"] == 0.0


def test_tampo_learns_the_best_temperature_on_a_synthetic_problem() -> None:
    rng = np.random.default_rng(0)
    ctl = mc.TAMPO(ema=0.1, seed=0)
    for _ in range(300):
        d = ctl.sample()
        ctl.update(preferred_temperature_feedback(d, rng, best=1.3))
    assert ctl.space.values[np.argmax(ctl.probs)] in (1.2, 1.3, 1.4)
    assert abs(float(np.dot(ctl.probs, ctl.space.values)) - 1.3) < 0.15


def test_invalid_settings_are_named() -> None:
    with pytest.raises(ValueError, match="ema"):
        mc.TAMPO(ema=0.0)
    with pytest.raises(ValueError, match="top_p"):
        mc.TAMPO(top_p=1.5)
    with pytest.raises(ValueError, match="normaliser"):
        mc.TAMPO(normaliser="argmax")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MetaGradient"):
        mc.TAMPO(mc.Box(0.5, 2.0))  # type: ignore[arg-type]


def test_space_may_be_a_numpy_array() -> None:
    ctl = mc.TAMPO(np.array([0.5, 1.0, 2.0]), seed=0)
    assert isinstance(ctl.space, mc.Discrete) and len(ctl.space) == 3
