"""The app the deployment tests run under gunicorn: as docs/deployment/ says to set one up
(ProxyFix behind nginx, metrics on, the Redis backplane when ``SENTE_TEST_REDIS`` is set).
Users are named by ``?u=``; handlers report which worker served them and what request the
app saw."""
from __future__ import annotations

import os
import typing as t

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_sente import Sente


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "deployment-test"
    # nginx sets X-Forwarded-For/Proto/Host once: trust one proxy for each.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    sente = Sente(app, csrf=False, metrics=True, backplane=os.environ.get("SENTE_TEST_REDIS"),
                  user_id=lambda client_id: request.args.get("u"))
    app.add_url_rule("/metrics", view_func=sente.metrics_view)

    @sente.on("t/pid")
    def pid(msg: t.Any) -> None:
        msg.reply(os.getpid())

    @sente.on("t/push")
    def push(msg: t.Any) -> None:
        sente.send(msg.data["to"], ("t/pushed", msg.data["n"]))
        msg.reply(os.getpid())

    @sente.on("t/whoami")
    def whoami(msg: t.Any) -> None:
        msg.reply({"uid": msg.uid, "transport": msg.transport, "url": msg.request.url,
                   "host": msg.request.headers.get("Host"), "pid": os.getpid()})

    return app
