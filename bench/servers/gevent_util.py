"""Helpers for the gevent-based servers (imported after monkey-patching)."""
from __future__ import annotations

import socket
import time
import typing as t


def announce(server: t.Any) -> None:
    """Start ``server`` (a gevent StreamServer), print its port, serve until killed."""
    server.start()
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


def nodelay_handler(base: type) -> type:
    """``base`` (a pywsgi handler class) that sets TCP_NODELAY on each accepted socket."""

    class NoDelayHandler(base):  # type: ignore[misc, valid-type]
        def handle(self) -> None:
            try:
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            super().handle()

    return NoDelayHandler


def paced_pushes(push: t.Callable[[int], t.Any], count: int, interval_ms: float) -> None:
    """``push(i)`` for i < count, one every ``interval_ms`` (on a fixed schedule, so a
    slow push does not stretch the ones after it): the paced phase of bench.cluster."""
    import gevent

    start = time.monotonic()
    for i in range(count):
        gevent.sleep(max(0.0, start + i * interval_ms / 1000 - time.monotonic()))
        push(i)


def fan_out(sockets: set[t.Any], n: int, closed: type[BaseException]) -> None:
    """The raw dialect's ``start <n>``: n messages to every socket, one frame each (a
    socket whose send raises ``closed`` is dropped)."""
    for i in range(n):
        payload = f"ev {i}"
        for ws in list(sockets):
            try:
                ws.send(payload)
            except closed:
                sockets.discard(ws)
