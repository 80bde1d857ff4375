"""Arm spaces: the values a controlled hyperparameter may take.

``Discrete(values)`` is a finite set of arms; ``Box(low, high, log=False)`` is a
continuous range. Spaces are immutable descriptions; controllers own the RNG.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import reprlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from metactl._validate import real

FloatArray = NDArray[np.float64]


def _fingerprint(description: dict[str, Any]) -> str:
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _arm_values(values: object) -> FloatArray:
    """``values`` as a non-empty 1-D float64 array, or ``ValueError`` naming the bad value.

    Real numbers only: strings, ``None``, booleans and complex numbers are refused, never
    converted (``float("1")`` or ``True -> 1.0`` would hide a mistake).
    """
    name = "Discrete(values)"
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError) as exc:  # e.g. ragged nested lists
        raise ValueError(
            f"{name}: expected a 1-D sequence of real numbers, got {reprlib.repr(values)} ({exc})"
        ) from exc
    if raw.ndim != 1 or raw.size == 0:
        raise ValueError(
            f"{name}: expected a non-empty 1-D sequence of real numbers, got "
            f"{reprlib.repr(values)} (shape {raw.shape})"
        )
    for i, value in enumerate(raw.tolist()):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"{name}: every value must be a real number, got {value!r} at index {i} "
                f"in {reprlib.repr(values)}"
            )
    try:
        return np.array([float(v) for v in raw.tolist()], dtype=np.float64)
    except OverflowError as exc:  # an int beyond the float range
        raise ValueError(
            f"{name}: a value is too large for a float, got {reprlib.repr(values)} ({exc})"
        ) from exc


class Discrete:
    """A finite set of K arm values, e.g. candidate temperatures.

    Example:
        >>> space = Discrete([0.6, 0.8, 1.0])
        >>> space.values
        array([0.6, 0.8, 1. ])
    """

    def __init__(self, values: Sequence[float] | ArrayLike) -> None:
        arr = _arm_values(values)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"Discrete(values): every value must be finite, got {arr.tolist()}")
        if np.unique(arr).size != arr.size:
            raise ValueError(f"Discrete(values): values must be distinct, got {arr.tolist()}")
        arr.setflags(write=False)
        self._values = arr

    @property
    def values(self) -> FloatArray:
        """The arm values, read-only, in the order given."""
        return self._values

    def __len__(self) -> int:
        return int(self._values.size)

    def contains(self, x: float) -> bool:
        """Whether ``x`` is one of the arm values."""
        return bool(np.any(self._values == x))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Discrete", "values": [float(v) for v in self._values]}

    @property
    def fingerprint(self) -> str:
        """A short hash of the space, stored in controller state to catch mismatches."""
        return _fingerprint(self.to_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Discrete) and np.array_equal(self._values, other._values)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"Discrete({[float(v) for v in self._values]})"


class Box:
    """A continuous range [low, high]; ``log=True`` treats it on a log scale.

    Continuous controllers work in an unconstrained coordinate ``u``:
    ``y = a + (b - a) * sigmoid(u)`` with ``y = log x`` when ``log`` else ``y = x``,
    and ``[a, b]`` the range in ``y``. So every real ``u`` maps inside the box.

    Example:
        >>> space = Box(0.3, 3.0, log=True)
        >>> float(space.from_unconstrained(0.0))  # geometric midpoint
        0.9486832980505138
    """

    def __init__(self, low: float, high: float, log: bool = False) -> None:
        low_f, high_f = real("Box(low)", low), real("Box(high)", high)
        if not isinstance(log, (bool, np.bool_)):
            raise ValueError(f"Box(log): expected True or False, got {log!r}")
        if not low_f < high_f:
            raise ValueError(f"Box(low, high): need low < high, got low={low}, high={high}")
        if log and low_f <= 0:
            raise ValueError(f"Box(low, high, log=True): need low > 0, got low={low}")
        self.low = low_f
        self.high = high_f
        self.log = bool(log)
        self._a = math.log(low_f) if log else low_f
        self._b = math.log(high_f) if log else high_f

    def contains(self, x: float) -> bool:
        """Whether ``low <= x <= high``."""
        return bool(self.low <= x <= self.high)

    def from_unconstrained(self, u: ArrayLike) -> FloatArray:
        """Map unconstrained coordinates ``u`` to values inside the box."""
        u_arr = np.asarray(u, dtype=np.float64)
        # Stable sigmoid, clipped so that values stay inside [low, high] despite rounding.
        s = np.where(
            u_arr >= 0, 1 / (1 + np.exp(-np.abs(u_arr))), 1 - 1 / (1 + np.exp(-np.abs(u_arr)))
        )
        y = self._a + (self._b - self._a) * s
        x = np.exp(y) if self.log else y
        return np.clip(x, self.low, self.high)

    def to_unconstrained(self, x: ArrayLike) -> FloatArray:
        """Inverse of :meth:`from_unconstrained` (``+-inf`` at the bounds)."""
        x_arr = np.asarray(x, dtype=np.float64)
        if np.any((x_arr < self.low) | (x_arr > self.high)):
            raise ValueError(
                f"Box.to_unconstrained(x): values must lie in [{self.low}, {self.high}], got {x_arr}"
            )
        y = np.log(x_arr) if self.log else x_arr
        s = (y - self._a) / (self._b - self._a)
        with np.errstate(divide="ignore"):
            return np.log(s) - np.log1p(-s)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Box", "low": self.low, "high": self.high, "log": self.log}

    @property
    def fingerprint(self) -> str:
        """A short hash of the space, stored in controller state to catch mismatches."""
        return _fingerprint(self.to_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"Box({self.low}, {self.high}, log={self.log})"


Space = Discrete | Box
