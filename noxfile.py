"""The TRL version matrix: the TRL integration's tests against every supported TRL release.

    nox                      # every release (a few minutes a release on 2 cores, warm cache)
    nox -s "trl(1.13.0)"     # one release
    nox -l                   # the releases

Each session is a venv with torch pinned first (an unpinned torch pulls CUDA wheels), then
metactl with the TRL release and whatever transformers/accelerate/datasets pip resolves for
it. pip's wheel cache keeps reruns cheap; ``-r`` reuses the venvs.
"""

from __future__ import annotations

import nox

TRL_RELEASES = ["1.0.0", "1.9.2", "1.13.0", "1.14.2", "1.15.0", "1.16.0"]
"""The tested range: its ends, each seam's first and last release, and one between."""

nox.options.default_venv_backend = "venv"


@nox.session
@nox.parametrize("release", TRL_RELEASES, ids=TRL_RELEASES)
def trl(session: nox.Session, release: str) -> None:
    """The TRL integration's tests on one TRL release (requests: TRL 1.0-1.x imports it undeclared)."""
    session.install("torch==2.13.0")
    session.install(
        "-e",
        ".[lab]",
        f"trl=={release}",
        "peft>=0.15",
        "requests",
        "pytest>=8",
        "pytest-timeout>=2.2",
        "triton>=3.0",
    )
    session.run("python", "-m", "pip", "check")
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider", "tests/integrations/trl", *session.posargs
    )
