"""A TCP proxy on 127.0.0.1 that can cut every connection through it, as a network would.

Tests point clients at ``proxy.port`` instead of the server's; ``proxy.cut()`` drops every
open connection at once (both sides see the TCP connection die mid-stream, no close
frames), and ``proxy.cut(down_for=2)`` also refuses new connections for that long — a short
network outage. With ``record=True`` it also keeps every byte the server sent through it
(``to_clients``): what reached the wire, before any client filtered it. Runs on gevent in
the test process; ``close()`` stops it and its greenlets.

It can also stand for a proxy that does not pass WebSocket upgrades (a corporate proxy, a
misconfigured nginx): with ``refuse_upgrades=True``, or for a while after
``block_upgrades(seconds)``, a connection whose first request asks for ``Upgrade:
websocket`` is answered ``502 Bad Gateway`` by the proxy itself; other requests pass. That
is what moves ``type="auto"`` clients onto Ajax, and back up once upgrades pass again.

The chaos drill (``python -m bench.chaos``) runs it as a process of its own::

    python -m bench.cutproxy --target-port 8000

prints ``PORTS <normal> <no-upgrade>`` (the second port refuses every upgrade), then reads
commands on stdin, one a line, and answers each with a line of JSON: ``cut <down_for>``
(both ports), ``block <seconds>`` (the normal port refuses upgrades that long), ``stats``,
``quit``. It exits when stdin closes, so it never outlives the process that started it.
"""
from __future__ import annotations

if __name__ == "__main__":  # the proxy process: patch before anything imports socket
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402

import gevent  # noqa: E402
import gevent.fileobject  # noqa: E402
import gevent.pool  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

#: Longest request head read while deciding whether a connection is an upgrade.
MAX_HEAD = 65536
#: How long a client may take to send that head before the proxy gives up on it.
HEAD_TIMEOUT = 10.0
REFUSAL_BODY = b"WebSocket upgrade refused by the proxy\n"
REFUSAL = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: "
           + str(len(REFUSAL_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + REFUSAL_BODY)


class CutProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *,
                 refuse_upgrades: bool = False, record: bool = False) -> None:
        self._target = (target_host, target_port)
        #: Every byte the server sent to clients through this proxy (with ``record``): what
        #: reached the wire, before any client filtered it.
        self.to_clients: bytearray | None = bytearray() if record else None
        self._group = gevent.pool.Pool()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._heads: set[socket.socket] = set()  # clients whose first request is being read
        self._down_until = 0.0
        self._no_upgrade_until = 0.0
        #: Refuse every WebSocket upgrade (502), for good.
        self.refuse_upgrades = refuse_upgrades
        #: Connections accepted / cut so far, and upgrades refused.
        self.accepted = 0
        self.cuts = 0
        self.upgrades_refused = 0
        self._server = StreamServer(("127.0.0.1", 0), self._handle, spawn=self._group)
        self._server.start()
        self.port: int = self._server.server_port

    def _refusing_upgrades(self) -> bool:
        return self.refuse_upgrades or time.monotonic() < self._no_upgrade_until

    def _handle(self, client: socket.socket, _address: t.Any) -> None:
        if time.monotonic() < self._down_until:
            _abort(client)
            return
        head = b""
        if self._refusing_upgrades():
            self._heads.add(client)
            try:
                head = _read_head(client)
            finally:
                self._heads.discard(client)
            if not head:
                client.close()
                return
            if _is_upgrade(head) and self._refusing_upgrades():
                self.upgrades_refused += 1
                _refuse(client)
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
            if head:
                upstream.sendall(head)
            pump = self._group.spawn(_pump, upstream, client, self.to_clients)
            _pump(client, upstream)
            pump.join()
        except OSError:
            pass
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
        for client in list(self._heads):
            _abort(client)
        self.cuts += len(pairs)
        return len(pairs)

    def block_upgrades(self, seconds: float) -> None:
        """Answer WebSocket upgrades with 502 for ``seconds`` (connections already open stay:
        cut them too to make every client reconnect through the block)."""
        self._no_upgrade_until = time.monotonic() + seconds

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


def _read_head(client: socket.socket) -> bytes:
    """The client's bytes up to the end of its first request head (maybe a little more);
    empty if it closed, stalled or sent no head within bounds."""
    data = b""
    client.settimeout(HEAD_TIMEOUT)
    try:
        while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
            chunk = client.recv(65536)
            if not chunk:
                return b""
            data += chunk
    except OSError:
        return b""
    client.settimeout(None)
    return data


def _is_upgrade(head: bytes) -> bool:
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


def _refuse(client: socket.socket) -> None:
    try:
        client.sendall(REFUSAL)
        client.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-port", type=int, required=True)
    args = parser.parse_args(argv)
    normal = CutProxy(args.target_port)
    no_upgrade = CutProxy(args.target_port, refuse_upgrades=True)
    out = sys.stdout
    out.write(f"PORTS {normal.port} {no_upgrade.port}\n")
    out.flush()
    stdin = gevent.fileobject.FileObject(sys.stdin.fileno(), "rb", close=False)
    try:
        for raw in stdin:
            words = raw.decode("ascii", "replace").split()
            answer: dict[str, t.Any]
            if not words:
                continue
            if words[0] == "cut":
                down = float(words[1]) if len(words) > 1 else 0.0
                answer = {"cut": normal.cut(down) + no_upgrade.cut(down)}
            elif words[0] == "block":
                normal.block_upgrades(float(words[1]))
                answer = {"blocked": float(words[1])}
            elif words[0] == "stats":
                answer = {"accepted": normal.accepted + no_upgrade.accepted,
                          "cuts": normal.cuts + no_upgrade.cuts,
                          "upgrades_refused": normal.upgrades_refused
                          + no_upgrade.upgrades_refused}
            elif words[0] == "quit":
                break
            else:
                answer = {"error": f"unknown command {words[0]!r}: cut, block, stats, quit"}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        normal.close()
        no_upgrade.close()


if __name__ == "__main__":
    main()
