"""Fault drills on a real Redis: the subscription killed, Redis frozen (SIGSTOP) and Redis
killed and restarted empty. Never a silent gap: either every push arrives exactly once and
in order, or the client is told ``recovered: false``."""
from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import time
import typing as t
import urllib.parse

import gevent
import gevent.pool
import pytest
import redis
import websocket
from gevent.server import StreamServer

from flask_sente.backplanes import redis_scripts as rs
from flask_sente.exceptions import BackplaneError

from .test_backplane import wait_for, worker


class Stream:
    """A protocol-2 WebSocket client that reconnects with its positions when dropped.

    It runs in a greenlet of its own, so it records what breaks the per-log invariant
    (a mark that does not move its log forward within an epoch) in ``violations`` for the
    test to assert; an assert here would only kill the reader, and the test would report
    a timeout. ``sockets`` counts the WebSockets it opened, ``closes`` how each ended."""

    def __init__(self, base: str, uid: str) -> None:
        self.url = base.replace("http", "ws") + f"/chsk?client-id={uid}-tab&u={uid}&protocol=2"
        self.uid = uid
        self.numbers: list[int] = []
        self.markers: list[t.Any] = []
        self.positions: dict[str, t.Any] | None = None
        self.recovered: list[t.Any] = []
        self.violations: list[t.Any] = []
        self.sockets = 0
        self.closes: list[str] = []
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
            self.sockets += 1
            try:
                while True:
                    data = ws.recv()
                    if not data:  # the server closed (1013: a gap, 1001: a restart)
                        self.closes.append("closed by the server")
                        break
                    self._take(json.loads(data)[0])
            except (OSError, websocket.WebSocketException) as exc:
                self.closes.append(repr(exc))
            finally:
                ws.shutdown()

    def _take(self, payload: t.Any) -> None:
        if payload[0] == "chsk/handshake":
            self.recovered.append(payload[1]["recovered"])
            if payload[1]["recovered"] is False:
                self.numbers.append(-1)  # the "you missed something" mark
            self.positions = payload[1]["positions"]
        elif isinstance(payload[0], list):
            *events, mark = payload
            for name, (epoch, seq) in mark[1].items():
                old = self.positions.get(name) if self.positions else None
                if not (old is None or old[0] != epoch or seq > old[1]):
                    self.violations.append((name, old, [epoch, seq]))
                self.positions[name] = [epoch, seq]  # type: ignore[index]
            self.numbers += [e[1] for e in events if e[0] == "t/n"]
            self.markers += [e[1] for e in events if e[0] == "t/end"]

    def finish(self, send: t.Callable[[t.Any], t.Any], timeout: float = 20) -> None:
        """Push a final marker with ``send`` and read until it arrives: whatever was pushed
        before it — a duplicate included — has arrived by then (one order per log)."""
        marker = f"end-{len(self.markers)}"
        send(("t/end", marker))
        wait_for(lambda: marker in self.markers, timeout=timeout)

    def stop(self) -> None:
        self.greenlet.kill()


def _no_silent_gap(s: Stream, total: int) -> None:
    """No invariant broken; strictly increasing runs, and a run may skip numbers only
    right after a -1 mark."""
    assert s.violations == []
    numbers = s.numbers
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
            with redis.Redis.from_url(redis_server.url) as admin:
                for n in range(60):
                    if n == 20:
                        admin.client_kill_filter(_type="pubsub")   # every subscription
                    sb.send("kim", ("t/n", n))
                    gevent.sleep(0.005)
            wait_for(lambda: len(s.numbers) >= 60, timeout=15)
            assert s.numbers == list(range(60))
            assert s.recovered == [None]                      # the socket never dropped
        finally:
            s.stop()


def test_a_frozen_redis_delays_but_loses_nothing(redis_server, caplog):
    """Redis frozen (SIGSTOP) while pushes go on, for longer than redis-py's socket timeout
    (``SOCKET_TIMEOUT``, 2 s) twice over: the publisher's round trips time out (the log
    says so) and it sends the waiting pushes again until Redis is back. At the wire: every
    push once, in order, on the socket opened before the freeze; the log's seq counts each
    push once.

    Shown to fail by having the publisher drop a batch whose round trip failed
    (``batch = []`` in its ``except``): pushes 10 to 34 never arrived. With the old ~1.5 s
    freeze nothing ever timed out, so that break passed. This drill does not reach the
    once-only append (a SIGSTOP freezes redis-py's ``SCRIPT EXISTS``, asked before the
    appends are sent, so no append of a frozen round trip reaches Redis: removing the
    counter check from APPEND passes it); the two tests below do."""
    from flask_sente.backplanes.redis import SOCKET_TIMEOUT

    caplog.set_level(logging.WARNING, logger="flask_sente")
    freeze = 2 * SOCKET_TIMEOUT + 1.0
    with worker(redis_server.url) as (a, sa, _):
        s = Stream(a, "fay")
        try:
            wait_for(lambda: s.recovered == [None])
            for n in range(10):
                sa.send("fay", ("t/n", n))
            wait_for(lambda: len(s.numbers) >= 10)
            redis_server.proc.send_signal(signal.SIGSTOP)     # Redis stops answering
            try:
                frozen_at = time.monotonic()
                n = 10
                while time.monotonic() - frozen_at < freeze:
                    sa.send("fay", ("t/n", n))                # queued in the outbox
                    n += 1
                    gevent.sleep(0.1)
            finally:
                redis_server.proc.send_signal(signal.SIGCONT)
            total = n
            s.finish(lambda event: sa.send("fay", event))
            _no_silent_gap(s, total)
            assert s.numbers == list(range(total))            # once each, in order
            assert s.recovered == [None] and s.sockets == 1   # the socket stayed open
        finally:
            s.stop()
    waits = [r.getMessage() for r in caplog.records if "pushes wait for Redis" in r.message]
    assert waits and "imeout" in waits[0], waits              # a publish timed out
    admin = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        meta, log, _ = rs.log_keys("sente", rs.user_key("fay"))
        assert int(admin.hget(meta, "seq")) == total + 1       # the pushes and the marker
        assert admin.xlen(log) == total + 1
    finally:
        admin.close()


