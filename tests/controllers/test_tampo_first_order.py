"""What TAMPO's signal is to first order (docs/tampo.md), checked on a model with exact derivatives.

The model: a categorical distribution p_beta(o) = softmax(beta z)[o] over V tokens, one token per
rollout, reward r(o) = 1 on a fixed subset of tokens. Then, with beta = 1/T,

    l_i(beta) = log p_beta(o_i),   g_i = dl_i/dbeta = z_{o_i} - E_{p_beta}[z]
    P(beta)   = sum_o p_beta(o) r(o),   dP/dbeta = Cov_{p_beta}(r(o), z_o)

and docs/tampo.md claims: TAMPO's batch signal a_k is, for arms near beta_s, linear in beta_k
with slope C_g = (1/N) sum_i A_i g_i, and C_g is a policy-gradient estimate of dP/dbeta (with
A_i = r_i - mean of its group, E[C_g] = (G - 1)/G dP/dbeta exactly).
"""

from __future__ import annotations

import numpy as np
import pytest

import metactl as mc
from metactl import functional as F

Z = np.array([2.0, 1.2, 0.4, 0.0, -0.5, -1.5])
CORRECT = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # the mode and a low-probability token


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return np.asarray(e / e.sum())


def pass_rate_derivative(beta: float) -> float:
    """dP/dbeta = sum_o p(o) r(o) (z_o - E_p z), written from the model."""
    p = softmax(beta * Z)
    return float(np.sum(p * CORRECT * (Z - p @ Z)))


def rollouts(
    beta_s: float, groups: int, group_size: int, rng: np.random.Generator, scale: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [N], rewards [N], advantages [N]) of ``groups`` groups sampled at beta_s."""
    tokens = rng.choice(Z.size, size=(groups, group_size), p=softmax(beta_s * Z))
    r = CORRECT[tokens]
    adv = r - r.mean(axis=1, keepdims=True)
    if scale:  # GRPO's group normalisation
        adv = adv / (r.std(axis=1, keepdims=True) + 1e-4)
    return tokens.reshape(-1), r.reshape(-1), adv.reshape(-1)


@pytest.mark.parametrize("beta_s", [0.7, 1.0, 1.6])
@pytest.mark.parametrize("scale", [False, True])
def test_tampo_arm_slope_is_the_sharpness_advantage_covariance(beta_s: float, scale: bool) -> None:
    """One TAMPO step on arms within 2e-3 of beta_s: a_k's slope in beta_k equals C_g."""
    rng = np.random.default_rng(int(beta_s * 10) + scale)
    betas = beta_s + 1e-3 * np.arange(-2, 3)
    ctl = mc.TAMPO(1 / betas, ema=1.0, seed=0)  # ema = 1: abar is this batch's a_k
    d = ctl.sample()
    tokens, _, adv = rollouts(beta_s, 64, 8, rng, scale)
    loglik = np.stack([np.log(softmax(b * Z))[tokens] for b in 1 / d.virtual], axis=1)
    ctl.update(mc.Counterfactual(d, loglik, adv))
    slope = np.polyfit(1 / d.virtual, ctl.ema_advantages, 1)[0]
    g = Z[tokens] - softmax(beta_s * Z) @ Z  # exact, from the model
    c_g = np.mean(adv * g)
    assert abs(c_g) > 1e-3
    assert slope == pytest.approx(c_g, rel=1e-2)


@pytest.mark.parametrize("beta_s", [0.7, 1.0, 1.6])
def test_sharpness_advantage_covariance_estimates_the_pass_rate_derivative(beta_s: float) -> None:
    """E[C_g] = (G-1)/G dP/dbeta with A_i = r_i - group mean; within 4 standard errors."""
    rng = np.random.default_rng(7)
    group_size = 8
    tokens, _, adv = rollouts(beta_s, 20_000, group_size, rng, scale=False)
    g = Z[tokens] - softmax(beta_s * Z) @ Z
    per_group = (adv * g).reshape(-1, group_size).mean(axis=1)
    want = (group_size - 1) / group_size * pass_rate_derivative(beta_s)
    assert abs(per_group.mean() - want) < 4 * per_group.std() / np.sqrt(per_group.size)
    assert np.sign(per_group.mean()) == np.sign(want) != 0


def test_tampo_cools_when_the_correct_rollouts_are_sharp() -> None:
    """Here dP/dbeta > 0 at every grid temperature: TAMPO's policy moves to the coldest arms."""
    temps = np.array([0.6, 0.8, 1.0, 1.2, 1.4])
    assert all(pass_rate_derivative(1 / t) > 0 for t in temps)
    ctl = mc.TAMPO(temps, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = ctl.sample()
        tokens, _, adv = rollouts(1 / d.value, 16, 8, rng, scale=True)
        loglik = np.stack([np.log(softmax(Z / t))[tokens] for t in d.virtual], axis=1)
        ctl.update(mc.Counterfactual(d, loglik, adv))
    assert ctl.probs @ temps < 0.85 and np.argmax(ctl.probs) <= 1


def test_sharpness_slopes_from_grid_scores_match_exact_slopes_to_second_order() -> None:
    """F.sharpness_slopes (a parabola through the three nearest arms) against g_i from logits."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (40, 7, 12))  # 40 rollouts, 7 positions, 12 tokens
    value = 1.0
    p = np.exp(logits / value)
    p /= p.sum(-1, keepdims=True)
    tokens = np.array([[rng.choice(12, p=pt) for pt in row] for row in p])
    z_o = np.take_along_axis(logits, tokens[..., None], -1)[..., 0]
    exact = np.mean(z_o - np.sum(p * logits, -1), axis=1)  # (1/L) sum_t (z_o - E_p z)

    def scores(temps: np.ndarray) -> np.ndarray:
        out = []
        for t in temps:
            lp = logits / t - np.log(np.sum(np.exp(logits / t), -1, keepdims=True))
            out.append(np.take_along_axis(lp, tokens[..., None], -1)[..., 0].mean(axis=1))
        return np.stack(out, axis=1)

    errors = []
    for h in (0.1, 0.05):
        temps = 1 / (1 / value + h * np.array([-2.0, -1.0, 0.0, 1.0, 2.0]))
        got = F.sharpness_slopes(scores(temps), temps, value)
        errors.append(np.max(np.abs(got - exact)))
    assert errors[0] < 0.05 * np.max(np.abs(exact))
    assert errors[1] < errors[0] / 3  # O(h^2): halving h divides the error by about 4
    # at the edge of the grid (the played arm the hottest), still a three-point estimate
    temps = np.array([0.8, 0.9, 1.0])
    got = F.sharpness_slopes(scores(temps), temps, 1.0)
    assert np.max(np.abs(got - exact)) < 0.15 * np.max(np.abs(exact))


def test_sharpness_slopes_needs_two_distinct_arms() -> None:
    with pytest.raises(ValueError, match="two distinct virtual arms"):
        F.sharpness_slopes(np.zeros((3, 2)), np.array([1.0, 1.0]), 1.0)
    two = F.sharpness_slopes(np.array([[0.0, 1.0]]), np.array([1.0, 0.5]), 1.0)
    assert two[0] == pytest.approx(1.0)  # the secant: (1 - 0) / (2 - 1)
