"""Property-based fuzz of feedback: finite input gives valid probabilities; bad input is refused cleanly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import metactl as mc

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
CONTROLLERS = {
    "tampo": lambda: mc.TAMPO(mc.Discrete([0.5, 1.0, 1.5, 2.0]), seed=0),
    "tampo-softmax": lambda: mc.TAMPO(
        mc.Discrete([0.5, 1.0, 1.5, 2.0]), normaliser="softmax", seed=0
    ),
    "metagradient": lambda: mc.MetaGradient(mc.Discrete([0.5, 1.0, 1.5, 2.0]), seed=0),
    "metagradient-box": lambda: mc.MetaGradient(mc.Box(0.3, 3.0, log=True), num_virtual=4, seed=0),
}


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_finite_counterfactual_keeps_probabilities_valid(
    name: str, data: st.DataObject
) -> None:
    ctl = CONTROLLERS[name]()
    for _ in range(3):
        d = ctl.sample()
        n = data.draw(st.integers(1, 12))
        loglik = data.draw(arrays(np.float64, (n, d.virtual.size), elements=finite))
        adv = data.draw(arrays(np.float64, (n,), elements=finite))
        metrics = ctl.update(mc.Counterfactual(d, loglik, adv))
        assert all(np.isfinite(v) for v in metrics.values())
        if isinstance(ctl.space, mc.Discrete):
            p = ctl.probs
            assert np.all(np.isfinite(p)) and np.all(p >= 0) and np.isclose(p.sum(), 1.0)
        else:
            assert np.isfinite(ctl.mean) and ctl.sigma > 0


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_bad_feedback_raises_value_error_and_leaves_state(name: str, data: st.DataObject) -> None:
    ctl = CONTROLLERS[name]()
    ctl.update(
        mc.Counterfactual(
            ctl.sample(), -np.ones((3, ctl.sample().virtual.size)), np.array([1.0, 0, -1])
        )
    )
    d = ctl.sample()
    before = ctl.state_dict()
    m = d.virtual.size
    kind = data.draw(st.sampled_from(["nan", "shape", "empty", "adv_shape"]))
    n = data.draw(st.integers(1, 6))
    loglik = data.draw(arrays(np.float64, (n, m), elements=finite))
    adv = data.draw(arrays(np.float64, (n,), elements=finite))
    if kind == "nan":
        loglik[data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, m - 1))] = data.draw(
            st.sampled_from([np.nan, np.inf, -np.inf])
        )
    elif kind == "shape":
        loglik = np.zeros((n, m + data.draw(st.integers(1, 3))))
    elif kind == "empty":
        loglik, adv = np.zeros((0, m)), np.zeros(0)
    else:
        adv = np.zeros(n + 1)
    with pytest.raises(ValueError):
        ctl.update(mc.Counterfactual(d, loglik, adv))
    assert ctl.state_dict() == before
