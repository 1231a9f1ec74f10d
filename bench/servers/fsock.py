"""Flask-Sock 0.7 (simple-websocket) on gevent's pywsgi: a Flask view per WebSocket at
``/``. Speaks the raw peer's dialect: ``start <n>`` sends n messages to every connected
socket (one frame each), anything else is echoed. Flask-Sock needs no special handler:
simple-websocket takes the socket from gevent's environ and reads in a (patched) thread."""
from __future__ import annotations


def serve(backlog: int, nodelay: bool = False) -> None:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from flask import Flask
    from flask_sock import ConnectionClosed, Sock
    from gevent.pywsgi import WSGIHandler, WSGIServer

    from .gevent_util import announce, fan_out, nodelay_handler
    from .pushes import run as run_pushes

    app = Flask("bench_fsock")
    sock = Sock(app)
    sockets: set = set()

    def _push(ws, ms):  # type: ignore[no-untyped-def]
        try:
            ws.send(f"push {ms}")
        except Exception:  # a client gone: the client side counts the loss
            sockets.discard(ws)

    @sock.route("/")
    def echo(ws):  # type: ignore[no-untyped-def]
        sockets.add(ws)
        try:
            while True:
                msg = ws.receive()
                if isinstance(msg, str) and msg.startswith("pushes "):
                    kind, seconds = msg.split()[1:]
                    gevent.spawn(run_pushes, list(sockets), _push, kind, int(seconds))
                elif isinstance(msg, str) and msg.startswith("start "):
                    fan_out(sockets, int(msg[6:]), ConnectionClosed)
                else:
                    ws.send(msg)
        except ConnectionClosed:
            pass
        finally:
            sockets.discard(ws)

    handler = nodelay_handler(WSGIHandler) if nodelay else WSGIHandler
    announce(WSGIServer(("127.0.0.1", 0), app, handler_class=handler, log=None,
                        backlog=backlog))
