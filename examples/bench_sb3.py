"""Benchmark: the SB3 adapter's cost, as a wall-time ratio against plain SB3 PPO.

    python examples/bench_sb3.py                 # CartPole-v1 and Pendulum-v1 x 8 envs, 6 pairs each
    python examples/bench_sb3.py --repeats 2     # quicker, noisier
    python examples/bench_sb3.py --policy --tasks   # the tempered policy's own cost only

Each pair trains the same PPO twice with the same seed, side by side in this process: plain
(``PPO("MlpPolicy", ...)``, no callback) and adapted (``PPO(TemperatureMlpPolicy, ...)`` with
``MetaTemperatureCallback(mc.TAMPO())``: 10 arms, so every rollout is scored at 10 virtual
temperatures). The order alternates from pair to pair (ABBA) so that drift in the machine's load
falls on both sides. One JSON object per task:

- ``wall_ratio``: median over pairs of adapted / plain wall time of ``learn``; the target is at
  most 1.05. ``wall_ratio_total``: the ratio of the summed times. ``wall_ratio_min``: the
  fastest adapted run over the fastest plain one (``timeit``'s estimator: the least disturbed
  runs; on a shared machine the medians carry other jobs' noise).
- ``cpu_ratio``: the same with this process's CPU time (less sensitive to other jobs on a
  shared machine).
- ``callback_share``: median over the adapted runs of the fraction of ``learn``'s wall time
  spent inside the callback's hooks (sampling, the per-step copy of rewards, scoring the buffer
  and updating the controller): the adapter's cost without the noise of the pairing. What it
  leaves out, the tempered distribution (one division or addition per forward), is tiny.
- ``plain_s``, ``adapted_s``: the wall times of each pair.

``--policy`` adds one more object: the tempered distribution's own cost, SB3's
``evaluate_actions`` plus backward on a minibatch of 64 (Pendulum's policy) at T = 1 (SB3's
code) and at T = 1.3, and the rollout forward on 8 observations; the fastest of 15 interleaved
repeats of each.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import metactl as mc
from metactl.integrations.sb3 import MetaTemperatureCallback, TemperatureMlpPolicy


@dataclass(frozen=True)
class Task:
    env_id: str
    num_envs: int
    n_steps: int
    """steps per environment per rollout"""
    rollouts: int


TASKS = {
    # PPO's defaults: one environment, 2048 steps per rollout, 10 epochs of minibatches of 64.
    "CartPole-v1": Task("CartPole-v1", 1, 2048, 2),
    # A Box (Gaussian) task on 8 environments; 256 steps each, so a rollout is 2048 steps.
    "Pendulum-v1x8": Task("Pendulum-v1", 8, 256, 2),
}


class TimedCallback(MetaTemperatureCallback):
    """MetaTemperatureCallback that adds up the wall time spent in its hooks."""

    seconds = 0.0

    def _on_rollout_start(self) -> None:
        start = time.perf_counter()
        super()._on_rollout_start()
        self.seconds += time.perf_counter() - start

    def _on_step(self) -> bool:
        start = time.perf_counter()
        result = super()._on_step()
        self.seconds += time.perf_counter() - start
        return result

    def _on_rollout_end(self) -> None:
        start = time.perf_counter()
        super()._on_rollout_end()
        self.seconds += time.perf_counter() - start


def train_once(task: Task, adapted: bool, seed: int) -> tuple[float, float, float]:
    """(wall, CPU, in-callback wall) seconds of ``learn`` for one run."""
    envs = make_vec_env(task.env_id, n_envs=task.num_envs, seed=seed)
    policy: Any = TemperatureMlpPolicy if adapted else "MlpPolicy"
    model = PPO(policy, envs, n_steps=task.n_steps, seed=seed, device="cpu")
    callback = TimedCallback(mc.TAMPO(seed=seed)) if adapted else None
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(task.rollouts * task.n_steps * task.num_envs, callback=callback)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    envs.close()
    return wall, cpu, 0.0 if callback is None else callback.seconds


def policy_cost(repeats: int = 15) -> dict[str, Any]:
    """Microseconds per minibatch update and per rollout forward, at T = 1 and T = 1.3."""
    policy: Any = PPO(TemperatureMlpPolicy, "Pendulum-v1", seed=0, device="cpu").policy
    obs, actions, obs8 = torch.randn(64, 3), torch.randn(64, 1), torch.randn(8, 3)

    def update(n: int = 200) -> float:
        start = time.perf_counter()
        for _ in range(n):
            values, log_prob, entropy = policy.evaluate_actions(obs, actions)
            (log_prob.mean() + entropy.mean() + values.mean()).backward()
        return (time.perf_counter() - start) / n

    def forward(n: int = 500) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(n):
                policy(obs8)
        return (time.perf_counter() - start) / n

    best: dict[str, float] = {}
    for rep in range(repeats):
        for temperature in (1.0, 1.3) if rep % 2 == 0 else (1.3, 1.0):
            policy.temperature = temperature
            for name, fn in (("update", update), ("forward", forward)):
                key = f"{name}_us_T{temperature}"
                best[key] = min(best.get(key, float("inf")), fn() * 1e6)
    return {
        "task": "policy",
        "repeats": repeats,
        **{k: round(v, 1) for k, v in sorted(best.items())},
        "update_ratio": round(best["update_us_T1.3"] / best["update_us_T1.0"], 4),
        "forward_ratio": round(best["forward_us_T1.3"] / best["forward_us_T1.0"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--repeats", type=int, default=6, help="pairs per task")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--policy", action="store_true", help="also time the tempered policy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.policy:
        print(json.dumps(policy_cost()), flush=True)

    for name in args.tasks:
        task = TASKS[name]
        train_once(task, True, seed=999)  # warm-up: imports, allocator, first-call costs
        train_once(task, False, seed=999)
        plain: list[tuple[float, float, float]] = []
        adapted: list[tuple[float, float, float]] = []
        for pair in range(args.repeats):
            order = (False, True) if pair % 2 == 0 else (True, False)
            for is_adapted in order:
                (adapted if is_adapted else plain).append(train_once(task, is_adapted, pair))
        wall_p, cpu_p, _ = np.array(plain).T
        wall_a, cpu_a, hooks_a = np.array(adapted).T
        print(
            json.dumps(
                {
                    "task": name,
                    "env": task.env_id,
                    "num_envs": task.num_envs,
                    "timesteps": task.rollouts * task.n_steps * task.num_envs,
                    "controller": "TAMPO (10 arms)",
                    "repeats": args.repeats,
                    "wall_ratio": round(float(np.median(wall_a / wall_p)), 4),
                    "wall_ratio_total": round(float(wall_a.sum() / wall_p.sum()), 4),
                    "wall_ratio_min": round(float(wall_a.min() / wall_p.min()), 4),
                    "cpu_ratio": round(float(np.median(cpu_a / cpu_p)), 4),
                    "callback_share": round(float(np.median(hooks_a / wall_a)), 4),
                    "plain_s": [round(float(t), 3) for t in wall_p],
                    "adapted_s": [round(float(t), 3) for t in wall_a],
                    "torch_threads": args.threads,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
