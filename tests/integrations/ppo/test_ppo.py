"""PPO with a critic, its temperature set by a metactl controller."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gym = pytest.importorskip("gymnasium")

import metactl as mc  # noqa: E402
import metactl.integrations.gym  # noqa: E402  (registers metactl/...)
from metactl.integrations.ppo import (  # noqa: E402
    PPO,
    ActorCritic,
    PolicyOutput,
    PPOConfig,
    virtual_loglik,
)

SMALL = PPOConfig(num_steps=16, num_minibatches=2, update_epochs=2, hidden_sizes=(16,))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_envs(env_id: str = "CartPole-v1", num_envs: int = 3, **kwargs):
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)


def params(ppo: PPO) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in ppo.agent.state_dict().items()}


# --- the behaviour policy really is pi_T -------------------------------------------------
def test_discrete_samples_follow_softmax_of_logits_over_t() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]]).expand(40_000, 4)
    policy = PolicyOutput(logits=logits)
    gen = torch.Generator().manual_seed(0)
    entropies = {}
    for temperature in (0.5, 2.0):
        actions = policy.sample(temperature, gen)
        freq = np.bincount(actions.numpy(), minlength=4) / len(actions)
        expected = torch.softmax(logits[0] / temperature, -1).numpy()
        np.testing.assert_allclose(freq, expected, atol=0.01)
        entropies[temperature] = -(freq * np.log(freq)).sum()
        # Exact log-probs at T, the ones the importance ratios use.
        logp = policy.log_prob(actions[:5], temperature)
        np.testing.assert_allclose(logp.numpy(), np.log(expected[actions[:5].numpy()]), rtol=1e-5)
    assert entropies[0.5] < 0.7 * entropies[2.0]


def test_gaussian_samples_have_std_times_t() -> None:
    mean = torch.tensor([[1.0, -2.0]]).expand(40_000, 2)
    policy = PolicyOutput(mean=mean, log_std=torch.log(torch.tensor([0.5, 2.0])))
    gen = torch.Generator().manual_seed(0)
    for temperature in (0.5, 2.0):
        actions = policy.sample(temperature, gen)
        np.testing.assert_allclose(
            actions.std(0).numpy(), [0.5 * temperature, 2.0 * temperature], rtol=0.02
        )
        a = actions[:3].double()
        std = torch.tensor([0.5, 2.0], dtype=torch.float64) * temperature
        ref = (
            -0.5 * ((a - mean[:3]) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
        ).sum(-1)
        head = PolicyOutput(mean=mean[:3], log_std=policy.log_std)
        np.testing.assert_allclose(
            head.log_prob(actions[:3], temperature).numpy(), ref.numpy(), rtol=1e-5
        )


def test_rollout_logprobs_are_at_the_sampling_temperature() -> None:
    ppo = PPO(make_envs(), mc.Fixed(0.5), SMALL, seed=0)
    rollout = ppo.collect(0.5)
    flat = rollout.features.reshape(-1, rollout.features.shape[-1])
    with torch.no_grad():
        logits = ppo.agent.policy(flat).logits
    expected = torch.log_softmax(logits / 0.5, -1).gather(-1, rollout.actions.reshape(-1, 1))
    torch.testing.assert_close(rollout.logprobs.reshape(-1), expected.reshape(-1))


def test_global_rng_is_never_touched() -> None:
    torch.manual_seed(1234)
    np.random.seed(1234)  # noqa: NPY002 (the global RNG is what this test watches)
    before_torch = torch.get_rng_state()
    before_np = np.random.get_state()[1].copy()  # noqa: NPY002
    ppo = PPO(make_envs(), mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=0), SMALL, seed=0)
    ppo.iterate()
    assert torch.equal(torch.get_rng_state(), before_torch)
    np.testing.assert_array_equal(np.random.get_state()[1], before_np)  # noqa: NPY002


# --- TAMPO's Counterfactual for PPO -----------------------------------------------------------
def independent_gae(rewards, values, next_value, terminated, truncated, valid, gamma, lam):
    """Per sub-environment, per episode: A_t = sum_l (gamma lam)^l delta_{t+l} up to its end."""
    steps, n = rewards.shape
    adv = np.zeros((steps, n))
    for i in range(n):
        v_next = np.append(values[1:, i], next_value[i])  # next-step autoreset: s_{t+1} is row t+1
        delta = rewards[:, i] + gamma * (1 - terminated[:, i]) * v_next - values[:, i]
        for t in range(steps):
            if not valid[t, i]:
                continue
            total, discount = 0.0, 1.0
            for u in range(t, steps):
                total += discount * delta[u]
                if terminated[u, i] or truncated[u, i]:
                    break
                discount *= gamma * lam
            adv[t, i] = total
    return adv


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_tampo_counterfactual_equals_an_independent_computation(env_id: str) -> None:
    # Short time limits so the rollout holds terminations, truncations and autoreset rows.
    envs = make_envs(env_id, num_envs=3, max_episode_steps=9)
    ctl = mc.TAMPO(mc.Discrete([0.5, 0.8, 1.0, 1.6]), seed=0)
    config = PPOConfig(num_steps=40, gamma=0.9, gae_lambda=0.7, hidden_sizes=(16,))
    ppo = PPO(envs, ctl, config, seed=3)
    decision = ctl.sample()
    rollout = ppo.collect(decision.value)
    feedback = ppo.meta_feedback(decision, rollout)
    assert isinstance(feedback, mc.Counterfactual)

    valid = rollout.valid.numpy()
    assert (~valid).any() and rollout.truncated.numpy().any()
    # Log-likelihoods of the sampled actions at every virtual T, in float64, from scratch.
    flat = rollout.features.reshape(-1, rollout.features.shape[-1])[valid.reshape(-1)]
    actions = rollout.actions.reshape(-1, *rollout.actions.shape[2:])
    actions = actions[torch.as_tensor(valid.reshape(-1))].double().numpy()
    with torch.no_grad():
        out = ppo.agent.policy(flat)
    columns = []
    for temperature in decision.virtual:
        if out.logits is not None:
            z = out.logits.double().numpy() / temperature
            z = z - z.max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            columns.append(logp[np.arange(len(actions)), actions.astype(int)])
        else:
            mean, std = (
                out.mean.double().numpy(),
                np.exp(out.log_std.detach().double().numpy()) * temperature,
            )
            columns.append(
                (-0.5 * ((actions - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(
                    -1
                )
            )
    loglik = np.stack(columns, axis=1)
    adv = independent_gae(
        rollout.rewards.double().numpy(),
        rollout.values.double().numpy(),
        rollout.next_value.double().numpy(),
        rollout.terminated.numpy(),
        rollout.truncated.numpy(),
        valid,
        0.9,
        0.7,
    )[valid]
    adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)

    np.testing.assert_allclose(feedback.loglik, loglik, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(feedback.advantages, adv, rtol=1e-4, atol=1e-5)
    assert feedback.loglik.shape == (int(valid.sum()), len(decision.virtual))
    ctl.update(feedback)  # and TAMPO learns from it


def test_virtual_loglik_matches_the_tempered_log_prob() -> None:
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    actions = torch.arange(7) % 5
    out = virtual_loglik(PolicyOutput(logits=logits), actions, [0.5, 1.0, 3.0])
    for j, temperature in enumerate([0.5, 1.0, 3.0]):
        torch.testing.assert_close(
            out[:, j], PolicyOutput(logits=logits).log_prob(actions, temperature)
        )


@pytest.mark.parametrize(
    ("make_ctl", "kind"),
    [
        (lambda: mc.MetaGradient(mc.Box(0.3, 3.0, log=True), seed=0), mc.Counterfactual),
        (lambda: mc.SlidingWindowUCB(mc.Discrete([0.5, 1.0, 2.0]), seed=0), mc.Outcome),
        (
            lambda: mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=2, target=0.5),
            mc.EntropyObservation,
        ),
        (lambda: mc.Schedule.linear(2.0, 0.5, steps=3), mc.Counterfactual),
    ],
)
def test_every_controller_plugs_in_with_the_feedback_it_accepts(make_ctl, kind) -> None:
    ctl = make_ctl()
    seen = []
    update = ctl.update

    def spy(feedback):
        seen.append(type(feedback))
        return update(feedback)

    ctl.update = spy
    ppo = PPO(make_envs(max_episode_steps=10), ctl, SMALL, seed=0)
    temps = [ppo.iterate()["temperature"] for _ in range(3)]
    assert seen == [kind] * 3
    assert all(ctl.space.contains(t) for t in temps)


# --- resume -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "env_kwargs", "make_ctl"),
    [
        ("CartPole-v1", {}, lambda s: mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=s)),
        (
            "Pendulum-v1",
            {"max_episode_steps": 20},
            lambda s: mc.MetaGradient(mc.Box(0.3, 3.0, log=True), seed=s),
        ),
        (
            "metactl/Bandit-v0",
            {"variant": "drifting", "drift_period": 7},
            lambda s: mc.SlidingWindowUCB(mc.Discrete([0.5, 1.0, 2.0]), seed=s),
        ),
        (
            "FrozenLake-v1",
            {"is_slippery": True},
            lambda s: mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=s),
        ),
    ],
)
def test_resume_equals_an_uninterrupted_run(tmp_path: Path, env_id, env_kwargs, make_ctl) -> None:
    total, split = 5, 2
    straight = PPO(make_envs(env_id, **env_kwargs), make_ctl(0), SMALL, seed=1)
    straight_metrics = [straight.iterate() for _ in range(total)]

    first = PPO(make_envs(env_id, **env_kwargs), make_ctl(0), SMALL, seed=1)
    metrics = [first.iterate() for _ in range(split)]
    first.save(tmp_path / "ckpt.pt")
    # A different seed everywhere: everything that matters must come from the checkpoint.
    resumed = PPO(make_envs(env_id, **env_kwargs), make_ctl(99), SMALL, seed=1)
    resumed.load(tmp_path / "ckpt.pt")
    metrics += [resumed.iterate() for _ in range(total - split)]

    a, b = params(straight), params(resumed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert straight.episodes == resumed.episodes
    assert json.dumps(straight.controller.state_dict()) == json.dumps(
        resumed.controller.state_dict()
    )
    for m1, m2 in zip(straight_metrics, metrics, strict=True):
        assert json.dumps(m1) == json.dumps(m2)  # NaN-safe exact comparison


def test_checkpoint_loads_with_weights_only_and_holds_json_controller_state(tmp_path: Path) -> None:
    ppo = PPO(make_envs(), mc.TAMPO(mc.Discrete([0.5, 1.0]), seed=0), SMALL, seed=0)
    ppo.iterate()
    ppo.save(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert json.loads(state["controller"])["controller"] == "TAMPO"
    assert json.loads(state["progress"])["iteration"] == 1


# --- bad settings ---------------------------------------------------------------------------
class NegativeTemperature(mc.Fixed):
    def sample(self):
        d = super().sample()
        return mc.Decision(-1.0, d.virtual, d.arm, d.virtual_arms, d.step, d.source)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: PPO(make_envs(), mc.Fixed(0.0), SMALL), "controller"),
        (lambda: PPO(make_envs(), mc.MetaGradient(mc.Box(0.0, 2.0), seed=0), SMALL), "controller"),
        (
            lambda: PPO(make_envs(), mc.Fixed(1.0), PPOConfig(num_steps=2, num_minibatches=7)),
            "num_minibatches",
        ),
        (lambda: PPOConfig(num_steps=0), "num_steps"),
        (lambda: PPOConfig(gamma=1.5), "gamma"),
        (lambda: PPO(gym.make("CartPole-v1"), mc.Fixed(1.0)), "envs"),
        (
            lambda: PPO(make_envs(vector_kwargs={"autoreset_mode": "SameStep"}), mc.Fixed(1.0)),
            "envs",
        ),
        (
            lambda: PPO(
                make_envs(),
                mc.Fixed(1.0),
                SMALL,
                agent=ActorCritic(
                    gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), generator=torch.Generator()
                ),
            ),
            "agent",
        ),
        (lambda: PPO(make_envs(), mc.Fixed(1.0), SMALL).collect(0.0), "temperature"),
        (lambda: PPO(make_envs(), NegativeTemperature(1.0), SMALL).iterate(), "temperature"),
        (lambda: PPO(make_envs(), mc.Fixed(1.0), SMALL, seed=-1), "seed"),
    ],
)
def test_bad_settings_raise_value_errors_naming_the_argument(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_loading_into_a_different_number_of_envs_names_num_envs(tmp_path: Path) -> None:
    ppo = PPO(make_envs(num_envs=3), mc.Fixed(1.0), SMALL, seed=0)
    ppo.save(tmp_path / "c.pt")
    other = PPO(make_envs(num_envs=2), mc.Fixed(1.0), SMALL, seed=0)
    with pytest.raises(ValueError, match="num_envs"):
        other.load(tmp_path / "c.pt")
    changed = PPO(make_envs(num_envs=3), mc.Fixed(1.0), PPOConfig(num_steps=8, hidden_sizes=(16,)))
    with pytest.raises(ValueError, match="config"):
        changed.load(tmp_path / "c.pt")


# --- it learns ----------------------------------------------------------------------------
CARTPOLE = PPOConfig(
    num_steps=32,
    learning_rate=1e-3,
    anneal_lr_timesteps=100_000,
    gamma=0.98,
    gae_lambda=0.8,
    num_minibatches=1,
    update_epochs=20,
    ent_coef=0.0,
)


@pytest.mark.slow
def test_ppo_solves_cartpole() -> None:
    ppo = PPO(make_envs(num_envs=8), mc.Fixed(1.0), CARTPOLE, seed=0)
    last10 = 0.0
    while ppo.global_step < 60_000:
        ppo.iterate()
        if len(ppo.episodes) >= 10:
            last10 = float(np.mean([r for _, r, _ in ppo.episodes[-10:]]))
            if last10 >= 195:
                break
    assert last10 >= 195, (
        f"mean return of the last 10 episodes {last10} after {ppo.global_step} steps"
    )


def test_refused_checkpoint_changes_nothing() -> None:
    source = PPO(make_envs(), mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=0), SMALL, seed=0)
    source.iterate()
    state = source.state_dict()
    # Same network and config, but a controller over other arms: the controller state is refused.
    target = PPO(make_envs(), mc.TAMPO(mc.Discrete([0.5, 1.0]), seed=0), SMALL, seed=5)
    params = [p.detach().clone() for p in target.agent.parameters()]
    controller_before = target.controller.state_dict()
    with pytest.raises(ValueError, match="space mismatch"):
        target.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(params, target.agent.parameters(), strict=True))
    assert target.controller.state_dict() == controller_before


class OutcomesOnly(mc.SlidingWindowUCB):
    accepts = (mc.Outcomes,)


class LearnsNothing(mc.Fixed):
    accepts = ()


def test_controller_refusals_are_the_core_check_and_its_error() -> None:
    # The same check as MetaGRPOTrainer's, with PPO's feedback: every metactl feedback type.
    for ctl in (mc.Fixed(0.0), mc.MetaGradient(mc.Box(0.0, 2.0), seed=0), LearnsNothing(1.0)):
        with pytest.raises(mc.IncompatibleController, match="controller"):
            PPO(make_envs(), ctl, SMALL)
    with pytest.raises(mc.IncompatibleController, match="expected a metactl controller"):
        PPO(make_envs(), 1.0, SMALL)  # type: ignore[arg-type]


def test_a_controller_that_accepts_only_outcomes_gets_outcomes() -> None:
    ctl = OutcomesOnly(mc.Discrete([0.5, 1.0, 2.0]), seed=0)
    ppo = PPO(make_envs(max_episode_steps=10), ctl, SMALL, seed=0)
    decision = ctl.sample()
    feedback = ppo.meta_feedback(decision, ppo.collect(decision.value))
    assert isinstance(feedback, mc.Outcomes)
    assert feedback.decisions == (decision,)


# --- a refused checkpoint changes nothing: every key missing, every key wrong ---------------------
def _tampering_agent() -> PPO:
    # Short episodes, so the replay log holds RNG starts (autoresets) as well as seeded ones.
    ctl = mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=0)
    ppo = PPO(make_envs(max_episode_steps=10), ctl, SMALL, seed=0)
    ppo.iterate()
    return ppo


@pytest.fixture(scope="module")
def good_checkpoint() -> dict:
    source = _tampering_agent()
    source.iterate()
    source.iterate()
    return source.state_dict()


def _progress(key: str, value) -> Callable[[dict], None]:
    def mutate(state: dict) -> None:
        progress = json.loads(state["progress"])
        progress[key] = value(progress) if callable(value) else value
        state["progress"] = json.dumps(progress)

    return mutate


def _del_progress(key: str) -> Callable[[dict], None]:
    def mutate(state: dict) -> None:
        progress = json.loads(state["progress"])
        del progress[key]
        state["progress"] = json.dumps(progress)

    return mutate


def _set(key: str, value) -> Callable[[dict], None]:
    def mutate(state: dict) -> None:
        state[key] = value(state) if callable(value) else value

    return mutate


def _adam(index: int, key: str, value) -> Callable[[dict], None]:
    def mutate(state: dict) -> None:
        entry = state["optimizer"]["state"][index]
        entry[key] = value(entry[key])

    return mutate


def _group(key: str, value) -> Callable[[dict], None]:
    def mutate(state: dict) -> None:
        state["optimizer"]["param_groups"][0][key] = value

    return mutate


def _first_weight(value) -> Callable[[dict], None]:
    def mutate(state: dict) -> None:
        name = next(iter(state["agent"]))
        state["agent"][name] = value(state["agent"][name])

    return mutate


def _env_log(edit) -> Callable[[dict], None]:
    def mutate(state: dict) -> None:
        progress = json.loads(state["progress"])
        edit(progress["env_log"])
        state["progress"] = json.dumps(progress)

    return mutate


def _rng_start(log: dict, edit) -> None:
    i = next(i for i, s in enumerate(log["starts"]) if "rng" in s)
    edit(log["starts"][i]["rng"])


def _controller(edit) -> Callable[[dict], None]:
    def mutate(state: dict) -> None:
        controller = json.loads(state["controller"])
        edit(controller)
        state["controller"] = json.dumps(controller)

    return mutate


CHECKPOINT_KEYS = ["format_version", "agent", "optimizer", "generator", "next_obs", "controller"]
PROGRESS_KEYS = [
    "iteration",
    "global_step",
    "seed",
    "num_envs",
    "config",
    "autoreset",
    "episode_return",
    "episode_length",
    "episodes",
    "env_log",
]
TAMPERED = [
    *[(f"missing {k}", lambda s, k=k: s.pop(k), k) for k in [*CHECKPOINT_KEYS, "progress"]],
    *[(f"missing progress.{k}", _del_progress(k), k) for k in PROGRESS_KEYS],
    ("format_version 2", _set("format_version", 2), "format_version"),
    ("format_version true", _set("format_version", True), "format_version"),
    ("agent not a dict", _set("agent", [1, 2]), "agent"),
    ("agent extra key", lambda s: s["agent"].__setitem__("x", torch.zeros(1)), "agent"),
    ("agent wrong shape", _first_weight(lambda w: torch.zeros(w.shape[0] + 1)), "agent"),
    ("agent wrong dtype", _first_weight(lambda w: w.double()), "agent"),
    ("agent NaN", _first_weight(lambda w: torch.full_like(w, math.nan)), "agent"),
    ("optimizer not Adam's", _set("optimizer", {"state": {}}), "optimizer"),
    ("optimizer no groups", lambda s: s["optimizer"].__setitem__("param_groups", []), "optimizer"),
    ("adam exp_avg shape", _adam(0, "exp_avg", lambda t: torch.zeros(3)), r"optimizer\.state"),
    ("adam exp_avg NaN", _adam(0, "exp_avg", lambda t: t * math.nan), r"optimizer\.state"),
    ("adam negative v", _adam(1, "exp_avg_sq", lambda t: -1 - t), "second moments"),
    ("adam step -1", _adam(0, "step", lambda t: torch.tensor(-1.0)), r"\.step"),
    ("adam step 1.5", _adam(0, "step", lambda t: torch.tensor(1.5)), r"\.step"),
    ("adam missing moment", lambda s: s["optimizer"]["state"][0].pop("exp_avg"), "exp_avg"),
    ("adam unknown param", lambda s: s["optimizer"]["state"].__setitem__(99, {}), "optimizer"),
    ("adam betas", _group("betas", (0.5, 0.5)), "betas"),
    ("adam lr inf", _group("lr", math.inf), r"\.lr"),
    ("adam params", _group("params", [0]), r"\.params"),
    ("generator short", _set("generator", torch.zeros(3, dtype=torch.uint8)), "generator"),
    ("generator float", _set("generator", lambda s: s["generator"].float()), "generator"),
    ("generator list", _set("generator", [1, 2, 3]), "generator"),
    ("next_obs shape", _set("next_obs", lambda s: s["next_obs"][:2]), "next_obs"),
    ("next_obs dtype", _set("next_obs", lambda s: s["next_obs"].double()), "next_obs"),
    ("next_obs NaN", _set("next_obs", lambda s: s["next_obs"] * math.nan), "next_obs"),
    ("next_obs numpy", _set("next_obs", lambda s: s["next_obs"].numpy()), "next_obs"),
    # Well formed but not where the replay log leads: refused only after replaying, so the
    # environments must be replayed back.
    ("next_obs moved", _set("next_obs", lambda s: s["next_obs"] + 0.5), "env_log"),
    ("controller not JSON", _set("controller", "{"), "controller"),
    ("controller a list", _set("controller", "[]"), "controller"),
    ("controller bytes", _set("controller", b"{}"), "controller"),
    ("controller other space", _controller(lambda c: c.update(space_fingerprint="0")), "space"),
    (
        "controller NaN",
        _controller(lambda c: c["params"].__setitem__("ema_advantages", [math.nan] * 3)),
        "ema_advantages",
    ),
    ("progress not JSON", _set("progress", "{"), "progress"),
    ("progress a list", _set("progress", "[1]"), "progress"),
    ("iteration -1", _progress("iteration", -1), "iteration"),
    ("iteration text", _progress("iteration", "3"), "iteration"),
    ("global_step 1.5", _progress("global_step", 1.5), "global_step"),
    ("seed -1", _progress("seed", -1), "seed"),
    ("num_envs", _progress("num_envs", 2), "num_envs"),
    ("config", _progress("config", lambda p: {**p["config"], "gamma": 0.5}), "config"),
    ("config not a dict", _progress("config", 1), "config"),
    ("autoreset ints", _progress("autoreset", [0, 0, 0]), "autoreset"),
    ("autoreset short", _progress("autoreset", [False]), "autoreset"),
    ("episode_return NaN", _progress("episode_return", [math.nan] * 3), "episode_return"),
    ("episode_length -1", _progress("episode_length", [-1, 0, 0]), "episode_length"),
    ("episodes text", _progress("episodes", "x"), "episodes"),
    ("episodes bad return", _progress("episodes", [[1, "x", 2]]), "episodes"),
    ("episodes short", _progress("episodes", [[1, 2.0]]), "episodes"),
    ("env_log not a dict", _progress("env_log", [1]), "env_log"),
    ("env_log starts short", _env_log(lambda log: log["starts"].pop()), "env_log"),
    ("env_log start kind", _env_log(lambda log: log["starts"].__setitem__(0, {})), "env_log"),
    ("env_log seed -1", _env_log(lambda log: log["starts"].__setitem__(0, {"seed": -1})), "seed"),
    (
        "env_log rng inc even",
        _env_log(lambda log: _rng_start(log, lambda r: r["state"].__setitem__("inc", 2))),
        "inc",
    ),
    (
        "env_log rng float state",
        _env_log(lambda log: _rng_start(log, lambda r: r["state"].__setitem__("state", 1.5))),
        "rng",
    ),
    ("env_log action", _env_log(lambda log: log["actions"][0].append(7)), "actions"),
    ("env_log action text", _env_log(lambda log: log["actions"][0].append("a")), "actions"),
]


def _snapshot(ppo: PPO) -> dict:
    opt = ppo.optimizer.state_dict()
    return {
        "params": params(ppo),
        "adam": {
            i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in e.items()}
            for i, e in opt["state"].items()
        },
        "groups": json.dumps(opt["param_groups"]),
        "controller": json.dumps(ppo.controller.state_dict()),
        "generator": ppo.generator.get_state().clone(),
        "progress": (ppo.iteration, ppo.global_step, list(ppo.episodes)),
        "envs": json.dumps(ppo.env_cursor.state_dict()),
        "obs": np.array(ppo.env_cursor.obs, copy=True),
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a["params"].keys() == b["params"].keys()
    for key in a["params"]:
        np.testing.assert_array_equal(a["params"][key], b["params"][key], err_msg=key)
    assert a["adam"].keys() == b["adam"].keys()
    for i in a["adam"]:
        for key, value in a["adam"][i].items():
            assert torch.equal(value, b["adam"][i][key]), (i, key)
    for key in ("groups", "controller", "progress", "envs"):
        assert a[key] == b[key], key
    assert torch.equal(a["generator"], b["generator"])
    np.testing.assert_array_equal(a["obs"], b["obs"])


@pytest.mark.parametrize(
    ("mutate", "match"), [t[1:] for t in TAMPERED], ids=[t[0] for t in TAMPERED]
)
def test_a_tampered_checkpoint_is_refused_and_the_run_is_unchanged(
    good_checkpoint: dict, mutate, match: str
) -> None:
    state = copy.deepcopy(good_checkpoint)
    mutate(state)
    target, twin = _tampering_agent(), _tampering_agent()  # twin: never given the checkpoint
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    _assert_same(_snapshot(target), _snapshot(twin))
    # And the run continues exactly as the twin's.
    assert json.dumps(target.iterate()) == json.dumps(twin.iterate())
    _assert_same(_snapshot(target), _snapshot(twin))


def test_the_untampered_checkpoint_loads(good_checkpoint: dict) -> None:
    target = _tampering_agent()
    target.load_state_dict(copy.deepcopy(good_checkpoint))
    assert target.iteration == 3