class ReplyLosingProxy:
    """A TCP proxy in front of Redis that loses replies: while ``losing``, a connection that
    sends a script call (``EVALSHA``: the publisher's appends, presence) gets no more of what
    Redis answers on it, though Redis runs every call — a reply lost, or later than the
    client's socket timeout. Connections that make no script call (the subscription) keep
    flowing, so appends that did happen are notified as usual."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._group = gevent.pool.Pool()
        self.losing = False
        #: Bytes of replies dropped, and connections that lost them.
        self.lost_bytes = 0
        self.lost_connections = 0
        self._server = StreamServer(("127.0.0.1", 0), self._handle, spawn=self._group)
        self._server.start()
        self.port: int = self._server.server_port

    def _handle(self, client: socket.socket, _address: t.Any) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        lost = [False]

        def requests() -> None:
            tail = b""
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    if self.losing and not lost[0] and b"EVALSHA" in tail + data:
                        lost[0] = True
                        self.lost_connections += 1
                    tail = data[-8:]
                    upstream.sendall(data)
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

        pump = self._group.spawn(requests)
        try:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    if lost[0]:
                        self.lost_bytes += len(data)
                    else:
                        client.sendall(data)
        finally:
            pump.kill()
            client.close()
            upstream.close()

    def close(self) -> None:
        self._server.stop(timeout=2)
        self._group.kill(block=True, timeout=5)


def test_appends_whose_replies_were_lost_are_not_appended_twice(redis_server, caplog):
    """The once-only append end to end. A SIGSTOP cannot reach it: redis-py's pipeline asks
    ``SCRIPT EXISTS`` before sending the appends, and that question is what times out, so
    no append of a frozen round trip ever reaches Redis. Here the appends reach Redis and
    run, and only their replies are lost, for twice the socket timeout: the publisher's
    round trips time out and it sends the same entries again (and redis-py retries them
    itself), each with the writer's counter. Every push must reach the client once.

    Shown to fail by removing the counter check from ``redis_scripts.APPEND``: push 10,
    the one in flight when the replies began to be lost, was appended once per try and
    reached the client four times."""
    from flask_sente.backplanes.redis import SOCKET_TIMEOUT

    caplog.set_level(logging.WARNING, logger="flask_sente")
    proxy = ReplyLosingProxy(redis_server.port)
    try:
        with worker(f"redis://127.0.0.1:{proxy.port}/0") as (a, sa, _):
            s = Stream(a, "lou")
            try:
                wait_for(lambda: s.recovered == [None])
                for n in range(10):
                    sa.send("lou", ("t/n", n))
                wait_for(lambda: len(s.numbers) >= 10)
                proxy.losing = True
                try:
                    started = time.monotonic()
                    n = 10
                    while time.monotonic() - started < 2 * SOCKET_TIMEOUT + 1.0:
                        sa.send("lou", ("t/n", n))
                        n += 1
                        gevent.sleep(0.1)
                finally:
                    proxy.losing = False
                total = n
                s.finish(lambda event: sa.send("lou", event))
                _no_silent_gap(s, total)
                assert s.numbers == list(range(total))         # once each, in order
            finally:
                s.stop()
    finally:
        proxy.close()
    assert proxy.lost_connections > 0 and proxy.lost_bytes > 0   # replies were lost ...
    waits = [r.getMessage() for r in caplog.records if "pushes wait for Redis" in r.message]
    assert waits and "imeout" in waits[0], waits                # ... and the publish timed out
    admin = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        meta, log, _ = rs.log_keys("sente", rs.user_key("lou"))
        assert int(admin.hget(meta, "seq")) == total + 1         # the pushes and the marker
        assert admin.xlen(log) == total + 1
    finally:
        admin.close()


def test_the_append_script_appends_a_writer_s_entry_once(redis_server):
    """The once-only append, straight on a real redis-server: APPEND run again with the
    same writer id and counter (a batch resent after a timeout whose first try did reach
    Redis) appends nothing and returns nil; a higher counter appends; a lower one (an
    older resend arriving late) does not; another writer's counters are its own.

    Shown to fail by removing the counter check from ``redis_scripts.APPEND``: the second
    run appended a second entry."""
    admin = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        script = admin.register_script(rs.APPEND)
        meta, log, channel = rs.log_keys("sente", rs.user_key("dee"))

        def append(node: str, counter: int, n: int) -> t.Any:
            return script(keys=[meta, log], args=[rs.pack_event(["t/n", n]), "", 100, 60,
                                                  "epochA", channel, "1", "", node,
                                                  counter, "0"])

        assert append("w1", 1, 0) == [b"epochA", 1]
        assert append("w1", 1, 0) is None                      # the resend: skipped
        assert append("w1", 2, 1) == [b"epochA", 2]
        assert append("w1", 1, 0) is None                      # a late older resend
        assert append("w2", 1, 2) == [b"epochA", 3]            # another writer
        assert append("w2", 1, 2) is None
        entries = admin.xrange(log)
        assert [rs.unpack_event(fields[b"e"])[1] for _, fields in entries] == [0, 1, 2]
        assert int(admin.hget(meta, "seq")) == 3
    finally:
        admin.close()


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
            _no_silent_gap(s, 30)
            assert -1 in s.numbers                            # it was told
        finally:
            s.stop()


def test_an_emitter_call_retried_after_its_answer_was_lost_is_delivered_once(redis_server):
    """The chaos drill found it: an ``Emitter.send`` whose answer Redis lost (a freeze
    longer than the emitter's socket timeout) raised ``BackplaneError``, though Redis ran
    it; the task retried the call, as the docs say to, and every client got the push twice:
    each call had its own writer counter. A retry of the call that just raised now carries
    the same counter, and Redis appends it once.

    Shown to fail by giving every call a new counter again: push 1 reached the client
    twice."""
    from flask_sente.emitter import Emitter

    proxy = ReplyLosingProxy(redis_server.port)
    try:
        with worker(redis_server.url) as (a, sa, _):
            s = Stream(a, "eli")
            emitter = Emitter(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=0.5)
            try:
                wait_for(lambda: s.recovered == [None])
                emitter.send("eli", ("t/n", 0))
                proxy.losing = True
                with pytest.raises(BackplaneError):
                    emitter.send("eli", ("t/n", 1))          # ran in Redis, answer lost
                proxy.losing = False
                emitter.send("eli", ("t/n", 1))              # the task's retry
                emitter.send("eli", ("t/n", 2))
                s.finish(lambda event: sa.send("eli", event))
                assert s.numbers == [0, 1, 2]
            finally:
                emitter.close()
                s.stop()
    finally:
        proxy.close()


def test_an_emitter_publish_or_join_retried_after_its_answer_was_lost_is_made_once(
        redis_server):
    """As for ``send`` above, for the topic calls: a ``publish`` whose answer Redis lost
    raised ``BackplaneError`` though Redis ran it; retried as the emitter's next call, it
    reaches the member once. A ``join`` likewise (its grant and command go in one round
    trip; the command is appended once, and the client is in the topic).

    Shown to fail by giving every call a new counter again: publish 1 reached the client
    twice; and by giving only joins a new one: the user's log held two join commands."""
    from flask_sente.client import Client
    from flask_sente.emitter import Emitter

    proxy = ReplyLosingProxy(redis_server.port)
    try:
        with worker(redis_server.url) as (a, sa, _):
            sa.on_join("room/*")(lambda msg: True)
            client = Client(a + "/chsk", type="ws", params={"u": "ivy"}, connect_timeout=5)
            got: list[t.Any] = []
            client.on_topic("room/r", lambda event_id, data: got.append(data))
            client.on_topic("news", lambda event_id, data: got.append(data))
            emitter = Emitter(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=0.5)
            try:
                client.connect()
                assert client.wait_open(10)
                client.join("room/r", timeout=10)
                emitter.publish("room/r", ("t/n", 0))
                proxy.losing = True
                with pytest.raises(BackplaneError):
                    emitter.publish("room/r", ("t/n", 1))    # ran in Redis, answer lost
                proxy.losing = False
                emitter.publish("room/r", ("t/n", 1))        # the task's retry
                emitter.publish("room/r", ("t/n", 2))
                wait_for(lambda: 2 in got, timeout=10)
                proxy.losing = True
                with pytest.raises(BackplaneError):
                    emitter.join("news", "ivy", client_id=client.client_id)
                proxy.losing = False
                emitter.join("news", "ivy", client_id=client.client_id)
                wait_for(lambda: "news" in client.topics, timeout=10)
                emitter.publish("news", ("t/n", 3))
                emitter.publish("room/r", ("t/n", 4))
                wait_for(lambda: 3 in got and 4 in got, timeout=10)
                assert [n for n in got if n != 3] == [0, 1, 2, 4] and got.count(3) == 1
                with redis.Redis.from_url(redis_server.url) as admin:
                    commands = [fields[b"k"] for _, fields in admin.xrange(
                        rs.log_keys("sente", rs.user_key("ivy"))[1])]
                assert commands.count(b"join") == 1, commands
            finally:
                emitter.close()
                client.close()
    finally:
        proxy.close()
