"""Version matrices: the TRL integration's tests on every tested TRL release, and the SB3
adapter's tests on the oldest Stable-Baselines3 release the ``sb3`` extra allows (the newest is
the one ``make setup`` installs, tested by ``make test``).

    nox                      # every session (about 2 minutes a TRL release on 2 cores)
    nox -s "trl(1.13.0)"     # one release
    nox -s "sb3(oldest)"     # SB3 2.4.0 (gymnasium 1.0, numpy 1.x), about 2 minutes
    nox -s zero3             # DeepSpeed ZeRO-3 on TRL 1.13 and 1.16, about 3 minutes each
    nox -l                   # the sessions

Each session is a venv made by uv (a fast installer that links from its cache) with torch
pinned first (an unpinned torch pulls CUDA wheels; pip's ``PIP_FIND_LINKS``, where set, is
searched for a local build), then metactl with the TRL release and whatever
transformers/accelerate/datasets the resolver picks for it. The installed TRL is then checked
to be the release asked for: metactl's ``trl`` extra must not move it.
"""

from __future__ import annotations

import os

import nox

TRL_RELEASES = ["1.0.0", "1.9.2", "1.13.0", "1.14.2", "1.15.0", "1.16.0"]
"""The tested range: its ends, the last logits release, the first fused one, and two between."""

TRITON_ONLY = {"1.15.0"}
"""Releases whose fused LM head is a Triton kernel only: on CPU, run by Triton's interpreter."""

SB3_OLDEST = "2.4.0"
"""The first SB3 release that supports gymnasium 1.0: the ``sb3`` extra's lower bound."""

nox.options.default_venv_backend = "uv"


def _find_links() -> list[str]:
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    return [arg for link in links for arg in ("--find-links", link)]


def _install_trl(session: nox.Session, release: str, *extra: str) -> None:
    """torch pinned first, then metactl with the TRL ``release`` and the test dependencies."""
    session.install(*_find_links(), "torch==2.13.0")
    session.install(
        *_find_links(),
        "-e",
        ".[lab]",
        f"trl=={release}",
        "requests",  # TRL 1.0 imports it without declaring it
        "peft>=0.15",
        "tensorboard>=2.14",
        "pytest>=8",
        "pytest-timeout>=2.2",
        "triton>=3.0",
        "liger-kernel>=0.6,<0.9",  # use_liger_kernel=True (its GRPO loss runs on CPU)
        *extra,
    )
    session.run(
        "python", "-c", f"import trl; assert trl.__version__ == {release!r}, trl.__version__"
    )


@nox.session
@nox.parametrize("release", TRL_RELEASES, ids=TRL_RELEASES)
def trl(session: nox.Session, release: str) -> None:
    """The TRL integration's tests on one TRL release."""
    _install_trl(session, release)
    env = {"TRITON_INTERPRET": "1"} if release in TRITON_ONLY else {}
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/integrations/trl",
        *session.posargs,
        env=env,
    )


ZERO3_RELEASES = ["1.13.0", "1.16.0"]
"""DeepSpeed ZeRO-3 runs on the last logits release (and its Liger loss) and the newest fused one."""

DEEPSPEED = "deepspeed==0.19.8"
"""An sdist whose setup.py imports torch: built against the session's torch, without isolation
(an isolated build would pull an unpinned torch)."""


@nox.session
@nox.parametrize("release", ZERO3_RELEASES, ids=ZERO3_RELEASES)
def zero3(session: nox.Session, release: str) -> None:
    """MetaGRPOTrainer under DeepSpeed ZeRO-3 (one process, DeepSpeed's CPU accelerator)."""
    _install_trl(session, release, "setuptools", "wheel")
    session.install(*_find_links(), "--no-build-isolation", DEEPSPEED)
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/integrations/trl/test_trl_zero3.py",
        *session.posargs,
    )


@nox.session
@nox.parametrize("release", [SB3_OLDEST], ids=["oldest"])
def sb3(session: nox.Session, release: str) -> None:
    """The SB3 adapter's tests on the oldest supported Stable-Baselines3."""
    session.install(*_find_links(), "torch==2.13.0")
    session.install(
        *_find_links(),
        "-e",
        ".[sb3]",
        f"stable-baselines3=={release}",
        "pytest>=8",
        "pytest-timeout>=2.2",
    )
    session.run(
        "python",
        "-c",
        f"import stable_baselines3 as sb3; assert sb3.__version__ == {release!r}, sb3.__version__",
    )
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/integrations/sb3", *session.posargs)
