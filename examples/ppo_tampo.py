"""PPO (with a critic) whose sampling temperature is a meta-policy: CleanRL-style, one file.

    python examples/ppo_tampo.py                                    # TAMPO on CartPole-v1
    python examples/ppo_tampo.py --controller fixed --temperature 1.0
    python examples/ppo_tampo.py --controller metagradient --env Acrobot-v1
    python examples/ppo_tampo.py --env Pendulum-v1 --total-timesteps 200000   # Gaussian actions
    python examples/ppo_tampo.py --env metactl/TokenSequence-v0 --total-timesteps 100000

The algorithm is metactl's own PPO (``metactl.integrations.ppo``: CleanRL's ppo.py with a
critic and GAE, discrete or Gaussian actions, exact resume); this script writes its loop out
top to bottom. The lines that make the temperature a meta-policy are marked ``# metactl:``:
pick the temperature once per rollout, roll out and compute ratios at it, and hand the
controller every step's log-likelihood at the virtual temperatures against its GAE advantage
(see docs/ppo.md). ``ppo.iterate()`` is the same five steps in one call.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import metactl as mc
import metactl.integrations.gym  # registers metactl/Bandit-v0, metactl/TokenSequence-v0
from metactl.integrations.ppo import PPO, PPOConfig


@dataclass
class Args:
    env: str = "CartPole-v1"
    """gymnasium id of the environment"""
    controller: str = "tampo"
    """tampo | metagradient (Box, continuous T) | fixed"""
    temperatures: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)
    """the arms of TAMPO"""
    temperature: float = 1.0
    """the temperature of --controller fixed"""
    seed: int = 1
    total_timesteps: int = 100_000
    num_envs: int = 8
    num_steps: int = 32
    learning_rate: float = 1e-3
    anneal_lr: bool = True
    gamma: float = 0.98
    gae_lambda: float = 0.8
    num_minibatches: int = 1
    update_epochs: int = 20
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    threads: int = 1
    log_every: int = 20
    """print a line every this many iterations"""


def parse_args(argv: list[str]) -> Args:
    """``--field value`` for every field of Args (tuples take several values, bools true/false)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(
                flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=default
            )
        elif isinstance(default, tuple):
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


def describe(controller: mc.Controller) -> str:
    """The meta-policy in a few characters."""
    if isinstance(controller, mc.TAMPO):
        return f"pi {np.round(controller.probs, 2).tolist()}"
    if isinstance(controller, mc.MetaGradient):
        return f"median T {controller.mean:.2f}, sigma {controller.sigma:.2f}"
    return ""


def recent_return(ppo: PPO, episodes: int = 20) -> float:
    """Mean return of the last ``episodes`` finished episodes (NaN before the first)."""
    returns = [episode_return for _, episode_return, _ in ppo.episodes[-episodes:]]
    return float(np.mean(returns)) if returns else float("nan")


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size

    # Seeding: the script owns the global RNGs. PPO draws only from its own torch.Generator
    # (seeded by seed=) and the controller only from its own numpy Generator.
    random.seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 (a script may own the global RNG)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    envs = gym.make_vec(args.env, num_envs=args.num_envs, vectorization_mode="sync")
    controller = make_controller(args)  # metactl: the temperature meta-policy
    config = PPOConfig(
        num_steps=args.num_steps,
        learning_rate=args.learning_rate,
        anneal_lr_timesteps=args.total_timesteps if args.anneal_lr else None,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        num_minibatches=args.num_minibatches,
        update_epochs=args.update_epochs,
        clip_coef=args.clip_coef,
        clip_vloss=False,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
    )
    ppo = PPO(envs, controller, config, seed=args.seed)
    print(f"{args.env}: {controller!r}")

    start = time.time()
    for iteration in range(1, num_iterations + 1):
        decision = controller.sample()  # metactl: one temperature per rollout
        # num_steps steps of every sub-environment at T (logits / T, or std * T), then GAE.
        rollout = ppo.collect(decision.value)
        # metactl: TAMPO's signal, steps in place of GRPO's trajectories:
        # loglik[i, j] = log pi_{T_j}(a_i | s_i), advantages[i] = step i's GAE advantage.
        feedback = ppo.meta_feedback(decision, rollout)
        if feedback is not None:  # None: nothing to learn from (e.g. no episode ended)
            controller.update(feedback)  # metactl
        ppo.learn(rollout)  # clipped-surrogate epochs; the ratios are at the rollout's T

        if iteration % args.log_every == 0 or iteration == num_iterations:
            print(
                f"step {ppo.global_step:>7}  return {recent_return(ppo):8.2f}  "
                f"T {decision.value:.3f}  {describe(controller)}  "
                f"sps {int(ppo.global_step / (time.time() - start))}"
            )
    print(f"final mean return (last 20 episodes): {recent_return(ppo):.2f}")
    envs.close()


if __name__ == "__main__":
    main(sys.argv[1:])
