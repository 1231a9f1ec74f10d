"""Fixtures for the recipe tests: the recipes' example apps are importable as the pages show
them (their folder on ``sys.path``), a real redis-server is at hand, and waits are bounded.

The examples live in ``docs/recipes/examples`` and the pages include them verbatim, so what a
reader copies is what these tests run.
"""
from __future__ import annotations

import pathlib
import re
import sys
import time
import typing as t

import requests
from scaleout.conftest import redis_server  # noqa: F401  (the fixture, shared)

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECIPES = ROOT / "docs" / "recipes"
EXAMPLES = RECIPES / "examples"
#: Upper bound of any single wait in these tests (never reached when things work).
TIMEOUT = 10.0

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def wait_until(predicate: t.Callable[[], t.Any], message: str, timeout: float = TIMEOUT) -> t.Any:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.01)
    return value


def page_token(base: str, http: requests.Session, path: str = "/") -> str:
    """Open a page as a browser would and return the CSRF token its ``sente_script()``
    wrote; ``http`` now holds the session cookie that goes with it."""
    page = http.get(base + path, timeout=TIMEOUT)
    assert page.status_code == 200, page.text
    return meta_token(page.text)


def meta_token(html: str) -> str:
    found = re.search(r'name="sente-csrf-token" content="([^"]+)"', html)
    assert found is not None, "no sente_script() meta tag in the page"
    return found.group(1)
