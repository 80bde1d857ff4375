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


@pytest.mark.parametrize(
    ("build", "named"),
    [
        # issue 24: these six gave numpy's or float()'s message, naming neither argument nor value
        (lambda: mc.Discrete(["a", "b"]), r"Discrete\(values\): .*got 'a' at index 0"),
        (lambda: mc.Box("a", 1), r"Box\(low\): expected a real number, got 'a'"),
        (lambda: mc.Box(None, 1), r"Box\(low\): expected a real number, got None"),
        (lambda: mc.Box(0.5, None), r"Box\(high\): expected a real number, got None"),
        (lambda: mc.Box(0.5, "2"), r"Box\(high\): expected a real number, got '2'"),
        (
            lambda: mc.Discrete([[1.0, 2.0], [3.0]]),
            r"Discrete\(values\): .*got \[\[1\.0, 2\.0\], \[3\.0\]\]",
        ),
        # ... and what was silently converted: booleans, complex numbers, None, a string log flag
        (lambda: mc.Box(True, 2), r"Box\(low\): expected a real number, got the bool True"),
        (lambda: mc.Box(0.5, 1 + 2j), r"Box\(high\): expected a real number, got \(1\+2j\)"),
        (lambda: mc.Box([0.5], 2), r"Box\(low\): expected a real number, got \[0\.5\]"),
        (lambda: mc.Box(0.3, 3.0, log="no"), r"Box\(log\): expected True or False, got 'no'"),
        (lambda: mc.Discrete([True, False]), r"Discrete\(values\): .*got True at index 0"),
        (lambda: mc.Discrete([0.5, None]), r"Discrete\(values\): .*got None at index 1"),
        (lambda: mc.Discrete([1 + 2j]), r"Discrete\(values\): .*got \(1\+2j\) at index 0"),
        (lambda: mc.Discrete(None), r"Discrete\(values\): .*got None \(shape \(\)\)"),
        (lambda: mc.Discrete({0.5, 1.0}), r"Discrete\(values\): .*got \{0\.5, 1\.0\}"),
        (lambda: mc.Discrete("ab"), r"Discrete\(values\): .*got 'ab'"),
        (
            lambda: mc.Discrete([10**400]),
            r"Discrete\(values\): .*too large for a float, got \[1000",
        ),
        (lambda: mc.Box(0.5, float("inf")), r"Box\(high\): must be finite, got inf"),
        (lambda: mc.Box(float("nan"), 1), r"Box\(low\): must be finite, got nan"),
    ],
)
def test_every_space_error_names_the_argument_and_the_value(build, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        build()


def test_spaces_still_take_any_real_numbers() -> None:
    assert mc.Discrete(np.array([1, 2], dtype=np.int32)) == mc.Discrete([1.0, 2.0])
    assert mc.Discrete(range(3)).values.tolist() == [0.0, 1.0, 2.0]
    assert mc.Box(np.float32(0.5), np.int64(2), log=np.bool_(True)) == mc.Box(0.5, 2.0, log=True)
