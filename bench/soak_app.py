"""The app the soak (``bench/soak.py``) runs against, in a server process of its own.

``python -m bench.soak_app`` serves it with :func:`flask_sente.run` on a free port (printed
on stderr); ``gunicorn -k flask_sente.worker.SenteWorker 'bench.soak_app:create_app()'``
serves it under gunicorn. Settings come from the environment (``SOAK_*``, see below) so the
soak can start each scenario's server with its own limits. 127.0.0.1 only.
"""
from __future__ import annotations

if __name__ == "__main__":  # patch before anything imports socket
    from gevent import monkey

    monkey.patch_all()

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from flask import Flask, request  # noqa: E402

from flask_sente import Sente  # noqa: E402

#: The CSRF token every soak client uses (``csrf`` as a callable returning it).
TOKEN = "SOAK-CSRF-TOKEN-0123456789"


def _env(name: str, default: str) -> str:
    return os.environ.get("SOAK_" + name, default)


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "soak"
    sente = Sente(
        app, csrf=lambda: TOKEN, user_id=lambda client_id: request.args.get("u"),
        handler_pool_size=int(_env("POOL", "1000")),
        client_events_in_flight=int(_env("SHARE", "32")),
        error_log_interval=float(_env("ERROR_INTERVAL", "60")),
        ws_keepalive=float(_env("KEEPALIVE", "25")),
        ws_ping_timeout=float(_env("PING_TIMEOUT", "10")),
    )

    @sente.on("t/echo")
    def echo(msg):  # type: ignore[no-untyped-def]
        msg.reply(msg.data)

    @sente.on("t/slow")
    def slow(msg):  # type: ignore[no-untyped-def]
        gevent.sleep(float(msg.data or 1))
        msg.reply("slept")

    @sente.on("t/boom")
    def boom(msg):  # type: ignore[no-untyped-def]
        raise RuntimeError("soak: this handler fails on every call")

    return app


if __name__ == "__main__":
    from flask_sente.server import run

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    nofile = _env("NOFILE", "")
    if nofile:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (int(nofile), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    limit = _env("MAX_CONNECTIONS", "default")
    run(create_app(), port=0, header_timeout=float(_env("HEADER_TIMEOUT", "10")),
        max_connections=None if limit == "none" else (limit if limit == "default" else int(limit)),
        graceful_timeout=float(_env("GRACEFUL", "10")))
