"""PPO (with a critic) whose sampling temperature is a meta-policy: CleanRL-style, one file.

    python examples/ppo_tampo.py                                    # TAMPO on CartPole-v1
    python examples/ppo_tampo.py --controller fixed --temperature 1.0
    python examples/ppo_tampo.py --controller metagradient --env Acrobot-v1
    python examples/ppo_tampo.py --env metactl/TokenSequence-v0 --total-timesteps 100000

The algorithm is CleanRL's ppo.py (discrete actions), written top to bottom. The lines that
metactl adds are marked ``# metactl:``: pick the temperature once per rollout, sample and
compute ratios at it, and hand the controller every step's log-likelihood at the virtual
temperatures against its GAE advantage (see docs/ppo.md). The library version of this loop,
with Gaussian actions and exact resume, is ``metactl.integrations.ppo.PPO``.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import metactl as mc
import metactl.integrations.gym
from metactl.integrations.torch import temperature_loglik


@dataclass
class Args:
    env: str = "CartPole-v1"
    """gymnasium id of an environment with discrete actions"""
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


def parse_args(argv: list[str]) -> Args:
    """``--field value`` for every field of Args (tuples take several values, bools true/false)."""
    import argparse

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


def encode(obs: np.ndarray, space: gym.Space) -> torch.Tensor:
    """Box observations as floats; Discrete ones (FrozenLake) and MultiDiscrete one-hot."""
    x = torch.as_tensor(obs)
    if isinstance(space, gym.spaces.Discrete):
        return F.one_hot(x.long(), int(space.n)).float()
    if isinstance(space, gym.spaces.MultiDiscrete):
        return torch.cat(
            [F.one_hot(x[:, j].long(), int(n)) for j, n in enumerate(space.nvec)], -1
        ).float()
    return x.reshape(x.shape[0], -1).float()


def layer_init(layer: nn.Linear, std: float = np.sqrt(2)) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_size: int, num_actions: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_size, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )  # fmt: skip
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_size, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, num_actions), std=0.01),
        )  # fmt: skip


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
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size

    # Seeding: the script owns the global RNGs; the controller has its own.
    random.seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 (a script may own the global RNG)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    envs = gym.make_vec(args.env, num_envs=args.num_envs, vectorization_mode="sync")
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), "discrete actions only"
    obs_space = envs.single_observation_space
    obs_size = encode(np.asarray([obs_space.sample()]), obs_space).shape[1]
    agent = Agent(obs_size, int(envs.single_action_space.n))
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    controller = make_controller(args)  # metactl: the temperature meta-policy

    obs_buf = torch.zeros((args.num_steps, args.num_envs, obs_size))
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long)
    logprobs = torch.zeros((args.num_steps, args.num_envs))
    logits_buf = torch.zeros((args.num_steps, args.num_envs, int(envs.single_action_space.n)))
    rewards = torch.zeros((args.num_steps, args.num_envs))
    terminated = torch.zeros((args.num_steps, args.num_envs))
    dones = torch.zeros((args.num_steps, args.num_envs))
    valid = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool)
    values = torch.zeros((args.num_steps, args.num_envs))

    start = time.time()
    global_step = 0
    next_obs, _ = envs.reset(seed=args.seed)
    autoreset = np.zeros(args.num_envs, dtype=bool)
    episode_return = np.zeros(args.num_envs)
    recent: list[float] = []
    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (
                1 - (iteration - 1) / num_iterations
            ) * args.learning_rate
        decision = controller.sample()  # metactl: one temperature per rollout
        temp = decision.value  # metactl

        for step in range(args.num_steps):
            global_step += args.num_envs
            x = encode(next_obs, obs_space)
            with torch.no_grad():
                logits = agent.actor(x)
                values[step] = agent.critic(x).squeeze(-1)
            dist = torch.distributions.Categorical(logits=logits / temp)  # metactl: pi_T
            action = dist.sample()
            obs_buf[step], actions[step], logits_buf[step] = x, action, logits
            logprobs[step] = dist.log_prob(action)
            # gymnasium's next-step autoreset: a sub-env that ended last step resets now and
            # ignores its action, so that row is not a transition.
            valid[step] = torch.as_tensor(~autoreset)
            next_obs, reward, term, trunc, _ = envs.step(action.numpy())
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
            terminated[step] = torch.as_tensor(term, dtype=torch.float32)
            dones[step] = torch.as_tensor(term | trunc, dtype=torch.float32)
            episode_return += np.where(autoreset, 0.0, reward)
            recent += episode_return[term | trunc].tolist()
            episode_return[term | trunc] = 0.0
            autoreset = term | trunc

        # GAE; row t + 1 holds s_{t+1} (the final observation after an episode's last step).
        with torch.no_grad():
            next_value = agent.critic(encode(next_obs, obs_space)).squeeze(-1)
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(args.num_envs)
            for t in reversed(range(args.num_steps)):
                v_next = next_value if t == args.num_steps - 1 else values[t + 1]
                delta = rewards[t] + args.gamma * v_next * (1 - terminated[t]) - values[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * (1 - dones[t]) * lastgaelam
                lastgaelam = lastgaelam * valid[t]
                advantages[t] = lastgaelam
            returns = advantages + values

        keep = valid.reshape(-1)
        b_obs = obs_buf.reshape(-1, obs_size)[keep]
        b_actions, b_logprobs = actions.reshape(-1)[keep], logprobs.reshape(-1)[keep]
        b_advantages, b_returns = advantages.reshape(-1)[keep], returns.reshape(-1)[keep]

        # metactl: TAMPO's signal, steps in place of GRPO's trajectories:
        # loglik[i, j] = log pi_{T_j}(a_i | s_i), advantages[i] = step i's GAE advantage.
        loglik = temperature_loglik(  # metactl
            logits_buf.reshape(-1, 1, logits_buf.shape[-1])[keep],  # metactl: one "token" per step
            b_actions[:, None],  # metactl
            torch.ones_like(b_actions[:, None]),  # metactl
            decision.virtual,  # metactl
        )  # metactl
        meta_adv = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-8)  # metactl
        feedback = mc.Counterfactual(
            decision, loglik.double().numpy(), meta_adv.double().numpy()
        )  # metactl
        controller.update(feedback)  # metactl

        n = b_obs.shape[0]
        minibatch = max(1, n // args.num_minibatches)
        for _epoch in range(args.update_epochs):
            perm = torch.randperm(n)
            for lo in range(0, n, minibatch):
                mb = perm[lo : lo + minibatch]
                new_logits = agent.actor(b_obs[mb]) / temp  # metactl: ratios at the rollout's T
                dist = torch.distributions.Categorical(logits=new_logits)
                ratio = (dist.log_prob(b_actions[mb]) - b_logprobs[mb]).exp()
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8) if len(mb) > 1 else mb_adv
                pg_loss = torch.max(
                    -mb_adv * ratio, -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)
                ).mean()
                v_loss = 0.5 * (agent.critic(b_obs[mb]).squeeze(-1) - b_returns[mb]).square().mean()
                loss = pg_loss - args.ent_coef * dist.entropy().mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

        if iteration % 20 == 0 or iteration == num_iterations:
            mean_return = np.mean(recent[-20:]) if recent else float("nan")
            probs = getattr(controller, "probs", None)
            shown = np.round(probs, 2).tolist() if probs is not None else ""
            print(
                f"step {global_step:>7}  return {mean_return:8.2f}  T {temp:.3f}  "
                f"meta-policy {shown}  sps {int(global_step / (time.time() - start))}"
            )
    print(f"final mean return (last 20 episodes): {np.mean(recent[-20:]):.2f}")
    envs.close()


if __name__ == "__main__":
    main(sys.argv[1:])
