"""Package discovery for the one mapping pyproject.toml cannot express on its own.

``integrations/`` is installed as ``metactl.integrations``: every package under ``metactl/`` and
``integrations/`` is found here, so a new subpackage can never be left out of the wheel.
"""

from setuptools import find_packages, setup

core = find_packages(include=["metactl", "metactl.*"])
integrations = [
    "metactl." + name for name in find_packages(include=["integrations", "integrations.*"])
]
setup(packages=core + integrations)
