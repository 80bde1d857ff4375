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
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

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

    Everything that can be refused is checked first (on copies), so a refused checkpoint
    changes nothing.

    Raises:
        ValueError: naming what does not match (format, ``num_envs``, ``config`` fields,
            ``agent`` shapes, controller state).
    """
    if state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"state: format_version {state.get('format_version')!r} is not supported "
            f"(this version writes {CHECKPOINT_FORMAT_VERSION})"
        )
    progress = json.loads(state["progress"])
    if progress["num_envs"] != ppo.num_envs:
        raise ValueError(
            f"num_envs: the checkpoint has {progress['num_envs']} sub-environments, "
            f"envs has {ppo.num_envs}"
        )
    saved_config = progress["config"]
    current = dataclasses.asdict(ppo.config)
    diff = [k for k in current if json.dumps(current[k]) != json.dumps(saved_config.get(k))]
    if diff:
        raise ValueError(
            f"config: fields {diff} differ from the checkpoint's "
            f"({ {k: saved_config.get(k) for k in diff} }); build PPO with the saved config"
        )
    controller_state = json.loads(state["controller"])
    copy.deepcopy(ppo.controller).load_state_dict(controller_state)
    try:
        copy.deepcopy(ppo.agent).load_state_dict(state["agent"])
    except RuntimeError as exc:
        raise ValueError(f"agent: the checkpoint's parameters do not fit: {exc}") from exc

    ppo.agent.load_state_dict(state["agent"])
    ppo.optimizer.load_state_dict(state["optimizer"])
    ppo.controller.load_state_dict(controller_state)
    ppo.generator.set_state(state["generator"])
    exact = ppo.env_cursor.load_state_dict(
        progress,
        state["next_obs"].cpu().numpy(),
        reset_seed=ppo.seed + _RESTART_SEED_STRIDE * progress["iteration"],
    )
    if not exact:
        warnings.warn(
            "PPO.load_state_dict: no environment replay log (envs is not a SyncVectorEnv, "
            "now or when saved); the environments restart from reset(seed) and the run "
            "will not match an uninterrupted one exactly",
            stacklevel=3,
        )
    ppo.episodes = [(int(s), float(r), int(n)) for s, r, n in progress["episodes"]]
    ppo.iteration = int(progress["iteration"])
    ppo.global_step = int(progress["global_step"])
