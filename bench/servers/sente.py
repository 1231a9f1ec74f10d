"""flask_sente, the code under test: ``bench/echo`` replies with its data, ``bench/start``
broadcasts ``("bench/ev", i)`` for i < n. Each client is its own user (uid = client id).

``create_app()`` is also what gunicorn serves in ``python -m bench.cluster``; the
environment variable ``BENCH_BACKPLANE`` (a Redis URL) gives it a shared backplane."""
from __future__ import annotations

import os
import typing as t


def create_app() -> t.Any:
    from flask import Flask

    from flask_sente import Sente

    app = Flask("bench_sente")
    app.secret_key = "bench"
    sente = Sente(app, csrf=False, user_id=lambda client_id: client_id,
                  backplane=os.environ.get("BENCH_BACKPLANE") or None)

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

    return app


def serve(backlog: int, nodelay: bool = False) -> None:
    from gevent import monkey

    monkey.patch_all()
    from flask_sente.server import make_server

    from .gevent_util import announce

    # flask_sente's handler sets TCP_NODELAY itself; ``nodelay`` changes nothing here.
    announce(make_server(create_app(), "127.0.0.1", 0, log=None, backlog=backlog))
