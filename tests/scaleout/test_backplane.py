"""Two apps ("workers") in one process sharing a real Redis: pushes, broadcasts, kicks and
presence cross between them; Ajax polls land on either without a new handshake."""
from __future__ import annotations

import contextlib
import json
import typing as t
import urllib.parse

import gevent
import msgpack
import pytest
import redis
import requests
import websocket
from flask import Flask, request

from flask_sente import PackError, Sente
from flask_sente.testing import serve
from tests.helpers import wait_for  # noqa: F401 (used here and imported from here)

TIMEOUT = 5


@contextlib.contextmanager
def worker(url: str, **options: t.Any) -> t.Iterator[tuple[str, Sente, list[t.Any]]]:
    app = Flask(__name__)
    app.secret_key = "shared"
    sente = Sente(app, csrf=False, backplane=url,
                  user_id=lambda client_id: request.args.get("u"), **options)
    seen: list[t.Any] = []

    @sente.on("*")
    def record(msg: t.Any) -> None:
        seen.append(msg)

    with serve(app) as base:
        yield base, sente, seen


def recv(ws: websocket.WebSocket) -> t.Any:
    return json.loads(ws.recv())


def numbers(batches: list[t.Any]) -> list[int]:
    """The pushed numbers of these batches, after checking the invariant of every delivery
    test: per log, the marks' seqs strictly increase within an epoch."""
    seen: dict[str, tuple[str, int]] = {}
    for batch in batches:
        assert batch[0][-1][0] == "chsk/pos", batch
        for name, (epoch, seq) in batch[0][-1][1].items():
            old = seen.get(name)
            assert old is None or old[0] != epoch or seq > old[1], (name, old, seq)
            seen[name] = (epoch, seq)
    return [e[1] for b in batches for e in b[0][:-1] if e[0] == "t/n"]


def advance(positions: dict[str, t.Any], mark: dict[str, t.Any]) -> None:
    """Take a mark's positions, checking they only move forward within an epoch."""
    for name, (epoch, seq) in mark.items():
        old = positions.get(name)
        assert old is None or old[0] != epoch or seq > old[1], (name, old, seq)
        positions[name] = [epoch, seq]


def test_pushes_broadcasts_and_kick_reach_a_client_on_another_worker(redis_server):
    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        ws = websocket.create_connection(
            a.replace("http", "ws") + "/chsk?client-id=c1&u=bob&protocol=2", timeout=TIMEOUT)
        try:
            hello = recv(ws)[0][1]
            assert hello["recovered"] is None
            wait_for(lambda: "bob" in sb.connected_uids.ws)      # cluster-wide presence
            for i in range(5):
                sb.send("bob", ("t/n", i))                     # from the other worker
            sb.broadcast(("t/n", 5))
            sa.send("bob", ("t/n", 6))
            got: list[t.Any] = []
            while len(numbers(got)) < 7:
                got.append(recv(ws))
            assert sorted(numbers(got)) == list(range(7))       # each once
            # Each worker's pushes keep their order (the two workers' interleaving is the
            # order Redis received them in, the same for every reader).
            assert [n for n in numbers(got) if n < 5] == [0, 1, 2, 3, 4]
            assert sb.clients_of("bob")["ws"] == ["c1"]
            sb.kick("bob")
            with gevent.Timeout(TIMEOUT):
                while True:
                    opcode, data = ws.recv_data(control_frame=True)
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        assert int.from_bytes(data[:2], "big") == 4001
                        break
            wait_for(lambda: "bob" not in sa.connected_uids.any
                     and "bob" not in sb.connected_uids.any)
        finally:
            ws.close()


def test_ajax_polls_alternate_between_workers_without_a_new_handshake(redis_server):
    with worker(redis_server.url, lp_timeout=1) as (a, sa, _), \
            worker(redis_server.url, lp_timeout=1) as (b, sb, _):
        http = requests.Session()
        r = http.get(a + "/chsk?client-id=p1&u=amy&protocol=2&handshake=1", timeout=TIMEOUT)
        positions = r.json()[0][1]["positions"]
        got: list[int] = []
        pusher_turn = [sa, sb]
        for i in range(8):
            pusher_turn[i % 2].send("amy", ("t/n", i), flush=True)
            base = (a, b)[(i + 1) % 2]                          # the poll goes elsewhere
            while len(got) <= i:
                q = urllib.parse.quote(json.dumps(positions))
                answer = http.get(f"{base}/chsk?client-id=p1&u=amy&protocol=2&pos={q}",
                                  timeout=TIMEOUT).json()
                payload = answer[0]
                assert payload[0] != "chsk/handshake", answer   # no re-handshake
                if isinstance(payload[0], list):
                    *events, mark = payload
                    got += [e[1] for e in events]
                    advance(positions, mark[1])
        assert got == list(range(8))
        http.close()


