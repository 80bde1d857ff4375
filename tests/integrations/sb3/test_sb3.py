"""The SB3 adapter against SB3's own PPO and A2C, and against float64 references."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import special

pytest.importorskip("stable_baselines3")

import torch
from sb3_envs import (
    ACTION_SPACES,
    DictEnv,
    ImageEnv,
    RecordingEntropyTarget,
    RecordingTAMPO,
    RecordingUCB,
    ToyEnv,
    mlp_action_params,
    reference_entropy,
    reference_log_prob,
    reward_of,
)
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor

import metactl as mc
from metactl.integrations.sb3 import (
    MetaCheckpointCallback,
    MetaTemperatureCallback,
    TemperatureCnnPolicy,
    TemperatureMlpPolicy,
    TemperatureMultiInputPolicy,
    controller_path,
)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """SB3's small networks run fastest on one thread (and the machine's cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def params_of(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


class RecordingPPO(PPO):
    """SB3's PPO that notes the policy's temperature each time it trains."""

    def train(self) -> None:
        self.train_temperatures = [
            *getattr(self, "train_temperatures", []),
            self.policy.temperature,
        ]
        super().train()


class RolloutCapture(BaseCallback):
    """Copies the buffer, the policy weights and the logged meta metrics at each rollout end."""

    def __init__(self) -> None:
        super().__init__()
        self.rollouts: list[dict[str, Any]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        self.rollouts.append(
            {
                "obs": buffer.observations.reshape(buffer.buffer_size * buffer.n_envs, -1).astype(
                    np.float64
                ),
                "actions": buffer.actions.reshape(buffer.buffer_size * buffer.n_envs, -1).astype(
                    np.float64
                ),
                "log_probs": buffer.log_probs.reshape(-1).astype(np.float64),
                "advantages": buffer.advantages.reshape(-1).astype(np.float64),
                "episode_starts": buffer.episode_starts.copy(),
                "state": params_of(self.model),
                "temperature": self.model.policy.temperature,
                "logged": {
                    k: v
                    for k, v in self.model.logger.name_to_value.items()
                    if k.startswith("meta/")
                },
            }
        )


# --- T = 1 is SB3's own policy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("algo", "env_id", "kwargs"),
    [
        # PPO with n_steps=128 (its default 2048 takes seconds); batch_size, epochs and the rest
        # are PPO's defaults. A2C entirely at its defaults.
        (PPO, "CartPole-v1", {"n_steps": 128}),
        (PPO, "Pendulum-v1", {"n_steps": 128}),
        (A2C, "CartPole-v1", {}),
        (A2C, "Pendulum-v1", {}),
    ],
)
def test_fixed_one_trains_bit_identically_to_sb3(algo: Any, env_id: str, kwargs: dict) -> None:
    steps = 2 * kwargs.get("n_steps", 5)
    plain = algo("MlpPolicy", env_id, seed=3, device="cpu", **kwargs)
    plain.learn(steps)
    ours = algo(TemperatureMlpPolicy, env_id, seed=3, device="cpu", **kwargs)
    ours.learn(steps, callback=MetaTemperatureCallback(mc.Fixed(1.0)))
    assert ours.num_timesteps == plain.num_timesteps == steps
    assert_bit_identical(params_of(plain), params_of(ours))
    plain_opt, ours_opt = plain.policy.optimizer.state_dict(), ours.policy.optimizer.state_dict()
    for key, state in plain_opt["state"].items():
        for name, value in state.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(ours_opt["state"][key][name])
            )


