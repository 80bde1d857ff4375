"""Every relative link and every repository path named in README.md and docs/ exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_LEVEL = ("metactl/", "integrations/", "examples/", "docs/", "tests/", ".ci/")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# A path in backticks, e.g. `examples/compare_all.yaml` (command lines: each word is checked).
CODE = re.compile(r"`([^`\n]+)`")
GYM_ID = re.compile(r"^metactl/[A-Za-z]+-v\d+$")  # gymnasium ids, not paths
FILE_NAME = re.compile(r"\b[\w./-]+\.(?:py|md|yaml|yml|json|toml|cfg|txt)\b")


def named_paths(page: Path) -> list[tuple[str, Path]]:
    text = page.read_text()
    found: list[tuple[str, Path]] = []
    for target in LINK.findall(text):
        if "://" not in target and not target.startswith("mailto:"):
            found.append((target, (page.parent / target).resolve()))
    for span in CODE.findall(text):
        for word in span.split():
            word = word.strip("'\",;:()")
            if (
                word.startswith(TOP_LEVEL)
                and not GYM_ID.match(word)
                and "<" not in word
                and "*" not in word
            ):
                found.append((word, ROOT / word.rstrip("/")))
    # Markdown names of repository files outside backticks (e.g. "see DESIGN.md section 7").
    for word in FILE_NAME.findall(re.sub(r"`[^`\n]*`|\]\([^)]*\)|```.*?```", "", text, flags=re.S)):
        if word.startswith(TOP_LEVEL) or word in {"README.md", "DESIGN.md"}:
            found.append((word, ROOT / word))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_paths_exist(page: Path) -> None:
    missing = sorted({name for name, path in named_paths(page) if not path.exists()})
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_checker_sees_a_missing_path(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[a](nowhere.md) and `examples/nothing_here.py` and DESIGN.md")
    names = {name for name, path in named_paths(page) if not path.exists()}
    assert names == {"nowhere.md", "examples/nothing_here.py", "DESIGN.md"}
