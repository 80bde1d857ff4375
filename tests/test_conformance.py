"""Every built-in controller over every space: conformance, determinism, resume, global RNGs."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import numpy as np
import pytest
import torch

import metactl as mc
from metactl.testing import random_feedback


def test_check_controller(controller_factory: Callable[[], mc.BaseController]) -> None:
    torch_state = torch.random.get_rng_state().clone()
    mc.testing.check_controller(controller_factory(), steps=16)
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def _drive(
    ctl: mc.BaseController, steps: int, rng: np.random.Generator
) -> list[tuple[float, dict[str, float]]]:
    out = []
    for i in range(steps):
        d = ctl.sample()
        fb = random_feedback(ctl.accepts[i % len(ctl.accepts)], d, rng)
        out.append((d.value, ctl.update(fb)))
    return out


def test_same_seed_same_run(controller_factory: Callable[[], mc.BaseController]) -> None:
    a = _drive(controller_factory(), 20, np.random.default_rng(1))
    b = _drive(controller_factory(), 20, np.random.default_rng(1))
    assert a == b


@pytest.mark.parametrize("k", [0, 3, 11])
def test_save_and_load_into_fresh_controller_continues_bit_identically(
    controller_factory: Callable[[], mc.BaseController], k: int
) -> None:
    first = controller_factory()
    _drive(first, k, np.random.default_rng(2))
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    expected = _drive(first, 15, np.random.default_rng(3))

    fresh = controller_factory()
    _drive(fresh, 2, np.random.default_rng(99))  # a fresh controller that has moved on elsewhere
    fresh.load_state_dict(state)
    assert _drive(fresh, 15, np.random.default_rng(3)) == expected


def test_global_rngs_untouched(controller_factory: Callable[[], mc.BaseController]) -> None:
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002 - the global states are what we check stays untouched
    torch.manual_seed(123)
    py, npy, th = random.getstate(), np.random.get_state(), torch.random.get_rng_state().clone()  # noqa: NPY002
    _drive(controller_factory(), 25, np.random.default_rng(4))
    assert random.getstate() == py
    after = np.random.get_state()  # noqa: NPY002
    assert np.array_equal(after[1], npy[1]) and after[2:] == npy[2:]
    assert torch.equal(torch.random.get_rng_state(), th)


def test_seed_none_records_entropy_and_reproduces() -> None:
    a = mc.TAMPO(seed=None)
    assert isinstance(a.seed_entropy, int)
    b = mc.TAMPO(seed=a.seed_entropy)
    assert [a.sample().value for _ in range(20)] == [b.sample().value for _ in range(20)]


def test_load_state_dict_rejects_mismatches() -> None:
    ctl = mc.TAMPO(seed=0)
    state = ctl.state_dict()
    with pytest.raises(ValueError, match="space mismatch"):
        mc.TAMPO(mc.Discrete([0.5, 1.0]), seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="saved by 'TAMPO'"):
        mc.MetaGradient(ctl.space, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="top_p=0.7 saved vs 0.5 here"):
        mc.TAMPO(top_p=0.5, seed=0).load_state_dict(state)
    bad = json.loads(json.dumps(state))
    bad["params"]["ema_advantages"] = [0.0, 1.0]
    target = mc.TAMPO(seed=1)
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"ema_advantages.*\(10,\).*\(2,\)"):
        target.load_state_dict(bad)
    assert target.state_dict() == before
    bad = json.loads(json.dumps(state))
    bad["format_version"] = 99
    with pytest.raises(ValueError, match="format_version"):
        target.load_state_dict(bad)
    del bad["rng"]
    with pytest.raises(ValueError, match="missing keys"):
        target.load_state_dict(bad)


def test_wrong_feedback_type_raises_type_error_naming_accepted() -> None:
    ctl = mc.TAMPO(seed=0)
    d = ctl.sample()
    with pytest.raises(
        TypeError, match="TAMPO.update: cannot learn from Outcome; it accepts Counterfactual"
    ):
        ctl.update(mc.Outcome(d, 1.0))


def test_decision_from_another_controller_is_rejected_state_untouched() -> None:
    a, b = mc.TAMPO(seed=0), mc.TAMPO(seed=0)
    d = a.sample()
    b.sample()
    before = b.state_dict()
    fb = mc.Counterfactual(d, np.zeros((2, 10)), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="another controller"):
        b.update(fb)
    assert b.state_dict() == before


def test_importing_metactl_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, metactl, metactl.testing\n"
        "frameworks = ('torch', 'transformers', 'trl', 'gymnasium', 'accelerate', 'pydantic', 'yaml', 'matplotlib')\n"
        "heavy = [m for m in frameworks if m.split('.')[0] in {n.split('.')[0] for n in sys.modules}]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("field", "mutate", "message"),
    [
        ("rng", lambda s: s["rng"]["state"]["state"].__setitem__("state", "x"), "rng state"),
        ("rng", lambda s: s.__setitem__("rng", None), "rng.bit_generator"),
        ("step", lambda s: s.__setitem__("step", "x"), "step must be an int"),
        ("updates", lambda s: s.__setitem__("updates", -1), "updates must be an int"),
    ],
)
def test_bad_state_is_refused_without_changing_anything(field: str, mutate, message: str) -> None:
    source = mc.TAMPO(seed=0)
    d = source.sample()
    source.update(mc.Counterfactual(d, -np.eye(10)[:4] * 3, np.array([1.0, -1.0, 0.5, -0.5])))
    state = json.loads(json.dumps(source.state_dict()))
    mutate(state)
    target = mc.TAMPO(seed=1)
    before = target.state_dict()
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(state)
    assert target.state_dict() == before, field
