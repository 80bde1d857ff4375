"""Shared fixtures of the core tests (the helpers live in controllers_common.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from controllers_common import CONTROLLER_FACTORIES

import metactl as mc


@pytest.fixture(params=sorted(CONTROLLER_FACTORIES))
def controller_factory(request: pytest.FixtureRequest) -> Callable[[], mc.BaseController]:
    return CONTROLLER_FACTORIES[request.param]
