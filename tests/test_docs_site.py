"""The documentation site builds with every warning an error, and has what it promises.

The same build as ``make docs`` (``-W --keep-going -n``), into a temporary folder: a broken
cross-reference, a docstring Sphinx cannot read, a README section the pages include that
moved, all fail here.
"""
from __future__ import annotations

import html
import pathlib
import re
import subprocess
import sys

import pytest

from flask_sente.config import Options

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
