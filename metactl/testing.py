"""Public conformance check for controllers, in the spirit of gymnasium's ``check_env``.

Example:
    >>> import metactl as mc
    >>> mc.testing.check_controller(mc.TAMPO(seed=0))
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
from typing import Any

import numpy as np

from metactl.controllers.base import Controller
from metactl.feedback import (
    Counterfactual,
    Decision,
    EntropyObservation,
    Feedback,
    Outcome,
    Outcomes,
)
from metactl.metric_keys import prob_arm
from metactl.spaces import Box, Discrete


def random_feedback(
    feedback_type: type, decision: Decision, rng: np.random.Generator, num_rollouts: int = 16
) -> Feedback:
    """A valid feedback of ``feedback_type`` for ``decision``, drawn from ``rng``.

    Counterfactual feedback carries every optional field: 0/1 rewards, prompt groups of four
    consecutive rollouts, and scored lengths of 1 to 32 tokens.
    """
    if feedback_type is Counterfactual:
        m = decision.virtual.size
        loglik = -rng.gamma(2.0, 0.5, size=(num_rollouts, m))
        advantages = rng.standard_normal(num_rollouts)
        rewards = rng.integers(0, 2, size=num_rollouts).astype(np.float64)
        groups = np.arange(num_rollouts) // 4
        lengths = rng.integers(1, 33, size=num_rollouts).astype(np.float64)
        return Counterfactual(
            decision, loglik, advantages, rewards=rewards, groups=groups, lengths=lengths
        )
    if feedback_type is Outcome:
        return Outcome(decision, float(rng.standard_normal()))
    if feedback_type is Outcomes:
        return Outcomes((decision,), rng.standard_normal(1))
    if feedback_type is EntropyObservation:
        return EntropyObservation(decision, float(rng.uniform(0.5, 3.0)))
    raise TypeError(f"random_feedback: unknown feedback type {feedback_type.__name__}")


def _global_rng_states() -> tuple[Any, ...]:
    # Reading numpy's legacy global state, only to prove it is untouched.
    numpy_global = np.random.get_state(legacy=False)  # noqa: NPY002
    numpy_state = json.dumps(numpy_global, default=lambda a: a.tolist())
    states: tuple[Any, ...] = (random.getstate(), numpy_state)
    torch = sys.modules.get("torch")  # compare torch's RNG only if the caller imported it
    if torch is not None:
        states += (torch.random.get_rng_state().tolist(),)
    return states


def _check_decision(controller: Controller, d: Decision) -> None:
    space = controller.space
    if not isinstance(d, Decision):
        raise AssertionError(f"sample() must return a metactl.Decision, got {type(d).__name__}")
    if not space.contains(d.value):
        raise AssertionError(f"sample().value {d.value} is outside {space}")
    for v in d.virtual:
        if not space.contains(float(v)):
            raise AssertionError(f"sample().virtual contains {v}, outside {space}")
    if isinstance(space, Box) and not math.isfinite(d.arm):
        raise AssertionError(f"sample().arm must be finite, got {d.arm}")


def _check_metrics(metrics: object) -> None:
    if not isinstance(metrics, dict):
        raise AssertionError(
            f"update() must return a dict of metrics, got {type(metrics).__name__}"
        )
    for key, value in metrics.items():
        if not isinstance(key, str) or not isinstance(value, float) or not math.isfinite(value):
            raise AssertionError(
                f"update() metric {key!r}={value!r} must be a str key with a finite float"
            )
    probs = np.array([v for k, v in metrics.items() if prob_arm(k) is not None])
    if probs.size and (np.any(probs < 0) or not math.isclose(probs.sum(), 1.0, abs_tol=1e-9)):
        raise AssertionError(
            f"update() probabilities must be non-negative and sum to 1, got {probs}"
        )


def _run(
    controller: Controller, steps: int, seed: int
) -> list[tuple[float, list[float], dict[str, float]]]:
    rng = np.random.default_rng(seed)
    trace = []
    for i in range(steps):
        d = controller.sample()
        _check_decision(controller, d)
        feedback_type = controller.accepts[i % len(controller.accepts)]
        metrics = controller.update(random_feedback(feedback_type, d, rng))
        _check_metrics(metrics)
        trace.append((d.value, d.virtual.tolist(), metrics))
    return trace


def _json_roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    try:
        text = json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"state_dict() must be plain JSON data: {exc}") from exc
    loaded: dict[str, Any] = json.loads(text)
    if loaded != state:
        raise AssertionError(
            "state_dict() changes under a JSON round trip (tuples, numpy scalars?)"
        )
    return loaded


def _expect_rejected(
    controller: Controller, feedback: object, error: type[Exception], what: str
) -> None:
    before = controller.state_dict()
    try:
        controller.update(feedback)  # type: ignore[arg-type]
    except error:
        pass
    else:
        raise AssertionError(f"update() must raise {error.__name__} for {what}")
    if controller.state_dict() != before:
        raise AssertionError(f"a rejected update ({what}) changed the controller's state")


def check_controller(controller: Controller, *, steps: int = 12, seed: int = 0) -> None:
    """Check that ``controller`` follows the metactl Controller contract.

    Runs ``steps`` sample/update rounds on random valid feedback and checks:
    samples inside the space; metrics are finite floats and probabilities sum
    to 1; ``state_dict()`` is plain JSON; loading the state saved at any step
    gives a bit-identical continuation (so the same seed gives the same run);
    wrong feedback types raise ``TypeError`` and feedback from another
    controller raises ``ValueError``, both leaving the state untouched; global
    RNGs (random, numpy, and torch if imported) are never touched. The
    controller is restored to its initial state afterwards.

    Raises:
        AssertionError: naming the first rule the controller breaks.
    """
    if not isinstance(controller, Controller):
        raise AssertionError(
            f"{type(controller).__name__} does not implement the metactl Controller protocol"
        )
    if not isinstance(controller.space, (Discrete, Box)):
        raise AssertionError(
            f"controller.space must be a metactl Discrete or Box, got {controller.space!r}"
        )
    if not controller.accepts or not all(isinstance(t, type) for t in controller.accepts):
        raise AssertionError("controller.accepts must be a non-empty tuple of feedback types")
    globals_before = _global_rng_states()
    initial = copy.deepcopy(controller.state_dict())
    _json_roundtrip(initial)

    first = _run(controller, steps, seed)
    controller.load_state_dict(_json_roundtrip(initial))
    if _run(controller, steps, seed) != first:
        raise AssertionError("replaying from the initial state did not give the identical run")

    half = steps // 2
    controller.load_state_dict(initial)
    _run(controller, half, seed)
    middle = _json_roundtrip(controller.state_dict())
    rng_rest = np.random.default_rng(seed + 1)
    tail = []
    for i in range(steps - half):
        d = controller.sample()
        feedback_type = controller.accepts[i % len(controller.accepts)]
        tail.append((d.value, controller.update(random_feedback(feedback_type, d, rng_rest))))
    controller.load_state_dict(middle)
    rng_rest = np.random.default_rng(seed + 1)
    for i, expected in enumerate(tail):
        d = controller.sample()
        feedback_type = controller.accepts[i % len(controller.accepts)]
        got = (d.value, controller.update(random_feedback(feedback_type, d, rng_rest)))
        if got != expected:
            raise AssertionError(
                f"continuation after load_state_dict differs at step {half + i}: {got} != {expected}"
            )

    d = controller.sample()
    for feedback_type in (Counterfactual, Outcome, Outcomes, EntropyObservation):
        if feedback_type not in controller.accepts:
            _expect_rejected(
                controller,
                random_feedback(feedback_type, d, np.random.default_rng(seed)),
                TypeError,
                f"{feedback_type.__name__} feedback it does not accept",
            )
    foreign = Decision(
        d.value, d.virtual, d.arm, d.virtual_arms, d.step, source="another-controller"
    )
    feedback = random_feedback(controller.accepts[0], foreign, np.random.default_rng(seed))
    _expect_rejected(controller, feedback, ValueError, "a Decision made by another controller")
    _expect_rejected(controller, object(), TypeError, "an object that is not feedback")

    controller.load_state_dict(initial)
    if _global_rng_states() != globals_before:
        raise AssertionError("the controller touched a global RNG (random, numpy or torch)")
