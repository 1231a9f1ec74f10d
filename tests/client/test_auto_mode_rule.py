"""Auto mode's transport rule for the Python client, against real servers: every scenario of
tests/vectors/auto_mode.json, the vectors sente.js's tests run too
(tests/browser/test_auto_mode_rule.py, tests/js/rules.test.mjs).

The rule both clients follow: after a WebSocket fails to open, Ajax is used when it works,
also when a WebSocket has been open before (a restart shows up as both failing, so the
client then keeps trying WebSocket first); a 401/403 stops; while on Ajax after a fallback,
WebSocket is tried again only by the upgrade timer or ``reconnect()``.

Only the public ``flask_sente.client.Client`` API is used. The drop in each scenario is a
server restart on the same port, with the new behaviour (or no restart, for ``http: down``).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import typing as t

import pytest

from flask_sente.client import Client

from .conftest import TIMEOUT, Server, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
with open(os.path.join(ROOT, "tests", "vectors", "auto_mode.json"), encoding="utf-8") as _f:
    SCENARIOS = json.load(_f)["scenarios"]


class Behaviour:
    """WSGI middleware: answers WebSocket upgrades with 400 when ``ws == "refused"`` (a proxy
    without WebSocket support) and Ajax requests with 403 when ``http == "403"``."""

    def __init__(self, app: t.Any) -> None:
        self.app = app
        self.ws = "accepts"
        self.http = "handshakes"

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            if self.ws == "refused":
                start_response("400 Bad Request", [("Content-Type", "text/plain")])
                return [b"no upgrades through this proxy"]
        elif self.http == "403":
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"refused by the test"]
        return self.app(environ, start_response)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return t.cast(int, sock.getsockname()[1])


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_auto_mode_vector(make_client: t.Callable[..., Client], scenario: dict[str, t.Any]) -> None:
    before, ws, http, expect = (scenario[k] for k in ("before", "ws", "http", "expect"))
    # A short long-poll, so stopping the server does not wait long for a parked poll.
    server = Server(lp_timeout=0.5)
    behaviour = Behaviour(server.app.wsgi_app)
    server.app.wsgi_app = behaviour  # type: ignore[method-assign]
    options = {"type": "auto", "upgrade_retry": None}

    with contextlib.ExitStack() as stack:
        if before == "fresh":
            if http == "down":
                url = f"http://127.0.0.1:{closed_port()}/chsk"
            else:
                behaviour.ws, behaviour.http = ws, http
                url = stack.enter_context(server.running()).url
            chsk = make_client(url, **options)
        else:
            behaviour.ws = "refused" if before == "ajax-fallback" else "accepts"
            with server.running():
                chsk = make_client(server.url, **options)
                opened_on = "ajax" if before == "ajax-fallback" else "ws"
                wait_until(lambda: chsk.state.open and chsk.state.type == opened_on,
                           message=f"open over {opened_on}")
                port = server.port
            wait_until(lambda: not chsk.state.open, message="the drop")
            if http != "down":
                behaviour.ws, behaviour.http = ws, http
                stack.enter_context(server.running(port=port))

        if expect["open"]:
            wait_until(lambda: chsk.state.open, message=scenario["name"])
            assert chsk.state.type == expect["type"]
            assert chsk.call(("t/echo", "hi"), timeout=TIMEOUT) == "hi"
            chsk.close()  # before the server stops, so no poll is parked while it does
            return
        wait_until(lambda: chsk.state.last_close is not None
                   and chsk.state.last_close.reason == expect["reason"]
                   and (expect["stopped"] or chsk.state.attempt >= 2),
                   message=scenario["name"])
        state = chsk.state
        assert not state.open
        assert state.active is not expect["stopped"]
        if "status" in expect:
            assert state.last_close.status == expect["status"]
        if "type" in expect:
            assert state.type == expect["type"]
        chsk.close()