class SB3LogitsCapture(BaseCallback):
    """At rollout end: the buffer's actions and log-probs, and SB3's own T = 1 logits."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer, policy = self.model.rollout_buffer, self.model.policy
        obs = buffer.observations
        flat: Any = (
            {k: v.reshape(-1, *v.shape[2:]) for k, v in obs.items()}
            if isinstance(obs, dict)
            else obs.reshape(-1, *obs.shape[2:])
        )
        temperature, policy.temperature = policy.temperature, 1.0
        with torch.no_grad():  # SB3's own distribution: Categorical's normalised logits
            dists = policy.get_distribution(obs_as_tensor(flat, policy.device)).distribution
        policy.temperature = temperature
        dists = dists if isinstance(dists, list) else [dists]
        self.logits = [d.logits.double().numpy() for d in dists]
        self.actions = buffer.actions.reshape(len(self.logits[0]), -1).astype(int)
        self.log_probs = buffer.log_probs.reshape(-1).astype(np.float64)
        self.temperature = temperature

    def reference(self, t: float) -> np.ndarray:
        """float64 ``sum_c log softmax(logits_c / t)[a_c]`` from SB3's T = 1 logits."""
        rows = np.arange(len(self.actions))
        return sum(
            special.log_softmax(z / t, axis=1)[rows, self.actions[:, c]]
            for c, z in enumerate(self.logits)
        )


@pytest.mark.parametrize(
    ("ours", "theirs", "env"),
    [
        (TemperatureCnnPolicy, "CnnPolicy", ImageEnv),
        (TemperatureMultiInputPolicy, "MultiInputPolicy", DictEnv),
    ],
)
def test_cnn_and_multi_input_policies_are_sb3s_with_a_temperature(
    ours: Any, theirs: str, env: Any
) -> None:
    def model(policy: Any) -> PPO:
        envs = make_vec_env(env, n_envs=2, seed=0)
        return PPO(policy, envs, n_steps=8, batch_size=16, n_epochs=2, seed=0, device="cpu")

    # One after the other: building a model seeds the global RNGs that learn() samples with.
    plain = model(theirs)
    plain.learn(32)
    adapted = model(ours)
    adapted.learn(32, callback=MetaTemperatureCallback(mc.Fixed(1.0)))
    assert_bit_identical(params_of(plain), params_of(adapted))

    tempered = model(ours)
    controller = RecordingTAMPO(mc.Discrete([0.5, 2.0]), seed=2)
    capture = SB3LogitsCapture()
    tempered.learn(16, callback=CallbackList([MetaTemperatureCallback(controller), capture]))
    (fb,) = controller.feedback
    assert capture.temperature == fb.decision.value
    np.testing.assert_allclose(
        capture.log_probs, capture.reference(fb.decision.value), rtol=1e-5, atol=1e-5
    )
    for k, t in enumerate(fb.decision.virtual):
        np.testing.assert_allclose(fb.loglik[:, k], capture.reference(t), rtol=1e-6, atol=1e-6)


# --- each rollout is sampled, scored and trained at the controller's temperature --------------


@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
def test_rollouts_at_the_round_temperature_and_counterfactual_rows(space_name: str) -> None:
    space = ACTION_SPACES[space_name]
    envs = make_vec_env(lambda: ToyEnv(space), n_envs=3, seed=0)
    model = RecordingPPO(
        TemperatureMlpPolicy, envs, n_steps=8, batch_size=12, n_epochs=2, seed=0, device="cpu"
    )
    controller = RecordingTAMPO(mc.Discrete([0.4, 1.0, 2.5]), top_p=1.0, seed=1)
    capture = RolloutCapture()
    model.learn(4 * 24, callback=CallbackList([MetaTemperatureCallback(controller), capture]))

    assert len(controller.feedback) == len(capture.rollouts) == 4
    temperatures = [fb.decision.value for fb in controller.feedback]
    assert len(set(temperatures)) > 1, "the controller should have tried several temperatures"
    assert model.train_temperatures == temperatures  # trained at the temperature sampled at
    for fb, rollout in zip(controller.feedback, capture.rollouts, strict=True):
        state = rollout["state"]
        params = mlp_action_params(state, rollout["obs"])
        log_std = state["log_std"].double().numpy() if "log_std" in state else None
        actions = rollout["actions"]
        t = fb.decision.value
        assert rollout["temperature"] == t
        # SB3's buffer log-probs: the rollout was sampled at T.
        expected = reference_log_prob(space, params, log_std, actions, t)
        np.testing.assert_allclose(rollout["log_probs"], expected, rtol=1e-5, atol=1e-5)
        # Counterfactual: every step at every virtual temperature, with its GAE advantage.
        for k, virtual in enumerate(fb.decision.virtual):
            expected = reference_log_prob(space, params, log_std, actions, float(virtual))
            np.testing.assert_allclose(fb.loglik[:, k], expected, rtol=1e-6, atol=1e-6)
        adv = rollout["advantages"]
        np.testing.assert_allclose(
            fb.advantages, (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8), rtol=1e-12
        )
        # The environment's rewards (not SB3's bootstrapped ones at truncations).
        np.testing.assert_allclose(fb.rewards, [reward_of(a) for a in actions], rtol=1e-6)
        np.testing.assert_array_equal(fb.lengths, np.ones(24))
        assert rollout["logged"]["meta/temperature"] == t
        assert set(rollout["logged"]) > {"meta/temperature"}


