"""Controller factories and a synthetic problem with a known best arm, shared by the core tests.

A module of its own (not conftest.py): tests import it by name, and a ``conftest`` module of
another folder (tests/integrations/trl) would shadow that name depending on collection order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import metactl as mc

GRID = mc.Discrete([0.6, 0.8, 1.0, 1.2, 1.4])

# Every built-in controller over every space it supports, built fresh by a factory.
CONTROLLER_FACTORIES: dict[str, Callable[[], mc.BaseController]] = {
    "tampo": lambda: mc.TAMPO(seed=0),
    "tampo-softmax-warmup": lambda: mc.TAMPO(
        GRID, normaliser="softmax", warmup_steps=3, top_p=0.9, seed=1
    ),
    "tampo-greedy": lambda: mc.TAMPO(GRID, top_p=0.0, seed=2),
    "metagradient-discrete": lambda: mc.MetaGradient(
        GRID, entropy_bonus=0.01, prob_floor=0.05, seed=3
    ),
    "metagradient-discrete-sgd": lambda: mc.MetaGradient(GRID, optimizer="sgd", lr=0.5, seed=4),
    "metagradient-box": lambda: mc.MetaGradient(mc.Box(0.3, 3.0, log=True), seed=5),
    "metagradient-box-linear": lambda: mc.MetaGradient(
        mc.Box(0.2, 2.0), entropy_bonus=0.01, seed=6
    ),
    "informativeness": lambda: mc.Informativeness(seed=9),
    "informativeness-nucleus": lambda: mc.Informativeness(
        GRID, ema=0.3, scale=0.1, top_p=0.7, min_ess=0.9, seed=10
    ),
    "ucb": lambda: mc.SlidingWindowUCB(GRID, window=20, seed=7),
    "fixed": lambda: mc.Fixed(1.0),
    "fixed-in-box": lambda: mc.Fixed(0.7, space=mc.Box(0.3, 3.0)),
    "schedule-linear": lambda: mc.Schedule.linear(0.9, 1.5, steps=10),
    "schedule-cosine": lambda: mc.Schedule.cosine(1.5, 0.6, steps=7),
    "schedule-piecewise": lambda: mc.Schedule.piecewise([2, 5], [0.6, 1.0, 1.4]),
    "entropy-target": lambda: mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=1000, warmup=3, seed=8),
    "entropy-target-fixed-target": lambda: mc.EntropyTarget(
        mc.Box(0.3, 3.0), vocab_size=50, target=1.5
    ),
}


def preferred_temperature_feedback(
    decision: mc.Decision, rng: np.random.Generator, best: float, num_rollouts: int = 64
) -> mc.Counterfactual:
    """Rollouts at T prefer temperatures near T; the closer a rollout's preferred T* is to ``best``,
    the higher its reward. loglik[i, j] = -4 (log T_j - log T*_i)^2 (concave in log T, peaked at T*_i)."""
    t_star = decision.value * np.exp(0.35 * rng.standard_normal(num_rollouts))
    reward = -((np.log(t_star) - np.log(best)) ** 2) + 0.01 * rng.standard_normal(num_rollouts)
    advantages = (reward - reward.mean()) / (reward.std() + 1e-4)
    loglik = -4.0 * (np.log(decision.virtual)[None, :] - np.log(t_star)[:, None]) ** 2
    return mc.Counterfactual(decision, loglik, advantages)
