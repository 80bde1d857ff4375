"""Controllers stay finite: the feedback domain, strict-JSON state after any accepted call, and
transactional loads that refuse poisoned state (issue 17, items 4, 5 and 9)."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from controllers_common import CONTROLLER_FACTORIES
from hypothesis import given, settings
from hypothesis import strategies as st

import metactl as mc
from metactl.functional import sparsemax
from metactl.testing import random_feedback

F32_MIN = float(np.finfo(np.float32).min)
EXTREMES = [0.0, 5e-324, -1e-300, 1e15, -1e15, 1e100, -1e100, 1e160, 1e308, -1e308, F32_MIN]
VALUES = st.one_of(st.floats(-10, 10), st.sampled_from(EXTREMES))
LENGTHS = st.one_of(st.floats(1, 1000), st.sampled_from([5e-324, 1e-300, 1e15, 1e100]))


def feedback_or_refusal(kind: type, d: mc.Decision, data: st.DataObject) -> mc.Feedback | None:
    """Random feedback of ``kind`` with valid and extreme values; None if it is refused."""
    try:
        if kind is mc.Counterfactual:
            n = data.draw(st.integers(1, 4))
            rows = [data.draw(st.lists(VALUES, min_size=d.virtual.size, max_size=d.virtual.size))]
            rows += [[data.draw(VALUES)] * d.virtual.size for _ in range(n - 1)]  # constant rows
            adv = data.draw(st.lists(VALUES, min_size=n, max_size=n))
            rewards = data.draw(st.lists(VALUES, min_size=n, max_size=n))
            groups = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
            lengths = data.draw(st.lists(LENGTHS, min_size=n, max_size=n))
            return mc.Counterfactual(
                d, np.array(rows), np.array(adv), rewards=rewards, groups=groups, lengths=lengths
            )
        if kind is mc.Outcome:
            return mc.Outcome(d, data.draw(VALUES))
        if kind is mc.Outcomes:
            return mc.Outcomes((d,), np.array([data.draw(VALUES)]))
        return mc.EntropyObservation(d, abs(data.draw(VALUES)))
    except ValueError as exc:  # outside the feedback domain: refused, naming the field
        assert f"{kind.__name__}." in str(exc), exc
        return None


def continue_one_step(ctl: mc.BaseController, seed: int) -> str:
    d = ctl.sample()
    kind = ctl.accepts[0]
    metrics = ctl.update(random_feedback(kind, d, np.random.default_rng(seed)))
    return json.dumps([d.value, d.virtual.tolist(), metrics])


@pytest.mark.parametrize("name", sorted(CONTROLLER_FACTORIES))
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_state_stays_strict_json_and_reloads_identically_under_extreme_feedback(
    name: str, data: st.DataObject
) -> None:
    factory = CONTROLLER_FACTORIES[name]
    ctl = factory()
    for step in range(4):
        d = ctl.sample()
        kind = data.draw(st.sampled_from(ctl.accepts))
        feedback = feedback_or_refusal(kind, d, data)
        before = ctl.state_dict()
        if feedback is not None:
            try:
                metrics = ctl.update(feedback)
            except ValueError as exc:  # refused by the finiteness guard: nothing changed
                assert "non-finite" in str(exc)
                assert ctl.state_dict() == before
            else:
                assert all(math.isfinite(v) for v in metrics.values()), metrics
        text = json.dumps(ctl.state_dict(), allow_nan=False)  # strict JSON after every step
        twin = factory()
        twin.load_state_dict(json.loads(text))
        assert json.dumps(twin.state_dict(), allow_nan=False) == text
        assert continue_one_step(twin, step) == continue_one_step(ctl, step)


# --- the named cases of the adversarial trial ----------------------------------------------------
def exact_sparsemax(x: list[float]) -> list[float]:
    """The projection of x onto the simplex in exact rational arithmetic (tau by its definition)."""
    z = sorted((Fraction(v) for v in x), reverse=True)
    support = max(k for k in range(1, len(z) + 1) if 1 + k * z[k - 1] > sum(z[:k]))
    tau = (sum(z[:support]) - 1) / support
    return [float(max(Fraction(v) - tau, Fraction(0))) for v in x]


@settings(max_examples=60, deadline=None)
@given(
    z=st.lists(st.integers(-16, 16), min_size=2, max_size=6),
    shift=st.sampled_from([0.0, 1e15, -1e15, 3e15, 1e20, -1e100, 1e300, F32_MIN]),
)
def test_sparsemax_is_exact_at_any_magnitude(z: list[int], shift: float) -> None:
    x = [shift + v / 8 for v in z]  # the floats themselves are the input; the reference is exact
    np.testing.assert_allclose(sparsemax(np.array(x)), exact_sparsemax(x), rtol=0, atol=1e-12)


def test_sparsemax_of_rows_far_beyond_the_old_limit() -> None:
    x = 1e15 + np.array([0.5, 0.25, -0.25])
    np.testing.assert_allclose(sparsemax(x), [0.625, 0.375, 0.0], atol=1e-12)
    big = np.array([[1e20, 1e20 + 1e5, 0.0], [-1.7e308, 1.7e308, 0.0], [F32_MIN] * 3])
    np.testing.assert_array_equal(sparsemax(big, axis=1), [[0, 1, 0], [0, 1, 0], [1 / 3] * 3])


def test_a_rollout_row_at_the_float32_mask_value_does_not_poison_tampo() -> None:
    ctl = mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=0)
    d = ctl.sample()
    loglik = np.array([[-1.0, -0.5, -2.0], [F32_MIN] * 3, [-0.2, -3.0, -1.0]])
    ctl.update(mc.Counterfactual(d, loglik, np.array([1.0, -1.0, 0.5])))
    # The masked row weighs every arm 1/3; the others by sparsemax: a = mean_i w_ik A_i.
    w = np.array([exact_sparsemax([-1.0, -0.5, -2.0]), [1 / 3] * 3, [0.9, 0.0, 0.1]])
    a = np.array([1.0, -1.0, 0.5]) @ w / 3
    np.testing.assert_allclose(ctl.ema_advantages, 0.05 * a, rtol=1e-12)
    state = json.loads(json.dumps(ctl.state_dict(), allow_nan=False))
    mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=1).load_state_dict(state)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda d: mc.Outcome(d, 1e160), "Outcome.reward"),
        (lambda d: mc.Outcome(d, 1e308), "Outcome.reward"),
        (lambda d: mc.Outcomes((d,), [-1e101]), "Outcomes.rewards"),
        (lambda d: mc.Counterfactual(d, np.zeros((1, d.virtual.size)), [-1e200]), "advantages"),
        (lambda d: mc.EntropyObservation(d, 1e300), "EntropyObservation.entropy"),
    ],
)
def test_feedback_beyond_the_domain_is_refused_naming_field_and_value(build, field: str) -> None:
    d = mc.MetaGradient(mc.Discrete([0.5, 1.0]), seed=0).sample()
    with pytest.raises(ValueError, match=rf"{field}.*\|value\| must be <= 1e\+100.*e\+") as err:
        build(d)
    assert "e+" in str(err.value)  # the value itself is in the message


def test_metagradient_keeps_learning_after_the_largest_accepted_reward() -> None:
    ctl = mc.MetaGradient(mc.Discrete([0.5, 1.0, 2.0]), seed=0)
    for reward in (0.0, 1e100, -1e100):
        ctl.update(mc.Outcome(ctl.sample(), reward))
    json.dumps(ctl.state_dict(), allow_nan=False)
    before = ctl.probs
    for _ in range(5):
        d = ctl.sample()
        ctl.update(mc.Outcome(d, 1.0 if d.arm == 2 else 0.0))
    assert np.all(np.isfinite(ctl.probs)) and not np.array_equal(ctl.probs, before)


def test_sliding_window_ucb_reports_finite_rewards_at_the_domain_edge() -> None:
    ctl = mc.SlidingWindowUCB(mc.Discrete([0.5, 1.0]), seed=0)
    d = ctl.sample()
    metrics = ctl.update(mc.Outcomes((d, d), np.array([1e100, 1e100])))
    assert metrics["reward"] == 1e100 and all(math.isfinite(v) for v in metrics.values())
    with pytest.raises(ValueError, match="Outcome.reward"):
        mc.Outcome(ctl.sample(), 1e308)


def test_the_finiteness_guard_refuses_an_update_that_would_overflow() -> None:
    ctl = mc.MetaGradient(mc.Discrete([0.5, 1.0]), optimizer="sgd", lr=1e300, seed=0)
    ctl.update(mc.Outcome(ctl.sample(), 0.0))  # sets the baseline
    d = ctl.sample()
    before = ctl.state_dict()
    with pytest.raises(ValueError, match=r"params\.theta.*non-finite"):
        ctl.update(mc.Outcome(d, 1e100))
    assert ctl.state_dict() == before


# --- load_state_dict refuses poisoned state, transactionally --------------------------------------
def _trained(factory: Callable[[], mc.BaseController]) -> mc.BaseController:
    ctl = factory()
    rng = np.random.default_rng(0)
    for i in range(3):
        d = ctl.sample()
        ctl.update(random_feedback(ctl.accepts[i % len(ctl.accepts)], d, rng))
    return ctl


def _params(key: str, value: Any) -> Callable[[dict], None]:
    return lambda s: s["params"].__setitem__(key, value)


def _theta(i: int, value: float) -> Callable[[dict], None]:
    return lambda s: s["params"]["theta"].__setitem__(i, value)


def _pcg(key: str, value: Any) -> Callable[[dict], None]:
    return lambda s: s["rng"]["state"]["state"].__setitem__(key, value)


MG = lambda: mc.MetaGradient(mc.Discrete([0.5, 1.0, 2.0]), seed=0)  # noqa: E731
MG_BOX = lambda: mc.MetaGradient(mc.Box(0.3, 3.0, log=True), seed=0)  # noqa: E731
TAMPO3 = lambda: mc.TAMPO(mc.Discrete([0.5, 1.0, 2.0]), seed=0)  # noqa: E731
UCB = lambda: mc.SlidingWindowUCB(mc.Discrete([0.5, 1.0, 2.0]), window=5, seed=0)  # noqa: E731
ENT = lambda: mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=50, warmup=2, seed=0)  # noqa: E731
POISONED = [
    ("baseline NaN", MG, _params("baseline", math.nan), "params.baseline"),
    ("baseline inf", MG, _params("baseline", math.inf), "params.baseline"),
    ("baseline 1e300", MG, _params("baseline", 1e300), "params.baseline"),
    ("baseline text", MG, _params("baseline", "0"), "params.baseline"),
    ("adam_v negative", MG, _params("adam_v", [-1.0, 0.0, 0.0]), "second moments"),
    ("adam_v NaN", MG, _params("adam_v", [math.nan, 0.0, 0.0]), "params.adam_v"),
    ("adam_m inf", MG, _params("adam_m", [math.inf, 0.0, 0.0]), "params.adam_m"),
    ("adam_t -1", MG, _params("adam_t", -1), "params.adam_t"),
    ("adam_t 1.5", MG, _params("adam_t", 1.5), "params.adam_t"),
    ("adam_t true", MG, _params("adam_t", True), "params.adam_t"),
    ("theta NaN", MG, _theta(0, math.nan), "params.theta"),
    ("theta short", MG, _params("theta", [0.0]), "params.theta"),
    ("theta complex", MG, _params("theta", [1j, 0.0, 0.0]), "params.theta"),
    ("q 1e300", MG, _params("q", [1e300, 0.0, 0.0]), "params.q"),
    ("q_seen text", MG, _params("q_seen", "yes"), "params.q_seen"),
    ("missing adam_t", MG, lambda s: s["params"].pop("adam_t"), "params.adam_t is missing"),
    ("log_sigma 800", MG_BOX, _theta(1, 800.0), r"params.theta\[1\]"),
    ("log_sigma below floor", MG_BOX, _theta(1, -10.0), r"params.theta\[1\]"),
    ("abar NaN", TAMPO3, _params("ema_advantages", [math.nan, 0, 0]), "ema_advantages"),
    ("abar 1e300", TAMPO3, _params("ema_advantages", [1e300, 0, 0]), "ema_advantages"),
    ("abar bools", TAMPO3, _params("ema_advantages", [True, False, True]), "ema_advantages"),
    ("ucb arm 1.5", UCB, _params("window_arms", [1.5, 0, 2]), r"window_arms\[0\]"),
    ("ucb arm true", UCB, _params("window_arms", [True, 0, 2]), r"window_arms\[0\]"),
    ("ucb arm 3", UCB, _params("window_arms", [3, 0, 2]), "window_arms"),
    ("ucb reward NaN", UCB, _params("window_rewards", [math.nan, 0, 0]), "window_rewards"),
    ("ucb reward 1e300", UCB, _params("window_rewards", [1e300, 0, 0]), "window_rewards"),
    ("ucb not lists", UCB, _params("window_rewards", 1.0), "window_arms/window_rewards"),
    ("entropy T NaN", ENT, _params("temperature", math.nan), "params.temperature"),
    ("entropy target -1", ENT, _params("target", -1.0), "params.target"),
    ("entropy target inf", ENT, _params("target", math.inf), "params.target"),
    ("entropy observed 0", ENT, _params("observed", [0.0]), "params.observed"),
    ("rng inc even", TAMPO3, _pcg("inc", 4), "inc"),
    ("rng inc 0", TAMPO3, _pcg("inc", 0), "inc"),
    ("rng state float", TAMPO3, _pcg("state", 2.5), r"rng\.state\.state\.state"),
    ("rng state negative", TAMPO3, _pcg("state", -1), r"rng\.state\.state\.state"),
    ("rng state 2**128", TAMPO3, _pcg("state", 2**128), r"rng\.state\.state\.state"),
    (
        "rng has_uint32 5",
        TAMPO3,
        lambda s: s["rng"]["state"].__setitem__("has_uint32", 5),
        "has_uint32",
    ),
    ("rng extra key", TAMPO3, _pcg("x", 1), "keys"),
    ("rng missing inc", TAMPO3, lambda s: s["rng"]["state"]["state"].pop("inc"), "keys"),
    ("step -1", TAMPO3, lambda s: s.__setitem__("step", -1), "step"),
    ("fresh_from > step", TAMPO3, lambda s: s.__setitem__("fresh_from", 99), "fresh_from"),
    ("seed_entropy -1", TAMPO3, lambda s: s.__setitem__("seed_entropy", -1), "seed_entropy"),
    ("params a list", TAMPO3, lambda s: s.__setitem__("params", [1]), "params"),
]


@pytest.mark.parametrize(
    ("factory", "mutate", "match"), [p[1:] for p in POISONED], ids=[p[0] for p in POISONED]
)
def test_poisoned_state_is_refused_and_the_controller_is_unchanged(factory, mutate, match) -> None:
    state = copy.deepcopy(_trained(factory).state_dict())
    mutate(state)
    target, twin = _trained(factory), _trained(factory)  # twin: never offered the bad state
    target_before = copy.deepcopy(target.state_dict())
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    assert target.state_dict() == target_before == twin.state_dict()
    assert continue_one_step(target, 5) == continue_one_step(twin, 5)


# --- stale decisions, arm labels, argument checks ----------------------------------------------------
LEARNING = {
    "tampo": TAMPO3,
    "metagradient": MG,
    "metagradient-box": MG_BOX,
    "ucb": UCB,
    "entropy-target": ENT,
}


@pytest.mark.parametrize("name", sorted(LEARNING))
def test_feedback_on_a_stale_decision_is_refused(name: str) -> None:
    ctl = LEARNING[name]()
    kind, rng = ctl.accepts[0], np.random.default_rng(0)
    old = ctl.sample()
    ctl.update(random_feedback(kind, old, rng))
    new = ctl.sample()
    before = ctl.state_dict()
    with pytest.raises(ValueError, match=r"\(step 0\) is stale"):
        ctl.update(random_feedback(kind, old, rng))  # the same decision a second time
    assert ctl.state_dict() == before
    saved = ctl.state_dict()
    ctl.update(random_feedback(kind, new, rng))  # the latest one is fine
    # A decision "from the future" of a state loaded since is stale as well.
    future = ctl.sample()
    ctl.load_state_dict(saved)
    with pytest.raises(ValueError, match=r"\(step 2\) is stale"):
        ctl.update(random_feedback(kind, future, rng))


def test_arm_labels_are_unique_and_parse_back() -> None:
    ctl = mc.TAMPO([1.0, 1.0000001], seed=0)
    mc.testing.check_controller(ctl)
    metrics = ctl.update(random_feedback(mc.Counterfactual, ctl.sample(), np.random.default_rng(0)))
    assert sorted(k for k in metrics if k.startswith("prob/")) == ["prob/1", "prob/1.0000001"]
    ordinary = mc.TAMPO(mc.Discrete([0.6, 1.0, 1.2, 1e-07]), seed=0)
    metrics = ordinary.update(
        random_feedback(mc.Counterfactual, ordinary.sample(), np.random.default_rng(0))
    )
    assert {k for k in metrics if k.startswith("prob/")} == {
        "prob/0.6",
        "prob/1",
        "prob/1.2",
        "prob/1e-07",
    }


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_an_arm_label_parses_back_to_its_value(value: float) -> None:
    from metactl.controllers._arms import arm_label

    assert float(arm_label(value)) == value


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: mc.SlidingWindowUCB(mc.Discrete([1.0, 2.0]), bonus=math.nan), ValueError, "bonus"),
        (lambda: mc.SlidingWindowUCB(mc.Discrete([1.0, 2.0]), window=2.5), ValueError, "window"),
        (lambda: mc.SlidingWindowUCB(mc.Discrete([1.0, 2.0]), window=True), ValueError, "window"),
        (lambda: mc.TAMPO(seed=True), TypeError, "seed"),
        (lambda: mc.TAMPO(warmup_steps=1.5), ValueError, "warmup_steps"),
        (lambda: mc.TAMPO(ema=True), ValueError, "ema"),
        (lambda: mc.MetaGradient(mc.Box(0.3, 3.0), num_virtual=True), ValueError, "num_virtual"),
        (lambda: mc.MetaGradient(mc.Box(0.3, 3.0), lr=1j), ValueError, "lr"),
        (lambda: mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=2.5), ValueError, "vocab_size"),
        (
            lambda: mc.EntropyTarget(mc.Box(0.3, 3.0), vocab_size=9, warmup=True),
            ValueError,
            "warmup",
        ),
        (lambda: mc.Schedule.linear(1.0, 2.0, steps=2.5), ValueError, "steps"),
        (lambda: mc.Schedule.piecewise([1.5], [1.0, 2.0]), ValueError, "boundaries"),
        (lambda: mc.Fixed(True), ValueError, "value"),
    ],
)
def test_bools_fractions_and_nan_settings_are_refused_naming_the_argument(
    build, error, match
) -> None:
    with pytest.raises(error, match=match):
        build()


def test_integral_floats_are_still_accepted() -> None:
    assert mc.SlidingWindowUCB(mc.Discrete([1.0, 2.0]), window=4.0).window == 4


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda d: mc.Counterfactual(d, np.array([[1j, 0.0]]), [1.0]), "Counterfactual.loglik"),
        (lambda d: mc.Counterfactual(d, np.zeros((1, 2)), np.array([1 + 0j])), "advantages"),
        (lambda d: mc.Outcome(d, 1 + 2j), "Outcome.reward"),
        (lambda d: mc.Outcome(d, True), "Outcome.reward"),
        (lambda d: mc.EntropyObservation(d, 1j), "EntropyObservation.entropy"),
    ],
)
def test_complex_and_bool_feedback_is_refused(build, field: str) -> None:
    d = mc.TAMPO([1.0, 2.0], seed=0).sample()
    with pytest.raises(ValueError, match=field):
        build(d)