def test_groups_are_episode_segments_per_environment() -> None:
    envs = make_vec_env(lambda: ToyEnv(ACTION_SPACES["Discrete"], horizon=3), n_envs=2, seed=0)
    model = PPO(TemperatureMlpPolicy, envs, n_steps=7, batch_size=14, n_epochs=1, seed=0)
    controller = RecordingTAMPO(mc.Discrete([0.5, 1.0]), seed=0)
    capture = RolloutCapture()
    model.learn(2 * 14, callback=CallbackList([MetaTemperatureCallback(controller), capture]))
    # Rows are step-major (row = 2 t + env). Each env's steps 0-2, 3-5, 6 are its episodes in
    # the first rollout (horizon 3); the second rollout starts mid-episode.
    first = controller.feedback[0].groups.reshape(7, 2)
    np.testing.assert_array_equal(first[:, 0], [0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(first[:, 1], [3, 3, 3, 4, 4, 4, 5])
    second = controller.feedback[1].groups.reshape(7, 2)
    np.testing.assert_array_equal(second[:, 0], [0, 0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(second[:, 1], [3, 3, 4, 4, 4, 5, 5])


def test_a2c_with_several_envs_scores_its_rollouts() -> None:
    space = ACTION_SPACES["Box"]
    envs = make_vec_env(lambda: ToyEnv(space), n_envs=4, seed=2)
    model = A2C(TemperatureMlpPolicy, envs, seed=2, device="cpu")  # A2C's defaults: 5 steps
    controller = RecordingTAMPO(mc.Discrete([0.5, 1.5]), top_p=1.0, seed=3)
    capture = RolloutCapture()
    model.learn(3 * 20, callback=CallbackList([MetaTemperatureCallback(controller), capture]))
    assert len(controller.feedback) == 3
    for fb, rollout in zip(controller.feedback, capture.rollouts, strict=True):
        state = rollout["state"]
        params = mlp_action_params(state, rollout["obs"])
        log_std = state["log_std"].double().numpy()
        expected = reference_log_prob(space, params, log_std, rollout["actions"], fb.decision.value)
        np.testing.assert_allclose(rollout["log_probs"], expected, rtol=1e-5, atol=1e-5)
        for k, virtual in enumerate(fb.decision.virtual):
            expected = reference_log_prob(space, params, log_std, rollout["actions"], virtual)
            np.testing.assert_allclose(fb.loglik[:, k], expected, rtol=1e-6, atol=1e-6)
        assert fb.loglik.shape == (20, 2)


def test_outcome_is_the_mean_return_of_the_episodes_that_ended() -> None:
    # One-step episodes: every step ends an episode whose return is the step's reward.
    envs = make_vec_env(lambda: ToyEnv(ACTION_SPACES["Discrete"], horizon=1), n_envs=2, seed=0)
    model = PPO(TemperatureMlpPolicy, envs, n_steps=6, batch_size=12, n_epochs=1, seed=0)
    controller = RecordingUCB(mc.Discrete([0.5, 1.0, 2.0]), seed=0)
    capture = RolloutCapture()
    model.learn(3 * 12, callback=CallbackList([MetaTemperatureCallback(controller), capture]))
    assert [type(fb) for fb in controller.feedback] == [mc.Outcome] * 3
    for fb, rollout in zip(controller.feedback, capture.rollouts, strict=True):
        assert fb.reward == pytest.approx(np.mean([reward_of(a) for a in rollout["actions"]]))


@pytest.mark.parametrize("space_name", ["MultiDiscrete", "Box"])
def test_entropy_observation_is_the_mean_entropy_at_the_round_temperature(space_name: str) -> None:
    space = ACTION_SPACES[space_name]
    envs = make_vec_env(lambda: ToyEnv(space), n_envs=2, seed=0)
    model = PPO(TemperatureMlpPolicy, envs, n_steps=6, batch_size=12, n_epochs=1, seed=0)
    controller = RecordingEntropyTarget(mc.Box(0.5, 2.0, log=True), vocab_size=12, seed=0)
    capture = RolloutCapture()
    model.learn(3 * 12, callback=CallbackList([MetaTemperatureCallback(controller), capture]))
    assert controller.feedback and all(
        type(fb) is mc.EntropyObservation for fb in controller.feedback
    )
    for fb, rollout in zip(controller.feedback, capture.rollouts, strict=True):
        state = rollout["state"]
        log_std = state["log_std"].double().numpy() if "log_std" in state else None
        params = mlp_action_params(state, rollout["obs"])
        expected = reference_entropy(space, params, log_std, fb.decision.value).mean()
        assert fb.entropy == pytest.approx(expected, rel=1e-6)


# --- save and resume ----------------------------------------------------------------------------


def _resume_model(seed: int) -> PPO:
    envs = make_vec_env("CartPole-v1", n_envs=2, seed=seed)
    return PPO(TemperatureMlpPolicy, envs, n_steps=32, batch_size=32, n_epochs=2, seed=seed)


def test_resume_from_zip_and_json_continues_bit_identically(tmp_path: Path) -> None:
    rollout = 64
    straight = _resume_model(0)
    straight_meta = MetaTemperatureCallback(mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=5))
    straight.learn(2 * rollout, callback=straight_meta)
    straight.learn(2 * rollout, callback=straight_meta, reset_num_timesteps=False)

    first = _resume_model(0)
    first_meta = MetaTemperatureCallback(mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=5))
    first.learn(2 * rollout, callback=first_meta)
    first.save(tmp_path / "run.zip")
    written = first_meta.save(tmp_path / "run.zip")
    assert written == tmp_path / "run.metactl.json" == controller_path(tmp_path / "run")
    assert json.loads(written.read_text())["controller"] == first_meta.controller.state_dict()
    # What SB3 itself does not save: the global RNGs and the live environments.
    rng = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002 (SB3 shuffles with it)
    envs = first.get_env()
    del first, first_meta

    resumed = PPO.load(tmp_path / "run.zip", env=envs, force_reset=False, device="cpu")
    resumed_meta = MetaTemperatureCallback(mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=99))
    resumed_meta.load(tmp_path / "run.zip")
    torch.set_rng_state(rng[0])
    np.random.set_state(rng[1])  # noqa: NPY002
    resumed.learn(2 * rollout, callback=resumed_meta, reset_num_timesteps=False)

    assert resumed.num_timesteps == straight.num_timesteps == 4 * rollout
    assert_bit_identical(params_of(straight), params_of(resumed))
    assert resumed_meta.controller.state_dict() == straight_meta.controller.state_dict()


def test_checkpoint_callback_writes_the_controller_beside_each_zip(tmp_path: Path) -> None:
    model = _resume_model(1)
    meta = MetaTemperatureCallback(mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=7))
    # save_freq counts on_step calls (one per vector step): 40 is mid-way through rollout 2.
    ckpt = MetaCheckpointCallback(meta, save_freq=40, save_path=str(tmp_path), name_prefix="ppo")
    capture = RolloutCapture()
    model.learn(3 * 64, callback=CallbackList([meta, capture, ckpt]))
    zip_path = tmp_path / "ppo_80_steps.zip"
    assert zip_path.is_file() and (tmp_path / "ppo_80_steps.metactl.json").is_file()
    # Mid-rollout the file holds the state before that rollout's decision: a resumed run,
    # which collects the rollout again, draws the same temperature.
    restored = MetaTemperatureCallback(mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=0))
    restored.load(zip_path)
    assert restored.controller.step == 1
    assert restored.controller.sample().value == capture.rollouts[1]["temperature"]
    # The zip is SB3's own and loads as usual, at temperature 1.
    assert PPO.load(zip_path, device="cpu").policy.temperature == 1.0


