"""A TCP proxy on 127.0.0.1 that can cut every connection through it, as a network would.

Tests point clients at ``proxy.port`` instead of the server's; ``proxy.cut()`` drops every
open connection at once (both sides see the TCP connection die mid-stream, no close
frames), and ``proxy.cut(down_for=2)`` also refuses new connections for that long — a short
network outage. With ``record=True`` it also keeps every byte the server sent through it
(``to_clients``): what reached the wire, before any client filtered it. Runs on gevent in
the test process; ``close()`` stops it and its greenlets.
"""
from __future__ import annotations

import contextlib
import socket
import time
import typing as t

import gevent
import gevent.pool
from gevent.server import StreamServer


class CutProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *,
                 record: bool = False) -> None:
        self._target = (target_host, target_port)
        #: Every byte the server sent to clients through this proxy (with ``record``).
        self.to_clients: bytearray | None = bytearray() if record else None
        self._group = gevent.pool.Pool()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._down_until = 0.0
        #: Connections accepted / cut so far.
        self.accepted = 0
        self.cuts = 0
        self._server = StreamServer(("127.0.0.1", 0), self._handle, spawn=self._group)
        self._server.start()
        self.port: int = self._server.server_port

    def _handle(self, client: socket.socket, _address: t.Any) -> None:
        if time.monotonic() < self._down_until:
            _abort(client)
            return
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            _abort(client)
            return
        upstream.settimeout(None)
        self.accepted += 1
        pair = (client, upstream)
        self._pairs.add(pair)
        try:
            pump = self._group.spawn(_pump, upstream, client, self.to_clients)
            _pump(client, upstream)
            pump.join()
        finally:
            self._pairs.discard(pair)
            for sock in pair:
                sock.close()

    def cut(self, down_for: float = 0.0) -> int:
        """Drop every connection now; refuse new ones for ``down_for`` seconds."""
        self._down_until = time.monotonic() + down_for
        pairs = list(self._pairs)
        for client, upstream in pairs:
            _abort(client)
            _abort(upstream)
        self.cuts += len(pairs)
        return len(pairs)

    def close(self) -> None:
        self.cut()
        self._server.stop(timeout=2)
        self._group.kill(block=True, timeout=5)

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def cutting(proxy: CutProxy, work: t.Callable[[], t.Any],
            every: float = 0.3) -> t.Iterator[gevent.Greenlet]:
    """Run ``work`` in a greenlet while ``proxy`` cuts every connection each ``every``
    seconds until ``work`` ends; both are stopped when the block exits, and an exception
    ``work`` raised is raised there (the cause of whatever the block then waited for)."""
    worker = gevent.spawn(work)

    def cut() -> None:
        while not worker.dead:
            gevent.sleep(every)
            proxy.cut()

    cutter = gevent.spawn(cut)
    try:
        yield worker
    finally:
        gevent.killall([worker, cutter], timeout=5)
        if worker.exception is not None and not isinstance(worker.exception,
                                                           gevent.GreenletExit):
            raise worker.exception


def _pump(src: socket.socket, dst: socket.socket, record: bytearray | None = None) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if record is not None:
                record += data
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a dropped network looks to the peer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
