"""Framework integrations of metactl (installed as ``metactl.integrations``).

Each subpackage imports its framework inside itself and raises
:class:`metactl.DependencyNotInstalled` naming the extra when it is missing.
"""
