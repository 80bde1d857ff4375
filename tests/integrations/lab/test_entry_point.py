"""The ``metactl`` console script: installed, versioned, and light to start."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import metactl
from metactl.integrations.lab.cli import main


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"metactl {metactl.__version__}"


def test_console_script_points_at_the_lab() -> None:
    script = shutil.which("metactl", path=str(Path(sys.executable).parent))
    assert script is not None, "the metactl console script is not installed next to python"
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == f"metactl {metactl.__version__}"


def test_missing_lab_dependency_is_one_line_naming_the_extra() -> None:
    # Hide pydantic the way an environment without the lab extra would lack it.
    code = (
        "import sys; sys.modules['pydantic'] = None\n"
        "from metactl.integrations.lab.cli import main\n"
        "sys.exit(main(['compare', 'any.yaml']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "metactl: pydantic is required for this part of metactl but is not installed; "
        'install it with: pip install "metactl[lab]"'
    ]
