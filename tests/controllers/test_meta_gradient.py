"""MetaGradient: exact gradients against finite differences, and learning on known optima."""

from __future__ import annotations

import numpy as np
import pytest
from controllers_common import GRID, preferred_temperature_feedback

import metactl as mc
from metactl import functional as F


def objective(phi: np.ndarray, q: np.ndarray) -> float:
    """J(phi) = sum_k softmax(phi)_k q_k, written out."""
    e = np.exp(phi - phi.max())
    return float(np.sum(e / e.sum() * q))


def test_discrete_gradient_equals_finite_differences() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        phi, q = rng.normal(size=7) * 2, rng.normal(size=7)
        h = 1e-6
        fd = np.array(
            [(objective(phi + h * e, q) - objective(phi - h * e, q)) / (2 * h) for e in np.eye(7)]
        )
        np.testing.assert_allclose(F.softmax_policy_gradient(phi, q), fd, rtol=1e-6, atol=1e-9)


def test_entropy_gradient_equals_finite_differences() -> None:
    def h_of(phi: np.ndarray) -> float:
        p = np.exp(phi - phi.max())
        p /= p.sum()
        return float(-np.sum(p * np.log(p)))

    phi = np.random.default_rng(1).normal(size=5)
    fd = np.array([(h_of(phi + 1e-6 * e) - h_of(phi - 1e-6 * e)) / 2e-6 for e in np.eye(5)])
    np.testing.assert_allclose(F.softmax_entropy_gradient(phi), fd, rtol=1e-6, atol=1e-9)


def test_gaussian_gradient_is_unbiased_for_a_quadratic() -> None:
    # E[q(u)] with q(u) = -(u - c)^2 and u ~ N(mu, s^2) is -(mu - c)^2 - s^2, so
    # dJ/dmu = -2 (mu - c) and dJ/dlog s = -2 s^2.
    rng = np.random.default_rng(2)
    mu, s, c = 0.3, 0.7, 1.0
    u = mu + s * rng.standard_normal(400_000)
    g_mu, g_ls = F.gaussian_gradient(u, -((u - c) ** 2), mu, s)
    assert g_mu == pytest.approx(-2 * (mu - c), rel=0.03)
    assert g_ls == pytest.approx(-2 * s**2, rel=0.03)


def test_sgd_step_moves_logits_by_lr_times_exact_gradient() -> None:
    ctl = mc.MetaGradient(GRID, optimizer="sgd", lr=0.3, seed=0)
    d = ctl.sample()
    loglik = np.random.default_rng(3).normal(size=(6, 5))
    adv = np.random.default_rng(4).normal(size=6)
    ctl.update(mc.Counterfactual(d, loglik, adv))
    # q_k = mean_i sparsemax(loglik_i)_k A_i; from phi = 0 the step is lr * pi_k (q_k - pi.q) with pi uniform.
    w = F.sparsemax(loglik, axis=1)
    q = (w * adv[:, None]).mean(axis=0)
    expected_phi = 0.3 * (q - q.mean()) / 5
    e = np.exp(expected_phi - expected_phi.max())
    np.testing.assert_allclose(ctl.probs, e / e.sum(), rtol=1e-12)


def test_discrete_learns_from_counterfactual_feedback() -> None:
    rng = np.random.default_rng(0)
    ctl = mc.MetaGradient(mc.TAMPO().space, lr=0.1, seed=0)
    for _ in range(300):
        ctl.update(preferred_temperature_feedback(ctl.sample(), rng, best=1.3))
    assert ctl.space.values[np.argmax(ctl.probs)] in (1.2, 1.3, 1.4)


def test_box_learns_from_counterfactual_feedback() -> None:
    rng = np.random.default_rng(0)
    ctl = mc.MetaGradient(mc.Box(0.3, 3.0, log=True), lr=0.05, seed=0)
    for _ in range(400):
        ctl.update(preferred_temperature_feedback(ctl.sample(), rng, best=1.7))
    assert ctl.mean == pytest.approx(1.7, rel=0.12)


def _bandit_reward(value: float, rng: np.random.Generator, best: float) -> float:
    return float(-((np.log(value) - np.log(best)) ** 2) + 0.05 * rng.standard_normal())


def test_discrete_learns_from_outcome_feedback() -> None:
    rng = np.random.default_rng(0)
    ctl = mc.MetaGradient(GRID, lr=0.1, seed=0)
    for _ in range(600):
        d = ctl.sample()
        ctl.update(mc.Outcome(d, _bandit_reward(d.value, rng, best=0.8)))
    assert ctl.space.values[np.argmax(ctl.probs)] == 0.8


def test_box_learns_from_outcomes_feedback() -> None:
    rng = np.random.default_rng(0)
    ctl = mc.MetaGradient(mc.Box(0.2, 5.0, log=True), lr=0.05, seed=0)
    for _ in range(400):
        ds = [ctl.sample() for _ in range(8)]
        ctl.update(mc.Outcomes(ds, [_bandit_reward(d.value, rng, best=2.0) for d in ds]))
    assert ctl.mean == pytest.approx(2.0, rel=0.12)


def test_box_decision_has_antithetic_virtual_arms_inside_the_box() -> None:
    ctl = mc.MetaGradient(mc.Box(0.3, 3.0, log=True), num_virtual=6, seed=0)
    d = ctl.sample()
    u = d.virtual_arms
    np.testing.assert_allclose(u[:3] + u[3:], 2 * ctl._theta[0])
    np.testing.assert_allclose(d.virtual, ctl.space.from_unconstrained(u))


def test_sigma_is_floored() -> None:
    ctl = mc.MetaGradient(mc.Box(0.3, 3.0), optimizer="sgd", lr=50.0, min_sigma=0.1, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        ctl.update(preferred_temperature_feedback(ctl.sample(), rng, best=1.0))
    assert ctl.sigma >= 0.1 - 1e-12


def test_wrong_space_accessors_raise() -> None:
    with pytest.raises(AttributeError, match="probs"):
        _ = mc.MetaGradient(mc.Box(0.3, 3.0)).probs
    with pytest.raises(AttributeError, match="mean"):
        _ = mc.MetaGradient(GRID).mean
    with pytest.raises(ValueError, match="num_virtual"):
        mc.MetaGradient(mc.Box(0.3, 3.0), num_virtual=3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": float("inf")}, "lr"),
        ({"entropy_bonus": float("nan")}, "entropy_bonus"),
        ({"init_sigma": float("inf")}, "init_sigma"),
        ({"init": 0.3}, "init"),  # on the bound: u would be -inf
        ({"init": 3.0}, "init"),
    ],
)
def test_box_settings_must_be_finite_and_inside(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=rf"MetaGradient\({name}"):
        mc.MetaGradient(mc.Box(0.3, 3.0), **kwargs)  # type: ignore[arg-type]
