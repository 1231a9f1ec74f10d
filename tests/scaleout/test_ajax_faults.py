"""Ajax clients under faults, with the Redis backplane (issue 24), checked at the wire.

Raw long-pollers (requests, speaking docs/protocol.md by hand) read numbered streams and
check every mark: per log, seqs only move forward within an epoch, every number arrives
once and in order, and a number may be missing only after a handshake said
``recovered: false``. Each test names the defect it was written for; each failed on the code
before its fix.
"""
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
import requests
from cutproxy import CutProxy
from flask import Flask, request
from gevent.server import StreamServer

from flask_sente import Sente
from flask_sente.testing import serve

from .conftest import RedisServer

TIMEOUT = 5


@contextlib.contextmanager
def worker(url: str, **options: t.Any) -> t.Iterator[tuple[str, Sente]]:
    app = Flask(__name__)
    app.secret_key = "shared"
    options.setdefault("lp_timeout", 1)
    sente = Sente(app, csrf=False, backplane=url,
                  user_id=lambda client_id: request.args.get("u"), **options)

    @sente.on_join("room/*")
    def let_in(msg: t.Any) -> bool:
        return True

    with serve(app) as base:
        yield base, sente


class SlowLink:
    """A TCP proxy that holds every chunk for ``delay`` seconds each way: a Redis that
    answers slowly (a busy host, another zone), so that what waits for it yields long
    enough for other greenlets to run in between."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.delay = delay
        self._target = ("127.0.0.1", target_port)
        self._group = gevent.pool.Pool()
        self._server = StreamServer(("127.0.0.1", 0), self._handle, spawn=self._group)
        self._server.start()
        self.port: int = self._server.server_port

    def _handle(self, client: socket.socket, _address: t.Any) -> None:
        upstream = socket.create_connection(self._target, timeout=5)
        upstream.settimeout(None)
        try:
            back = self._group.spawn(self._pump, upstream, client)
            self._pump(client, upstream)
            back.join()
        finally:
            client.close()
            upstream.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                gevent.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._server.stop(timeout=2)
        self._group.kill(block=True, timeout=5)


class Poller:
    """One raw protocol-2 long-poller: keeps its positions, its topics' positions, and
    every number per stream, checking the invariant on each mark."""

    def __init__(self, base: str, uid: str, client_id: str) -> None:
        self.base = base
        self.uid = uid
        self.client_id = client_id
        self.http = requests.Session()
        self.positions: dict[str, list[t.Any]] = {}
        #: stream name -> numbers in arrival order
        self.got: dict[str, list[int]] = {}
        #: every handshake's ``recovered``, and per topic every rejoin's
        self.recovered: list[t.Any] = []
        self.rejoined: list[t.Any] = []
        self.topics: set[str] = set()
        self.handshake_next = True
        self.errors: list[str] = []

    def url(self, handshake: bool = False) -> str:
        q = f"client-id={self.client_id}&u={self.uid}&protocol=2"
        if self.positions:
            q += "&pos=" + urllib.parse.quote(json.dumps(self.positions))
        if handshake:
            q += "&handshake=1"
        return f"{self.base}/chsk?{q}"

    def poll_once(self) -> None:
        handshake, self.handshake_next = self.handshake_next, False
        r = self.http.get(self.url(handshake), timeout=TIMEOUT)
        if r.status_code != 200:
            self.errors.append(f"{r.status_code} {r.text[:200]}")
            self.handshake_next = handshake
            if r.status_code == 503:
                gevent.sleep(0.2)
                return
            raise AssertionError(f"poll refused: {r.status_code} {r.text[:200]}")
        self.take(r.json()[0])

    def take(self, payload: t.Any) -> None:
        if payload[0] == "chsk/handshake":
            info = payload[1]
            self.recovered.append(info["recovered"])
            assert not any(n.startswith("t:") for n in info["positions"]), info
            for name, (epoch, seq) in info["positions"].items():
                assert isinstance(seq, int) and seq >= 0, info
                self.positions[name] = [epoch, seq]
            for topic in sorted(self.topics):   # a handshake: every topic is rejoined
                self.join(topic)
        elif payload[0] == "chsk/close":
            raise AssertionError(f"closed: {payload}")
        elif isinstance(payload[0], list):
            *events, mark = payload
            assert mark[0] == "chsk/pos", payload
            for name, (epoch, seq) in mark[1].items():
                old = self.positions.get(name)
                assert old is None or old[0] != epoch or seq > old[1], (name, old, seq)
                self.positions[name] = [epoch, seq]
            for event in events:
                if event[0] == "chsk/topic":
                    event = event[1][1]
                if event[0] == "t/n":
                    stream, n = event[1]
                    self.got.setdefault(stream, []).append(n)

    def join(self, topic: str) -> dict[str, t.Any]:
        name = "t:" + topic
        position = self.positions.get(name)
        r = self.http.post(f"{self.base}/chsk?client-id={self.client_id}&u={self.uid}"
                           "&protocol=2", timeout=TIMEOUT,
                           data=json.dumps([["chsk/join", {"topic": topic,
                                                           "position": position}], "ajax"]),
                           headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        reply = r.json()[0][1]
        assert reply["ok"], reply
        if name not in self.topics:
            self.topics.add(topic)
        if self.positions.get(name) == position:  # no mark moved it meanwhile
            self.positions[name] = reply["position"]
        if position is not None:
            self.rejoined.append(reply["recovered"])
        return reply

    def close(self) -> None:
        self.http.close()


def check_streams(poller: Poller, sent: dict[str, int]) -> None:
    """Every stream exactly once, in order (no handshake said recovered: false)."""
    assert all(r is not False for r in poller.recovered), poller.recovered
    assert all(r is not False for r in poller.rejoined), poller.rejoined
    for stream, count in sent.items():
        got = poller.got.get(stream, [])
        assert got == list(range(count)), (poller.client_id, stream, len(got), count,
                                          [n for n in got if got.count(n) > 1][:5],
                                          sorted(set(range(count)) - set(got))[:10])


@contextlib.contextmanager
def polling(pollers: list[Poller], done: t.Callable[[Poller], bool]) -> t.Iterator[
        list[gevent.Greenlet]]:
    """Each poller polls in a greenlet of its own until ``done`` says it has what it
    wants; the block waits for them with :func:`finish`, and they are killed when it exits."""
    def loop(p: Poller) -> None:
        while not done(p):
            try:
                p.poll_once()
            except (requests.RequestException, OSError):
                gevent.sleep(0)  # as a client does: the next poll at once

    jobs = [gevent.spawn(loop, p) for p in pollers]
    try:
        yield jobs
    finally:
        gevent.killall(jobs, timeout=5)


def finish(jobs: list[gevent.Greenlet], pollers: list[Poller], timeout: float) -> None:
    gevent.joinall(jobs, timeout=timeout, raise_error=True)
    assert all(j.dead for j in jobs), "pollers did not finish in time: " + ", ".join(
        f"{p.client_id}: {({k: len(v) for k, v in p.got.items()})} {p.recovered[:8]} "
        f"{p.errors[:3]}" for p in pollers)


def test_cut_polls_lose_nothing_while_flushes_race_the_new_poll(redis_server):
    """Issue 24 #1. A poll whose connection died is superseded by the client's next poll.
    Before the fix the new poll moved the client's reader to its positions, then waited for
    Redis (presence), and only then superseded the old parked poll: a flush in that window
    woke the old poll, which packed the entries, advanced the shared reader and wrote them
    into the dead socket; the new poll found nothing owed (silent gaps, seen here as
    missing numbers). Ten clients, pushes to each user and broadcasts, a proxy cutting
    every connection every 0.2 s, a Redis 10 ms away (each way) so that the window is as
    wide as it is on a loaded host, and polls woken at every push (a 2 ms Ajax window) so
    that a flush falls into it."""
    slow = SlowLink(redis_server.port, 0.005)
    try:
        _cut_polls_lose_nothing(f"redis://127.0.0.1:{slow.port}/0")
    finally:
        slow.close()


def _cut_polls_lose_nothing(redis_url: str) -> None:
    with worker(redis_url, send_buffer_ajax=0.002) as (base, sente):
        port = int(base.rsplit(":", 1)[1])
        with CutProxy(port) as proxy:
            pollers = [Poller(f"http://127.0.0.1:{proxy.port}", f"user{i}", f"c{i}")
                       for i in range(10)]
            with polling(pollers, lambda p: p.recovered != []) as jobs:
                finish(jobs, pollers, TIMEOUT)
            sent = {"all": 300, "own": 300}

            def push() -> None:
                for n in range(300):
                    sente.broadcast(("t/n", ["all", n]))
                    for p in pollers:
                        sente.send(p.uid, ("t/n", ["own", n]))
                    gevent.sleep(0.01)
                sente.broadcast(("t/n", ["end", 0]))   # the last one: read until it

            def cut() -> None:
                while not pusher.dead:
                    gevent.sleep(0.2)
                    proxy.cut()

            try:
                with polling(pollers, lambda p: "end" in p.got) as jobs:
                    pusher = gevent.spawn(push)
                    cutter = gevent.spawn(cut)
                    finish(jobs, pollers, 60)
            finally:
                gevent.killall([pusher, cutter], timeout=5)
                for p in pollers:
                    p.close()
            assert proxy.cuts >= 10
            for p in pollers:
                check_streams(p, sent)


def _restart(server: RedisServer) -> None:
    """Redis restarted empty, on the same port (its data is gone: every log's history)."""
    server.stop()
    server.start()


def _wait_healthy(base: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while requests.get(base + "/chsk/health", timeout=TIMEOUT).status_code != 200:
        assert time.monotonic() < deadline, "the worker did not take clients again"
        gevent.sleep(0.1)


def _poll_until(poller: Poller, done: t.Callable[[], bool], timeout: float = 15) -> None:
    with gevent.Timeout(timeout, AssertionError(f"{poller.client_id}: {poller.got} "
                                                f"{poller.recovered} {poller.errors}")):
        while not done():
            try:
                poller.poll_once()
            except requests.RequestException:
                gevent.sleep(0.1)


def test_after_redis_restarts_empty_an_ajax_client_is_told_and_goes_on(redis_server):
    """Issue 24 #2 and #3. After Redis lost its data, a log's epoch changes and this
    process's readers were put at seq -1 (behind anything). A long-poller coming back with
    a handshake was handed those positions — a topic's at -1 — and every later poll was
    refused ``400 Bad positions`` for good; or the handshake handed out topic positions
    already at the new epoch's head, so the topic's rejoin said ``recovered: true`` over
    the events it lost. Now a handshake tells no topic position: the rejoin names the
    client's own, and is told ``recovered: false``."""
    with worker(redis_server.url) as (base, sente):
        p = Poller(base, "amy", "a1")
        try:
            _poll_until(p, lambda: p.recovered != [])
            p.join("room/a")
            sente.publish("room/a", ("t/n", ["room", 0]))
            sente.send("amy", ("t/n", ["own", 0]))
            _poll_until(p, lambda: len(p.got.get("room", [])) == 1 and "own" in p.got)
            _restart(redis_server)
            sente.publish("room/a", ("t/n", ["room", 1]))   # kept while Redis is away, or lost
            p.handshake_next = True        # as after a 503: the clients make a new handshake
            _wait_healthy(base)
            rejoins = len(p.rejoined)
            _poll_until(p, lambda: len(p.rejoined) > rejoins)
            assert p.recovered[-1] is False and p.rejoined[-1] is False, (p.recovered,
                                                                          p.rejoined)
            for n in range(2, 5):
                sente.publish("room/a", ("t/n", ["room", n]))
                sente.send("amy", ("t/n", ["own", n]))
            _poll_until(p, lambda: p.got.get("room", [])[-1:] == [4]
                        and p.got.get("own", [])[-1:] == [4])
            assert not p.errors or all(e.startswith("503") for e in p.errors), p.errors
        finally:
            p.close()


def test_a_handshake_on_a_worker_that_held_the_client_hands_out_no_old_topic_position(
        redis_server):
    """Issue 24 #4a. Worker A held an Ajax client reading a topic; the client moved on to
    worker B, which delivered further. Its next handshake reached A, which handed back the
    topic position of its old record: the client took it and its rejoin replayed what it
    had (duplicates). A handshake is a new connection now: no topic, no topic position."""
    with worker(redis_server.url) as (a, sa), worker(redis_server.url) as (b, sb):
        p = Poller(a, "bea", "b1")
        try:
            _poll_until(p, lambda: p.recovered != [])
            p.join("room/b")
            for n in range(3):
                sa.publish("room/b", ("t/n", ["room", n]))
            _poll_until(p, lambda: len(p.got.get("room", [])) == 3)
            p.base = b                                   # the next polls reach B
            for n in range(3, 8):
                sb.publish("room/b", ("t/n", ["room", n]))
            _poll_until(p, lambda: len(p.got.get("room", [])) == 8)
            p.base, p.handshake_next = a, True           # and a new connection, A again
            rejoins = len(p.rejoined)
            _poll_until(p, lambda: len(p.rejoined) > rejoins)
            sa.publish("room/b", ("t/n", ["room", 8]))
            _poll_until(p, lambda: p.got["room"][-1] == 8)
            check_streams(p, {"room": 9})
        finally:
            p.close()


def test_a_rejoin_does_not_move_back_a_reader_a_poll_moved_on(redis_server):
    """Issue 24 #4b. A rejoin sent with the position the client had before a poll's answer
    came (over Ajax the two cross) moved this process's reader back to it: the parked poll
    then delivered those entries again, in a batch whose mark moved the user's log, so the
    client could not drop it (the reader's invariant check sees the topic's seq not
    advance). A join now leaves alone a reader that already reads the topic."""
    with worker(redis_server.url) as (base, sente):
        p = Poller(base, "cyd", "c1")
        try:
            _poll_until(p, lambda: p.recovered != [])
            p.join("room/c")
            before = list(p.positions["t:room/c"])
            for n in range(5):
                sente.publish("room/c", ("t/n", ["room", n]))
            _poll_until(p, lambda: len(p.got.get("room", [])) == 5)
            parked = gevent.spawn(p.poll_once)               # waits for the next push
            gevent.sleep(0.2)
            r = p.http.post(f"{base}/chsk?client-id=c1&u=cyd&protocol=2", timeout=TIMEOUT,
                            data=json.dumps([["chsk/join", {"topic": "room/c",
                                                            "position": before}], "ajax"]),
                            headers={"Content-Type": "application/json"})
            assert r.json()[0][1]["recovered"] is True
            sente.send("cyd", ("t/n", ["own", 0]))
            parked.get(timeout=TIMEOUT)
            _poll_until(p, lambda: "own" in p.got)
            check_streams(p, {"room": 5, "own": 1})
        finally:
            p.close()


def test_a_worker_takes_clients_again_once_redis_answers_after_a_long_freeze(redis_server):
    """Issue 24 #5. A call that failed while Redis was frozen longer than redis-py's
    timeout marked the backplane unhealthy, and only a successful publish or a new
    subscription marked it healthy again: a worker with nothing to publish answered 503,
    /chsk/health included, long after Redis was fine. Redis's health is probed now."""
    with worker(redis_server.url) as (base, sente):
        assert requests.get(base + "/chsk?client-id=h&u=hal&protocol=2&handshake=1",
                            timeout=TIMEOUT).status_code == 200
        assert redis_server.proc is not None
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            frozen = requests.get(base + "/chsk?client-id=h2&u=hal&protocol=2&handshake=1",
                                  timeout=10)
            assert frozen.status_code == 503, frozen.text
            gevent.sleep(1.0)
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        _wait_healthy(base, timeout=5)   # no push, no new subscription needed
        assert requests.get(base + "/chsk?client-id=h3&u=hal&protocol=2&handshake=1",
                            timeout=TIMEOUT).status_code == 200


def test_members_keep_an_ajax_user_whose_polls_moved_between_workers(redis_server):
    """Issue 24 #6. An Ajax client in a topic polled worker A, then B (B added the topic to
    its reader and took over the client's topic membership in Redis), then A again (A still
    read the topic: no new membership). When B forgot the client after its grace window, it
    ended the membership B had taken — while the client kept polling A and receiving the
    topic's events, ``members`` no longer had the user."""
    opts = dict(reconnect_grace_ajax=0.5)
    with worker(redis_server.url, **opts) as (a, sa), worker(redis_server.url, **opts) as (
            b, sb):
        p = Poller(a, "dee", "d1")
        try:
            _poll_until(p, lambda: p.recovered != [])
            p.join("room/d")
            _poll_until(p, lambda: "dee" in sa.members("room/d")
                        and "dee" in sb.members("room/d"), timeout=5)
            p.base = b
            sb.publish("room/d", ("t/n", ["room", 0]))
            _poll_until(p, lambda: len(p.got.get("room", [])) == 1)
            p.base = a
            deadline = time.monotonic() + 3       # B's grace window ends meanwhile
            n = 1
            while time.monotonic() < deadline:
                sa.publish("room/d", ("t/n", ["room", n]))
                n += 1
                _poll_until(p, lambda n=n: len(p.got.get("room", [])) == n)
                gevent.sleep(0.2)
            assert "dee" in sa.members("room/d") and "dee" in sb.members("room/d")
            check_streams(p, {"room": n})
        finally:
            p.close()


def test_a_superseded_poll_does_not_start_the_grace_window_of_the_poll_after_it(
        redis_server):
    """A poll superseded by the client's next one (its connection died) ended presence
    with the *client's* current connection id — the new poll's — so the user left after
    the grace window while its new poll was still parked."""
    opts = dict(reconnect_grace_ajax=0.3, lp_timeout=3)
    with worker(redis_server.url, **opts) as (base, sente):
        p = Poller(base, "eve", "e1")
        try:
            _poll_until(p, lambda: p.recovered != [])
            first = gevent.spawn(p.poll_once)        # parks
            gevent.sleep(0.3)
            second = Poller(base, "eve", "e1")         # the same client, a new connection
            second.positions, second.handshake_next = dict(p.positions), False
            parked = gevent.spawn(second.poll_once)  # supersedes the first, parks
            first.get(timeout=TIMEOUT)
            gevent.sleep(1.5)                        # several grace windows
            assert "eve" in sente.connected_uids.ajax
            assert not parked.dead
            sente.send("eve", ("t/n", ["own", 0]))
            parked.get(timeout=TIMEOUT)
            assert second.got == {"own": [0]}
            second.close()
        finally:
            p.close()


def test_expiry_while_redis_is_away_logs_no_traceback_and_ends_later(redis_server, caplog):
    """Issue 24 #7. Ending a grace window while Redis could not be reached raised in the
    expiry greenlet (a traceback in the log), and the local deadlines were not armed again.
    Now it is a warning, and the user still goes offline once Redis is back."""
    import websocket

    opts = dict(reconnect_grace_ws=0.2)
    with worker(redis_server.url, **opts) as (base, sente):
        ws = websocket.create_connection(base.replace("http", "ws")
                                         + "/chsk?client-id=f1&u=fay&protocol=2",
                                         timeout=TIMEOUT)
        ws.recv()
        deadline = time.monotonic() + TIMEOUT
        while "fay" not in sente.connected_uids.ws:
            assert time.monotonic() < deadline
            gevent.sleep(0.05)
        assert redis_server.proc is not None
        with caplog.at_level(logging.WARNING, logger="flask_sente"):
            redis_server.proc.send_signal(signal.SIGSTOP)
            try:
                ws.close()
                gevent.sleep(3.0)               # the grace window ends while Redis is away
            finally:
                redis_server.proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 15
            while "fay" in sente.connected_uids.any:
                assert time.monotonic() < deadline, "the user never went offline"
                gevent.sleep(0.1)
        assert not [r for r in caplog.records if r.exc_info], [
            r.getMessage() for r in caplog.records if r.exc_info]
