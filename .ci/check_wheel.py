"""Prove the non-editable install: the wheel holds every module, and each one imports.

Run by ``make wheel-check`` after the sdist and the wheel are built (the wheel from the sdist):

- every ``.py`` under ``metactl/`` and ``integrations/``, and every shipped warm-start file, is
  inside the wheel, at its installed
  name (``integrations/x.py`` -> ``metactl/integrations/x.py``);
- ``--core VENV_PYTHON``: in a fresh virtual environment holding only the wheel and the core's
  dependencies, ``import metactl`` pulls in no framework, the README quickstart runs, every
  integration module fails only with ``DependencyNotInstalled`` (naming its extra), and the
  ``metactl`` command says in one line which extra to install;
- ``--full SITE_DIR``: with the wheel unpacked in SITE_DIR ahead of the dev install, every module
  of the package imports from there (all extras present), and every shipped warm start loads
  from there, matching its SHA-256.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "pydantic",
    "yaml",
    "matplotlib",
    "transformers",
    "trl",
    "gymnasium",
    "stable_baselines3",
)


def installed_name(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    return "metactl/" + rel if rel.startswith("integrations/") else rel


def check_contents(wheel: Path) -> list[str]:
    """Every source module is in the wheel; return the module names."""
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = sorted(p for d in ("metactl", "integrations") for p in (ROOT / d).rglob("*.py"))
    data = sorted((ROOT / "integrations/lab/testbed/warmstarts").iterdir())  # shipped warm starts
    missing = [installed_name(p) for p in sources + data if installed_name(p) not in names]
    if missing:
        sys.exit(f"check_wheel: {wheel.name} lacks {missing}")
    modules = []
    for p in sources:
        name = installed_name(p)[: -len(".py")].replace("/", ".")
        modules.append(name.removesuffix(".__init__"))
    print(f"check_wheel: all {len(sources)} source files are in {wheel.name}")
    return modules


def run(python: str, code: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env=env, cwd="/", check=False
    )
    if proc.returncode != 0:
        sys.exit(f"check_wheel: failed in {python}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def check_core(python: str, modules: list[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    quickstart = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    location = run(python, "import metactl; print(metactl.__file__)").strip()
    if Path(location).is_relative_to(ROOT / "metactl"):
        sys.exit(f"check_wheel: the core venv imports metactl from the source tree ({location})")
    loaded = run(
        python,
        "import metactl, sys; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))",
    ).strip()
    if loaded != "[]":
        sys.exit(f"check_wheel: import metactl loaded {loaded}")
    run(python, quickstart)
    probe = (
        "import importlib, metactl\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except metactl.DependencyNotInstalled as exc:\n"
        "        assert name.startswith('metactl.integrations'), (name, exc)\n"
        "        assert 'pip install \"metactl[' in str(exc), (name, exc)\n"
    )
    run(python, probe)
    script = Path(python).with_name("metactl")
    proc = subprocess.run([str(script), "demo"], capture_output=True, text=True, check=False)
    lines = proc.stderr.strip().splitlines()
    if proc.returncode == 0 or len(lines) != 1 or 'pip install "metactl[lab]"' not in lines[0]:
        sys.exit(f"check_wheel: `metactl demo` without the lab extra said {proc.stderr!r}")
    print(
        f"check_wheel: core-only venv: import metactl is light, the quickstart runs, "
        f"{len(modules)} modules import or name their extra, the CLI names [lab]"
    )


def check_full(site: Path, modules: list[str]) -> None:
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    code = (
        "import importlib, metactl\n"
        f"assert metactl.__file__.startswith({str(site)!r}), metactl.__file__\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(site)!r}), (name, module.__file__)\n"
        "from metactl.integrations.lab.testbed import shipped, WarmStartConfig\n"
        f"assert str(shipped.SHIPPED_DIR).startswith({str(site)!r}), shipped.SHIPPED_DIR\n"
        "entries = shipped.manifest()\n"
        "assert entries, 'no shipped warm start in the wheel'\n"
        "for entry in entries.values():\n"
        "    shipped.load_shipped(WarmStartConfig(**entry['config']), entry)  # checks SHA-256\n"
    )
    run(sys.executable, code, env=env)
    print(
        f"check_wheel: all {len(modules)} modules import from the installed wheel, and its "
        "shipped warm starts load and match their checksums"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--core", metavar="VENV_PYTHON")
    parser.add_argument("--full", metavar="SITE_DIR", type=Path)
    args = parser.parse_args()
    modules = check_contents(args.wheel)
    if args.core:
        check_core(str(Path(args.core).absolute()), modules)
    if args.full:
        check_full(args.full.absolute(), modules)


if __name__ == "__main__":
    main()
