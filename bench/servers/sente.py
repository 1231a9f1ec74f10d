"""flask_sente, the code under test: ``bench/echo`` replies with its data, ``bench/start``
broadcasts ``("bench/ev", i)`` for i < n. Each client is its own user (uid = client id)."""
from __future__ import annotations


def serve(backlog: int, nodelay: bool = False) -> None:
    from gevent import monkey

    monkey.patch_all()
    from flask import Flask

    from flask_sente import Sente
    from flask_sente.server import make_server

    from .gevent_util import announce

    app = Flask("bench_sente")
    sente = Sente(app, csrf=False, user_id=lambda client_id: client_id)

    @sente.on("bench/echo")
    def echo(msg):  # type: ignore[no-untyped-def]
        msg.reply(msg.data)

    @sente.on("bench/start")
    def start(msg):  # type: ignore[no-untyped-def]
        for i in range(int(msg.data)):
            sente.broadcast(("bench/ev", i))

    # flask_sente's handler sets TCP_NODELAY itself; ``nodelay`` changes nothing here.
    announce(make_server(app, "127.0.0.1", 0, log=None, backlog=backlog))