def test_user_open_and_close_fire_once_in_the_cluster(redis_server):
    opts = dict(reconnect_grace_ws=0.3)
    with worker(redis_server.url, **opts) as (a, sa, seen_a), \
            worker(redis_server.url, **opts) as (b, sb, seen_b):
        tabs = [websocket.create_connection(
            f"{base.replace('http', 'ws')}/chsk?client-id=t{i}&u=cal&protocol=2",
            timeout=TIMEOUT) for i, base in enumerate([a, b, a, b])]
        for tab in tabs:
            recv(tab)
        for tab in tabs:
            tab.close()

        def events(name: str) -> list[t.Any]:
            return [m for m in seen_a + seen_b if m.id == name and m.data == "cal"]

        wait_for(lambda: len(events("chsk/uidport-close")) == 1)
        gevent.sleep(0.5)
        assert len(events("chsk/uidport-open")) == 1
        assert len(events("chsk/uidport-close")) == 1
        assert "cal" not in sa.connected_uids.any and "cal" not in sb.connected_uids.any


def test_a_returning_client_is_replayed_from_redis_on_another_worker(redis_server):
    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        ws = websocket.create_connection(
            a.replace("http", "ws") + "/chsk?client-id=r&u=rex&protocol=2", timeout=TIMEOUT)
        positions = recv(ws)[0][1]["positions"]
        ws.close()
        for i in range(10):
            sa.send("rex", ("t/n", i))                          # while it is away
        gevent.sleep(0.3)
        q = urllib.parse.quote(json.dumps(positions))
        ws = websocket.create_connection(
            b.replace("http", "ws") + f"/chsk?client-id=r&u=rex&protocol=2&pos={q}",
            timeout=TIMEOUT)
        try:
            assert recv(ws)[0][1]["recovered"] is True
            got: list[t.Any] = []
            while len(numbers(got)) < 10:
                got.append(recv(ws))
            assert numbers(got) == list(range(10))
        finally:
            ws.close()


def test_workers_with_different_secret_keys_are_told(redis_server, caplog):
    import logging

    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        sb_app = next(iter(sb._apps))
        sb_app.secret_key = "another-key"
        with caplog.at_level(logging.ERROR, logger="flask_sente"):
            for base in (a, b):
                requests.get(base + "/chsk?client-id=k&u=k&handshake=1", timeout=TIMEOUT)
        assert [r for r in caplog.records if "SECRET_KEY differs" in r.getMessage()]


def test_a_burst_of_handshakes_waits_for_redis_connections_instead_of_failing(redis_server,
                                                                              caplog):
    """More clients connecting at once than redis-py's pool holds: every one gets its
    handshake (they queue for a connection), none gets an error or a traceback."""
    import logging

    with worker(redis_server.url) as (a, sa, _):
        url = a.replace("http", "ws") + "/chsk?protocol=2&client-id="

        def connect(i: int) -> t.Any:
            ws = websocket.create_connection(f"{url}b{i}&u=burst{i}", timeout=TIMEOUT)
            try:
                return recv(ws)[0][0]
            finally:
                ws.close()

        with caplog.at_level(logging.WARNING, logger="flask_sente"):
            jobs = [gevent.spawn(connect, i) for i in range(200)]
            gevent.joinall(jobs, timeout=60, raise_error=True)
        assert [j.value for j in jobs] == ["chsk/handshake"] * 200
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_protocol_1_polls_alternate_between_workers_without_a_new_handshake(redis_server):
    """A protocol-1 client sends no positions: the worker that answered its poll keeps them
    in Redis, so the other worker answers the next poll where it left off."""
    with worker(redis_server.url, lp_timeout=1) as (a, sa, _), \
            worker(redis_server.url, lp_timeout=1) as (b, sb, _):
        http = requests.Session()
        query = "/chsk?client-id=v1&u=old&protocol=1"
        assert http.get(a + query + "&handshake=1", timeout=TIMEOUT).json()[0][0] == \
            "chsk/handshake"
        got: list[int] = []
        for i in range(6):
            (sa, sb)[i % 2].send("old", ("t/n", i), flush=True)
            base = (a, b)[(i + 1) % 2]                          # the poll goes elsewhere
            while len(got) <= i:
                payload = http.get(base + query, timeout=TIMEOUT).json()[0]
                assert payload[0] != "chsk/handshake", payload  # no re-handshake
                if isinstance(payload[0], list):
                    got += [e[1] for e in payload if e[0] == "t/n"]
        assert got == list(range(6))
        http.close()


