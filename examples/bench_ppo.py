"""Benchmark: SB3's PPO under TAMPO, MetaGradient (Box) and fixed temperatures.

    python examples/bench_ppo.py                          # everything: 5 tasks x 5 controllers x 5 seeds
    python examples/bench_ppo.py --envs CartPole-v1 --seeds 2 --scale 0.3     # a smoke run

Stable-Baselines3's PPO with ``TemperatureMlpPolicy`` and ``MetaTemperatureCallback``
(``metactl.integrations.sb3``). Every (environment, controller) pair runs on the same seeds
side by side, and each pair prints one JSON object:

- ``final_return``: the final policy evaluated at T = 1 (its own distribution, the analogue
  of decoding at a fixed temperature after training) over ``eval_episodes`` episodes;
  mean over seeds and the 95% t-interval.
- ``auc``: area under the training curve, i.e. the mean over 20 equal step bins of the mean
  return of the training episodes that ended in the bin (the behaviour policy's returns, at
  the temperatures actually used), mean and 95% t-interval over seeds.
- ``wall_s``: mean wall time per run; ``wall_ratio``: against ``fixed-1.0`` on the same env in
  this process run (timings on a shared machine are only comparable as ratios).

With ``--out FILE`` each finished run is also appended to FILE as one JSON line, so that a run
cut short still says how far it got.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from scipy import stats
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env

import metactl as mc
import metactl.integrations.gym  # registers metactl/Bandit-v0, metactl/TokenSequence-v0
from metactl.integrations.sb3 import MetaTemperatureCallback, TemperatureMlpPolicy

GRID = (0.5, 0.7, 1.0, 1.4, 2.0)  # TAMPO's arms: the fixed temperatures' range, finer
NUM_ENVS = 8


@dataclass(frozen=True)
class Task:
    env_id: str
    kwargs: dict[str, Any]
    timesteps: int
    gamma: float
    eval_episodes: int


TASKS: dict[str, Task] = {
    "CartPole-v1": Task("CartPole-v1", {}, 16_000, 0.98, 20),
    "Acrobot-v1": Task("Acrobot-v1", {}, 20_000, 0.99, 20),
    "FrozenLake-v1": Task("FrozenLake-v1", {"is_slippery": True}, 32_000, 0.99, 200),
    # Harder than the defaults: 8 tokens, 4 must match one of 2 prompts' targets (about 1.1%
    # of uniform sequences pass), so that exploration matters.
    "metactl/TokenSequence-v0": Task(
        "metactl/TokenSequence-v0",
        {"vocab_size": 8, "length": 8, "difficulty": 4, "num_prompts": 2},
        24_000,
        0.99,
        400,
    ),
    "metactl/Bandit-v0": Task(
        "metactl/Bandit-v0", {"variant": "needle", "num_arms": 10}, 10_000, 0.99, 2000
    ),
}

CONTROLLERS: dict[str, Callable[[int], mc.Controller]] = {
    "tampo": lambda seed: mc.TAMPO(mc.Discrete(GRID), seed=seed),
    "metagradient-box": lambda seed: mc.MetaGradient(mc.Box(0.5, 2.0, log=True), seed=seed),
    "fixed-0.5": lambda seed: mc.Fixed(0.5),
    "fixed-1.0": lambda seed: mc.Fixed(1.0),
    "fixed-2.0": lambda seed: mc.Fixed(2.0),
}


def make_model(task: Task, timesteps: int, seed: int) -> PPO:
    """One PPO recipe for every task (tuned on CartPole, where it solves in ~10k steps).

    8 envs x 32 steps per rollout, Adam 1e-3 annealed linearly to 0, GAE lambda 0.8, 20 epochs
    of one minibatch, no entropy bonus (so that the temperature is the only exploration knob
    being compared). Everything else is SB3's default (separate 64-64 tanh MLPs, clip 0.2,
    advantage normalisation, max_grad_norm 0.5).
    """
    envs = make_vec_env(lambda: gym.make(task.env_id, **task.kwargs), n_envs=NUM_ENVS, seed=seed)
    return PPO(
        TemperatureMlpPolicy,
        envs,
        n_steps=32,
        batch_size=32 * NUM_ENVS,
        n_epochs=20,
        learning_rate=lambda progress_remaining: 1e-3 * progress_remaining,
        gamma=task.gamma,
        gae_lambda=0.8,
        ent_coef=0.0,
        seed=seed,
        device="cpu",
    )


class EpisodeLog(BaseCallback):
    """(timestep, return) of every training episode, from SB3's Monitor."""

    def __init__(self) -> None:
        super().__init__()
        self.episodes: list[tuple[int, float]] = []
        self.temperatures: list[float] = []

    def _on_rollout_start(self) -> None:
        self.temperatures.append(self.model.policy.temperature)

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.episodes.append((self.num_timesteps, float(info["episode"]["r"])))
        return True


