"""The Python client sends the CSRF token as a header, the WebSocket upgrade included, and
the Ajax fast-path key it is given on its later Ajax requests."""
from flask import Flask, request

from flask_sente import Sente
from flask_sente.client import Client
from flask_sente.testing import serve


def _app(seen):
    """An app with an echo handler whose ``before_request`` hook records every request
    Flask handles."""
    app = Flask(__name__)
    app.secret_key = "t"
    sente = Sente(app, csrf=lambda: "the-token")

    @app.before_request
    def record():
        seen.append((request.headers.get("Upgrade"), request.args.to_dict(),
                     request.headers.get("X-CSRF-Token")))

    @sente.on("t/echo")
    def echo(msg):
        msg.reply(msg.data)

    return app


def test_token_travels_in_a_header_never_in_the_url():
    seen = []
    with serve(_app(seen)) as base:
        for kind in ("ws", "ajax"):
            with Client(base + "/chsk", type=kind, csrf_token="the-token") as chsk:
                assert chsk.call(("t/echo", kind), timeout=5) == kind
    upgrades = [s for s in seen if s[0] == "websocket"]
    assert upgrades and all(token == "the-token" for _, _, token in seen)
    assert all("csrf-token" not in args for _, args, _ in seen)


def test_ajax_requests_after_the_first_poll_carry_the_key_and_skip_flask():
    """The key the server gives (docs/protocol.md §6) goes back on later requests; those
    are answered without Flask (its request hooks do not see them)."""
    seen = []
    with serve(_app(seen)) as base:
        with Client(base + "/chsk", type="ajax", csrf_token="the-token") as chsk:
            assert chsk.call(("t/echo", 0), timeout=5) == 0
            through_flask = len(seen)
            for i in range(1, 6):
                assert chsk.call(("t/echo", i), timeout=5) == i
            assert len(seen) == through_flask  # five posts, none through Flask
