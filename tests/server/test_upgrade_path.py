"""WebSocket upgrades of the channel URL skip routing only (``flask_sente/fastpath.py``):
the app's request hooks, error handlers and teardown see them as they see any routed
request, and the rule they see is the one routing would have found.

Whether routing ran is counted by an app class whose URL adapters count their ``match``
calls (overriding ``create_url_adapter`` is allowed: the upgrade path still applies).
"""
from __future__ import annotations

import json
import typing as t
import uuid

import pytest
import websocket
from flask import Flask, abort, g, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_sente import Sente
from flask_sente.testing import serve

from .conftest import TIMEOUT, ws_connect


class CountingFlask(Flask):
    """Counts how often the URL map is asked to route a request."""

    matches = 0

    def create_url_adapter(self, request: t.Any) -> t.Any:
        adapter = super().create_url_adapter(request)
        if adapter is not None and request is not None:
            match = adapter.match

            def counted(*args: t.Any, **kwargs: t.Any) -> t.Any:
                type(self).matches += 1
                return match(*args, **kwargs)

            adapter.match = counted
        return adapter


def build(events: list[str], *, proxy_fix_first: bool = False) -> tuple[Flask, Sente]:
    app = CountingFlask(__name__)
    CountingFlask.matches = 0
    app.secret_key = "test"
    if proxy_fix_first:  # a middleware the app put in before Sente: it must see upgrades
        app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]

    def user_id(client_id: str) -> str | None:
        if request.args.get("u") == "nobody":
            abort(401)
        # Hooks may build URLs and read what routing gives, as in any view.
        events.append(f"user_id {request.endpoint} {url_for('index')} {g.get('seen')} "
                      f"{request.remote_addr}")
        return request.args.get("u")

    sente = Sente(app, csrf=False, user_id=user_id)

    @app.route("/")
    def index() -> str:
        return "index"

    @app.before_request
    def before() -> t.Any:
        g.seen = "before"
        events.append(f"before {request.endpoint} {request.blueprint}")
        if request.args.get("u") == "banned":
            return "banned by a hook", 403
        return None

    @app.after_request
    def after(response: t.Any) -> t.Any:
        events.append(f"after {response.status_code}")
        return response

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        events.append("teardown")

    @app.errorhandler(401)
    def unauthorized(exc: t.Any) -> tuple[str, int]:
        return "who are you?", 401

    return app, sente


def ws_url(base: str, uid: str) -> str:
    return f"{base.replace('http://', 'ws://')}/chsk?client-id={uuid.uuid4().hex}&u={uid}"


def refused(url: str) -> tuple[int, str]:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        ws_connect(url)
    return info.value.status_code, (info.value.resp_body or b"").decode()


def test_an_upgrade_runs_every_hook_but_is_not_routed() -> None:
    events: list[str] = []
    app, sente = build(events)
    with serve(app) as base:
        ws = ws_connect(ws_url(base, "ann"))
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
            assert CountingFlask.matches == 0
            assert events == ["before sente.chsk sente", "user_id sente.chsk / before 127.0.0.1",
                              "after 200", "teardown"]
            assert sente.connected_uids.ws == {"ann"}
        finally:
            ws.close()
        # An Ajax request of the same URL is routed as before.
        import requests
        hs = requests.get(base + "/chsk", params={"client-id": "c", "u": "bo", "handshake": 1},
                          timeout=TIMEOUT)
        assert hs.status_code == 200 and CountingFlask.matches == 1


@pytest.mark.parametrize(("uid", "answer"), [
    ("banned", (403, "banned by a hook")),    # a before_request hook's own response
    ("nobody", (401, "who are you?")),        # abort(401) in user_id: the app's error handler
])
def test_a_refused_upgrade_gets_the_apps_own_answer(uid: str, answer: tuple[int, str]) -> None:
    events: list[str] = []
    app, _ = build(events)
    with serve(app) as base:
        assert refused(ws_url(base, uid)) == answer
    assert events == ["before sente.chsk sente", f"after {answer[0]}", "teardown"]
    assert CountingFlask.matches == 0


def test_a_middleware_put_in_before_sente_sees_every_upgrade() -> None:
    events: list[str] = []
    app, sente = build(events, proxy_fix_first=True)
    with serve(app) as base:
        ws = ws_connect(ws_url(base, "cy"), header={"X-Forwarded-For": "203.0.113.9"})
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
            assert CountingFlask.matches == 1  # Flask's own path: routed
            assert "user_id sente.chsk / before 203.0.113.9" in events
            assert sente.connected_uids.ws == {"cy"}
        finally:
            ws.close()


def test_an_upgrade_left_visible_to_routing_gets_werkzeugs_answer(monkeypatch):
    """With ``hide_upgrade_from_routing = False`` Werkzeug sees a WebSocket request, which a
    rule without ``websocket=True`` refuses: Flask's own path answers, as it always did."""
    from flask_sente.transports.websocket import SenteHandler
    monkeypatch.setattr(SenteHandler, "hide_upgrade_from_routing", False)
    events: list[str] = []
    app, sente = build(events)
    with serve(app) as base:
        status, _ = refused(ws_url(base, "dee"))
    assert status == 400 and CountingFlask.matches == 1
    assert sente.connected_uids.ws == set()
