"""Fixtures for the Python client's tests: a real flask_sente server per test, and clients
that are always closed.

The server runs in-process with ``flask_sente.testing.serve`` (gevent, WebSocket capable);
the root conftest has monkey-patched the process, so the client's threads are greenlets here.
One test (test_plain_process) runs the client in a process that is not patched.
"""
from __future__ import annotations

import contextlib
import threading
import time
import typing as t

import pytest
from flask import Flask, request

from flask_sente import Sente
from flask_sente.client import Client
from flask_sente.testing import serve

#: Upper bound for any single wait in these tests (never reached when things work).
TIMEOUT = 10.0


def wait_until(predicate: t.Callable[[], t.Any], timeout: float = TIMEOUT,
               message: str = "condition") -> t.Any:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.01)


class Server:
    """An app with the handlers the client tests use, and what those handlers saw."""

    def __init__(self, **options: t.Any) -> None:
        options.setdefault("csrf", False)
        self.app = Flask(__name__)
        self.app.secret_key = "test"
        self.sente = Sente(self.app, **options)
        self.logged: list[t.Any] = []
        self.pongs = 0
        #: Set by the test to let t/slow handlers finish.
        self.release = threading.Event()
        self.slow_started = threading.Event()
        self.base = ""
        sente = self.sente

        @sente.on("t/echo")
        def echo(msg: t.Any) -> None:
            msg.reply(msg.data)

        @sente.on("t/push")
        def push(msg: t.Any) -> None:
            sente.send(msg.uid, ("t/ev", msg.data))
            msg.reply(True)

        @sente.on("t/push-many")
        def push_many(msg: t.Any) -> None:
            for item in msg.data["items"]:
                sente.send(msg.uid, (msg.data["id"], item))
            sente.send(msg.uid, ("t/done", None), flush=True)
            msg.reply(True)

        @sente.on("t/log")
        def log(msg: t.Any) -> None:
            self.logged.append(msg.data)

        @sente.on("t/logged")
        def logged(msg: t.Any) -> None:
            msg.reply(list(self.logged))

        @sente.on("t/slow")
        def slow(msg: t.Any) -> None:
            self.slow_started.set()
            self.release.wait(TIMEOUT)
            msg.reply("late")

        @sente.on("t/raise")
        def fail(msg: t.Any) -> None:
            raise ValueError("boom")

        @sente.on("t/silent")
        def silent(msg: t.Any) -> None:
            pass

        @sente.on("t/kick-me")
        def kick(msg: t.Any) -> None:
            sente.kick(msg.uid)

        @sente.on("chsk/ws-pong")
        def pong(msg: t.Any) -> None:
            self.pongs += 1

        @self.app.route("/token")
        def token() -> str:
            return sente.csrf_token()

        @self.app.route("/whoami")
        def whoami() -> str:
            return request.cookies.get("who", "")

    @property
    def url(self) -> str:
        return self.base + "/chsk"

    @contextlib.contextmanager
    def running(self, port: int = 0) -> t.Iterator[Server]:
        """Serve the app (again, possibly on a given port) for the ``with`` block."""
        with serve(self.app, port=port) as base:
            self.base = base
            try:
                yield self
            finally:
                self.release.set()  # let t/slow handlers end before the server stops

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


@pytest.fixture
def make_server() -> t.Iterator[t.Callable[..., Server]]:
    """``make_server(**sente_options)`` -> a :class:`Server`, running until the test ends."""
    stack = contextlib.ExitStack()

    def make(**options: t.Any) -> Server:
        server = Server(**options)
        stack.enter_context(server.running())
        return server

    with stack:
        yield make


@pytest.fixture
def server(make_server: t.Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture
def make_client() -> t.Iterator[t.Callable[..., Client]]:
    """``make_client(url, **options)`` -> a connected :class:`Client`, closed after the test."""
    clients: list[Client] = []

    def make(url: str, *, connect: bool = True, **options: t.Any) -> Client:
        options.setdefault("backoff", lambda attempt: 0.0 if attempt <= 1 else 0.05)
        options.setdefault("connect_timeout", 5.0)
        client = Client(url, **options)
        clients.append(client)
        if connect:
            client.connect()
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()


@pytest.fixture(params=["ws", "ajax", "auto"])
def transport(request: pytest.FixtureRequest) -> str:
    return t.cast(str, request.param)


def expected_type(transport: str) -> str:
    """The transport a client of this type ends up on when WebSocket works."""
    return "ajax" if transport == "ajax" else "ws"


class Recorder:
    """Collects state changes and handshakes through the client's callbacks."""

    def __init__(self, client: Client) -> None:
        self.states: list[tuple[t.Any, t.Any]] = []
        self.handshakes: list[dict[str, t.Any]] = []
        client.on_state(lambda old, new: self.states.append((old, new)))
        client.on("chsk/handshake", self.handshakes.append)

    def closes(self) -> list[t.Any]:
        return [new.last_close for old, new in self.states
                if new.last_close is not None and new.last_close is not old.last_close]


class WsgiToggle:
    """WSGI middleware that answers WebSocket upgrades with 400 while ``refuse`` is True
    (like a proxy that does not pass upgrades), or holds them while ``hold`` is True."""

    def __init__(self, app: t.Any) -> None:
        self.app = app
        self.refuse = True
        self.hold = False
        self.held = threading.Event()
        self.unhold = threading.Event()
        self.upgrades = 0
        self.ajax_requests = 0

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            self.upgrades += 1
            if self.hold:
                self.held.set()
                self.unhold.wait(TIMEOUT)
                start_response("504 Gateway Timeout", [("Content-Type", "text/plain")])
                return [b"held"]
            if self.refuse:
                start_response("400 Bad Request", [("Content-Type", "text/plain")])
                return [b"no upgrades through this proxy"]
        else:
            self.ajax_requests += 1
        return self.app(environ, start_response)
