"""The private TRL names MetaGRPOTrainer relies on, and how the seam choice fails (every release).

Every private name is checked at construction, in one module, with one error naming the
supported range; the seam probe sends the choice to the fallback only for the failures a seam is
expected to meet, and says which.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import make_config, meta_trainer

from metactl.integrations.trl import _seam, _seam_fused, _seam_logits, _trl_private


def test_a_model_with_nan_weights_is_named_before_the_trl_release_is_blamed(
    tokenizer, model, tmp_path
):
    with torch.no_grad():
        model.model.norm.weight[3] = float("nan")  # every logit NaN from the last norm on
    with pytest.raises(ValueError, match=r"model: the policy's logits are NaN/inf") as info:
        meta_trainer(tokenizer, model, make_config(tmp_path))
    assert "supports trl" not in str(info.value)


@pytest.mark.parametrize("name", list(_trl_private.TRAINER_ATTRIBUTES))
def test_a_trl_without_a_private_attribute_relied_on_is_refused_by_name(
    tokenizer, model, tmp_path, monkeypatch, name
):
    """As if a release renamed it: the check that runs right after GRPOTrainer.__init__."""
    from trl import GRPOTrainer

    init = GRPOTrainer.__init__

    def init_then_drop(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        del self.__dict__[name]

    monkeypatch.setattr(GRPOTrainer, "__init__", init_then_drop)
    with pytest.raises(RuntimeError, match=rf"no '{name}' attribute .*supports trl>=1\.0"):
        meta_trainer(tokenizer, model, make_config(tmp_path))


def test_rewards_not_gathered_across_processes_are_refused():
    rewards = torch.zeros(8, 1)
    _trl_private.check_gathered_rewards(rewards, 4, 2)  # 2 processes x 4 rows
    with pytest.raises(RuntimeError, match=r"returned 8 rows, expected the 8 of each of 2"):
        _trl_private.check_gathered_rewards(rewards, 8, 2)


def test_a_bug_inside_a_seam_propagates_instead_of_becoming_the_fallback(
    tokenizer, model, tmp_path, monkeypatch
):
    def broken(self: Any, per_token: torch.Tensor) -> None:
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(_seam.Seam, "keep", broken)  # every seam keeps its scores through it
    with pytest.raises(ZeroDivisionError, match="a bug of ours"):
        meta_trainer(tokenizer, model, make_config(tmp_path))


def test_the_fallback_says_which_failure_sent_it_there(tokenizer, model, tmp_path, monkeypatch):
    def does_not_fit(self: Any, *args: Any) -> None:
        raise _seam.SeamDoesNotFit("no tiles nor logits in this forward (test)")

    monkeypatch.setattr(_seam_logits.LogitsSeam, "__init__", does_not_fit)
    monkeypatch.setattr(_seam_fused.FusedTileSeam, "__init__", does_not_fit)
    with pytest.warns(
        UserWarning,
        match=r"'hidden-states' seam .*\((logits|fused-tiles): no tiles nor logits in this forward",
    ):
        trainer = meta_trainer(tokenizer, copy.deepcopy(model), make_config(tmp_path))
    assert trainer.seam == "hidden-states"
