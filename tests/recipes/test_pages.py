"""The recipe pages and their code cannot drift apart: every page includes its example files
(MyST ``literalinclude``) and they exist, every example file is shown by a page, and the
index lists every page with its test."""
from __future__ import annotations

import re

from .conftest import EXAMPLES, RECIPES, ROOT

INCLUDE = re.compile(r"^```\{literalinclude\} (\S+)$", re.MULTILINE)


def _pages() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(RECIPES.glob("*.md")) if p.name != "index.md"}


def _example_files() -> set[str]:
    return {str(p.relative_to(RECIPES)) for p in EXAMPLES.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_every_page_includes_existing_example_files():
    included = set()
    for name, text in _pages().items():
        targets = INCLUDE.findall(text)
        assert targets, f"{name} includes no example file"
        for target in targets:
            assert (RECIPES / target).is_file(), f"{name} includes missing {target}"
        included.update(targets)
    assert _example_files() <= included, "example files no page shows"


def test_the_index_lists_every_page_and_its_test():
    index = (RECIPES / "index.md").read_text()
    rows = re.findall(r"^\| \[[^]]+\]\(([\w-]+\.md)\) \|.*\| `(tests/recipes/\w+\.py)` \|$",
                      index, re.MULTILINE)
    assert {page for page, _ in rows} == set(_pages())
    for page, test in rows:
        assert (ROOT / test).is_file(), test
        assert f"`{test}`" in _pages()[page], f"{page} does not name its test {test}"
