"""A Sente app for the subprocess drain tests (gunicorn ``SenteWorker``): ``t/slow`` takes
``SLOW_SECONDS`` and then replies, ``t/echo`` replies at once. No CSRF; the uid is ``?u=``."""
from __future__ import annotations

import gevent
from flask import Flask, request

from flask_sente import Sente

SLOW_SECONDS = 1.5


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "drain-test"
    sente = Sente(app, csrf=False, user_id=lambda client_id: request.args.get("u"))

    @sente.on("t/slow")
    def slow(msg):  # type: ignore[no-untyped-def]
        gevent.sleep(SLOW_SECONDS)
        msg.reply({"done": msg.data})

    @sente.on("t/echo")
    def echo(msg):  # type: ignore[no-untyped-def]
        msg.reply(msg.data)

    return app
