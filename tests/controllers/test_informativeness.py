"""mc.Informativeness against independent computations of its equations, and its sanity checks.

The toy model: each prompt b has L positions with logits z[b, t, :] over V tokens; a rollout
samples one token per position from softmax(z / T); its reward is 1 when every token is the
answer (token 0). Its exact pass rate at T is q_b(T) = prod_t softmax(z[b, t] / T)[0], so the
expected informative fraction U(T) = mean_b 1 - q_b^G - (1 - q_b)^G is known exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import metactl as mc
from metactl import functional as F

GRID = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def toy_logits(kind: str, rng: np.random.Generator, prompts: int = 16) -> np.ndarray:
    """[B, L=4, V=8] logits; token 0 is the answer at every position.

    competent: the answer is the clear mode (pass rate near 1 when cold; the informative
    fraction peaks hot, near T = 1.5). hard: the answer is a weak mode (pass rate near 0; the
    informative fraction peaks at the coldest arm).
    """
    z = rng.normal(0.0, 1.0, (prompts, 4, 8))
    margin = {"competent": (5.0, 7.0), "hard": (1.0, 2.0)}[kind]
    z[:, :, 0] += rng.uniform(*margin, (prompts, 1))
    return z


def exact_pass_and_informative(
    z: np.ndarray, temps: tuple[float, ...] | np.ndarray, group_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(P(T), U(T)) from the logits: q_b = prod_t p_T(answer_t), U = mean_b 1 - q^G - (1-q)^G."""
    pass_rate, informative = [], []
    for t in temps:
        q = np.exp(log_softmax(z / t)[..., 0].sum(axis=-1))
        pass_rate.append(q.mean())
        informative.append(np.mean(1 - q**group_size - (1 - q) ** group_size))
    return np.array(pass_rate), np.array(informative)


def toy_round(
    z: np.ndarray,
    decision: mc.Decision,
    rng: np.random.Generator,
    group_size: int = 8,
    random_reward: float | None = None,
) -> mc.Counterfactual:
    """G rollouts per prompt at decision.value, scored exactly at every virtual temperature."""
    b, length, v = z.shape
    probs = np.exp(log_softmax(z / decision.value))
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((b, group_size, length, 1))
    tokens = (u > cdf[:, None]).sum(axis=-1).clip(max=v - 1)  # [B, G, L]
    loglik = np.stack(
        [
            np.take_along_axis(
                np.broadcast_to(log_softmax(z / t)[:, None], (b, group_size, length, v)),
                tokens[..., None],
                axis=-1,
            )[..., 0].mean(axis=-1)
            for t in decision.virtual
        ],
        axis=-1,
    ).reshape(b * group_size, -1)
    if random_reward is None:
        rewards = (tokens == 0).all(axis=-1).astype(float).reshape(-1)
    else:
        rewards = (rng.random(b * group_size) < random_reward).astype(float)
    r = rewards.reshape(b, group_size)
    advantages = ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-4)).reshape(-1)
    return mc.Counterfactual(
        decision,
        loglik,
        advantages,
        rewards=rewards,
        groups=np.repeat(np.arange(b), group_size),
        lengths=np.full(b * group_size, float(length)),
    )