def test_loading_another_controllers_state_is_refused(tmp_path: Path) -> None:
    meta = MetaTemperatureCallback(mc.TAMPO(mc.Discrete([0.5, 1.0]), seed=0))
    meta.save(tmp_path / "run.zip")
    other = MetaTemperatureCallback(mc.MetaGradient(mc.Box(0.5, 2.0, log=True), seed=0))
    before = other.controller.state_dict()
    with pytest.raises(ValueError, match=r"controller_class.*TAMPO.*MetaGradient"):
        other.load(tmp_path / "run.zip")
    assert other.controller.state_dict() == before
    with pytest.raises(ValueError, match="format"):
        other.load_state_dict({"format": "something else"})
    with pytest.raises(FileNotFoundError, match=r"elsewhere\.metactl\.json"):
        other.load(tmp_path / "elsewhere.zip")


# --- refusals --------------------------------------------------------------------------------


def test_a_plain_sb3_policy_is_refused_naming_the_temperature_policy() -> None:
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, seed=0, device="cpu")
    controller = mc.TAMPO(mc.Discrete([0.5, 1.0]), seed=0)
    with pytest.raises(TypeError, match=r"ActorCriticPolicy.*no temperature.*TemperatureMlpPolicy"):
        model.learn(16, callback=MetaTemperatureCallback(controller))
    assert controller.step == 0 and model.num_timesteps == 0


