"""The registered toy environments: gymnasium conformance, seeding, and the tasks themselves."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")
from gymnasium.utils.env_checker import check_env  # noqa: E402

import metactl.integrations.gym as mgym  # noqa: E402

ENV_KWARGS = [
    ("metactl/Bandit-v0", {}),
    ("metactl/Bandit-v0", {"variant": "drifting", "drift_period": 3}),
    ("metactl/Bandit-v0", {"variant": "needle", "num_arms": 10}),
    ("metactl/TokenSequence-v0", {}),
    ("metactl/TokenSequence-v0", {"partial_credit": True, "num_prompts": 3, "vocab_size": 5}),
]


def rollout(env, seed: int, steps: int) -> list[tuple]:
    """Observations and rewards of ``steps`` steps under a fixed action sequence."""
    actions = np.random.default_rng(123).integers(env.action_space.n, size=steps)
    obs, _ = env.reset(seed=seed)
    trace = [("reset", obs.tolist())]
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        trace.append((obs.tolist(), reward, terminated, truncated))
        if terminated or truncated:
            obs, _ = env.reset()
            trace.append(("reset", obs.tolist()))
    return trace


@pytest.mark.parametrize(("env_id", "kwargs"), ENV_KWARGS)
def test_check_env_passes_without_warnings(env_id: str, kwargs: dict) -> None:
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize(("env_id", "kwargs"), ENV_KWARGS)
def test_reset_seed_makes_the_run_deterministic(env_id: str, kwargs: dict) -> None:
    a = rollout(gym.make(env_id, **kwargs), seed=7, steps=60)
    b = rollout(gym.make(env_id, **kwargs), seed=7, steps=60)
    assert a == b


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("metactl/Bandit-v0", {}), ("metactl/TokenSequence-v0", {"num_prompts": 5})],
)
def test_different_seeds_give_different_noise_on_the_same_task(env_id: str, kwargs: dict) -> None:
    env_a, env_b = gym.make(env_id, **kwargs), gym.make(env_id, **kwargs)
    assert rollout(env_a, seed=1, steps=60) != rollout(env_b, seed=2, steps=60)
    task = "expected_rewards" if env_id.startswith("metactl/Bandit") else "targets"
    np.testing.assert_array_equal(getattr(env_a.unwrapped, task), getattr(env_b.unwrapped, task))


def test_task_seed_changes_the_task() -> None:
    a = gym.make("metactl/Bandit-v0", task_seed=0).unwrapped.expected_rewards
    b = gym.make("metactl/Bandit-v0", task_seed=1).unwrapped.expected_rewards
    assert not np.array_equal(a, b)


def test_bandit_rewards_match_the_arm_means() -> None:
    env = gym.make("metactl/Bandit-v0", num_arms=4).unwrapped
    env.reset(seed=0)
    means = env.expected_rewards
    pulls = np.array([[env.step(arm)[1] for _ in range(2000)] for arm in range(4)])
    np.testing.assert_allclose(pulls.mean(axis=1), means, atol=0.05)
    _, _, terminated, truncated, info = env.step(int(np.argmin(means)))
    assert terminated and not truncated  # one-step episodes
    assert info["best_arm"] == int(np.argmax(means))
    assert info["regret"] == pytest.approx(means.max() - means.min())


def test_drifting_bandit_moves_the_best_arm_and_seeded_reset_restarts_the_clock() -> None:
    env = gym.make("metactl/Bandit-v0", variant="drifting", drift_period=5, num_arms=6).unwrapped
    env.reset(seed=0)
    best = []
    for _ in range(50):
        best.append(env.best_arm)
        env.step(0)
        env.reset()
    assert len(set(best)) > 1  # the best arm moved
    assert all(len(set(best[k : k + 5])) == 1 for k in range(0, 50, 5))  # piecewise constant
    env.reset(seed=0)
    assert env.best_arm == best[0]
    assert env.get_persistent_state() == {"episode": 0}


def test_needle_is_rare_but_best_in_expectation() -> None:
    env = gym.make(
        "metactl/Bandit-v0", variant="needle", num_arms=10, needle_prob=0.05, needle_payoff=20.0
    ).unwrapped
    env.reset(seed=0)
    means = env.expected_rewards
    assert int(np.argmax(means)) == env.needle_arm
    assert means[env.needle_arm] == pytest.approx(1.0)
    wins = [env.step(env.needle_arm)[1] for _ in range(400)]
    assert set(wins) <= {0.0, 20.0}
    assert 0 < np.mean(np.array(wins) > 0) < 0.15  # it rarely pays


def test_token_sequence_verifier_and_partial_credit() -> None:
    env = gym.make("metactl/TokenSequence-v0", vocab_size=6, length=4, difficulty=3).unwrapped
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [0, 6, 6, 6, 6]  # prompt 0, nothing emitted yet
    target = env.targets[0]
    rewards = []
    for t, tok in enumerate(target):
        obs, r, terminated, _, info = env.step(tok)
        assert obs[1 + t] == tok
        rewards.append(r)
    assert rewards == [0.0, 0.0, 0.0, 1.0] and terminated and info["matches"] == 4

    # Two right tokens of three needed: no reward, or 2/3 with partial credit.
    for partial, expected in ((False, 0.0), (True, 2 / 3)):
        env = gym.make(
            "metactl/TokenSequence-v0", vocab_size=6, length=4, difficulty=3, partial_credit=partial
        ).unwrapped
        env.reset(seed=0)
        target = env.targets[0]
        wrong = (target + 1) % 6
        for tok in [target[0], target[1], wrong[2], wrong[3]]:
            *_, r, _, _, info = env.step(tok)
        assert r == pytest.approx(expected) and info["matches"] == 2


def test_token_sequence_uniform_success_rate_is_small() -> None:
    env = gym.make("metactl/TokenSequence-v0").unwrapped  # V=8, L=6, difficulty=3
    rng = np.random.default_rng(0)
    successes = 0
    for episode in range(3000):
        env.reset(seed=episode)
        for _ in range(env.length):
            *_, r, _, _, _ = env.step(rng.integers(env.vocab_size))
        successes += r
    assert 0.015 < successes / 3000 < 0.045  # about 2.9% for a uniform policy


@pytest.mark.parametrize(
    ("env_id", "kwargs", "name"),
    [
        ("metactl/Bandit-v0", {"variant": "greedy"}, "variant"),
        ("metactl/Bandit-v0", {"num_arms": 1}, "num_arms"),
        ("metactl/Bandit-v0", {"variant": "needle", "needle_prob": 0.0}, "needle_prob"),
        ("metactl/Bandit-v0", {"variant": "drifting", "drift_period": 0}, "drift_period"),
        ("metactl/TokenSequence-v0", {"vocab_size": 1}, "vocab_size"),
        ("metactl/TokenSequence-v0", {"length": 4, "difficulty": 5}, "difficulty"),
        ("metactl/TokenSequence-v0", {"num_prompts": 0}, "num_prompts"),
    ],
)
def test_bad_keywords_raise_value_errors_naming_them(env_id: str, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        gym.make(env_id, **kwargs)


def test_registration_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mgym.register_envs()
    assert "metactl/Bandit-v0" in gym.registry and "metactl/TokenSequence-v0" in gym.registry


def test_missing_gymnasium_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    import metactl as mc

    # find_spec reports a module mapped to None in sys.modules as missing.
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    monkeypatch.delitem(sys.modules, "metactl.integrations.gym", raising=False)
    with pytest.raises(mc.DependencyNotInstalled, match=r"metactl\[gym\]"):
        importlib.import_module("metactl.integrations.gym")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task_seed": -1}, "task_seed"),
        ({"task_seed": 1.5}, "task_seed"),
        ({"variant": "needle", "needle_payoff": float("inf")}, "needle_payoff"),
        ({"variant": "needle", "needle_payoff": float("nan")}, "needle_payoff"),
        ({"num_arms": True}, "num_arms"),
    ],
)
def test_bandit_arguments_are_refused_naming_them(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make("metactl/Bandit-v0", **kwargs)


def test_token_sequence_task_seed_is_named() -> None:
    with pytest.raises(ValueError, match="task_seed"):
        gym.make("metactl/TokenSequence-v0", task_seed=-1)
