import numpy as np
import pytest

import metactl as mc


@pytest.fixture
def decision() -> mc.Decision:
    return mc.TAMPO(seed=0).sample()


def test_counterfactual_validates_shapes(decision: mc.Decision) -> None:
    k = decision.virtual.size
    mc.Counterfactual(decision, np.zeros((4, k)), np.ones(4))
    with pytest.raises(ValueError, match=r"loglik.*\(4, 3\).*3 columns"):
        mc.Counterfactual(decision, np.zeros((4, 3)), np.ones(4))
    with pytest.raises(ValueError, match=r"advantages.*\(5,\)"):
        mc.Counterfactual(decision, np.zeros((4, k)), np.ones(5))
    with pytest.raises(ValueError, match="empty"):
        mc.Counterfactual(decision, np.zeros((0, k)), np.ones(0))
    with pytest.raises(ValueError, match="2-D"):
        mc.Counterfactual(decision, np.zeros(k), np.ones(1))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_counterfactual_rejects_non_finite(decision: mc.Decision, bad: float) -> None:
    loglik = np.zeros((3, decision.virtual.size))
    loglik[1, 2] = bad
    with pytest.raises(ValueError, match="Counterfactual.loglik.*finite"):
        mc.Counterfactual(decision, loglik, np.ones(3))
    with pytest.raises(ValueError, match="Counterfactual.advantages.*finite"):
        mc.Counterfactual(decision, np.zeros((3, decision.virtual.size)), np.array([0.0, bad, 1.0]))


def test_feedback_is_frozen_and_copies_input(decision: mc.Decision) -> None:
    loglik = np.zeros((2, decision.virtual.size))
    fb = mc.Counterfactual(decision, loglik, np.ones(2))
    loglik[0, 0] = 5.0  # the caller's array changing later must not change the feedback
    assert fb.loglik[0, 0] == 0.0
    with pytest.raises(ValueError):
        fb.loglik[0, 0] = 1.0
    with pytest.raises(AttributeError):
        fb.advantages = np.zeros(2)  # type: ignore[misc]


def test_outcomes_and_scalars(decision: mc.Decision) -> None:
    with pytest.raises(ValueError, match="Outcome.reward"):
        mc.Outcome(decision, float("nan"))
    with pytest.raises(ValueError, match="Outcomes.rewards"):
        mc.Outcomes((decision, decision), np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        mc.Outcomes((), np.ones(0))
    with pytest.raises(ValueError, match="EntropyObservation.entropy"):
        mc.EntropyObservation(decision, 0.0)
    with pytest.raises(TypeError, match="Decision"):
        mc.Outcome("not a decision", 1.0)  # type: ignore[arg-type]
