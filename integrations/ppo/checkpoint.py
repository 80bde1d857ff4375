"""PPO checkpoints: everything needed to continue a run identically, with no pickle.

A checkpoint is one dict for ``torch.save``, loadable with ``torch.load(weights_only=True)``:

- ``agent``, ``optimizer``: the network's and Adam's state dicts (tensors);
- ``generator``: the state of the adapter's ``torch.Generator`` (a tensor);
- ``next_obs``: the vector env's next observation (a tensor);
- ``controller``: the controller's ``state_dict()`` as a JSON string;
- ``progress``: a JSON string with the counters, the config, the finished episodes and the
  environments' :meth:`EnvCursor.state_dict` (whose replay log restores them exactly);
- ``format_version``.

:meth:`PPO.state_dict` and :meth:`PPO.load_state_dict` are these two functions.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metactl._validate import rng_state

if TYPE_CHECKING:
    from metactl.integrations.ppo.ppo import PPO

__all__ = ["CHECKPOINT_FORMAT_VERSION", "checkpoint_state", "restore_checkpoint"]

CHECKPOINT_FORMAT_VERSION = 1

# The offset between the seeds of successive restarts when the environments cannot be replayed.
_RESTART_SEED_STRIDE = 10_007


def checkpoint_state(ppo: PPO) -> dict[str, Any]:
    """The checkpoint of ``ppo`` (see the module docstring); warns where it cannot be exact."""
    cursor = ppo.env_cursor
    if cursor.log is None:
        warnings.warn(
            "PPO.state_dict: envs is not a SyncVectorEnv, so the environments' state is not "
            "saved; a resumed run restarts their episodes and will not match exactly",
            stacklevel=3,
        )
    elif cursor.vector_wrapped:
        warnings.warn(
            "PPO.state_dict: the state of vector-level wrappers around the SyncVectorEnv is "
            "not saved (per-environment wrappers are); a resumed run matches exactly only if "
            "they hold none",
            stacklevel=3,
        )
    envs = cursor.state_dict()
    progress = {
        "iteration": ppo.iteration,
        "global_step": ppo.global_step,
        "seed": ppo.seed,
        "num_envs": ppo.num_envs,
        "config": dataclasses.asdict(ppo.config),
        "autoreset": envs["autoreset"],
        "episode_return": envs["episode_return"],
        "episode_length": envs["episode_length"],
        "episodes": [list(e) for e in ppo.episodes],
        "env_log": envs["env_log"],
    }
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "agent": ppo.agent.state_dict(),
        "optimizer": ppo.optimizer.state_dict(),
        "generator": ppo.generator.get_state(),
        "next_obs": torch.as_tensor(np.asarray(cursor.obs)).clone(),
        "controller": json.dumps(ppo.controller.state_dict()),
        "progress": json.dumps(progress),
    }


def restore_checkpoint(ppo: PPO, state: Mapping[str, Any]) -> None:
    """Restore :func:`checkpoint_state` into ``ppo``, its controller and its environments.

    Transactional: every field is checked first (types, shapes, finiteness, the optimiser's
    moments, the generator, the controller state on a copy, the replay log's structure), and
    nothing is changed until all of it passes. The one step that can only be checked by doing
    it, replaying the environments to ``next_obs``, runs first; if it fails, the environments
    are replayed back to where they were. So a refused checkpoint leaves ``ppo`` as it was.

    Raises:
        ValueError: naming the field that is missing or does not fit (``format_version``,
            ``progress.num_envs``, ``progress.config``, ``agent.<name>``, ``optimizer``,
            ``generator``, ``next_obs``, ``controller``, ``progress.<key>``).
    """
    checked = _check_checkpoint(ppo, state)
    cursor = ppo.env_cursor
    before_envs, before_obs = cursor.state_dict(), np.array(cursor.obs, copy=True)
    reset_seed = ppo.seed + _RESTART_SEED_STRIDE * checked.progress["iteration"]
    try:
        exact = cursor.load_state_dict(checked.progress, checked.next_obs, reset_seed=reset_seed)
    except (RuntimeError, ValueError) as exc:
        # Put the environments back by replaying their own log (exact: this is how a resume
        # restores them), then refuse the checkpoint.
        cursor.load_state_dict(before_envs, before_obs, reset_seed=reset_seed)
        raise ValueError(
            f"progress.env_log: the checkpoint's environments do not replay: {exc}"
        ) from exc
    ppo.agent.load_state_dict(checked.agent)
    ppo.optimizer.load_state_dict(checked.optimizer)
    ppo.controller.load_state_dict(checked.controller)
    ppo.generator.set_state(checked.generator)
    if not exact:
        warnings.warn(
            "PPO.load_state_dict: no environment replay log (envs is not a SyncVectorEnv, "
            "now or when saved); the environments restart from reset(seed) and the run "
            "will not match an uninterrupted one exactly",
            stacklevel=3,
        )
    ppo.episodes = checked.episodes
    ppo.iteration = checked.progress["iteration"]
    ppo.global_step = checked.progress["global_step"]


_CHECKPOINT_KEYS = (
    "format_version",
    "agent",
    "optimizer",
    "generator",
    "next_obs",
    "controller",
    "progress",
)
_PROGRESS_KEYS = (
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
)


@dataclasses.dataclass(frozen=True)
class _Checked:
    """A checkpoint whose every field passed, ready to be applied (nothing in it can fail)."""

    agent: Mapping[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    next_obs: np.ndarray
    controller: dict[str, Any]
    progress: dict[str, Any]
    episodes: list[tuple[int, float, int]]


def _check_checkpoint(ppo: PPO, state: Mapping[str, Any]) -> _Checked:
    """Every field of ``state`` checked against ``ppo``, changing nothing; ``ValueError`` naming it."""
    if not isinstance(state, Mapping):
        raise ValueError(f"state: expected a checkpoint dict, got {type(state).__name__}")
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(f"state: the checkpoint is missing {missing}")
    version = state["format_version"]
    if isinstance(version, bool) or version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"state: format_version {version!r} is not supported "
            f"(this version writes {CHECKPOINT_FORMAT_VERSION})"
        )
    progress = _check_progress(ppo, _json_field(state, "progress"))
    controller = _json_field(state, "controller")
    try:
        copy.deepcopy(ppo.controller).load_state_dict(controller)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"controller: {exc}") from exc
    twin = copy.deepcopy(ppo.agent)
    agent = _check_agent(ppo, state["agent"], twin)
    optimizer = _check_optimizer(ppo, state["optimizer"], twin)
    generator = _check_generator(ppo, state["generator"])
    next_obs = _check_next_obs(ppo, state["next_obs"])
    episodes = [(int(s), float(r), int(n)) for s, r, n in progress["episodes"]]
    return _Checked(agent, optimizer, generator, next_obs, controller, progress, episodes)


def _json_field(state: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``state[key]``, a JSON string of an object, decoded."""
    text = state[key]
    if not isinstance(text, str):
        raise ValueError(f"{key}: expected a JSON string, got {type(text).__name__}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected a JSON object, got {type(value).__name__}")
    return value


def _count(name: str, value: Any, minimum: int = 0) -> int:
    """A JSON int >= ``minimum`` (bools refused), or ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def _finite(name: str, value: Any) -> float:
    """A finite JSON number (bools refused), or ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _per_env(name: str, value: Any, n: int) -> list[Any]:
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(
            f"{name}: expected a list of {n} entries (one per sub-environment), got {value!r}"
        )
    return value


def _check_progress(ppo: PPO, progress: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in _PROGRESS_KEYS if k not in progress]
    if missing:
        raise ValueError(f"progress: the checkpoint is missing {missing}")
    n = ppo.num_envs
    if progress["num_envs"] != n:
        raise ValueError(
            f"num_envs: the checkpoint has {progress['num_envs']!r} sub-environments, envs has {n}"
        )
    saved_config = progress["config"]
    if not isinstance(saved_config, dict):
        raise ValueError(f"progress.config: expected an object, got {saved_config!r}")
    current = dataclasses.asdict(ppo.config)
    diff = [
        k
        for k in sorted(set(current) | set(saved_config))
        if json.dumps(current.get(k)) != json.dumps(saved_config.get(k))
    ]
    if diff:
        raise ValueError(
            f"config: fields {diff} differ from the checkpoint's "
            f"({ {k: saved_config.get(k) for k in diff} }); build PPO with the saved config"
        )
    for key in ("iteration", "global_step", "seed"):
        _count(f"progress.{key}", progress[key])
    for i, flag in enumerate(_per_env("progress.autoreset", progress["autoreset"], n)):
        if not isinstance(flag, bool):
            raise ValueError(f"progress.autoreset[{i}]: expected true or false, got {flag!r}")
    for i, r in enumerate(_per_env("progress.episode_return", progress["episode_return"], n)):
        _finite(f"progress.episode_return[{i}]", r)
    for i, length in enumerate(_per_env("progress.episode_length", progress["episode_length"], n)):
        _count(f"progress.episode_length[{i}]", length)
    episodes = progress["episodes"]
    if not isinstance(episodes, list):
        raise ValueError(f"progress.episodes: expected a list, got {episodes!r}")
    for i, episode in enumerate(episodes):
        if not isinstance(episode, list) or len(episode) != 3:
            raise ValueError(
                f"progress.episodes[{i}]: expected [global step, return, length], got {episode!r}"
            )
        _count(f"progress.episodes[{i}][0]", episode[0])
        _finite(f"progress.episodes[{i}][1]", episode[1])
        _count(f"progress.episodes[{i}][2]", episode[2], minimum=1)
    if progress["env_log"] is not None:
        _check_env_log(ppo, progress["env_log"])
    return progress


def _check_env_log(ppo: PPO, log: Any) -> None:
    """The replay log's structure: one start and one action list per sub-environment."""
    n = ppo.num_envs
    if not isinstance(log, dict) or set(log) != {"starts", "actions"}:
        raise ValueError(f"progress.env_log: expected {{'starts', 'actions'}}, got {log!r}")
    starts = _per_env("progress.env_log.starts", log["starts"], n)
    actions = _per_env("progress.env_log.actions", log["actions"], n)
    envs = ppo.env_cursor.log.envs.envs if ppo.env_cursor.log is not None else None
    space = ppo.envs.single_action_space
    for i, start in enumerate(starts):
        name = f"progress.env_log.starts[{i}]"
        if isinstance(start, dict) and set(start) == {"seed"}:
            _count(f"{name}.seed", start["seed"])
        elif isinstance(start, dict) and set(start) == {"rng", "persistent"}:
            if envs is not None:
                bit_generator = envs[i].unwrapped.np_random.bit_generator
                try:
                    rng_state(bit_generator, start["rng"])
                except ValueError as exc:
                    raise ValueError(f"{name}.rng: {exc}") from exc
        else:
            raise ValueError(
                f"{name}: expected {{'seed'}} or {{'rng', 'persistent'}}, got {start!r}"
            )
    for i, taken in enumerate(actions):
        if not isinstance(taken, list):
            raise ValueError(f"progress.env_log.actions[{i}]: expected a list, got {taken!r}")
        for j, a in enumerate(taken):
            name = f"progress.env_log.actions[{i}][{j}]"
            try:
                action = np.asarray(a, dtype=space.dtype)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ValueError(f"{name}: not an action of {space} ({exc})") from exc
            if (
                isinstance(a, bool)
                or np.asarray(a).dtype.kind not in "iuf"
                or not space.contains(action)
            ):
                raise ValueError(f"{name}: {a!r} is not an action of {space}")


def _check_agent(ppo: PPO, agent: Any, twin: torch.nn.Module) -> Mapping[str, torch.Tensor]:
    expected = ppo.agent.state_dict()
    if not isinstance(agent, Mapping):
        raise ValueError(f"agent: expected a state dict of tensors, got {type(agent).__name__}")
    if set(agent) != set(expected):
        raise ValueError(
            f"agent: the checkpoint's parameters do not fit: missing "
            f"{sorted(set(expected) - set(agent))}, unexpected {sorted(set(agent) - set(expected))}"
        )
    for name, ref in expected.items():
        value = agent[name]
        if (
            not isinstance(value, torch.Tensor)
            or value.shape != ref.shape
            or value.dtype != ref.dtype
        ):
            got = (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else value
            raise ValueError(
                f"agent.{name}: the checkpoint's parameters do not fit: expected a "
                f"{ref.dtype} tensor of shape {tuple(ref.shape)}, got {got!r}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"agent.{name}: must be finite (the checkpoint holds NaN or inf)")
    twin.load_state_dict(agent)
    return agent


def _check_optimizer(ppo: PPO, optimizer: Any, twin: torch.nn.Module) -> dict[str, Any]:
    """Adam's state: loads into a twin optimiser, with finite moments of the parameters' shapes."""
    if not isinstance(optimizer, Mapping) or set(optimizer) != {"state", "param_groups"}:
        got = sorted(optimizer) if isinstance(optimizer, Mapping) else type(optimizer).__name__
        raise ValueError(f"optimizer: expected Adam's state dict (state, param_groups), got {got}")
    params = list(twin.parameters())
    groups = optimizer["param_groups"]
    reference = ppo.optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(reference):
        raise ValueError(
            f"optimizer.param_groups: expected {len(reference)} group(s), got {groups!r}"
        )
    for i, (group, ref) in enumerate(zip(groups, reference, strict=True)):
        if not isinstance(group, Mapping) or set(group) != set(ref):
            raise ValueError(
                f"optimizer.param_groups[{i}]: expected the keys {sorted(ref)}, got {group!r}"
            )
        if group["params"] != ref["params"]:
            raise ValueError(
                f"optimizer.param_groups[{i}].params: expected {ref['params']}, got {group['params']!r}"
            )
        for key in sorted(set(ref) - {"params", "lr"}):
            if group[key] != ref[key]:
                raise ValueError(
                    f"optimizer.param_groups[{i}].{key}: expected {ref[key]!r} (PPO's Adam), "
                    f"got {group[key]!r}"
                )
        lr = group["lr"]
        if (
            isinstance(lr, bool)
            or not isinstance(lr, (int, float))
            or not 0 <= lr <= ppo.config.learning_rate
        ):
            raise ValueError(
                f"optimizer.param_groups[{i}].lr: expected a number in [0, learning_rate = "
                f"{ppo.config.learning_rate}], got {lr!r}"
            )
    moments = optimizer["state"]
    if not isinstance(moments, Mapping) or not set(moments) <= set(range(len(params))):
        got = sorted(moments) if isinstance(moments, Mapping) else moments
        raise ValueError(
            f"optimizer.state: expected entries for parameters 0..{len(params) - 1}, got {got!r}"
        )
    for index, entry in moments.items():
        _check_adam_entry(f"optimizer.state[{index}]", entry, params[index])
    checked = dict(optimizer)
    try:
        torch.optim.Adam(twin.parameters(), lr=ppo.config.learning_rate, eps=1e-5).load_state_dict(
            checked
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"optimizer: the checkpoint's Adam state does not load: {exc}") from exc
    return checked


def _check_adam_entry(name: str, entry: Any, param: torch.Tensor) -> None:
    if not isinstance(entry, Mapping) or set(entry) != {"step", "exp_avg", "exp_avg_sq"}:
        got = sorted(entry) if isinstance(entry, Mapping) else entry
        raise ValueError(f"{name}: expected Adam's step, exp_avg and exp_avg_sq, got {got!r}")
    step = entry["step"]
    step_value = float(step) if isinstance(step, torch.Tensor) and step.numel() == 1 else step
    if (
        isinstance(step_value, bool)
        or not isinstance(step_value, (int, float))
        or not (math.isfinite(step_value) and step_value >= 0 and float(step_value).is_integer())
    ):
        raise ValueError(f"{name}.step: expected a whole number of steps >= 0, got {step!r}")
    for key in ("exp_avg", "exp_avg_sq"):
        value = entry[key]
        if (
            not isinstance(value, torch.Tensor)
            or value.shape != param.shape
            or not value.is_floating_point()
        ):
            got = (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else value
            raise ValueError(
                f"{name}.{key}: expected a float tensor of shape {tuple(param.shape)}, got {got!r}"
            )
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name}.{key}: must be finite (the checkpoint holds NaN or inf)")
    if bool((entry["exp_avg_sq"] < 0).any()):
        raise ValueError(f"{name}.exp_avg_sq: Adam's second moments must be >= 0")


def _check_generator(ppo: PPO, generator: Any) -> torch.Tensor:
    if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8:
        got = generator.dtype if isinstance(generator, torch.Tensor) else type(generator).__name__
        raise ValueError(f"generator: expected the torch.Generator's uint8 state tensor, got {got}")
    try:
        torch.Generator(device=ppo.device).set_state(generator)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"generator: not a valid torch.Generator state ({exc})") from exc
    return generator


def _check_next_obs(ppo: PPO, next_obs: Any) -> np.ndarray:
    reference = np.asarray(ppo.env_cursor.obs)
    if not isinstance(next_obs, torch.Tensor):
        raise ValueError(f"next_obs: expected a tensor, got {type(next_obs).__name__}")
    obs = next_obs.detach().cpu().numpy()
    if obs.shape != reference.shape or obs.dtype != reference.dtype:
        raise ValueError(
            f"next_obs: expected {reference.dtype} of shape {reference.shape} (the vector env's "
            f"observation), got {obs.dtype} of shape {obs.shape}"
        )
    if obs.dtype.kind == "f" and not np.all(np.isfinite(obs)):
        raise ValueError("next_obs: must be finite (the checkpoint holds NaN or inf)")
    return obs
