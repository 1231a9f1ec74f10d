"""The Python client sends the CSRF token as a header, the WebSocket upgrade included."""
from flask import Flask, request

from flask_sente import Sente
from flask_sente.client import Client
from flask_sente.testing import serve


def test_token_travels_in_a_header_never_in_the_url():
    app = Flask(__name__)
    app.secret_key = "t"
    sente = Sente(app, csrf=lambda: "the-token")
    seen = []

    @app.before_request
    def record():
        seen.append((request.headers.get("Upgrade"), request.args.to_dict(),
                     request.headers.get("X-CSRF-Token")))

    @sente.on("t/echo")
    def echo(msg):
        msg.reply(msg.data)

    with serve(app) as base:
        for kind in ("ws", "ajax"):
            with Client(base + "/chsk", type=kind, csrf_token="the-token") as chsk:
                assert chsk.call(("t/echo", kind), timeout=5) == kind
    upgrades = [s for s in seen if s[0] == "websocket"]
    assert upgrades and all(token == "the-token" for _, _, token in seen)
    assert all("csrf-token" not in args for _, args, _ in seen)
