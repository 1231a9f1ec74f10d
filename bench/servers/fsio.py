"""Flask-SocketIO with ``async_mode="gevent"`` on gevent's pywsgi with gevent-websocket's
handler — what ``socketio.run(app)`` builds in that mode. ``echo`` returns its data as the
ack; ``start`` emits ``ev`` n times to every client of the namespace (broadcast); ``paced``
[n, ms] emits ``ev`` [i, sent ms] every ms milliseconds (push->client latency); ``join``
puts the client in a room, ``publish`` emits n time-stamped ``ev`` to the room
``bench/room``; ``where`` acks with the process's pid, and ``/bench/where`` /
``/bench/calls`` (``servers/calls.py``, ``python -m bench.calls``) ask clients with
``socketio.call`` (the client acks ``call`` with its data).
``--nodelay`` sets TCP_NODELAY on accepted sockets (Flask-SocketIO does not)."""
from __future__ import annotations

import os
import time
import typing as t


def create_app() -> t.Any:
    """The app (also what gunicorn serves in ``python -m bench.cluster``, where the
    environment variable ``BENCH_MESSAGE_QUEUE``, a Redis URL, gives it Flask-SocketIO's
    ``message_queue``)."""
    from flask import Flask
    from flask_socketio import SocketIO, join_room

    from .calls import install
    from .gevent_util import paced_pushes

    app = Flask("bench_fsio")
    socketio = SocketIO(app, async_mode="gevent", cors_allowed_origins="*", logger=False,
                        engineio_logger=False,
                        message_queue=os.environ.get("BENCH_MESSAGE_QUEUE") or None)

    @socketio.on("where")
    def where():  # type: ignore[no-untyped-def]
        return os.getpid()

    def call(sid: str, data: str, timeout: float) -> t.Any:
        return socketio.call("call", data, to=sid, timeout=timeout)

    install(app, call)

    @socketio.on("echo")
    def echo(data):  # type: ignore[no-untyped-def]
        return data

    sids: set[str] = set()

    @socketio.on("connect")
    def connect():  # type: ignore[no-untyped-def]
        from flask import request
        sids.add(request.sid)  # type: ignore[attr-defined]

    @socketio.on("disconnect")
    def disconnect(*_args):  # type: ignore[no-untyped-def]
        from flask import request
        sids.discard(request.sid)  # type: ignore[attr-defined]

    @socketio.on("pushes")
    def pushes(kind, seconds):  # type: ignore[no-untyped-def]
        from .pushes import run

        socketio.start_background_task(
            run, sorted(sids), lambda sid, ms: socketio.emit("push", ms, to=sid), kind,
            int(seconds))

    @socketio.on("start")
    def start(n):  # type: ignore[no-untyped-def]
        for i in range(int(n)):
            socketio.emit("ev", i)

    @socketio.on("paced")
    def paced(data):  # type: ignore[no-untyped-def]
        count, interval_ms = data
        socketio.start_background_task(paced_pushes, lambda i: socketio.emit(
            "ev", [i, time.time() * 1000]), int(count), float(interval_ms))

    @socketio.on("join")
    def join(room):  # type: ignore[no-untyped-def]
        join_room(room)
        return True

    @socketio.on("publish")
    def publish(n):  # type: ignore[no-untyped-def]
        for i in range(int(n)):  # [i, when it was published, ms since the epoch]
            socketio.emit("ev", [i, time.time() * 1000], to="bench/room")

    return app


def serve(backlog: int, nodelay: bool = False) -> None:
    from gevent import monkey

    monkey.patch_all()
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.handler import WebSocketHandler

    from .gevent_util import announce, nodelay_handler

    app = create_app()
    handler = nodelay_handler(WebSocketHandler) if nodelay else WebSocketHandler
    announce(WSGIServer(("127.0.0.1", 0), app, handler_class=handler, log=None,
                        backlog=backlog))