def sampled_temperatures(
    ctl: mc.BaseController, z: np.ndarray, seed: int, steps: int, random_reward: float | None = None
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    temps = []
    for _ in range(steps):
        d = ctl.sample()
        temps.append(d.value)
        ctl.update(toy_round(z, d, rng, random_reward=random_reward))
    return np.array(temps)


# --- the pure functions, against their equations written out --------------------------------
def test_group_likelihood_ratios_equal_sums_of_length_weighted_differences() -> None:
    rng = np.random.default_rng(0)
    loglik = rng.normal(-2, 1, (9, 4))
    lengths = rng.integers(1, 20, 9).astype(float)
    groups = np.array([5, 5, 2, 2, 2, 9, 9, 9, 9])
    got, ids = F.group_log_likelihood_ratios(loglik, lengths, groups, played=1)
    np.testing.assert_array_equal(ids, [2, 5, 9])
    for row, g in enumerate([2, 5, 9]):
        for k in range(4):
            want = sum(
                lengths[i] * (loglik[i, k] - loglik[i, 1]) for i in range(9) if groups[i] == g
            )
            assert got[row, k] == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert np.all(got[:, 1] == 0)


def test_equal_reward_groups() -> None:
    rewards = np.array([1.0, 1.0, 0.0, 1.0, 0.5, 0.5 + 1e-10, 3.0])
    groups = np.array([0, 0, 1, 1, 4, 4, 7])
    np.testing.assert_array_equal(F.equal_reward_groups(rewards, groups), [1.0, 0.0, 1.0, 1.0])


def test_informativeness_gains_match_self_normalised_fractions() -> None:
    rng = np.random.default_rng(1)
    log_lambda = rng.normal(0, 1.5, (6, 5))
    log_lambda[:, 2] = 0.0  # the played arm
    equal = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    gains, ess = F.informativeness_gains(log_lambda, equal)
    lam = np.exp(log_lambda)
    u = 1 - (lam * equal[:, None]).sum(0) / lam.sum(0)  # U_k = 1 - sum_b w_bk e_b
    np.testing.assert_allclose(gains, u - (1 - equal.mean()), atol=1e-12)
    np.testing.assert_allclose(ess, lam.sum(0) ** 2 / (lam**2).sum(0), rtol=1e-12)
    assert gains[2] == pytest.approx(0.0, abs=1e-15) and ess[2] == pytest.approx(6.0)


def test_carry_beyond_reach_walks_outward_from_the_played_arm() -> None:
    values = np.array([1.0, 0.6, 1.4, 0.8, 1.2, 2.0])  # arms in any order
    gains = np.array([0.0, 9.0, 0.3, 0.2, 0.1, 8.0])
    reached = np.array([True, False, True, True, True, False])
    got = F.carry_beyond_reach(gains, reached, values, played=0)
    # cold side from T=1.0: 0.8 reached (0.2), 0.6 carries 0.2; hot side: 1.2 (0.1), 1.4 (0.3),
    # 2.0 carries 0.3
    np.testing.assert_allclose(got, [0.0, 0.2, 0.3, 0.2, 0.1, 0.3])
    none = F.carry_beyond_reach(gains, np.eye(6, dtype=bool)[0], values, played=0)
    np.testing.assert_allclose(none, np.zeros(6))


# --- the estimator is what it says ------------------------------------------------------------
def test_gains_estimate_the_change_in_informative_fraction_at_near_arms() -> None:
    """Many groups, one round at T_s = 1.0: d_k ~= U(T_k) - U(T_s) at the arms in reach."""
    rng = np.random.default_rng(2)
    z = toy_logits("competent", rng, prompts=3000)
    temps = (0.9, 1.0, 1.1, 1.2)
    ctl = mc.Informativeness(temps, seed=0)
    d = ctl.sample()
    d = mc.Decision(1.0, d.virtual, 1.0, d.virtual_arms, d.step, d.source)
    fb = toy_round(z, d, rng)
    assert fb.groups is not None and fb.lengths is not None and fb.rewards is not None
    log_lambda, _ = F.group_log_likelihood_ratios(fb.loglik, fb.lengths, fb.groups, 1)
    gains, ess = F.informativeness_gains(log_lambda, F.equal_reward_groups(fb.rewards, fb.groups))
    _, u = exact_pass_and_informative(z, temps, 8)
    assert np.all(ess[[0, 2]] > 0.5 * 3000)
    # the informative fraction rises toward hot here; the estimate has the right sizes
    np.testing.assert_allclose(gains[[0, 2]], (u - u[1])[[0, 2]], atol=0.02)
    assert gains[0] < -0.05 and gains[2] > 0.05


def test_gains_have_mean_zero_when_rewards_ignore_the_completions() -> None:
    """Random rewards: E[d_k] = 0 at every arm (weights depend on completions only)."""
    rng = np.random.default_rng(3)
    z = toy_logits("competent", rng)
    ctl = mc.Informativeness(GRID, min_ess=1e-9, seed=0)  # no guard: the raw estimator
    d0 = ctl.sample()
    d = mc.Decision(1.0, d0.virtual, 4.0, d0.virtual_arms, d0.step, d0.source)
    draws = []
    for _ in range(3000):
        fb = toy_round(z, d, rng, random_reward=0.1)
        assert fb.groups is not None and fb.lengths is not None and fb.rewards is not None
        lam, _ = F.group_log_likelihood_ratios(fb.loglik, fb.lengths, fb.groups, 4)
        draws.append(F.informativeness_gains(lam, F.equal_reward_groups(fb.rewards, fb.groups))[0])
    draws_arr = np.array(draws)
    se = draws_arr.std(axis=0) / np.sqrt(len(draws_arr)) + 1e-12
    assert np.all(np.abs(draws_arr.mean(axis=0)) < 4 * se), draws_arr.mean(axis=0) / se
    assert draws_arr.std(axis=0)[0] > 0.01  # not trivially zero: far arms are noisy


# --- sanity simulations with the controller --------------------------------------------------
SEEDS = range(6)


def test_frozen_competent_model_settles_at_the_informativeness_peak_not_the_pass_rate_peak() -> (
    None
):
    settled, tampo = [], []
    for seed in SEEDS:
        z = toy_logits("competent", np.random.default_rng(100 + seed))
        p, u = exact_pass_and_informative(z, GRID, 8)
        assert GRID[int(np.argmax(p))] == 0.6 and GRID[int(np.argmax(u))] >= 1.4
        t = sampled_temperatures(mc.Informativeness(GRID, seed=seed), z, seed, 120)
        settled.append(t[-40:].mean())
        tampo.append(sampled_temperatures(mc.TAMPO(GRID, seed=seed), z, seed, 120)[-40:].mean())
    assert 1.35 < np.mean(settled) < 1.75, settled  # the informativeness peak: 1.4-1.6
    assert np.mean(tampo) < 0.95, tampo  # TAMPO climbs the pass rate: cold


def test_moves_cold_where_cold_is_more_informative() -> None:
    settled = []
    for seed in SEEDS:
        z = toy_logits("hard", np.random.default_rng(200 + seed))
        _, u = exact_pass_and_informative(z, GRID, 8)
        assert GRID[int(np.argmax(u))] == 0.6
        settled.append(
            sampled_temperatures(mc.Informativeness(GRID, seed=seed), z, seed, 120)[-40:].mean()
        )
    assert np.mean(settled) < np.mean(GRID) - 0.15, settled  # from the uniform start (1.22)


@pytest.mark.parametrize("pass_rate", [0.1, 0.5])
def test_random_reward_no_drift(pass_rate: float) -> None:
    """Rewards that ignore the completions: the sampled temperature stays where it started.

    Every gain has mean zero here, but softmax(abar / scale) gives noisier arms (those more
    often in reach, the hot ones on a grid uniform in T) slightly more mass in expectation:
    measured +0.02 to +0.04 over 10 seeds of 150 rounds, hence the 0.05 margin.
    """
    means = []
    for seed in range(10):
        z = toy_logits("competent", np.random.default_rng(300 + seed))
        t = sampled_temperatures(mc.Informativeness(GRID, seed=seed), z, seed, 100, pass_rate)
        means.append(t.mean())
    half_width = 1.96 * np.std(means, ddof=1) / np.sqrt(len(means))
    assert abs(np.mean(means) - np.mean(GRID)) < max(half_width, 0.02) + 0.05, means


# --- the controller's contract ---------------------------------------------------------------
@pytest.mark.parametrize("missing", ["rewards", "groups", "lengths"])
def test_missing_field_is_named_and_state_untouched(missing: str) -> None:
    ctl = mc.Informativeness(seed=0)
    d = ctl.sample()
    fields = {"rewards": [1.0, 0.0], "groups": [0, 0], "lengths": [3.0, 4.0]}
    del fields[missing]
    before = ctl.state_dict()
    with pytest.raises(ValueError, match=f"Counterfactual.{missing}:.*Informativeness"):
        ctl.update(mc.Counterfactual(d, -np.ones((2, 10)), np.array([1.0, -1.0]), **fields))
    assert ctl.state_dict() == before


def test_all_groups_equal_is_a_noop() -> None:
    ctl = mc.Informativeness(seed=0)
    d = ctl.sample()
    ctl.update(
        mc.Counterfactual(
            d,
            np.random.default_rng(0).normal(-1, 1, (4, 10)),
            np.array([1.0, -1.0, 0.0, 0.0]),
            rewards=[1.0, 0.0, 1.0, 1.0],
            groups=[0, 0, 1, 1],
            lengths=[2.0, 2.0, 2.0, 2.0],
        )
    )
    before = ctl.ema_gains
    d = ctl.sample()
    metrics = ctl.update(
        mc.Counterfactual(
            d,
            np.random.default_rng(1).normal(-1, 1, (4, 10)),
            np.zeros(4),
            rewards=[1.0, 1.0, 0.0, 0.0],
            groups=[0, 0, 1, 1],
            lengths=[2.0, 2.0, 2.0, 2.0],
        )
    )
    assert metrics["noop"] == 1.0 and metrics["informative_fraction"] == 0.0
    np.testing.assert_array_equal(ctl.ema_gains, before)


def test_policy_is_softmax_of_ema_gains_over_scale_and_state_round_trips() -> None:
    ctl = mc.Informativeness(mc.Discrete([0.6, 1.0, 1.4]), ema=0.5, scale=0.05, seed=0)
    state = json.loads(json.dumps(ctl.state_dict()))
    state["params"]["ema_gains"] = [0.0, 0.05, -0.1]
    ctl.load_state_dict(state)
    e = np.exp(np.array([0.0, 1.0, -2.0]))
    np.testing.assert_allclose(ctl.probs, e / e.sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="ema_gains"):
        state["params"]["ema_gains"] = [0.0, 2.0, 0.0]  # outside [-1, 1]
        ctl.load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ema": 0.0}, r"Informativeness\(ema\)"),
        ({"scale": 0.0}, r"Informativeness\(scale\)"),
        ({"top_p": 1.5}, r"Informativeness\(top_p\)"),
        ({"min_ess": 0.0}, r"Informativeness\(min_ess\)"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mc.Informativeness(**kwargs)  # type: ignore[arg-type]
