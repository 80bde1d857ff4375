import numpy as np
import pytest

import metactl as mc


def test_discrete_validates_and_is_read_only() -> None:
    space = mc.Discrete([0.6, 1.0, 1.4])
    assert len(space) == 3 and space.contains(1.0) and not space.contains(1.1)
    with pytest.raises(ValueError):
        space.values[0] = 2.0
    with pytest.raises(ValueError, match="distinct"):
        mc.Discrete([1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        mc.Discrete([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        mc.Discrete([])


def test_box_validates() -> None:
    with pytest.raises(ValueError, match="low < high"):
        mc.Box(2.0, 1.0)
    with pytest.raises(ValueError, match="low > 0"):
        mc.Box(0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="finite"):
        mc.Box(0.0, float("inf"))


@pytest.mark.parametrize("log", [False, True])
def test_box_unconstrained_map_is_inverse_and_stays_inside(log: bool) -> None:
    space = mc.Box(0.3, 3.0, log=log)
    u = np.linspace(-8, 8, 101)
    x = space.from_unconstrained(u)
    assert np.all((x >= 0.3) & (x <= 3.0))
    np.testing.assert_allclose(space.to_unconstrained(x), u, rtol=1e-6, atol=1e-6)
    # u = 0 is the midpoint of the range in y (log x when log=True): written from the definition.
    mid = np.sqrt(0.3 * 3.0) if log else (0.3 + 3.0) / 2
    assert space.from_unconstrained(0.0) == pytest.approx(mid)
    assert np.all(space.from_unconstrained([-1e6, 1e6]) == [0.3, 3.0])


def test_fingerprints_differ_and_are_stable() -> None:
    assert mc.Discrete([1.0, 2.0]).fingerprint == mc.Discrete([1.0, 2.0]).fingerprint
    assert mc.Discrete([1.0, 2.0]).fingerprint != mc.Discrete([2.0, 1.0]).fingerprint
    assert mc.Box(0.3, 3.0).fingerprint != mc.Box(0.3, 3.0, log=True).fingerprint


@pytest.mark.parametrize(
    ("space", "text"),
    [
        (mc.Discrete([0.6, 1.0, 1.4]), "Discrete([0.6, 1.0, 1.4])"),
        (mc.Box(0.3, 3.0, log=True), "Box(0.3, 3.0, log=True)"),
        (mc.Box(-1, 2), "Box(-1.0, 2.0, log=False)"),
    ],
)
def test_repr_is_readable_and_rebuilds_the_space(space: mc.Space, text: str) -> None:
    assert repr(space) == text
    assert eval(text, vars(mc)) == space
