"""A numbered push stream through a proxy that cuts every connection mid-stream: a
protocol-2 client that reconnects with its positions gets every push exactly once, in order,
with ``recovered: true`` each time — over WebSocket and Ajax, JSON and msgpack."""
from __future__ import annotations

import json
import typing as t
import urllib.parse

import gevent
import msgpack
import pytest
import requests
import websocket
from cutproxy import CutProxy

from .conftest import running

PUSHES = 300
RATE = 200.0  # pushes per second, as in the measurement


def _unpack(packer: str, data: t.Any) -> t.Any:
    if packer == "json":
        return json.loads(data)
    return msgpack.unpackb(data, raw=False)


class Reader:
    """Applies handshakes and batches; checks the per-log invariant on every mark.

    It runs in the client's greenlet, so it records what breaks the invariant in
    ``violations`` (asserted by the test in its own greenlet) instead of asserting: an
    assert here would only kill the client and show up as a missing push or a timeout."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.positions: dict[str, list[t.Any]] = {}
        self.recovered: list[t.Any] = []
        self.violations: list[t.Any] = []

    def take(self, payload: t.Any) -> None:
        if payload[0] == "chsk/handshake":
            self.recovered.append(payload[1]["recovered"])
            self.positions = {k: list(v) for k, v in payload[1]["positions"].items()}
        elif isinstance(payload[0], list):
            *events, mark = payload
            if mark[0] != "chsk/pos":
                self.violations.append(("no mark", payload))
                return
            for name, (epoch, seq) in mark[1].items():
                old = self.positions.get(name)
                if not (old is None or old[0] != epoch or seq > old[1]):
                    self.violations.append(("mark not increasing", name, old, seq))
                self.positions[name] = [epoch, seq]
            self.numbers += [e[1] for e in events if e[0] == "t/n"]

    def query(self) -> str:
        q = "client-id=r&u=stream&protocol=2"
        if self.positions:
            q += "&pos=" + urllib.parse.quote(json.dumps(self.positions))
        return q


def _pusher(h: t.Any) -> None:
    for i in range(PUSHES):
        h.sente.send("stream", ("t/n", i))
        gevent.sleep(1 / RATE)


def _cutter(proxy: CutProxy, done: t.Callable[[], bool]) -> None:
    while not done():
        gevent.sleep(0.25)
        proxy.cut()


def _ws_loop(port: int, reader: Reader, packer: str) -> None:
    while len(reader.numbers) < PUSHES:
        try:
            ws = websocket.create_connection(
                f"ws://127.0.0.1:{port}/chsk?{reader.query()}&packer={packer}", timeout=5)
        except (OSError, websocket.WebSocketException):
            gevent.sleep(0.05)
            continue
        try:
            while len(reader.numbers) < PUSHES:
                reader.take(_unpack(packer, ws.recv())[0])
        except (OSError, websocket.WebSocketException):
            pass
        finally:
            ws.shutdown()


def _ajax_loop(port: int, reader: Reader, packer: str) -> None:
    base = f"http://127.0.0.1:{port}/chsk"
    first = True
    with requests.Session() as http:
        while len(reader.numbers) < PUSHES:
            q = reader.query() + f"&packer={packer}" + ("&handshake=1" if first else "")
            try:
                r = http.get(f"{base}?{q}", timeout=5)
            except requests.RequestException:
                gevent.sleep(0.05)
                continue
            first = False
            reader.take(_unpack(packer, r.text if packer == "json" else r.content)[0])


@pytest.mark.parametrize("transport", ["ws", "ajax"])
@pytest.mark.parametrize("packer", ["json", "msgpack"])
def test_every_push_exactly_once_in_order_across_cuts(transport, packer):
    """Through the cuts: every push once, in order, marks increasing per log; over
    WebSocket each reconnect is a handshake saying ``recovered: true``; over Ajax there is
    no handshake after the first (checking ``recovered[1:]`` alone was vacuous there).

    Shown to fail by answering every tenth Ajax poll with a handshake saying
    ``recovered: true`` at the client's own position (``longpoll.ajax_get``): nothing was
    lost, so only the Ajax ``recovered == [None]`` check caught it."""
    with running(packer=packer, lp_timeout=1) as h:
        port = int(h.base.rsplit(":", 1)[1])
        with CutProxy(port) as proxy:
            reader = Reader()
            loop = _ws_loop if transport == "ws" else _ajax_loop
            client = gevent.spawn(loop, proxy.port, reader, packer)
            h.wait_for(lambda: bool(reader.recovered))
            pusher = gevent.spawn(_pusher, h)
            cutter = gevent.spawn(_cutter, proxy, lambda: pusher.dead)
            try:
                with gevent.Timeout(30, AssertionError(f"got {len(reader.numbers)}")):
                    pusher.join()
                    h.sente.send("stream", ("t/end", None), flush=True)
                    client.join()
            finally:
                gevent.killall([client, pusher, cutter], timeout=5)
            assert client.exception is None, client.exception
            assert proxy.cuts >= 3, "the proxy never cut a connection mid-stream"
            assert reader.violations == []
            assert reader.numbers == list(range(PUSHES))
            if transport == "ws":   # each cut is a new socket, a handshake, a replay
                assert len(reader.recovered) > 3
                assert reader.recovered[0] is None
                assert all(r is True for r in reader.recovered[1:])
            else:
                # Ajax needs no new handshake: every poll names its position, and a poll
                # answer cut in flight is simply sent again to the next poll. A handshake
                # answering a poll would say the position could not be served.
                assert reader.recovered == [None]
