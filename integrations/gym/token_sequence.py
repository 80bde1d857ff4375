"""LLM RL in miniature: emit a token sequence, get a verifier's verdict at the end."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metactl._validate import integer


class TokenSequenceEnv(gym.Env[np.ndarray, np.int64]):
    """Emit ``length`` tokens from a vocabulary of ``vocab_size``; a hidden verifier scores them.

    Each episode draws a *prompt* (one of ``num_prompts``, uniformly with the env's RNG); each
    prompt has a hidden target sequence. The agent emits one token per step. After the last
    token the verifier counts the positions that match the prompt's target and pays 1 if
    at least ``difficulty`` of them match (a sparse, verifiable reward, like a math answer
    checker); with ``partial_credit`` it pays ``min(matches, difficulty) / difficulty``.
    All other rewards are 0.

    This is the GRPO setting at a thousandth of the cost: a softmax policy over a vocabulary,
    a sparse terminal reward, and a sampling temperature that trades exploration (finding
    sequences the verifier accepts) against precision (reproducing the ones it learned).
    With ``V = 8, L = 6, difficulty = 3`` a uniform policy succeeds about 2.9% of the time.

    Observation: ``MultiDiscrete([num_prompts] + [vocab_size + 1] * length)``: the prompt id,
    then the tokens emitted so far, with ``vocab_size`` marking a position not yet emitted.

    The hidden targets are a function of ``task_seed`` only, so every copy of the env in a
    vector env shares the task; ``reset(seed=...)`` seeds the prompt draws.

    Args:
        vocab_size: V >= 2 tokens.
        length: L >= 1 tokens per episode.
        difficulty: matches needed for reward 1, in ``[1, length]`` (default ``ceil(L / 2)``).
        partial_credit: pay ``min(matches, difficulty) / difficulty`` instead of 0/1.
        num_prompts: how many distinct prompts (hidden targets) the task has.
        task_seed: seed of the hidden targets.

    The final step's ``info`` carries ``matches`` and ``success`` (at least ``difficulty``).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        vocab_size: int = 8,
        length: int = 6,
        difficulty: int | None = None,
        *,
        partial_credit: bool = False,
        num_prompts: int = 1,
        task_seed: int = 0,
        render_mode: str | None = None,
    ) -> None:
        vocab_size = integer("TokenSequenceEnv(vocab_size)", vocab_size, minimum=2)
        length = integer("TokenSequenceEnv(length)", length, minimum=1)
        num_prompts = integer("TokenSequenceEnv(num_prompts)", num_prompts, minimum=1)
        task_seed = integer("TokenSequenceEnv(task_seed)", task_seed, minimum=0)
        difficulty = -(-length // 2) if difficulty is None else difficulty
        difficulty = integer("TokenSequenceEnv(difficulty)", difficulty)
        if not 1 <= difficulty <= length:
            raise ValueError(
                f"TokenSequenceEnv(difficulty): must be an integer in [1, length={length}], "
                f"got {difficulty}"
            )
        if render_mode is not None:
            raise ValueError(f"TokenSequenceEnv(render_mode): no render modes, got {render_mode!r}")
        self.vocab_size = int(vocab_size)
        self.length = int(length)
        self.difficulty = int(difficulty)
        self.partial_credit = bool(partial_credit)
        self.num_prompts = int(num_prompts)
        self.task_seed = int(task_seed)
        self.render_mode = render_mode

        task_rng = np.random.default_rng([self.task_seed, self.vocab_size, self.length])
        self.targets = task_rng.integers(self.vocab_size, size=(self.num_prompts, self.length))
        self.targets.setflags(write=False)

        self.observation_space = spaces.MultiDiscrete(
            [self.num_prompts] + [self.vocab_size + 1] * self.length
        )
        self.action_space = spaces.Discrete(self.vocab_size)
        self._prompt = 0
        self._tokens = np.full(self.length, self.vocab_size, dtype=np.int64)
        self._pos = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._prompt = int(self.np_random.integers(self.num_prompts))
        self._tokens = np.full(self.length, self.vocab_size, dtype=np.int64)
        self._pos = 0
        return self._obs(), {"prompt": self._prompt}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(
                f"TokenSequenceEnv.step(action): {action!r} is not in {self.action_space}"
            )
        if self._pos >= self.length:
            raise RuntimeError("TokenSequenceEnv.step: the sequence is finished; call reset()")
        self._tokens[self._pos] = int(action)
        self._pos += 1
        if self._pos < self.length:
            return self._obs(), 0.0, False, False, {}
        matches = int(np.sum(self._tokens == self.targets[self._prompt]))
        success = matches >= self.difficulty
        if self.partial_credit:
            reward = min(matches, self.difficulty) / self.difficulty
        else:
            reward = float(success)
        return self._obs(), float(reward), True, False, {"matches": matches, "success": success}

    def _obs(self) -> np.ndarray:
        return np.concatenate([[self._prompt], self._tokens]).astype(np.int64)
