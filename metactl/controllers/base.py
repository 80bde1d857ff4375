"""The Controller protocol and the shell every built-in controller shares.

A controller is a small stateful object around pure update rules::

    d = ctl.sample()               # draw the arm for the next rollouts
    metrics = ctl.update(feedback) # learn from what those rollouts showed
    state = ctl.state_dict()       # JSON data; ctl.load_state_dict(state) restores it
"""

from __future__ import annotations

import copy
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from metactl import _validate
from metactl._validate import first_non_finite
from metactl.errors import IncompatibleController
from metactl.feedback import (
    Counterfactual,
    Decision,
    EntropyObservation,
    Feedback,
    Outcome,
    Outcomes,
)
from metactl.spaces import Box, Discrete, Space

STATE_FORMAT_VERSION = 1

Metrics = dict[str, float]


@runtime_checkable
class Controller(Protocol):
    """What every metactl controller provides.

    ``accepts`` lists the feedback types ``update`` can learn from, so an
    integration builds only what the controller uses.
    """

    accepts: ClassVar[tuple[type, ...]]

    @property
    def space(self) -> Space: ...

    def sample(self) -> Decision: ...

    def update(self, feedback: Feedback) -> Metrics: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


FEEDBACK_PRIORITY: tuple[type, ...] = (Counterfactual, Outcome, Outcomes, EntropyObservation)
"""The order in which an integration picks the feedback to build: the richest signal first.

Counterfactual scores every rollout at every virtual arm; Outcome and Outcomes see only the
played arms; an EntropyObservation carries no reward at all.
"""


def preferred_feedback(
    controller: Controller, offered: Collection[type] = FEEDBACK_PRIORITY
) -> type:
    """The feedback type to build for ``controller``.

    That is the first type of :data:`FEEDBACK_PRIORITY` that the caller can build
    (``offered``) and the controller accepts::

        preferred_feedback(mc.TAMPO())                                   # Counterfactual
        preferred_feedback(mc.SlidingWindowUCB(arms), (Counterfactual, Outcome))  # Outcome

    Args:
        controller: the controller to feed.
        offered: the feedback types the caller can build (order does not matter).

    Raises:
        IncompatibleController: (a ``TypeError``) the controller accepts none of ``offered``.
    """
    for kind in FEEDBACK_PRIORITY:
        if kind in offered and kind in controller.accepts:
            return kind
    accepted = ", ".join(t.__name__ for t in controller.accepts) or "nothing"
    can_build = ", ".join(t.__name__ for t in FEEDBACK_PRIORITY if t in offered) or "nothing"
    raise IncompatibleController(
        f"controller: {type(controller).__name__} learns only from {accepted}, but the "
        f"feedback offered here is {can_build}"
    )


def make_rng(seed: int | np.random.Generator | None) -> tuple[np.random.Generator, int | None]:
    """An owned Generator, and the entropy that seeded it (None when a Generator was given).

    With ``seed=None`` fresh OS entropy is drawn and returned so that the run can
    be reproduced by passing it back as ``seed``.
    """
    if isinstance(seed, np.random.Generator):
        return seed, None
    if isinstance(seed, (bool, np.bool_)) or (
        seed is not None and not isinstance(seed, (int, np.integer))
    ):
        raise TypeError(
            f"seed: expected an int, a numpy Generator or None, got {type(seed).__name__}"
        )
    if seed is not None and seed < 0:
        raise ValueError(f"seed: must be non-negative, got {seed}")
    seq = np.random.SeedSequence(None if seed is None else int(seed))
    entropy = int(seq.entropy)  # type: ignore[arg-type]
    return np.random.Generator(np.random.PCG64(seq)), entropy


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


