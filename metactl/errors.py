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
