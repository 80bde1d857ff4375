"""One generation round's meta statistics, reduced across processes into one feedback.

Each process accumulates, over the micro-batches of the round's first pass, the rollouts'
virtual-temperature log-likelihoods and advantages (or the round's mean reward and informative
fraction, or its mean token entropy). At the end of the round :meth:`RoundStats.feedback` gathers them with
accelerate so that every process builds the identical feedback::

    stats = RoundStats(decision)
    stats.add_rollouts(sums, counts, advantages, rewards, groups)  # per micro-batch, local rows
    feedback = stats.feedback(mc.preferred_feedback(controller, TRL_FEEDBACK), accelerator)
    metrics = controller.update(feedback)
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

import metactl as mc

OutcomeSignal = Literal["mean_reward", "informative_fraction"]
"""What a bandit controller's :class:`metactl.Outcome` reward is: the round's mean reward, or
the fraction of its prompt groups with unequal rewards (:func:`informative_fraction`)."""

OUTCOME_SIGNALS: tuple[OutcomeSignal, ...] = ("mean_reward", "informative_fraction")


def informative_fraction(rewards: Any, group_size: int) -> float:
    """The fraction of prompt groups whose rewards are not all equal.

    In GRPO a group whose completions all get the same reward has zero advantage and teaches
    nothing; the sampling temperature decides how many such groups a batch has. Rows are
    grouped as TRL groups them: ``group_size`` consecutive rewards per prompt. NaN rewards
    (completions no reward function scored) are ignored; a group with fewer than two scored
    completions counts as uninformative. Rewards within ``1e-8`` count as equal.

    Args:
        rewards: ``[num_prompts * group_size]`` rewards (tensor, array or sequence).
        group_size: completions per prompt (``num_generations``).

    Returns:
        A fraction in ``[0, 1]``.

    Raises:
        ValueError: ``group_size`` < 1, or a reward count that is not a multiple of it.
    """
    values = np.asarray(
        rewards.detach().cpu().double() if isinstance(rewards, Tensor) else rewards,
        dtype=np.float64,
    ).reshape(-1)
    if group_size < 1 or values.size % group_size or values.size == 0:
        raise ValueError(
            f"informative_fraction: need a positive group_size dividing the {values.size} "
            f"rewards, got group_size={group_size}"
        )
    groups = values.reshape(-1, group_size)
    scored = np.isfinite(groups)
    high = np.where(scored, groups, -np.inf).max(axis=1)
    low = np.where(scored, groups, np.inf).min(axis=1)
    informative = (scored.sum(axis=1) >= 2) & (high - low > 1e-8)
    return float(informative.mean())


class RoundStats:
    """What one process saw of one generation round (the round's :class:`metactl.Decision`)."""

    def __init__(self, decision: mc.Decision) -> None:
        self.decision = decision
        self._sums: list[Tensor] = []
        self._counts: list[Tensor] = []
        self._advantages: list[Tensor] = []
        self._rewards: list[Tensor] = []
        self._groups: list[Tensor] = []
        #: Every rollout's reward in generation order, gathered over processes (NaN: unscored).
        self.rollout_rewards: Tensor | None = None
        self.reward: float | None = None
        self.informative_fraction: float | None = None
        self._entropy: list[float] = []

    def add_rollouts(
        self, sums: Tensor, counts: Tensor, advantages: Tensor, rewards: Tensor, groups: Tensor
    ) -> None:
        """Rows of one micro-batch: ``[B, M]`` log-prob sums, ``[B]`` token counts, ``[B]``
        advantages, ``[B]`` rewards (NaN: unscored) and ``[B]`` prompt-group ids of the round."""
        self._sums.append(sums.float())
        self._counts.append(counts.float())
        self._advantages.append(advantages.detach().float().reshape(advantages.size(0), -1)[:, 0])
        self._rewards.append(rewards.detach().float().reshape(-1))
        self._groups.append(groups.detach().float().reshape(-1))

    def add_entropy(self, entropy: float) -> None:
        """The (already process-reduced) mean token entropy of one micro-batch."""
        self._entropy.append(entropy)

    def feedback(
        self, kind: type, accelerator: Any, outcome: OutcomeSignal = "mean_reward"
    ) -> tuple[mc.Feedback | None, dict[str, float]]:
        """The round's feedback of type ``kind``, identical on every rank.

        Args:
            kind: Counterfactual, Outcome or EntropyObservation, as chosen for the controller by
                :func:`metactl.preferred_feedback`.
            accelerator: the trainer's ``accelerate.Accelerator`` (gathers every process's rows).
            outcome: the reward of :class:`metactl.Outcome` feedback: the round's mean reward or
                its informative fraction.

        Returns:
            ``(feedback or None, extra metrics)``. None when the round left nothing to learn from
            (e.g. every completion was masked out).
        """
        d = self.decision
        if kind is mc.Counterfactual:
            if not self._sums:
                return None, {}
            device = self._sums[0].device
            local = torch.cat(
                [
                    torch.cat(self._sums),
                    torch.cat(self._counts)[:, None],
                    torch.cat(self._advantages)[:, None].to(device),
                    torch.cat(self._rewards)[:, None].to(device),
                    torch.cat(self._groups)[:, None].to(device),
                ],
                dim=1,
            )
            rows = accelerator.gather(local).double().cpu()  # one gather, one copy to the host
            sums, counts, adv = rows[:, :-4], rows[:, -4], rows[:, -3]
            rewards, groups = rows[:, -2], rows[:, -1]
            keep = (counts > 0) & torch.isfinite(rewards)
            if not bool(keep.any()):
                return None, {"meta/empty_rounds": 1.0}
            loglik = (sums[keep] / counts[keep, None]).numpy()
            advantages = adv[keep].numpy()
            feedback = mc.Counterfactual(
                d,
                loglik,
                advantages,
                rewards=rewards[keep].numpy(),
                groups=groups[keep].round().long().numpy(),
                lengths=counts[keep].numpy(),
            )
            return feedback, grid_peak_metrics(loglik, advantages, d.virtual)
        if kind is mc.Outcome:
            reward = self.reward if outcome == "mean_reward" else self.informative_fraction
            if reward is None or not math.isfinite(reward):
                return None, {}
            return mc.Outcome(d, reward), {}
        if kind is mc.EntropyObservation:
            if not self._entropy:
                return None, {}
            return mc.EntropyObservation(d, float(np.mean(self._entropy))), {}
        raise TypeError(
            f"RoundStats.feedback: a round gives Counterfactual, Outcome or EntropyObservation "
            f"feedback, not {kind.__name__}"
        )


def grid_peak_temperatures(loglik: np.ndarray, virtual: np.ndarray) -> np.ndarray:
    """Each rollout's likelihood peak on the virtual grid, refined by a parabola in ``1 / T``.

    An estimate, from the K grid scores alone, of the preferred temperature that
    :func:`metactl.integrations.torch.preferred_temperature` finds exactly from the logits: the
    log-likelihood is concave in ``beta = 1 / T``; the grid's best point is refined by the
    parabola through it and its two neighbours in ``beta`` (kept between those neighbours).
    """
    beta = 1.0 / np.asarray(virtual, dtype=np.float64)
    order = np.argsort(beta)
    beta, ll = beta[order], loglik[:, order]
    best = np.argmax(ll, axis=1)
    out = beta[best].copy()
    if beta.size >= 3:
        inner = (best > 0) & (best < beta.size - 1)
        i = best[inner]
        rows = np.flatnonzero(inner)
        x0, x1, x2 = beta[i - 1], beta[i], beta[i + 1]
        y0, y1, y2 = ll[rows, i - 1], ll[rows, i], ll[rows, i + 1]
        denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
        b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
        with np.errstate(divide="ignore", invalid="ignore"):
            vertex = np.where(a < 0, -b / (2 * a), x1)
        out[rows] = np.clip(vertex, x0, x2)
    return np.asarray(1.0 / out)


def grid_peak_metrics(
    loglik: np.ndarray, advantages: np.ndarray, virtual: np.ndarray
) -> dict[str, float]:
    """Mean grid peak temperature of positive- and negative-advantage rollouts (paper, Figure 4)."""
    peak = grid_peak_temperatures(loglik, virtual)
    out: dict[str, float] = {}
    for name, sel in (("positive", advantages > 0), ("negative", advantages < 0)):
        if sel.any():
            out[f"meta/grid_peak_temperature/{name}"] = float(peak[sel].mean())
    return out
