"""The README's examples, run as copied: its quickstart app and page in Chromium."""
from __future__ import annotations

import os
import re
import sys
import time
import typing as t

from playwright.sync_api import Browser

from .conftest import HERE, PAGE_TIMEOUT, ROOT, Server

README = os.path.join(ROOT, "README.md")


def quickstart_blocks() -> tuple[str, str]:
    """The ``app.py`` and ``templates/index.html`` blocks of the README's Quickstart."""
    with open(README, encoding="utf-8") as f:
        section = f.read().split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    app_py = re.search(r"```python\n(.*?)```", section, re.S)
    index_html = re.search(r"```html\n(.*?)```", section, re.S)
    assert app_py and index_html, "the Quickstart has a python and an html block"
    assert app_py.group(1).startswith("# app.py\n")
    assert index_html.group(1).startswith("<!-- templates/index.html -->\n")
    return app_py.group(1), index_html.group(1)


def test_quickstart_as_written_gets_the_reply_and_the_broadcast(browser: Browser,
                                                               tmp_path: t.Any) -> None:
    app_py, index_html = quickstart_blocks()
    (tmp_path / "templates").mkdir()
    (tmp_path / "app.py").write_text(app_py, encoding="utf-8")
    (tmp_path / "templates" / "index.html").write_text(index_html, encoding="utf-8")
    server = Server(str(tmp_path / "server.log"),
                    command=lambda port: [sys.executable, os.path.join(HERE, "quickstart_server.py"),
                                          str(tmp_path)],
                    ready=r"serving on http://127\.0\.0\.1:(\d+)")
    server.start()
    context = browser.new_context()
    try:
        page = context.new_page()
        logged: list[str] = []
        errors: list[str] = []
        page.on("console", lambda msg: logged.append(msg.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # The page connects and calls at once, while the socket is still connecting.
        page.goto(server.url + "/", timeout=PAGE_TIMEOUT)
        deadline = time.monotonic() + PAGE_TIMEOUT / 1000
        while not {"guest says hello", "{ok: true}"} <= set(logged) and not errors \
                and time.monotonic() < deadline:
            page.wait_for_timeout(50)  # lets Playwright deliver console events
        assert not errors, errors
        assert "guest says hello" in logged, logged      # the broadcast
        assert "{ok: true}" in logged, logged            # the reply
        assert page.evaluate("() => chsk.state.open && chsk.state.type") == "ws"
    finally:
        context.close()
        server.stop(graceful=False)
        print(server.log()[-3000:])
