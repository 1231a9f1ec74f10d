"""Raw gevent-websocket 0.10.1: a plain WSGI app (no Flask) on gevent's pywsgi with
gevent-websocket's ``WebSocketHandler``. A text message ``start <n>`` makes it send n
messages to every connected socket (one frame each, no batching); anything else is echoed."""
from __future__ import annotations


def serve(backlog: int, nodelay: bool = False) -> None:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.exceptions import WebSocketError
    from geventwebsocket.handler import WebSocketHandler

    from .gevent_util import announce, fan_out, nodelay_handler
    from .pushes import run as run_pushes

    sockets: set = set()

    def _push(ws, ms):  # type: ignore[no-untyped-def]
        try:
            ws.send(f"push {ms}")
        except Exception:  # a client gone: the client side counts the loss
            sockets.discard(ws)

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        ws = environ.get("wsgi.websocket")
        if ws is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"websocket only\n"]
        sockets.add(ws)
        try:
            while True:
                msg = ws.receive()
                if msg is None:
                    break
                if isinstance(msg, str) and msg.startswith("pushes "):
                    kind, seconds = msg.split()[1:]
                    gevent.spawn(run_pushes, list(sockets), _push, kind, int(seconds))
                elif isinstance(msg, str) and msg.startswith("start "):
                    fan_out(sockets, int(msg[6:]), WebSocketError)
                else:
                    ws.send(msg)
        except WebSocketError:
            pass
        finally:
            sockets.discard(ws)
        return []

    handler = nodelay_handler(WebSocketHandler) if nodelay else WebSocketHandler
    announce(WSGIServer(("127.0.0.1", 0), app, handler_class=handler, log=None,
                        backlog=backlog))