def test_gsde_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"use_sde.*gSDE"):
        PPO(TemperatureMlpPolicy, "Pendulum-v1", use_sde=True, device="cpu")


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), 1e-3, 1e3])
def test_a_bad_temperature_is_refused_and_leaves_the_policy_as_it_was(value: float) -> None:
    policy = PPO(TemperatureMlpPolicy, "CartPole-v1", device="cpu").policy
    policy.temperature = 0.7
    with pytest.raises(ValueError, match=r"policy.temperature.*(finite|in \[0.01, 100\])"):
        policy.temperature = value
    assert policy.temperature == 0.7


def test_controllers_that_cannot_drive_a_temperature_are_refused() -> None:
    with pytest.raises(mc.IncompatibleController, match=r"\[0.01, 100\]"):
        MetaTemperatureCallback(mc.Fixed(0.0, space=mc.Discrete([0.0, 1.0])))
    with pytest.raises(mc.IncompatibleController, match=r"\[0.01, 100\]"):
        MetaTemperatureCallback(mc.Fixed(1e3, space=mc.Discrete([1.0, 1e3])))


def test_missing_stable_baselines3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    monkeypatch.delitem(sys.modules, "metactl.integrations.sb3", raising=False)
    with pytest.raises(mc.DependencyNotInstalled, match=r"metactl\[sb3\]"):
        importlib.import_module("metactl.integrations.sb3")
