"""Fixtures for the browser tests: a server process and headless Chromium.

The server runs in a subprocess (``app_server.py``) so a test can stop and restart it on the
same port, and so its gevent loop never waits on Playwright. Playwright's sync API runs in
the pytest process, which the root conftest has monkey-patched; that works (Playwright's
driver is a separate node process and its event loop just sees gevent's selectors).

Nothing outlives its test: each test gets its own browser and its own server(s), closed or
killed in the fixtures' ``finally``. Every wait has a timeout.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import typing as t

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
#: The npm codec the msgpack test serves to the page (``make browser-deps`` installs it).
MSGPACK_UMD = os.path.join(ROOT, "tests", "js", "node_modules", "@msgpack", "msgpack", "dist.umd",
                           "msgpack.min.js")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Default Playwright timeout (ms) for page actions and waits.
PAGE_TIMEOUT = 10_000
SERVER_START_TIMEOUT = 20.0
SERVER_STOP_TIMEOUT = 15.0


class Server:
    """One app server process; ``stop()`` + ``start()`` is a restart on the same port."""

    def __init__(self, log_path: str, packer: str = "json", *,
                 command: t.Callable[[int], list[str]] | None = None,
                 ready: str = r"^PORT (\d+)$", env: dict[str, str] | None = None) -> None:
        """``command(port)`` builds the argv (port 0 = pick one); ``ready`` is a regex whose
        group 1 is the port, searched in the output once the process listens."""
        self.log_path = log_path
        self.packer = packer
        self.command = command or (lambda port: [
            sys.executable, os.path.join(HERE, "app_server.py"), "--port", str(port),
            "--packer", packer])
        self.ready = re.compile(ready, re.MULTILINE)
        self.env = env or {}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        assert self.proc is None, "already running"
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self.proc = subprocess.Popen(
                self.command(self.port),
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=ROOT,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                match = self.ready.search(log.read().decode("utf-8", "replace"))
                if match:
                    self.port = int(match.group(1))
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the test server did not start:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM (WebSockets get 1001, as in a real restart), SIGKILL if it hangs.

        ``graceful=False`` kills at once: for teardown, where the stop itself is not tested
        (a graceful stop waits a few seconds for parked long-polls).
        """
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if graceful:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=SERVER_STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait(timeout=5)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    # --- test controls (routes of app_server.py) ----------------------------------------

    def post(self, path: str, **body: t.Any) -> None:
        requests.post(self.url + path, json=body, timeout=5).raise_for_status()

    def push(self, uid: str, event: str, data: t.Any = None) -> None:
        self.post("/test/push", uid=uid, event=event, data=data)

    def hits(self, client_id: str) -> dict[str, int]:
        """Channel-socket requests this server process got from a client, by kind."""
        resp = requests.get(self.url + "/test/hits", params={"client-id": client_id}, timeout=5)
        resp.raise_for_status()
        return t.cast("dict[str, int]", resp.json())


def stop_all(servers: list[Server]) -> None:
    """Stop every server, then print their logs (pytest shows them when the test failed)."""
    for server in servers:
        server.stop(graceful=False)
    for server in servers:
        print(f"--- {server.log_path}\n{server.log()}")


@pytest.fixture
def make_server(tmp_path: t.Any) -> t.Iterator[t.Callable[..., Server]]:
    servers: list[Server] = []

    def make(packer: str = "json") -> Server:
        server = Server(str(tmp_path / f"server{len(servers)}.log"), packer)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        stop_all(servers)


@contextlib.contextmanager
def script_servers(tmp_path: t.Any, script: str) -> t.Iterator[t.Callable[..., Server]]:
    """``make(*args)`` starts ``python tests/browser/<script> --port N *args`` (a
    :class:`Server` each, restartable); all are stopped (:func:`stop_all`) when the block
    ends."""
    servers: list[Server] = []
    stem = os.path.splitext(script)[0]

    def make(*args: str) -> Server:
        server = Server(str(tmp_path / f"{stem}{len(servers)}.log"), command=lambda port: [
            sys.executable, os.path.join(HERE, script), "--port", str(port), *args])
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        stop_all(servers)


@pytest.fixture
def server(make_server: t.Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture
def browser() -> t.Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


class Pages:
    """Opens test pages; each user gets a browser context (a cookie jar) of its own."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: dict[str, t.Any] = {}
        self.errors: list[str] = []

    def open(self, server: Server, uid: str | None = "alice", path: str = "/page", *,
             start: bool = True, jar: str | None = None, **options: t.Any) -> Page:
        """Load a page as ``uid`` and, unless ``start=False``, connect with ``options``.

        Pages share cookies (the Flask session) when they share a ``jar``, by default the uid.
        """
        jar = (uid or "") if jar is None else jar
        context = self.contexts.get(jar)
        if context is None:
            context = self.contexts[jar] = self.browser.new_context()
            context.set_default_timeout(PAGE_TIMEOUT)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        query = f"?uid={uid}" if uid else ""
        page.goto(server.url + path + query, timeout=PAGE_TIMEOUT)
        if start:
            page.evaluate("(o) => start(o)", options)
        return page


@pytest.fixture
def pages(browser: Browser) -> t.Iterator[Pages]:
    opened = Pages(browser)
    try:
        yield opened
    finally:
        for context in opened.contexts.values():
            context.close()
    assert not opened.errors, f"errors in the page: {opened.errors}"
