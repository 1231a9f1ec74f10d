"""A process that forgot ``gevent.monkey.patch_all()`` is told so when its server starts.

Without the patch one handler that blocks (``time.sleep(3)``, a database call) holds every
connection of the process, and nothing else says why. ``make_server`` (so
``flask_sente.run``) logs an error with the fix. Checked on the README's Quickstart app, run
as ``python app.py`` runs it, once as written and once without its first line.
"""
from __future__ import annotations

import os
import pathlib
import sys

import requests

from tests.browser.conftest import HERE as BROWSER_TESTS
from tests.browser.conftest import Server
from tests.browser.test_readme import quickstart_blocks

PATCH_LINE = "from gevent import monkey; monkey.patch_all()"
FIX = "Put `from gevent import monkey; monkey.patch_all()` first in your program"


def serve_quickstart(tmp_path: pathlib.Path, patched: bool) -> str:
    """Serve the Quickstart's app.py (without its patch line unless ``patched``) with
    ``flask_sente.run`` until it answers its health check; what it logged by then."""
    app_py, index_html = quickstart_blocks()
    assert app_py.splitlines()[1].startswith(PATCH_LINE)
    if not patched:
        app_py = app_py.replace(PATCH_LINE, "pass", 1)
    (tmp_path / "templates").mkdir()
    (tmp_path / "app.py").write_text(app_py, encoding="utf-8")
    (tmp_path / "templates" / "index.html").write_text(index_html, encoding="utf-8")
    server = Server(str(tmp_path / "server.log"),
                    command=lambda port: [sys.executable,
                                          os.path.join(BROWSER_TESTS, "quickstart_server.py"),
                                          str(tmp_path)],
                    ready=r"serving on http://127\.0\.0\.1:(\d+)")
    server.start()
    try:
        assert requests.get(server.url + "/chsk/health", timeout=10).status_code == 200
        return server.log()
    finally:
        server.stop(graceful=False)


def test_an_unpatched_process_is_told_at_start(tmp_path: pathlib.Path) -> None:
    """Broken once by taking the ``check_monkey_patched()`` call out of ``make_server`` (as
    before issue 26): the server started without a word and this failed."""
    log = serve_quickstart(tmp_path, patched=False)
    assert ("flask_sente: this process is not monkey-patched by gevent (socket, time, "
            "select, threading not patched)") in log, log
    assert FIX in log
    assert log.index(FIX) < log.index("serving on")  # before it serves, not at a crash


def test_a_patched_process_is_not(tmp_path: pathlib.Path) -> None:
    log = serve_quickstart(tmp_path, patched=True)
    assert "monkey-patched" not in log, log
    assert "serving on" in log
