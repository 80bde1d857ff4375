"""The checks the core shares: arguments, feedback values and saved state, each rule written once.

Every failure is a ``ValueError`` (or ``TypeError`` for a wrong kind of object) whose message
names the field and the offending value.

The feedback domain. Rewards and advantages are refused beyond ``MAX_MAGNITUDE`` in absolute
value; log-likelihoods may be any finite number (controllers only use them through
shift-invariant normalisers, so one huge row cannot overflow anything). Within that domain
every built-in controller's state provably stays finite: it holds averages of the values it
was fed, gradients of them, and squares of those gradients, each far below the float64 range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

MAX_MAGNITUDE = 1e100
"""The largest absolute reward, advantage or entropy a controller accepts (docs/concepts.md)."""


def integer(name: str, value: object, *, minimum: int | None = None) -> int:
    """``value`` as an ``int``, refusing bools, non-integral numbers and values below ``minimum``.

    An integral float (``2.0``) is accepted; ``True``, ``2.5``, ``"2"`` and NaN are not.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected an integer, got the bool {value!r}")
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        out = int(float(value))
    else:
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if minimum is not None and out < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value!r}")
    return out


def real(name: str, value: object) -> float:
    """``value`` as a finite ``float``, refusing bools, complex numbers, NaN and infinities."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected a real number, got the bool {value!r}")
    if isinstance(value, numbers.Real):
        out = float(value)
    else:  # a 0-d array or tensor of a real dtype
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError, RuntimeError):
            arr = np.asarray(None)
        if arr.ndim != 0 or arr.dtype.kind not in "iuf":
            raise ValueError(f"{name}: expected a real number, got {value!r}")
        out = float(arr)
    if not math.isfinite(out):
        raise ValueError(f"{name}: must be finite, got {out}")
    return out


def bounded(name: str, value: float, limit: float = MAX_MAGNITUDE) -> float:
    """``value`` unchanged if ``|value| <= limit``, else ``ValueError`` naming it."""
    if not abs(value) <= limit:
        raise ValueError(
            f"{name}: |value| must be <= {limit:g} (the feedback domain, see docs/concepts.md), "
            f"got {value!r}"
        )
    return value


def real_array(name: str, value: ArrayLike, ndim: int, *, limit: float | None = None) -> FloatArray:
    """A float64 copy of ``value`` with ``ndim`` dimensions, finite, and ``|x| <= limit`` if given.

    Complex and boolean inputs are refused rather than silently converted.
    """
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot convert to a float array ({exc})") from exc
    if raw.dtype.kind in "cb":
        kind = "complex" if raw.dtype.kind == "c" else "bool"
        raise ValueError(f"{name}: expected real numbers, got a {kind} array of dtype {raw.dtype}")
    try:
        arr = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot convert to a float array ({exc})") from exc
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if np.any(bad):
        raise ValueError(
            f"{name}: must be finite, found {int(bad.sum())} non-finite value(s) such as "
            f"{arr[bad].flat[0]} at index {tuple(int(i) for i in np.argwhere(bad)[0])}"
        )
    if limit is not None and arr.size and np.max(np.abs(arr)) > limit:
        at = tuple(int(i) for i in np.argwhere(np.abs(arr) > limit)[0])
        raise ValueError(
            f"{name}: |value| must be <= {limit:g} (the feedback domain, see docs/concepts.md), "
            f"got {arr[at]!r} at index {at}"
        )
    return arr


def first_non_finite(name: str, value: Any) -> str | None:
    """The path of the first non-finite float in nested JSON-like data, or None if there is none.

    Example: ``first_non_finite("params", {"v": [0.0, nan]})`` is ``"params.v[1]"``.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = first_non_finite(f"{name}.{key}", item)
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        for i, item in enumerate(value):
            found = first_non_finite(f"{name}[{i}]", item)
            if found is not None:
                return found
        return None
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return name
    return None


_PCG_BITS = 128


def rng_state(bit_generator: np.random.BitGenerator, value: object) -> dict[str, Any]:
    """A checked copy of a saved ``bit_generator.state`` for the same kind of bit generator.

    For PCG64 (metactl's own) and PCG64DXSM every field is checked: ``state`` an int in
    ``[0, 2**128)``, ``inc`` an odd int in that range (PCG's stream increment is odd),
    ``has_uint32`` 0 or 1, ``uinteger`` in ``[0, 2**32)``. Any other bit generator's state must
    have the current state's structure with ints where it has ints; it is then tried on a
    fresh generator of that kind.

    Raises:
        ValueError: naming the field (``rng.state...``) and the value.
    """
    kind = type(bit_generator).__name__
    template = bit_generator.state
    if not isinstance(value, Mapping):
        raise ValueError(f"rng.state: expected a dict, got {value!r}")
    if value.get("bit_generator") != kind:
        raise ValueError(
            f"rng.state.bit_generator: expected {kind!r}, got {value.get('bit_generator')!r}"
        )
    out: dict[str, Any] = _like(template, value, "rng.state")
    if kind in ("PCG64", "PCG64DXSM"):
        inner = out["state"]
        for field in ("state", "inc"):
            if not 0 <= inner[field] < 2**_PCG_BITS:
                raise ValueError(
                    f"rng.state.state.{field}: must be an int in [0, 2**128), got {inner[field]!r}"
                )
        if inner["inc"] % 2 != 1:
            raise ValueError(
                f"rng.state.state.inc: PCG's stream increment must be odd, got {inner['inc']!r}"
            )
        if out["has_uint32"] not in (0, 1):
            raise ValueError(f"rng.state.has_uint32: must be 0 or 1, got {out['has_uint32']!r}")
        if not 0 <= out["uinteger"] < 2**32:
            raise ValueError(
                f"rng.state.uinteger: must be an int in [0, 2**32), got {out['uinteger']!r}"
            )
    try:
        type(bit_generator)(0).state = out
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"rng.state: not a valid {kind} state ({exc})") from exc
    return out


def _like(template: Any, value: Any, name: str) -> Any:
    """``value`` restored into the structure of ``template``, ints where it has ints."""
    if isinstance(template, Mapping):
        if not isinstance(value, Mapping) or set(value) != set(template):
            got = sorted(value) if isinstance(value, Mapping) else value
            raise ValueError(f"{name}: expected the keys {sorted(template)}, got {got!r}")
        return {k: _like(template[k], value[k], f"{name}.{k}") for k in template}
    if isinstance(template, np.ndarray):
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: not an array ({exc})") from exc
        if arr.shape != template.shape or arr.dtype.kind not in "iu":
            raise ValueError(
                f"{name}: expected {template.shape} integers, got shape {arr.shape} ({arr.dtype})"
            )
        try:
            return np.asarray(value, dtype=template.dtype)
        except OverflowError as exc:
            raise ValueError(f"{name}: out of range ({exc})") from exc
    if isinstance(template, (int, np.integer)) and not isinstance(template, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an int, got {value!r}")
        return value
    if isinstance(template, str):
        if value != template:
            raise ValueError(f"{name}: expected {template!r}, got {value!r}")
        return value
    return value