def evaluate(model: PPO, task: Task, episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` episodes of the policy sampled at T = 1."""
    model.policy.temperature = 1.0
    envs = make_vec_env(
        lambda: gym.make(task.env_id, **task.kwargs), n_envs=NUM_ENVS, seed=10_000 + seed
    )
    obs = envs.reset()
    returns: list[float] = []
    while len(returns) < episodes:
        actions, _ = model.predict(obs, deterministic=False)
        obs, _, _, infos = envs.step(actions)
        returns += [float(info["episode"]["r"]) for info in infos if "episode" in info]
    envs.close()
    return float(np.mean(returns[:episodes]))


def auc(episodes: list[tuple[int, float]], timesteps: int, bins: int = 20) -> float:
    """Mean over equal step bins of the mean training return in each bin (carried forward)."""
    edges = np.linspace(0, timesteps, bins + 1)
    steps = np.array([e[0] for e in episodes])
    rets = np.array([e[1] for e in episodes])
    values, last = [], 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = rets[(steps > lo) & (steps <= hi)]
        last = float(in_bin.mean()) if in_bin.size else last
        values.append(last)
    return float(np.mean(values))


def run(job: tuple[str, str, int, float]) -> dict[str, Any]:
    env_name, ctl_name, seed, scale = job
    torch.set_num_threads(1)
    task = TASKS[env_name]
    timesteps = int(task.timesteps * scale)
    start = time.perf_counter()
    model = make_model(task, timesteps, seed)
    log = EpisodeLog()
    meta = MetaTemperatureCallback(CONTROLLERS[ctl_name](seed))
    model.learn(timesteps, callback=CallbackList([meta, log]))
    wall = time.perf_counter() - start
    model.env.close()
    final = evaluate(model, task, max(1, int(task.eval_episodes * min(1.0, scale))), seed)
    return {
        "env": env_name,
        "controller": ctl_name,
        "seed": seed,
        "timesteps": model.num_timesteps,
        "final_return": final,
        "auc": auc(log.episodes, model.num_timesteps),
        "wall_s": wall,
        "mean_temperature": float(np.mean(log.temperatures)),
        "last_temperature": float(log.temperatures[-1]),
    }


def mean_ci(values: list[float]) -> tuple[float, list[float]]:
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, [mean, mean]
    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, [mean - half, mean + half]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--controllers", nargs="+", default=list(CONTROLLERS), choices=list(CONTROLLERS)
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every step budget")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default=None, help="append each run's JSON line to this file")
    args = parser.parse_args()

    # Task by task, so that a run cut short has whole tasks.
    jobs = [
        (env, ctl, seed, args.scale)
        for env in args.envs
        for seed in range(args.seeds)
        for ctl in args.controllers
    ]
    results = []
    with mp.get_context("fork").Pool(args.workers) as pool:
        for result in pool.imap(run, jobs, chunksize=1):
            results.append(result)
            if args.out is not None:
                with open(args.out, "a") as f:
                    f.write(json.dumps(result) + "\n")

    for env in args.envs:
        base = [r["wall_s"] for r in results if r["env"] == env and r["controller"] == "fixed-1.0"]
        for ctl in args.controllers:
            rows = [r for r in results if r["env"] == env and r["controller"] == ctl]
            final, final_ci = mean_ci([r["final_return"] for r in rows])
            area, area_ci = mean_ci([r["auc"] for r in rows])
            wall = float(np.mean([r["wall_s"] for r in rows]))
            line = {
                "env": env,
                "controller": ctl,
                "seeds": len(rows),
                "timesteps": rows[0]["timesteps"],
                "final_return": round(final, 4),
                "final_return_ci95": [round(v, 4) for v in final_ci],
                "auc": round(area, 4),
                "auc_ci95": [round(v, 4) for v in area_ci],
                "mean_temperature": round(float(np.mean([r["mean_temperature"] for r in rows])), 3),
                "wall_s": round(wall, 2),
                "wall_ratio": round(wall / float(np.mean(base)), 3) if base else None,
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
