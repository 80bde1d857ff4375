"""Helpers shared by the controllers that learn over arms (TAMPO, MetaGradient, the bandit).

Pure functions of feedback and arm values; each rule lives here once so that no controller
module reaches into another's internals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metactl import functional as F
from metactl.feedback import Counterfactual, Outcome, Outcomes
from metactl.spaces import Discrete


def temperature_grid(
    owner: str, space: object, default: Sequence[float], hint: str = ""
) -> Discrete:
    """``space`` as a ``Discrete`` set of candidate temperatures (``default`` when None).

    A sequence or array becomes ``Discrete(space)``; anything else is refused naming ``owner``.
    """
    if space is None:
        return Discrete(default)
    if isinstance(space, Discrete):
        return space
    if isinstance(space, (Sequence, np.ndarray)):
        return Discrete(space)
    raise TypeError(f"{owner}(space): needs a metactl.Discrete set of arms, got {space!r}{hint}")


def arm_label(value: float) -> str:
    """A short metric-key label for an arm value that parses back to it exactly.

    ``%g`` where that round-trips (0.6 -> "0.6", 1.0 -> "1", 1e-07 -> "1e-07"), else the
    shortest repr (1.0000001 -> "1.0000001"), so ``float(arm_label(v)) == v`` and distinct
    arms never share a label.
    """
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def check_all_arms(feedback: Counterfactual, num_arms: int) -> None:
    """Counterfactual feedback for a Discrete controller must score every arm, in order.

    Raises:
        ValueError: ``feedback.loglik`` has another number of columns, or the decision's
            virtual arms are not ``0, 1, ..., num_arms - 1``.
    """
    if feedback.loglik.shape[1] != num_arms or not np.array_equal(
        feedback.decision.virtual_arms, np.arange(num_arms)
    ):
        raise ValueError(
            f"Counterfactual.loglik: expected one column per arm ({num_arms}), "
            f"got shape {feedback.loglik.shape}"
        )


def counterfactual_arm_advantages(
    feedback: Counterfactual, normaliser: F.Normaliser
) -> tuple[np.ndarray, np.ndarray]:
    """(w [N, M], a [M]): per-rollout arm weights and the batch's per-arm advantages.

    Steps 4-5 of TAMPO (DESIGN section 3): ``w_ik = normaliser(l_1(i), ..., l_M(i))_k`` and
    ``a_k = mean_i w_ik A_i``.
    """
    weights = F.arm_weights(feedback.loglik, normaliser)
    return weights, F.arm_advantages(weights, feedback.advantages)


def played_arms(feedback: Outcome | Outcomes) -> tuple[np.ndarray, np.ndarray]:
    """(arm coordinates, rewards) of bandit feedback, as arrays."""
    if isinstance(feedback, Outcome):
        return np.array([feedback.decision.arm]), np.array([feedback.reward])
    return np.array([d.arm for d in feedback.decisions]), np.asarray(feedback.rewards)
