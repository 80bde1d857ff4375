"""PPO with a value critic and GAE, sampling at a temperature chosen by a metactl controller.

One iteration, top to bottom (:meth:`PPO.iterate`):

1. ``d = controller.sample()``; the behaviour policy for this rollout is ``pi_T`` with
   ``T = d.value`` (logits / T, or std * T).
2. :meth:`PPO.collect`: ``num_steps`` steps of every sub-environment at ``T``.
3. :func:`compute_gae`: per-step advantages with a critic bootstrap.
4. :meth:`PPO.meta_feedback`: the feedback the controller learns from (for TAMPO, the
   Counterfactual of every step's action log-likelihood at every virtual temperature against
   its GAE advantage; see ``docs/ppo.md``) and ``controller.update``.
5. :meth:`PPO.learn`: clipped-surrogate epochs; the ratios compare log-probabilities at the
   same ``T`` the rollout was sampled at.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from torch import Tensor

from metactl.controllers.base import Controller, preferred_feedback
from metactl.feedback import Counterfactual, EntropyObservation, Feedback, Outcome, Outcomes
from metactl.integrations.ppo.checkpoint import checkpoint_state, restore_checkpoint
from metactl.integrations.ppo.config import PPOConfig
from metactl.integrations.ppo.envstate import EnvCursor
from metactl.integrations.ppo.policy import ActorCritic, PolicyOutput
from metactl.integrations.torch import temperature_loglik
from metactl.metric_keys import meta_key
from metactl.temperature import check_temperature, check_temperature_controller

__all__ = ["PPO", "PPO_FEEDBACK", "PPOConfig", "Rollout", "compute_gae", "virtual_loglik"]

PPO_FEEDBACK = (Counterfactual, Outcome, Outcomes, EntropyObservation)
"""The feedback PPO can build; :func:`metactl.preferred_feedback` picks one per controller."""


@dataclass
class Rollout:
    """One rollout of ``S = num_steps`` steps of ``N`` sub-environments at one temperature.

    Row ``[t, i]`` is sub-environment ``i`` at step ``t``. A row is *invalid* when the vector
    env spent that step resetting an episode that ended on the previous step (gymnasium's
    default next-step autoreset ignores the action there): such rows carry no advantage and
    are left out of every loss and of the meta feedback.

    Attributes:
        temperature: the T every action was sampled at.
        features: ``[S, N, F]`` encoded observations.
        actions: ``[S, N]`` (discrete) or ``[S, N, D]`` (Box), unclipped.
        logprobs: ``[S, N]`` ``log pi_T(a|s)`` under the behaviour policy.
        policy: the behaviour policy's untempered outputs, rows flattened to ``S * N``.
        values: ``[S, N]`` critic values.
        rewards, terminated, truncated, valid: ``[S, N]``.
        next_value: ``[N]`` critic value of the observation after the last step.
        advantages, returns: ``[S, N]`` GAE advantages and value targets (0 on invalid rows).
        episode_returns, episode_lengths: episodes that finished during the rollout.
    """

    temperature: float
    features: Tensor
    actions: Tensor
    logprobs: Tensor
    policy: PolicyOutput
    values: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    valid: Tensor
    next_value: Tensor
    advantages: Tensor = field(default_factory=lambda: torch.empty(0))
    returns: Tensor = field(default_factory=lambda: torch.empty(0))
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)

    def valid_index(self) -> Tensor:
        """Flat indices (into ``S * N``) of the valid rows, in row-major order."""
        return torch.nonzero(self.valid.reshape(-1), as_tuple=False).squeeze(-1)


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    next_value: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    valid: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation for next-step-autoreset vector envs.

    With next-step autoreset, the observation after step ``t`` is row ``t + 1``'s (after the
    final step of an episode, that row holds the episode's last observation and is invalid),
    so ``V(s_{t+1}) = values[t + 1]`` on every row; ``next_value`` serves the last row.
    Termination zeroes the bootstrap; truncation keeps it (the time limit is not part of the
    task) but still ends the recursion.

    ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)``,
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``, ``A = 0`` on invalid rows.

    Args:
        rewards, values, terminated, truncated, valid: ``[S, N]``.
        next_value: ``[N]``.
        gamma, gae_lambda: discount and GAE lambda.

    Returns:
        ``(advantages, returns)``, each ``[S, N]``; ``returns = advantages + values`` on valid
        rows and 0 elsewhere.
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    not_terminated = 1.0 - terminated.float()
    not_done = 1.0 - (terminated | truncated).float()
    valid_f = valid.float()
    for t in reversed(range(num_steps)):
        next_values = next_value if t == num_steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * not_terminated[t] * next_values - values[t]
        last = (delta + gamma * gae_lambda * not_done[t] * last) * valid_f[t]
        advantages[t] = last
    returns = (advantages + values) * valid_f
    return advantages, returns


def virtual_loglik(policy: PolicyOutput, actions: Tensor, temperatures: Sequence[float]) -> Tensor:
    """``loglik[i, j] = log pi_{T_j}(a_i | s_i)``, ``[B, M]`` float32, detached.

    Discrete actions go through :func:`metactl.integrations.torch.temperature_loglik` with one
    token per row; Gaussian actions use ``log N(a; mean, (std * T_j)^2)`` summed over action
    dimensions.
    """
    temps = [float(t) for t in temperatures]
    with torch.no_grad():
        if policy.logits is not None:
            logits = policy.logits.unsqueeze(1)  # [B, 1, A]: one "token" per step
            tokens = actions.long().reshape(-1, 1)
            mask = torch.ones_like(tokens, dtype=torch.bool)
            return temperature_loglik(logits, tokens, mask, temps)
        columns = [policy.log_prob(actions, t) for t in temps]
        return torch.stack(columns, dim=-1).float()


class PPO:
    """PPO with a critic on a gymnasium vector env, its temperature set by a controller.

    The adapter owns the network, the optimiser and one ``torch.Generator`` (initialisation,
    action sampling, minibatch shuffles); the controller and the environments are the
    caller's. Any metactl controller plugs in: the adapter builds the feedback
    :func:`metactl.preferred_feedback` picks from :data:`PPO_FEEDBACK` (Counterfactual first;
    else Outcome or Outcomes with the rollout's mean episodic return; else
    EntropyObservation). Nothing here reads or advances a global RNG.

    Example:
        >>> envs = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
        >>> ppo = PPO(envs, mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=0), seed=0)
        >>> history = ppo.train(total_timesteps=50_000)
        >>> ppo.save("ckpt.pt")        # model, optimiser, RNGs, envs, controller (JSON)

    Args:
        envs: a gymnasium vector env with next-step autoreset (gymnasium's default). Exact
            resume needs a ``SyncVectorEnv`` (its sub-environments are replayed on load).
        controller: chooses the temperature once per rollout; its space holds temperatures
            (``mc.Discrete`` values > 0, or ``mc.Box`` with ``low > 0``).
        config: hyperparameters.
        seed: seeds the adapter's generator and ``envs.reset(seed=seed)``.
        agent: an existing :class:`ActorCritic` (default: a new one from ``config``).
        device: where the network lives.

    Raises:
        ValueError: naming the argument: unsupported spaces or autoreset mode (``envs``), an
            agent built for other spaces (``agent``), or a config that does not fit the batch.
        metactl.IncompatibleController: (a ``ValueError``) a controller whose arms are not
            positive temperatures or that learns from no feedback PPO builds
            (see :func:`metactl.check_temperature_controller`).
    """

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        controller: Controller,
        config: PPOConfig | None = None,
        *,
        seed: int = 0,
        agent: ActorCritic | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(envs, gym.vector.VectorEnv):
            raise ValueError(
                f"envs: expected a gymnasium vector env (gym.make_vec or SyncVectorEnv), "
                f"got {type(envs).__name__}"
            )
        mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if AutoresetMode(mode) != AutoresetMode.NEXT_STEP:
            raise ValueError(
                f"envs: autoreset_mode must be NEXT_STEP (gymnasium's default), got {mode}; "
                "PPO handles the reset steps itself"
            )
        self.config = config if config is not None else PPOConfig()
        if not isinstance(self.config, PPOConfig):
            raise ValueError(f"config: expected a PPOConfig, got {type(config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: must be a non-negative int, got {seed!r}")
        self.envs = envs
        self.num_envs = int(envs.num_envs)
        batch = self.config.num_steps * self.num_envs
        if self.config.num_minibatches > batch:
            raise ValueError(
                f"num_minibatches: {self.config.num_minibatches} minibatches do not fit a rollout "
                f"of num_steps * num_envs = {self.config.num_steps} * {self.num_envs} = {batch} steps"
            )
        self.controller = check_temperature_controller(controller, PPO_FEEDBACK)
        self._feedback_kind = preferred_feedback(self.controller, PPO_FEEDBACK)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)

        obs_space, act_space = envs.single_observation_space, envs.single_action_space
        if agent is None:
            agent = ActorCritic(
                obs_space, act_space, self.config.hidden_sizes, generator=self.generator
            )
        elif not isinstance(agent, ActorCritic):
            raise ValueError(f"agent: expected an ActorCritic, got {type(agent).__name__}")
        elif agent.observation_space != obs_space or agent.action_space != act_space:
            raise ValueError(
                f"agent: built for observations {agent.observation_space} and actions "
                f"{agent.action_space}, but envs has {obs_space} and {act_space}"
            )
        self.agent = agent.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.agent.parameters(), lr=self.config.learning_rate, eps=1e-5
        )
        self._action_low: np.ndarray | None = None
        self._action_high: np.ndarray | None = None
        if isinstance(act_space, spaces.Box):
            self._action_low, self._action_high = act_space.low, act_space.high

        self.iteration = 0
        self.global_step = 0
        #: every finished episode: (global step at its end, return, length).
        self.episodes: list[tuple[int, float, int]] = []
        #: where the run stands in ``envs``: next observation, running episodes, replay log.
        self.env_cursor = EnvCursor(envs, self.seed)

    # --- one iteration ------------------------------------------------------------
    def iterate(self) -> dict[str, float]:
        """Sample a temperature, roll out at it, update the controller, then the policy.

        Returns:
            Flat float metrics: ``temperature``, ``episodic_return`` (mean over episodes that
            finished in this rollout, NaN if none), losses, and the controller's metrics
            prefixed ``meta/``.

        Raises:
            ValueError: the controller proposed a temperature outside [0.01, 100].
        """
        decision = self.controller.sample()
        temperature = check_temperature(decision.value, "the controller's decision.value")
        rollout = self.collect(temperature)
        metrics: dict[str, float] = {"temperature": temperature}
        feedback = self.meta_feedback(decision, rollout)
        if feedback is None:
            metrics["meta/skipped"] = 1.0
        else:
            for key, value in self.controller.update(feedback).items():
                metrics[meta_key(key)] = float(value)
        metrics.update(self.learn(rollout))
        self.iteration += 1
        metrics["iteration"] = float(self.iteration)
        metrics["global_step"] = float(self.global_step)
        metrics["num_episodes"] = float(len(rollout.episode_returns))
        returns = rollout.episode_returns
        metrics["episodic_return"] = float(np.mean(returns)) if returns else float("nan")
        return metrics

    def train(
        self,
        total_timesteps: int,
        callback: Callable[[dict[str, float]], None] | None = None,
    ) -> list[dict[str, float]]:
        """Run iterations until ``global_step >= total_timesteps``; returns their metrics.

        Args:
            total_timesteps: environment steps (all sub-environments) to train to; counts
                from the start of the run, so a resumed run continues to the same total.
            callback: called with each iteration's metrics.
        """
        if int(total_timesteps) != total_timesteps or total_timesteps < 0:
            raise ValueError(f"total_timesteps: must be an integer >= 0, got {total_timesteps}")
        history = []
        while self.global_step < total_timesteps:
            metrics = self.iterate()
            history.append(metrics)
            if callback is not None:
                callback(metrics)
        return history

    # --- the steps of an iteration ------------------------------------------------------
    @torch.no_grad()
    def collect(self, temperature: float) -> Rollout:
        """Roll out ``num_steps`` steps of every sub-environment at ``temperature``.

        Returns:
            The :class:`Rollout`, with GAE advantages and returns filled in.
        """
        temperature = check_temperature(temperature, "collect(temperature)")
        num_steps, n = self.config.num_steps, self.num_envs
        agent = self.agent
        features, actions, logprobs, values = [], [], [], []
        rewards = np.zeros((num_steps, n), dtype=np.float32)
        terminated = np.zeros((num_steps, n), dtype=bool)
        truncated = np.zeros((num_steps, n), dtype=bool)
        valid = np.zeros((num_steps, n), dtype=bool)
        outputs: list[PolicyOutput] = []
        episode_returns: list[float] = []
        episode_lengths: list[int] = []
        for t in range(num_steps):
            x = agent.encode(self.env_cursor.obs)
            policy = agent.policy(x)
            action = policy.sample(temperature, self.generator)
            features.append(x)
            outputs.append(policy)
            actions.append(action)
            logprobs.append(policy.log_prob(action, temperature))
            values.append(agent.value(x))
            env_action = action.cpu().numpy()
            if self._action_low is not None:
                # The env gets a clipped action; the log-probs keep the sampled one.
                env_action = np.clip(env_action, self._action_low, self._action_high)
            step = self.env_cursor.step(env_action)
            valid[t] = step.stepped
            rewards[t], terminated[t], truncated[t] = step.reward, step.terminated, step.truncated
            for episode_return, episode_length in step.finished:
                episode_returns.append(episode_return)
                episode_lengths.append(episode_length)
                self.episodes.append(
                    (self.global_step + (t + 1) * n, episode_return, episode_length)
                )
        self.global_step += num_steps * n
        next_value = agent.value(agent.encode(self.env_cursor.obs))

        stacked = _stack_policy(outputs)
        rollout = Rollout(
            temperature=temperature,
            features=torch.stack(features),
            actions=torch.stack(actions),
            logprobs=torch.stack(logprobs),
            policy=stacked,
            values=torch.stack(values),
            rewards=torch.as_tensor(rewards, device=self.device),
            terminated=torch.as_tensor(terminated, device=self.device),
            truncated=torch.as_tensor(truncated, device=self.device),
            valid=torch.as_tensor(valid, device=self.device),
            next_value=next_value,
            episode_returns=episode_returns,
            episode_lengths=episode_lengths,
        )
        rollout.advantages, rollout.returns = compute_gae(
            rollout.rewards,
            rollout.values,
            next_value,
            rollout.terminated,
            rollout.truncated,
            rollout.valid,
            self.config.gamma,
            self.config.gae_lambda,
        )
        return rollout

    def meta_feedback(self, decision: Any, rollout: Rollout) -> Feedback | None:
        """The feedback for ``controller.update``, of the first type it accepts.

        - Counterfactual: ``loglik[i, j] = log pi_{T_j}(a_i | s_i)`` under the behaviour
          policy for every valid step ``i`` and virtual temperature ``T_j =
          decision.virtual[j]``; ``advantages[i]`` is step ``i``'s GAE advantage (normalised
          over the rollout when ``config.meta_advantages == "normalized"``).
        - Outcome / Outcomes: the mean return of the episodes that finished in the rollout
          (None, i.e. no update, if none finished).
        - EntropyObservation: the mean entropy of ``pi_T`` over the valid steps (None if it
          is not positive, as a Gaussian's differential entropy can be).
        """
        kind = self._feedback_kind
        idx = rollout.valid_index()
        if kind is Counterfactual:
            if idx.numel() == 0:
                return None
            virtual = np.asarray(decision.virtual, dtype=np.float64)
            for t in virtual:
                check_temperature(t, "every decision.virtual temperature")
            actions = rollout.actions.reshape(-1, *rollout.actions.shape[2:])[idx]
            loglik = virtual_loglik(_index_policy(rollout.policy, idx), actions, virtual.tolist())
            adv = rollout.advantages.reshape(-1)[idx].double()
            if self.config.meta_advantages == "normalized" and adv.numel() > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            return Counterfactual(decision, loglik.double().cpu().numpy(), adv.cpu().numpy())
        if kind is Outcome or kind is Outcomes:
            if not rollout.episode_returns:
                return None
            reward = float(np.mean(rollout.episode_returns))
            if kind is Outcome:
                return Outcome(decision, reward)
            return Outcomes((decision,), np.array([reward]))
        policy = _index_policy(rollout.policy, idx)  # EntropyObservation
        entropy = float(policy.entropy(rollout.temperature).mean()) if idx.numel() else 0.0
        if not (math.isfinite(entropy) and entropy > 0):
            return None
        return EntropyObservation(decision, entropy)

    def learn(self, rollout: Rollout) -> dict[str, float]:
        """Clipped-surrogate PPO epochs on the valid rows of ``rollout``.

        Ratios are ``pi_theta,T(a|s) / pi_old,T(a|s)`` at the rollout's temperature ``T``; the
        entropy bonus is the entropy of ``pi_T``.

        Returns:
            Losses and diagnostics of the last epoch (``loss/policy``, ``loss/value``,
            ``loss/entropy``, ``approx_kl``, ``clipfrac``, ``explained_variance``, ``lr``).
        """
        cfg = self.config
        if cfg.anneal_lr_timesteps is not None:
            # Rate for this update: decayed by the steps taken before this rollout.
            done_steps = self.global_step - cfg.num_steps * self.num_envs
            frac = max(0.0, 1.0 - done_steps / cfg.anneal_lr_timesteps)
            for group in self.optimizer.param_groups:
                group["lr"] = frac * cfg.learning_rate
        temperature = rollout.temperature
        idx = rollout.valid_index()
        n = int(idx.numel())
        metrics: dict[str, float] = {"lr": float(self.optimizer.param_groups[0]["lr"])}
        if n == 0:
            return metrics
        flat = rollout.features.shape[0] * rollout.features.shape[1]
        b_features = rollout.features.reshape(flat, -1)[idx]
        b_actions = rollout.actions.reshape(flat, *rollout.actions.shape[2:])[idx]
        b_logprobs = rollout.logprobs.reshape(-1)[idx]
        b_adv = rollout.advantages.reshape(-1)[idx]
        b_returns = rollout.returns.reshape(-1)[idx]
        b_values = rollout.values.reshape(-1)[idx]
        num_minibatches = min(cfg.num_minibatches, n)
        clipfracs: list[float] = []
        approx_kl = torch.zeros(())
        pg_loss = v_loss = entropy_loss = torch.zeros(())
        for _epoch in range(cfg.update_epochs):
            perm = torch.randperm(n, generator=self.generator, device=self.device)
            for mb in torch.tensor_split(perm, num_minibatches):
                policy = self.agent.policy(b_features[mb])
                new_logp = policy.log_prob(b_actions[mb], temperature)
                entropy = policy.entropy(temperature)
                new_value = self.agent.value(b_features[mb])
                log_ratio = new_logp - b_logprobs[mb]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfracs.append(float(((ratio - 1.0).abs() > cfg.clip_coef).float().mean()))
                adv = b_adv[mb]
                if cfg.norm_adv and adv.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(
                    -adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
                ).mean()
                if cfg.clip_vloss:
                    v_clipped = b_values[mb] + (new_value - b_values[mb]).clamp(
                        -cfg.clip_coef, cfg.clip_coef
                    )
                    v_loss = (
                        0.5
                        * torch.max(
                            (new_value - b_returns[mb]).square(),
                            (v_clipped - b_returns[mb]).square(),
                        ).mean()
                    )
                else:
                    v_loss = 0.5 * (new_value - b_returns[mb]).square().mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
                self.optimizer.zero_grad()
                torch.autograd.backward(loss)
                torch.nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
            if cfg.target_kl is not None and float(approx_kl) > cfg.target_kl:
                break
        var_y = float(b_returns.var()) if n > 1 else 0.0
        explained = (
            float("nan") if var_y == 0 else 1.0 - float((b_returns - b_values).var()) / var_y
        )
        metrics.update(
            {
                "loss/policy": float(pg_loss.detach()),
                "loss/value": float(v_loss.detach()),
                "loss/entropy": float(entropy_loss.detach()),
                "approx_kl": float(approx_kl),
                "clipfrac": float(np.mean(clipfracs)) if clipfracs else 0.0,
                "explained_variance": explained,
            }
        )
        return metrics

    # --- checkpoints (the format is in checkpoint.py) ---------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run identically, as tensors, numbers and strings.

        Model and optimiser state dicts and the generator state are tensors; the controller
        state, the progress counters and the environment replay log are JSON strings. Load
        with ``torch.load(path, weights_only=True)``; nothing is pickled. Warns when the
        environments' state cannot be saved exactly (envs is not a ``SyncVectorEnv``).
        """
        return checkpoint_state(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into this adapter, its controller and its envs.

        The adapter must have been built like the saved one (same config, spaces and number
        of sub-environments); the environments are reset and replayed to the saved point.

        Raises:
            ValueError: naming what does not match (format, ``num_envs``, ``config`` fields,
                ``agent`` shapes, controller state).
        """
        restore_checkpoint(self, state)

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` to ``path`` with ``torch.save``."""
        torch.save(self.state_dict(), Path(path))

    def load(self, path: str | Path) -> None:
        """Read a checkpoint written by :meth:`save` (``weights_only=True``) and restore it."""
        state = torch.load(Path(path), map_location=self.device, weights_only=True)
        self.load_state_dict(state)


def _stack_policy(outputs: list[PolicyOutput]) -> PolicyOutput:
    """Stack per-step outputs ``[N, ...]`` into rows ``[S * N, ...]``."""
    first = outputs[0]
    if first.logits is not None:
        return PolicyOutput(logits=torch.cat([o.logits for o in outputs if o.logits is not None]))
    assert first.log_std is not None
    means = torch.cat([o.mean for o in outputs if o.mean is not None])
    return PolicyOutput(mean=means, log_std=first.log_std.detach().clone())


def _index_policy(policy: PolicyOutput, idx: Tensor) -> PolicyOutput:
    if policy.logits is not None:
        return PolicyOutput(logits=policy.logits[idx])
    assert policy.mean is not None
    return PolicyOutput(mean=policy.mean[idx], log_std=policy.log_std)