def test_a_push_redis_cannot_carry_raises_and_the_later_ones_still_go(redis_server):
    """Data msgpack cannot encode is the pusher's error, raised at the call (PackError),
    never the publisher greenlet's: before, it killed the worker's publisher and every
    later push of that worker stalled in silence (shown failing that way first)."""
    with worker(redis_server.url) as (a, sa, _):
        ws = websocket.create_connection(
            a.replace("http", "ws") + "/chsk?client-id=c1&u=eve&protocol=2", timeout=TIMEOUT)
        try:
            recv(ws)  # the handshake
            wait_for(lambda: "eve" in sa.connected_uids.ws)
            sa.send("eve", ("t/n", 0))
            with pytest.raises(PackError, match="msgpack"):
                sa.send("eve", ("t/n", object()))
            with pytest.raises(PackError):
                sa.broadcast(("t/n", {1, 2}))
            sa.send("eve", ("t/n", 1))
            got: list[t.Any] = []
            with gevent.Timeout(TIMEOUT):
                while len(numbers(got)) < 2:
                    got.append(recv(ws))
            assert numbers(got) == [0, 1]
        finally:
            ws.close()


def test_an_answer_waits_for_the_asker_to_subscribe_again(redis_server):
    """An answer routed to a process whose subscription is being remade (Redis came back;
    a worker just started) reaches it once it listens again: a PUBLISH that nobody heard is
    made again (found by the chaos drill, seed 402290). Shown to fail with a single
    PUBLISH (the late listener got nothing)."""
    with worker(redis_server.url) as (a, sa, _):
        backplane = sa._state().hub.backplane
        listener = redis.Redis.from_url(redis_server.url, socket_timeout=TIMEOUT)
        pubsub = listener.pubsub(ignore_subscribe_messages=True)
        try:
            outcome = {"id": "1@late", "uid": "'u'", "client": "c", "value": 42}
            sender = gevent.spawn(backplane.route_call, "late", outcome)
            gevent.sleep(0.5)                          # nobody listens yet
            pubsub.subscribe(f"{backplane.prefix}:call:late")
            got = None
            with gevent.Timeout(TIMEOUT):
                while got is None:
                    got = pubsub.get_message(timeout=0.1)
            sender.join(TIMEOUT)
            assert msgpack.unpackb(got["data"], raw=False) == outcome
        finally:
            pubsub.close()
            listener.close()


def test_a_sente_client_on_one_worker_gets_a_push_made_on_another(redis_server):
    """The Sente dialect (``sente_url``) behind the Redis backplane: the log carries the
    event once, each worker speaks it in its client's wire."""
    with worker(redis_server.url, sente_url="/chsk-sente") as (a, sa, _), \
            worker(redis_server.url, sente_url="/chsk-sente") as (b, sb, _):
        ws = websocket.create_connection(
            a.replace("http", "ws") + "/chsk-sente?client-id=clj&u=cy", timeout=TIMEOUT)
        try:
            assert ws.recv() == '[[:chsk/handshake ["cy" nil nil]] nil]'
            wait_for(lambda: "cy" in sb.connected_uids.ws)
            sb.send("cy", ("todo/added", {"text": "milk", "tags": ["a", "b"]}))
            assert ws.recv() == '[[[:todo/added {:text "milk", :tags ["a" "b"]}]] nil]'
        finally:
            ws.close()
