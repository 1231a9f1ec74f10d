"""The documentation site builds with every warning an error, has what it promises, and
reads in a browser.

The same build as ``make docs`` (``-W --keep-going -n``), into a temporary folder: a broken
cross-reference, a docstring Sphinx cannot read, a README section the pages include that
moved, all fail here. Then headless Chromium lays the pages out, as a reader's browser
would, and checks that nothing is pushed out of the page or cut off: no page scrolls
sideways, the configuration tables fit their column, the quickstart's code fits its boxes,
and no page asks for anything beyond its own files.
"""
from __future__ import annotations

import html
import pathlib
import re
import subprocess
import sys
import typing as t

import blinker
import pytest
from playwright.sync_api import Browser, sync_playwright

from flask_sente import signals
from flask_sente.config import Options
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, PAGE_TIMEOUT

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-E", "-q", "-b", "html",
         str(ROOT / "docs"), str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _text(site: pathlib.Path, page: str) -> str:
    raw = (site / page).read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def test_every_page_is_built(site):
    for page in ("index", "quickstart", "concepts", "configuration", "deployment", "security",
                 "browser", "protocol", "benchmarks", "scaleout", "soak", "changelog",
                 "api/server", "api/client", "api/testing", "api/emitter",
                 "migrating/flask-socketio", "migrating/sente"):
        assert (site / f"{page}.html").is_file(), page


def test_api_reference_is_generated_from_the_docstrings(site):
    server = (site / "api" / "server.html").read_text()
    for name in ("Sente.send", "Sente.broadcast", "Sente.kick", "Sente.test_client",
                 "EventMsg.reply", "exceptions.ReplyTimeout", "signals.user_connected",
                 "worker.SenteWorker"):
        assert f'id="flask_sente.{name}"' in server, name
    for name, value in vars(signals).items():  # every signal, rendered from its docstring
        if isinstance(value, blinker.Signal):
            assert f'id="flask_sente.signals.{name}"' in server, name
    client = (site / "api" / "client.html").read_text()
    assert 'id="flask_sente.client.Client.call"' in client
    assert 'id="flask_sente.testing.SenteTestClient.call"' in (
        site / "api" / "testing.html").read_text()
    assert 'id="flask_sente.emitter.Emitter.send"' in (
        site / "api" / "emitter.html").read_text()


def test_configuration_page_lists_every_option_from_the_readme_table(site):
    text = _text(site, "configuration.html")
    for name in Options.names():
        assert name in text, name
    assert "header timeout" in text  # the server settings table


def test_included_markdown_is_rendered_not_copied(site):
    # The protocol page is docs/protocol.md itself; the changelog includes CHANGELOG.md.
    first_heading = (ROOT / "docs" / "protocol.md").read_text().splitlines()[0].lstrip("# ")
    assert first_heading in _text(site, "protocol.html")
    assert "Changelog" in _text(site, "changelog.html")
    assert "sente.broadcast" in _text(site, "quickstart.html")  # the README's quickstart


# --- the pages in Chromium ------------------------------------------------------------------

#: Window widths: a laptop and a small window (furo hides the navigation below 63em).
WIDTHS = (1280, 900)
PAGES = ("index", "quickstart", "concepts", "configuration", "deployment", "security",
         "browser", "protocol", "scaleout", "api/server", "api/client")

#: Per element of ``selector``: [its first words, scrollWidth, clientWidth, right edge,
#: its parent's right edge] of each that is not shown whole: its content is wider than its
#: box (it scrolls, or clips), or (with ``edge``) the box reaches past its parent's, out of
#: the column. (furo's table wrappers reach 3.2 px past the column on purpose, for their
#: shadow: their own edge is not checked, the edge of the table inside them is.)
_TOO_WIDE = """([selector, edge]) => [...document.querySelectorAll(selector)].map(el => [
      el.textContent.trim().slice(0, 40), el.scrollWidth, el.clientWidth,
      el.getBoundingClientRect().right, el.parentElement.getBoundingClientRect().right])
    .filter(([, scroll, client, right, parent]) =>
      scroll > client + 1 || (edge && right > parent + 1))"""


@pytest.fixture(scope="module")
def chromium() -> t.Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


def test_no_page_is_wider_than_the_window_or_fetches_from_the_network(
        site: pathlib.Path, chromium: Browser) -> None:
    """Broken once by building with the old theme (``html_theme = "alabaster"``): the
    scale-out page was 1692 px wide in a 1280 px window (a table ran out of the column and
    off the page)."""
    outside: list[str] = []
    for width in WIDTHS:
        page = chromium.new_page(viewport={"width": width, "height": 900})
        page.set_default_timeout(PAGE_TIMEOUT)
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
            "file://") else (outside.append(route.request.url), route.abort()))
        try:
            for name in PAGES:
                page.goto((site / f"{name}.html").as_uri())
                widths = page.evaluate("() => [document.documentElement.scrollWidth, "
                                       "document.documentElement.clientWidth]")
                assert widths[0] <= widths[1], (name, width, widths)
        finally:
            page.close()
    assert not outside, outside


def test_configuration_tables_and_quickstart_code_fit_their_column(
        site: pathlib.Path, chromium: Browser) -> None:
    """At 1280 px every table of the configuration page and every code block of the
    quickstart is shown whole, with no scrolling inside its box. Broken once with the old
    theme (alabaster): the option table reached 110 px past its column, and the
    quickstart's code blocks were cut at 660 px (of up to 871); and once with furo's stock
    46em column (no ``docs/_static/wide.css``): the quickstart's longest line needed 746 px
    of 736."""
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(PAGE_TIMEOUT)
    try:
        page.goto((site / "configuration.html").as_uri())
        assert page.evaluate("() => document.querySelectorAll('table').length") >= 3
        # furo puts each table in a box that scrolls; neither may need to.
        assert page.evaluate(_TOO_WIDE, ["table", True]) == []
        assert page.evaluate(_TOO_WIDE, [".table-wrapper", False]) == []
        page.goto((site / "quickstart.html").as_uri())
        assert page.evaluate("() => document.querySelectorAll('pre').length") >= 3
        assert page.evaluate(_TOO_WIDE, ["pre", True]) == []
    finally:
        page.close()
