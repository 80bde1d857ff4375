"""Exceptions raised by metactl."""

from __future__ import annotations


class DependencyNotInstalled(ImportError):
    """An optional framework needed by an integration is missing.

    The message names the extra that installs it, e.g. ``pip install "metactl[trl]"``.
    """

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{package} is required for this part of metactl but is not installed; "
            f'install it with: pip install "metactl[{extra}]"'
        )


def require(module: str, extra: str) -> None:
    """Raise :class:`DependencyNotInstalled` if ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise DependencyNotInstalled(module, extra)


class IncompatibleController(TypeError, ValueError):
    """A controller cannot drive what an integration asks of it.

    Raised when it is not a metactl controller, when its arms are not values the integration
    can use (e.g. a sampling temperature must be finite and > 0), or when it learns from no
    feedback the integration can build. It is both a ``TypeError`` and a ``ValueError`` so that
    code catching either, as integrations did before this class existed, still catches it.
    """
