"""python-socketio's ``AsyncServer`` as an ASGI app on uvicorn (one worker; uvicorn's
defaults of ``uvicorn[standard]``: uvloop, httptools, websockets). ``echo`` returns its
data as the ack; ``start`` emits ``ev`` n times to every client (broadcast)."""
from __future__ import annotations

import socket


def serve(backlog: int, nodelay: bool = False) -> None:
    import socketio
    import uvicorn

    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", logger=False,
                               engineio_logger=False)

    @sio.on("echo")
    async def echo(sid, data):  # type: ignore[no-untyped-def]
        return data

    sids: set[str] = set()

    @sio.on("connect")
    async def connect(sid, environ):  # type: ignore[no-untyped-def]
        sids.add(sid)

    @sio.on("disconnect")
    async def disconnect(sid, *_args):  # type: ignore[no-untyped-def]
        sids.discard(sid)

    @sio.on("pushes")
    async def pushes(sid, kind, seconds):  # type: ignore[no-untyped-def]
        import asyncio

        from .pushes import run_async

        tasks.add(asyncio.ensure_future(run_async(
            sorted(sids), lambda to, ms: sio.emit("push", ms, to=to), kind, int(seconds))))

    tasks: set = set()  # keeps the push tasks referenced while they run

    @sio.on("start")
    async def start(sid, n):  # type: ignore[no-untyped-def]
        for i in range(int(n)):
            await sio.emit("ev", i)

    app = socketio.ASGIApp(sio)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            backlog=backlog)
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])
