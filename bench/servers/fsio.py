"""Flask-SocketIO with ``async_mode="gevent"`` on gevent's pywsgi with gevent-websocket's
handler — what ``socketio.run(app)`` builds in that mode. ``echo`` returns its data as the
ack; ``start`` emits ``ev`` n times to every client of the namespace (broadcast).
``--nodelay`` sets TCP_NODELAY on accepted sockets (Flask-SocketIO does not)."""
from __future__ import annotations


def serve(backlog: int, nodelay: bool = False) -> None:
    from gevent import monkey

    monkey.patch_all()
    from flask import Flask
    from flask_socketio import SocketIO
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.handler import WebSocketHandler

    from .gevent_util import announce, nodelay_handler

    app = Flask("bench_fsio")
    socketio = SocketIO(app, async_mode="gevent", cors_allowed_origins="*", logger=False,
                        engineio_logger=False)

    @socketio.on("echo")
    def echo(data):  # type: ignore[no-untyped-def]
        return data

    @socketio.on("start")
    def start(n):  # type: ignore[no-untyped-def]
        for i in range(int(n)):
            socketio.emit("ev", i)

    handler = nodelay_handler(WebSocketHandler) if nodelay else WebSocketHandler
    announce(WSGIServer(("127.0.0.1", 0), app, handler_class=handler, log=None,
                        backlog=backlog))
