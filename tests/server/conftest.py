"""A real server per test (127.0.0.1, ephemeral port) and plain clients to drive it.

The clients here are deliberately *not* flask_sente's: websocket-client for WebSockets and
requests for Ajax, speaking docs/protocol.md by hand.
"""
from __future__ import annotations

import contextlib
import json
import typing as t
import uuid

import gevent
import pytest
import requests
import websocket
from flask import Flask, request

from flask_sente import Sente, signals
from flask_sente.testing import serve

TIMEOUT = 5


def ws_connect(url: str, **kwargs: t.Any) -> websocket.WebSocket:
    kwargs.setdefault("timeout", TIMEOUT)
    return websocket.create_connection(url, **kwargs)


class Harness:
    """An app with a few handlers, served; records what its handlers saw."""

    def __init__(self, base: str, app: Flask, sente: Sente) -> None:
        self.base = base
        self.url = base + "/chsk"
        self.ws_url = self.url.replace("http://", "ws://")
        self.app = app
        self.sente = sente
        self.seen: list[t.Any] = []      # every EventMsg a handler got, in order
        self.session = requests.Session()

    # --- plain WebSocket client ---
    def ws(self, client_id: str | None = None, *, uid: str | None = None,
           handshake: bool = True, **params: str) -> websocket.WebSocket:
        query = {"client-id": client_id or uuid.uuid4().hex, **params}
        if uid is not None:
            query["u"] = uid
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        ws = ws_connect(f"{self.ws_url}?{qs}")
        if handshake:
            first = self.recv(ws)
            assert first[0][0] == "chsk/handshake", first
        return ws

    @staticmethod
    def recv(ws: websocket.WebSocket) -> t.Any:
        data = ws.recv()
        return json.loads(data)

    @staticmethod
    def send(ws: websocket.WebSocket, event: t.Any, cb_id: str | None = None) -> None:
        ws.send(json.dumps([event, cb_id]))

    def recv_until(self, ws: websocket.WebSocket, pred: t.Callable[[t.Any], bool]) -> t.Any:
        """Next message matching ``pred``, skipping keep-alive pings."""
        for _ in range(50):
            msg = self.recv(ws)
            if pred(msg):
                return msg
        raise AssertionError("no matching message")

    # --- plain Ajax client ---
    def get(self, client_id: str, *, uid: str | None = None, handshake: bool = False,
            **params: str) -> requests.Response:
        query = {"client-id": client_id, **params}
        if uid is not None:
            query["u"] = uid
        if handshake:
            query["handshake"] = "1"
        return self.session.get(self.url, params=query, timeout=TIMEOUT)

    def post(self, client_id: str, event: t.Any, cb_id: str | None = None, *,
             uid: str | None = None, body: t.Any = None, **params: str) -> requests.Response:
        query = {"client-id": client_id, **params}
        if uid is not None:
            query["u"] = uid
        data = json.dumps([event, cb_id]) if body is None else body
        return self.session.post(self.url, params=query, data=data, timeout=TIMEOUT,
                                 headers={"Content-Type": "application/json"})

    def events_named(self, event_id: str) -> list[t.Any]:
        return [m for m in self.seen if m.id == event_id]

    def wait_for(self, pred: t.Callable[[], bool], timeout: float = TIMEOUT) -> None:
        with gevent.Timeout(timeout, AssertionError("condition not met in time")):
            while not pred():
                gevent.sleep(0.01)


def build_app(**options: t.Any) -> tuple[Flask, Sente]:
    app = Flask(__name__)
    app.secret_key = "test"
    options.setdefault("csrf", False)
    # Tests name their users with a ?u= parameter.
    options.setdefault("user_id", lambda client_id: request.args.get("u"))
    sente = Sente(app, **options)
    return app, sente


@contextlib.contextmanager
def running(**options: t.Any) -> t.Iterator[Harness]:
    app, sente = build_app(**options)
    with serve(app) as base:
        h = Harness(base, app, sente)

        @sente.on("*")
        def record(msg: t.Any) -> None:
            h.seen.append(msg)
            if msg.id == "t/echo":
                msg.reply(msg.data)
            elif msg.id == "t/boom":
                raise RuntimeError("boom")
            elif msg.id == "t/whoami":
                msg.reply({"uid": msg.uid, "client_id": msg.client_id,
                           "transport": msg.transport,
                           "host": msg.request.headers.get("Host"),
                           "arg": msg.request.args.get("extra")})
            elif msg.id == "t/unknown-like":
                pass  # never replies: exercises the reply timeout

        try:
            yield h
        finally:
            h.session.close()


@pytest.fixture
def server() -> t.Iterator[Harness]:
    with running() as h:
        yield h


@pytest.fixture
def signal_log() -> t.Iterator[list[tuple[str, dict[str, t.Any]]]]:
    log: list[tuple[str, dict[str, t.Any]]] = []
    receivers = {}
    for name in ("client_connected", "client_disconnected", "user_connected",
                 "user_disconnected"):
        def receiver(sender: t.Any, _name: str = name, **kw: t.Any) -> None:
            log.append((_name, kw))
        receivers[name] = receiver
        getattr(signals, name).connect(receiver)
    try:
        yield log
    finally:
        for name, receiver in receivers.items():
            getattr(signals, name).disconnect(receiver)
