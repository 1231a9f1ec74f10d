"""flask_sente, the code under test: ``bench/echo`` replies with its data, ``bench/start``
broadcasts ``("bench/ev", i)`` for i < n; ``bench/paced`` [n, ms] broadcasts
``("bench/ev", [i, sent ms])`` every ms milliseconds (push->client latency);
``bench/publish`` publishes n events stamped with the time to the topic ``bench/room``
(anyone may join ``bench/*``); ``bench/where`` replies with the process's pid, and
``/bench/where`` / ``/bench/calls`` (``servers/calls.py``, ``python -m bench.calls``) ask
clients with ``sente.call``. Each client is its own user (uid = client id).

``create_app()`` is also what gunicorn serves in ``python -m bench.cluster``; the
environment variable ``BENCH_BACKPLANE`` (a Redis URL) gives it a shared backplane, and
``BENCH_SEND_BUFFER_WS`` (seconds) its ``send_buffer_ws``, and ``BENCH_ADMIN=1`` turns the
admin dashboard on for the clients whose id starts with ``admin-`` (``python -m
bench.admin_cost``)."""
from __future__ import annotations

import os
import time
import typing as t


def create_app() -> t.Any:
    import gevent
    from flask import Flask

    from flask_sente import Sente

    from .calls import install
    from .gevent_util import paced_pushes

    app = Flask("bench_sente")
    app.secret_key = "bench"
    buffer = os.environ.get("BENCH_SEND_BUFFER_WS")
    sente = Sente(app, csrf=False, user_id=lambda client_id: client_id,
                  backplane=os.environ.get("BENCH_BACKPLANE") or None,
                  **({"send_buffer_ws": float(buffer)} if buffer else {}),
                  **({"admin": True, "admin_auth": lambda uid: str(uid).startswith("admin-")}
                     if os.environ.get("BENCH_ADMIN") == "1" else {}))

    @sente.on("bench/where")
    def where(msg):  # type: ignore[no-untyped-def]
        msg.reply(os.getpid())

    def call(client_id: str, data: str, timeout: float) -> t.Any:
        return sente.call(client_id, ("bench/call", data), client_id=client_id,
                          timeout=timeout)

    install(app, call)

    @sente.on("bench/echo")
    def echo(msg):  # type: ignore[no-untyped-def]
        msg.reply(msg.data)

    @sente.on("bench/pushes")
    def pushes(msg):  # type: ignore[no-untyped-def]
        import gevent

        from .pushes import run

        kind, seconds = msg.data
        users = sorted(sente.connected_uids.ws)

        def push_all() -> None:
            with app.app_context():
                run(users, lambda uid, ms: sente.send(uid, ("bench/push", ms)), kind,
                    int(seconds))

        gevent.spawn(push_all)

    @sente.on("bench/start")
    def start(msg):  # type: ignore[no-untyped-def]
        for i in range(int(msg.data)):
            sente.broadcast(("bench/ev", i))

    @sente.on("bench/paced")
    def paced(msg):  # type: ignore[no-untyped-def]
        count, interval_ms = msg.data
        gevent.spawn(paced_pushes, lambda i: sente.broadcast(
            ("bench/ev", [i, time.time() * 1000])), int(count), float(interval_ms))

    @sente.on_join("bench/*")
    def join(msg):  # type: ignore[no-untyped-def]
        return True

    @sente.on("bench/publish")
    def publish(msg):  # type: ignore[no-untyped-def]
        for i in range(int(msg.data)):  # [i, when it was published, ms since the epoch]
            sente.publish("bench/room", ("bench/ev", [i, time.time() * 1000]))

    return app


def serve(backlog: int, nodelay: bool = False) -> None:
    from gevent import monkey

    monkey.patch_all()
    from flask_sente.server import freeze_startup_objects, make_server

    from .gevent_util import announce

    # flask_sente's handler sets TCP_NODELAY itself; ``nodelay`` changes nothing here.
    server = make_server(create_app(), "127.0.0.1", 0, log=None, backlog=backlog)
    freeze_startup_objects()  # as flask_sente.run() and the gunicorn worker do
    announce(server)
