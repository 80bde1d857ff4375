"""Benchmark: PPO with a critic under TAMPO, MetaGradient (Box) and fixed temperatures.

    python examples/bench_ppo.py                          # everything, 5 seeds (~20 min on 2 busy cores)
    python examples/bench_ppo.py --envs CartPole-v1 --seeds 2 --scale 0.3     # a smoke run

Every (environment, controller) pair runs on the same seeds side by side and prints one
JSON object:

- ``final_return``: the final policy evaluated at T = 1 (its own distribution, the analogue
  of decoding at a fixed temperature after training) over ``eval_episodes`` episodes;
  mean over seeds and the 95% t-interval.
- ``auc``: area under the training curve, i.e. the mean over 20 equal step bins of the mean
  return of the training episodes that ended in the bin (the behaviour policy's returns, at
  the temperatures actually used), mean and 95% t-interval over seeds.
- ``wall_s``: mean wall time per run; ``wall_ratio``: against ``fixed-1.0`` on the same env in
  this process run (timings on a shared machine are only comparable as ratios).
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

import gymnasium as gym
import numpy as np
import torch
from scipy import stats

import metactl as mc
import metactl.integrations.gym  # registers metactl/Bandit-v0, metactl/TokenSequence-v0
from metactl.integrations.ppo import PPO, PPOConfig

GRID = (0.5, 0.7, 1.0, 1.4, 2.0)  # TAMPO's arms: the fixed temperatures' range, finer


@dataclass(frozen=True)
class Task:
    env_id: str
    kwargs: dict
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


def config_for(task: Task, timesteps: int) -> PPOConfig:
    # One recipe for every task (tuned on CartPole, where it solves in ~10k steps); no entropy
    # bonus, so that the temperature is the only exploration knob being compared.
    return PPOConfig(
        num_steps=32,
        learning_rate=1e-3,
        anneal_lr_timesteps=timesteps,
        gamma=task.gamma,
        gae_lambda=0.8,
        num_minibatches=1,
        update_epochs=20,
        ent_coef=0.0,
    )


def evaluate(ppo: PPO, task: Task, episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` episodes of the current policy sampled at T = 1."""
    envs = gym.make_vec(task.env_id, num_envs=8, vectorization_mode="sync", **task.kwargs)
    generator = torch.Generator().manual_seed(10_000 + seed)
    obs, _ = envs.reset(seed=10_000 + seed)
    returns: list[float] = []
    running = np.zeros(8)
    autoreset = np.zeros(8, dtype=bool)
    with torch.no_grad():
        while len(returns) < episodes:
            action = ppo.agent.policy(ppo.agent.encode(obs)).sample(1.0, generator).numpy()
            obs, reward, term, trunc, _ = envs.step(action)
            running += np.where(autoreset, 0.0, reward)
            done = term | trunc
            returns += running[done].tolist()
            running[done] = 0.0
            autoreset = done
    envs.close()
    return float(np.mean(returns[:episodes]))


def auc(episodes: list[tuple[int, float, int]], timesteps: int, bins: int = 20) -> float:
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


def run(job: tuple[str, str, int, float]) -> dict:
    env_name, ctl_name, seed, scale = job
    torch.set_num_threads(1)
    task = TASKS[env_name]
    timesteps = int(task.timesteps * scale)
    envs = gym.make_vec(task.env_id, num_envs=8, vectorization_mode="sync", **task.kwargs)
    start = time.perf_counter()
    ppo = PPO(envs, CONTROLLERS[ctl_name](seed), config_for(task, timesteps), seed=seed)
    temps = [m["temperature"] for m in ppo.train(timesteps)]
    wall = time.perf_counter() - start
    envs.close()
    final = evaluate(ppo, task, max(1, int(task.eval_episodes * min(1.0, scale))), seed)
    return {
        "env": env_name,
        "controller": ctl_name,
        "seed": seed,
        "timesteps": ppo.global_step,
        "final_return": final,
        "auc": auc(ppo.episodes, ppo.global_step),
        "wall_s": wall,
        "mean_temperature": float(np.mean(temps)),
        "last_temperature": float(temps[-1]),
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
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    jobs = [
        (env, ctl, seed, args.scale)
        for env in args.envs
        for seed in range(args.seeds)
        for ctl in args.controllers
    ]
    with mp.get_context("fork").Pool(args.workers) as pool:
        results = pool.map(run, jobs, chunksize=1)

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
