"""The README's quickstart runs as printed."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    probs = namespace["ctl"].probs  # type: ignore[attr-defined]
    assert abs(probs.sum() - 1) < 1e-12 and probs.shape == (10,)
