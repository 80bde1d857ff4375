"""A controller built without a seed can be seeded by its trainer, once, before deciding."""

from __future__ import annotations

import pytest

import metactl as mc


def test_reseed_gives_the_draws_of_an_explicit_seed() -> None:
    unseeded = mc.TAMPO(top_p=1.0)
    assert not unseeded.seeded
    unseeded.reseed(7)
    assert unseeded.seeded and unseeded.seed_entropy == 7
    explicit = mc.TAMPO(top_p=1.0, seed=7)
    assert [unseeded.sample().value for _ in range(20)] == [
        explicit.sample().value for _ in range(20)
    ]


def test_reseed_after_a_decision_is_refused_and_changes_nothing() -> None:
    ctl = mc.MetaGradient(mc.Box(0.5, 2.0, log=True), seed=1)
    ctl.sample()
    before = ctl.state_dict()
    with pytest.raises(RuntimeError, match="already made 1 decisions"):
        ctl.reseed(3)
    assert ctl.state_dict() == before