class BaseController(ABC):
    """Shared shell: owned RNG, decision bookkeeping, transactional updates, JSON state.

    Subclasses implement ``_sample`` (returning value, virtual values, arm
    coordinates), ``_update`` (mutating only their parameters), and
    ``_params``/``_load_params`` (their JSON parameters). The shell guarantees a
    rejected feedback leaves the state untouched.
    """

    accepts: ClassVar[tuple[type, ...]] = ()
    #: Whether feedback on a stale decision is refused (open-loop controllers learn nothing,
    #: so any feedback is a valid no-op for them).
    refuses_stale: ClassVar[bool] = True

    def __init__(self, space: Space, seed: int | np.random.Generator | None) -> None:
        if not isinstance(space, (Discrete, Box)):
            raise TypeError(
                f"space: expected metactl.Discrete or metactl.Box, got {type(space).__name__}"
            )
        self._space: Space = space
        self._rng, self.seed_entropy = make_rng(seed)
        # False when the generator came from OS entropy: a trainer may then seed it from its run.
        self.seeded = seed is not None
        self._id = uuid.uuid4().hex
        self.step = 0  # decisions made
        self.updates = 0  # feedback batches accepted
        # Decisions made before this step are stale: the controller learned after making them.
        self._fresh_from = 0

    @property
    def space(self) -> Space:
        """The arms this controller chooses among."""
        return self._space

    def reseed(self, seed: int) -> None:
        """Draw from a generator seeded with ``seed`` from now on; only before the first decision.

        A trainer calls this with its run's seed when the controller was built without one, so
        that two runs with the same seed sample the same arms::

            ctl = mc.TAMPO()                   # no seed: OS entropy
            if not ctl.seeded:
                ctl.reseed(args.seed)          # what MetaGRPOTrainer does

        Raises:
            RuntimeError: the controller has already made a decision or learned.
        """
        if self.step or self.updates:
            raise RuntimeError(
                f"{type(self).__name__}.reseed: the controller already made {self.step} "
                "decisions; reseed it before the first sample()"
            )
        self._rng, self.seed_entropy = make_rng(seed)
        self.seeded = True

    def __repr__(self) -> str:
        """The class and its settings, e.g. ``TAMPO(space=Discrete([0.6, 1.0]), ema=0.05, ...)``.

        The settings are those of :meth:`_config`, the ones a saved state must match.
        """
        settings = [f"space={self._space!r}"]
        settings += [f"{name}={value!r}" for name, value in _jsonable(self._config()).items()]
        return f"{type(self).__name__}({', '.join(settings)})"

    # --- the public loop -------------------------------------------------
    def sample(self) -> Decision:
        """Propose the arm for the next rollouts (advances the owned RNG)."""
        value, virtual, arm, virtual_arms = self._sample()
        decision = Decision(
            value=value,
            virtual=virtual,
            arm=arm,
            virtual_arms=virtual_arms,
            step=self.step,
            source=self._id,
        )
        self.step += 1
        return decision

    def update(self, feedback: Feedback) -> Metrics:
        """Learn from feedback on this controller's decisions; returns flat float metrics.

        Feedback must be on decisions made since the controller last learned (and not on
        decisions "from the future" of a state loaded since); anything else is stale.

        Raises:
            TypeError: the controller cannot learn from this kind of feedback.
            ValueError: the feedback belongs to another controller, is on a stale decision, or
                would make the state non-finite; the state is untouched.
        """
        if not isinstance(feedback, self.accepts):
            names = ", ".join(t.__name__ for t in self.accepts)
            raise TypeError(
                f"{type(self).__name__}.update: cannot learn from {type(feedback).__name__}; "
                f"it accepts {names}"
            )
        decisions = feedback.decisions if isinstance(feedback, Outcomes) else (feedback.decision,)
        for d in decisions:
            if d.source != self._id:
                raise ValueError(
                    f"{type(self).__name__}.update: feedback.decision (step {d.step}) was made by "
                    "another controller; pass the Decision this controller's sample() returned"
                )
            if self.refuses_stale and not self._fresh_from <= d.step < self.step:
                raise ValueError(
                    f"{type(self).__name__}.update: feedback.decision (step {d.step}) is stale: "
                    f"feedback is taken on decisions of steps {self._fresh_from} to "
                    f"{self.step - 1}, made since the controller last learned (or loaded a "
                    "state); pass the Decision of the latest sample()"
                )
        # Work on a copy of the parameters so that any failure leaves the state untouched.
        saved = copy.deepcopy(self._params())
        try:
            # An overflow is not warned about here: the check below refuses its result.
            with np.errstate(over="ignore", invalid="ignore"):
                metrics = self._update(feedback)
            bad = first_non_finite("params", _jsonable(self._params()))
            bad = bad or first_non_finite("metrics", metrics)
            if bad is not None:
                raise ValueError(
                    f"{type(self).__name__}.update: this feedback would make {bad} non-finite; "
                    "it is refused and the controller is unchanged"
                )
        except Exception:
            self._load_params(saved)
            raise
        self._fresh_from = self.step
        self.updates += 1
        metrics["updates"] = float(self.updates)
        return metrics

    # --- state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON data: parameters, counters, RNG state, space fingerprint, format version."""
        bit_gen = self._rng.bit_generator
        return {
            "format_version": STATE_FORMAT_VERSION,
            "controller": type(self).__name__,
            "space": self._space.to_dict(),
            "space_fingerprint": self._space.fingerprint,
            "step": self.step,
            "updates": self.updates,
            "fresh_from": self._fresh_from,
            "seed_entropy": self.seed_entropy,
            "rng": {"bit_generator": type(bit_gen).__name__, "state": _jsonable(bit_gen.state)},
            "config": _jsonable(self._config()),
            "params": _jsonable(self._params()),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; raises ``ValueError`` naming any mismatch."""
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict(state): expected a dict, got {type(state).__name__}")
        missing = {
            "format_version",
            "controller",
            "space_fingerprint",
            "step",
            "updates",
            "rng",
            "params",
        } - set(state)
        if missing:
            raise ValueError(f"load_state_dict: state is missing keys {sorted(missing)}")
        if state["format_version"] != STATE_FORMAT_VERSION:
            raise ValueError(
                f"load_state_dict: format_version {state['format_version']!r} is not supported "
                f"(this metactl writes {STATE_FORMAT_VERSION})"
            )
        if state["controller"] != type(self).__name__:
            raise ValueError(
                f"load_state_dict: state was saved by {state['controller']!r}, cannot load into "
                f"{type(self).__name__}"
            )
        if state["space_fingerprint"] != self._space.fingerprint:
            raise ValueError(
                f"load_state_dict: space mismatch: state has {state.get('space')} "
                f"(fingerprint {state['space_fingerprint']}), this controller has "
                f"{self._space.to_dict()} (fingerprint {self._space.fingerprint})"
            )
        config = _jsonable(self._config())
        saved_config = state.get("config", {})
        if saved_config != config:
            diff = sorted(
                k for k in set(config) | set(saved_config) if config.get(k) != saved_config.get(k)
            )
            raise ValueError(
                "load_state_dict: settings differ from the saved controller's: "
                + ", ".join(
                    f"{k}={saved_config.get(k)!r} saved vs {config.get(k)!r} here" for k in diff
                )
            )
        bit_gen = self._rng.bit_generator
        rng = state["rng"]
        if not isinstance(rng, Mapping) or rng.get("bit_generator") != type(bit_gen).__name__:
            got = rng.get("bit_generator") if isinstance(rng, Mapping) else rng
            raise ValueError(
                f"load_state_dict: rng.bit_generator was {got!r}, this controller uses "
                f"{type(bit_gen).__name__}"
            )
        try:
            rng_state = _validate.rng_state(bit_gen, rng.get("state"))
        except ValueError as exc:
            raise ValueError(f"load_state_dict: invalid rng state: {exc}") from exc
        counters = {name: state[name] for name in ("step", "updates")}
        # Older states have no fresh_from: decisions made before the load are then stale.
        counters["fresh_from"] = state.get("fresh_from", counters["step"])
        for name, value in counters.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"load_state_dict: {name} must be an int >= 0, got {value!r}")
        _check_counters(counters, refuses_stale=self.refuses_stale)
        seed_entropy = state.get("seed_entropy")
        if seed_entropy is not None and (
            not isinstance(seed_entropy, int) or isinstance(seed_entropy, bool) or seed_entropy < 0
        ):
            raise ValueError(
                f"load_state_dict: seed_entropy must be None or an int >= 0, got {seed_entropy!r}"
            )
        if not isinstance(state["params"], Mapping):
            raise ValueError(f"load_state_dict: params must be a dict, got {state['params']!r}")
        # Everything else is checked; the params are the last: set them, check them, and put
        # the old ones back on any failure, so that a refused state changes nothing.
        saved_params = copy.deepcopy(self._params())
        try:
            self._load_params(state["params"])
            bad = first_non_finite("params", _jsonable(self._params()))
            if bad is not None:
                raise ValueError(f"{bad}: must be finite")
            self._check_params_against(counters["updates"])
        except KeyError as exc:
            self._load_params(saved_params)
            raise ValueError(
                f"load_state_dict: params.{exc.args[0]} is missing for {type(self).__name__}"
            ) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            self._load_params(saved_params)
            raise ValueError(
                f"load_state_dict: invalid params for {type(self).__name__}: {exc}"
            ) from exc
        bit_gen.state = rng_state
        self.step = counters["step"]
        self.updates = counters["updates"]
        self._fresh_from = counters["fresh_from"]
        self.seed_entropy = seed_entropy

    # --- subclass hooks ---------------------------------------------------------
    @abstractmethod
    def _sample(self) -> tuple[float, np.ndarray, float, np.ndarray]:
        """Return (value, virtual values [M], arm coordinate, virtual arm coordinates [M])."""

    @abstractmethod
    def _update(self, feedback: Feedback) -> Metrics: ...

    def _config(self) -> dict[str, Any]:
        """Constructor settings that must match for a saved state to be loaded."""
        return {}

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """The learnable state as a dict of JSON-able values or numpy arrays."""

    @abstractmethod
    def _load_params(self, params: Mapping[str, Any]) -> None:
        """Set the learnable state; raise ValueError on wrong shapes."""

    # A hook with a default (most controllers keep no counters in their params), not abstract.
    def _check_params_against(self, updates: int) -> None:  # noqa: B027
        """Raise ``ValueError`` naming the field if the loaded params count more than ``updates`` allow.

        Called by :meth:`load_state_dict` after :meth:`_load_params` (whose params it restores
        on failure); a controller with counters in its params (Adam's steps, observations)
        overrides it.
        """


def _check_counters(counters: Mapping[str, int], *, refuses_stale: bool) -> None:
    """Refuse saved counters that no sequence of calls could have produced, naming the field.

    ``step`` counts decisions, ``updates`` accepted feedback batches, ``fresh_from`` the step of
    the last update (feedback is taken on decisions from it on). So ``fresh_from <= step``; a
    controller that refuses stale feedback learns from at least one new decision per update, so
    ``updates <= fresh_from``; an open-loop one (``Fixed``, ``Schedule``) may take feedback on
    the same decision again and again, but only on a decision it made: ``updates > 0`` needs
    ``fresh_from >= 1``.
    """
    step, updates, fresh_from = counters["step"], counters["updates"], counters["fresh_from"]
    if fresh_from > step:
        raise ValueError(
            f"load_state_dict: fresh_from must be <= step ({step}), got {fresh_from!r}"
        )
    if refuses_stale and updates > step:
        raise ValueError(
            f"load_state_dict: updates must be <= step ({step}), got {updates!r}: each update "
            "learns from at least one decision made since the previous one"
        )
    if refuses_stale and updates > fresh_from:
        raise ValueError(
            f"load_state_dict: updates must be <= fresh_from ({fresh_from}), got {updates!r}: "
            "each update learns from at least one decision made since the previous one"
        )
    if updates > 0 and fresh_from < 1:
        raise ValueError(
            f"load_state_dict: updates is {updates!r} but step is {step} and fresh_from "
            f"{fresh_from}: feedback is taken only on a decision the controller made"
        )


def check_shape(
    name: str, value: Any, shape: tuple[int, ...], *, limit: float | None = None
) -> np.ndarray:
    """A finite float array of exactly ``shape`` from saved state, or ``ValueError`` naming it.

    Args:
        name: the field, for messages (e.g. ``"params.theta"``).
        value: the saved value.
        shape: the expected shape.
        limit: if given, the largest absolute value allowed (an average of rewards or
            advantages lies within the feedback domain, ``MAX_MAGNITUDE``).
    """
    arr = _validate.real_array(name, value, len(shape), limit=limit)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    return arr
