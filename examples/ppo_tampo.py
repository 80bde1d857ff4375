"""Stable-Baselines3's PPO whose sampling temperature is a meta-policy: one runnable file.

    python examples/ppo_tampo.py                                    # TAMPO on CartPole-v1
    python examples/ppo_tampo.py --controller fixed --temperature 1.0
    python examples/ppo_tampo.py --controller metagradient --env Acrobot-v1
    python examples/ppo_tampo.py --env Pendulum-v1 --total-timesteps 200000   # Gaussian actions
    python examples/ppo_tampo.py --env metactl/TokenSequence-v0 --total-timesteps 100000
    python examples/ppo_tampo.py --algo a2c

The algorithm is SB3's own PPO (or A2C). The two lines that make the temperature a meta-policy
are marked ``# metactl:``: a policy whose action distribution reads a temperature (logits / T,
or std * T), and a callback that picks the temperature at each rollout start and, at each
rollout end, hands the controller every step's log-likelihood at the virtual temperatures
against its GAE advantage (see docs/sb3.md). The controller's state is saved as JSON beside
SB3's zip (``--save``).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env

import metactl as mc
import metactl.integrations.gym  # registers metactl/Bandit-v0, metactl/TokenSequence-v0
from metactl.integrations.sb3 import MetaTemperatureCallback, TemperatureMlpPolicy


@dataclass
class Args:
    env: str = "CartPole-v1"
    """gymnasium id of the environment"""
    algo: str = "ppo"
    """ppo | a2c"""
    controller: str = "tampo"
    """tampo | metagradient (Box, continuous T) | fixed"""
    temperatures: tuple[float, ...] = (0.5, 0.7, 1.0, 1.4, 2.0)
    """the arms of TAMPO"""
    temperature: float = 1.0
    """the temperature of --controller fixed"""
    seed: int = 1
    total_timesteps: int = 100_000
    num_envs: int = 8
    threads: int = 1
    save: str = ""
    """if set, save the model to this zip and the controller beside it (.metactl.json)"""


def parse_args(argv: list[str]) -> Args:
    """``--field value`` for every field of Args (tuples take several values)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, tuple):
            parser.add_argument(flag, type=float, nargs="+", default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    ns = parser.parse_args(argv)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(Args)}
    values["temperatures"] = tuple(values["temperatures"])
    return Args(**values)


def make_controller(args: Args) -> mc.Controller:
    if args.controller == "tampo":
        return mc.TAMPO(mc.Discrete(args.temperatures), seed=args.seed)
    if args.controller == "metagradient":
        return mc.MetaGradient(mc.Box(0.3, 3.0, log=True), seed=args.seed)
    if args.controller == "fixed":
        return mc.Fixed(args.temperature)
    raise ValueError(
        f"--controller: expected tampo, metagradient or fixed, got {args.controller!r}"
    )


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.algo not in ("ppo", "a2c"):
        raise ValueError(f"--algo: expected ppo or a2c, got {args.algo!r}")

    # Seeding: the script owns the global RNGs (SB3 samples actions and shuffles minibatches
    # with them; seed= below seeds them again, and the environments). The controller draws
    # only from its own numpy Generator.
    random.seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 (a script may own the global RNG)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    # A callable, not the id: make_vec_env would ask each env for render_mode="rgb_array".
    envs = make_vec_env(lambda: gym.make(args.env), n_envs=args.num_envs, seed=args.seed)
    algo = PPO if args.algo == "ppo" else A2C
    model = algo(TemperatureMlpPolicy, envs, seed=args.seed, verbose=1)  # metactl: the policy
    meta = MetaTemperatureCallback(make_controller(args))  # metactl: the temperature meta-policy
    print(f"{args.env}: {args.algo} with {meta.controller!r}")

    model.learn(args.total_timesteps, callback=meta)  # SB3 logs meta/temperature, meta/prob/...

    returns = [episode["r"] for episode in model.ep_info_buffer]
    print(f"mean return of the last {len(returns)} training episodes: {np.mean(returns):.2f}")
    if args.save:
        model.save(args.save)
        print(f"saved {args.save} and {meta.save(args.save)}")
    envs.close()


if __name__ == "__main__":
    main(sys.argv[1:])
