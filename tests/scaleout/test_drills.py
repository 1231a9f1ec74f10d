"""Fault drills on a real Redis: the subscription killed, Redis frozen (SIGSTOP) and Redis
killed and restarted empty. Never a silent gap: either every push arrives exactly once and
in order, or the client is told ``recovered: false``."""
from __future__ import annotations

import json
import signal
import typing as t
import urllib.parse

import gevent
import redis
import websocket

from .test_backplane import wait_for, worker


class Stream:
    """A protocol-2 WebSocket client that reconnects with its positions when dropped."""

    def __init__(self, base: str, uid: str) -> None:
        self.url = base.replace("http", "ws") + f"/chsk?client-id={uid}-tab&u={uid}&protocol=2"
        self.uid = uid
        self.numbers: list[int] = []
        self.positions: dict[str, t.Any] | None = None
        self.recovered: list[t.Any] = []
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            url = self.url
            if self.positions:
                url += "&pos=" + urllib.parse.quote(json.dumps(self.positions))
            try:
                ws = websocket.create_connection(url, timeout=30)
            except (OSError, websocket.WebSocketException):
                gevent.sleep(0.1)
                continue
            try:
                while True:
                    data = ws.recv()
                    if not data:  # the server closed (1013: a gap, 1001: a restart)
                        break
                    payload = json.loads(data)[0]
                    if payload[0] == "chsk/handshake":
                        self.recovered.append(payload[1]["recovered"])
                        if payload[1]["recovered"] is False:
                            self.numbers.append(-1)  # the "you missed something" mark
                        self.positions = payload[1]["positions"]
                    elif isinstance(payload[0], list):
                        *events, mark = payload
                        for name, (epoch, seq) in mark[1].items():
                            old = self.positions.get(name) if self.positions else None
                            assert old is None or old[0] != epoch or seq > old[1]
                            self.positions[name] = [epoch, seq]  # type: ignore[index]
                        self.numbers += [e[1] for e in events if e[0] == "t/n"]
            except (OSError, websocket.WebSocketException):
                pass
            finally:
                ws.shutdown()

    def stop(self) -> None:
        self.greenlet.kill()


def _no_silent_gap(numbers: list[int], total: int) -> None:
    """Strictly increasing runs, and a run may skip numbers only right after a -1 mark."""
    previous = -1
    for n in numbers:
        if n == -1:
            previous = None  # type: ignore[assignment]
            continue
        assert previous is None or n == previous + 1, numbers
        previous = n
    assert numbers[-1] == total - 1, numbers


def test_killed_subscription_is_repaired_from_the_streams(redis_server):
    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        s = Stream(a, "kim")
        try:
            wait_for(lambda: s.recovered == [None])
            admin = redis.Redis.from_url(redis_server.url)
            for n in range(60):
                if n == 20:
                    admin.client_kill_filter(_type="pubsub")   # every subscription, both
                sb.send("kim", ("t/n", n))
                gevent.sleep(0.005)
            wait_for(lambda: len(s.numbers) >= 60, timeout=15)
            assert s.numbers == list(range(60))
            assert s.recovered == [None]                      # the socket never dropped
        finally:
            s.stop()


def test_a_frozen_redis_delays_but_loses_nothing(redis_server):
    with worker(redis_server.url) as (a, sa, _):
        s = Stream(a, "fay")
        try:
            wait_for(lambda: s.recovered == [None])
            for n in range(10):
                sa.send("fay", ("t/n", n))
            wait_for(lambda: len(s.numbers) >= 10)
            redis_server.proc.send_signal(signal.SIGSTOP)     # Redis stops answering
            try:
                for n in range(10, 40):
                    sa.send("fay", ("t/n", n))                # queued in the outbox
                    gevent.sleep(0.05)                        # ~1.5 s: over a timeout
            finally:
                redis_server.proc.send_signal(signal.SIGCONT)
            wait_for(lambda: len(s.numbers) >= 40, timeout=20)
            assert s.numbers == list(range(40))               # once each, in order
        finally:
            s.stop()


def test_redis_restarted_empty_tells_clients_they_missed_something(redis_server):
    with worker(redis_server.url) as (a, sa, _):
        s = Stream(a, "rex")
        try:
            wait_for(lambda: s.recovered == [None])
            for n in range(10):
                sa.send("rex", ("t/n", n))
            wait_for(lambda: len(s.numbers) >= 10)
            redis_server.proc.kill()                          # SIGKILL: history gone
            redis_server.proc.wait(timeout=5)
            for n in range(10, 20):
                sa.send("rex", ("t/n", n))                    # some of these are lost
            gevent.sleep(0.5)
            redis_server.start()                              # same port, empty
            wait_for(lambda: False in s.recovered, timeout=20)
            for n in range(20, 30):
                sa.send("rex", ("t/n", n))
            wait_for(lambda: s.numbers and s.numbers[-1] == 29, timeout=20)
            _no_silent_gap(s.numbers, 30)
            assert -1 in s.numbers                            # it was told
        finally:
            s.stop()
