"""EnvCursor: the run's place in a next-step-autoreset vector env."""

from __future__ import annotations

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")
pytest.importorskip("torch")

from metactl.integrations.ppo.envstate import EnvCursor  # noqa: E402


def test_cursor_counts_episodes_and_marks_the_autoreset_step() -> None:
    envs = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync", max_episode_steps=3)
    cursor = EnvCursor(envs, seed=0)
    assert cursor.log is not None and not cursor.vector_wrapped
    steps = [cursor.step(np.zeros(2, dtype=np.int64)) for _ in range(4)]
    # Three real steps of reward 1 each, then the time limit ends both episodes.
    assert [s.stepped.tolist() for s in steps[:3]] == [[True, True]] * 3
    assert steps[2].truncated.tolist() == [True, True]
    assert steps[2].finished == [(3.0, 3), (3.0, 3)]
    # Gymnasium spends the next step resetting them: not a transition, no episode accounting.
    assert steps[3].stepped.tolist() == [False, False] and steps[3].finished == []
    assert cursor.episode_return.tolist() == [0.0, 0.0]
    assert cursor.episode_length.tolist() == [0, 0]


def test_cursor_state_restores_the_environments_exactly() -> None:
    def make() -> gym.vector.VectorEnv:
        return gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")

    actions = np.random.default_rng(0).integers(0, 2, size=(30, 2))
    source = EnvCursor(make(), seed=3)
    for a in actions[:20]:
        source.step(a)
    state, obs = source.state_dict(), np.array(source.obs)
    target = EnvCursor(make(), seed=99)
    assert target.load_state_dict(state, obs, reset_seed=0) is True
    np.testing.assert_array_equal(target.obs, source.obs)
    for a in actions[20:]:
        s1, s2 = source.step(a), target.step(a)
        np.testing.assert_array_equal(s1.reward, s2.reward)
        assert s1.finished == s2.finished
        np.testing.assert_array_equal(source.obs, target.obs)
