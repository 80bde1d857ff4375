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


def test_counterfactual_optional_fields(decision: mc.Decision) -> None:
    k = decision.virtual.size
    loglik, adv = np.zeros((4, k)), np.ones(4)
    bare = mc.Counterfactual(decision, loglik, adv)
    assert bare.rewards is None and bare.groups is None and bare.lengths is None
    fb = mc.Counterfactual(
        decision, loglik, adv, rewards=[1, 0, 0.5, 1], groups=[0, 0, 1, 1], lengths=[3, 1, 7, 2]
    )
    assert fb.rewards is not None and fb.rewards.tolist() == [1.0, 0.0, 0.5, 1.0]
    assert fb.groups is not None and fb.groups.dtype == np.int64
    assert fb.groups.tolist() == [0, 0, 1, 1]
    assert fb.lengths is not None and fb.lengths.tolist() == [3.0, 1.0, 7.0, 2.0]
    with pytest.raises(ValueError):
        fb.groups[0] = 5  # read-only like the required fields


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("rewards", [1.0, 0.0, 1.0], r"Counterfactual.rewards: shape \(3,\).*4 rows"),
        ("rewards", [1.0, np.nan, 0.0, 1.0], r"Counterfactual.rewards.*finite"),
        ("rewards", [1.0, 1e101, 0.0, 1.0], r"Counterfactual.rewards.*<= 1e\+100"),
        ("groups", [0, 1, -1, 2], r"Counterfactual.groups.*non-negative integer.*-1.0 at index 2"),
        ("groups", [0, 0.5, 1, 1], r"Counterfactual.groups.*0.5 at index 1"),
        ("groups", [[0, 0, 1, 1]], r"Counterfactual.groups.*1-D"),
        ("lengths", [1, 0, 2, 3], r"Counterfactual.lengths.*> 0.*0.0 at index 1"),
        ("lengths", [1, 2, -3, 3], r"Counterfactual.lengths.*-3.0 at index 2"),
        ("lengths", [1, 2, np.inf, 3], r"Counterfactual.lengths.*finite"),
    ],
)
def test_counterfactual_optional_fields_refused(
    decision: mc.Decision, field: str, value: object, match: str
) -> None:
    loglik = np.zeros((4, decision.virtual.size))
    with pytest.raises(ValueError, match=match):
        mc.Counterfactual(decision, loglik, np.ones(4), **{field: value})


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
