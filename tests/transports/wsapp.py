"""A tiny Flask echo app for the subprocess tests (gunicorn worker, ``server.run``).

``WSAPP_STOCK=1`` builds it for stock gevent-websocket (WebSocket route declared with
``websocket=True``, the socket taken from ``environ['wsgi.websocket']``).
``python -m tests.transports.wsapp`` serves it with :func:`flask_sente.server.run` on a
free port.
"""
from __future__ import annotations

if __name__ == "__main__":  # patch before anything imports socket
    from gevent import monkey

    monkey.patch_all()

import gc  # noqa: E402
import os  # noqa: E402

from flask import Flask, request  # noqa: E402

from flask_sente.exceptions import ConnectionClosed  # noqa: E402

from .wsutil import open_ws  # noqa: E402


def create_app() -> Flask:
    stock = os.environ.get("WSAPP_STOCK") == "1"
    app = Flask(__name__)

    @app.route("/plain")
    def plain() -> str:
        return "plain ok"

    @app.route("/gc-frozen")
    def gc_frozen() -> str:
        return str(gc.get_freeze_count())

    @app.route("/ws", websocket=stock)
    def ws() -> tuple[str, int] | str:
        if request.args.get("deny"):
            return "go away", 403
        conn = open_ws(request.environ)
        if conn is None:
            return "not a websocket", 400
        try:
            while True:
                conn.send(conn.receive())
        except ConnectionClosed:
            pass
        return ""

    return app


def _limits_from_env() -> dict:
    """``WSAPP_NOFILE`` lowers RLIMIT_NOFILE; ``WSAPP_HEADER_TIMEOUT`` and
    ``WSAPP_MAX_CONNECTIONS`` (``none`` = no limit) go to ``run``."""
    kw: dict = {}
    nofile = os.environ.get("WSAPP_NOFILE")
    if nofile:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(nofile), hard))
    if os.environ.get("WSAPP_HEADER_TIMEOUT"):
        kw["header_timeout"] = float(os.environ["WSAPP_HEADER_TIMEOUT"])
    limit = os.environ.get("WSAPP_MAX_CONNECTIONS")
    if limit:
        kw["max_connections"] = None if limit == "none" else int(limit)
    return kw


if __name__ == "__main__":
    from flask_sente.server import run

    run(create_app(), port=0, **_limits_from_env())
