"""Targeted subscriptions (issue 30): a process hears the channels of the logs its readers
read, no other log's — so Redis sends a push to a user only to the processes holding one of
its clients — and stops hearing a log when its mirror drops it. Counted by Redis itself
(``PUBSUB NUMSUB``, ``PUBSUB NUMPAT``), with two apps ("workers") in one process.

Broken on purpose once: with ``Subscriptions.keep_only`` never called, the dropped log's
channel kept its subscriber and the second test failed; with the mirror never asking for
a log's channel (``Subscriptions.ensure`` not called), alice's channel had no subscriber and
both failed.
"""
from __future__ import annotations

import typing as t

import redis
import websocket

from flask_sente.backplanes import redis_scripts as rs
from tests.helpers import wait_for
from tests.scaleout.test_backplane import TIMEOUT, numbers, recv, worker


def channel(uid: str) -> str:
    return rs.log_keys("sente", rs.user_key(uid))[2]


def subscribers(r: redis.Redis, name: str) -> int:
    ((_, count),) = r.pubsub_numsub(name)
    return int(count)


def connect(base: str, uid: str, client_id: str) -> websocket.WebSocket:
    ws = websocket.create_connection(
        base.replace("http", "ws") + f"/chsk?client-id={client_id}&u={uid}&protocol=2",
        timeout=TIMEOUT)
    recv(ws)  # the handshake
    return ws


def test_a_worker_hears_only_the_logs_its_readers_read(redis_server: t.Any) -> None:
    r = redis.Redis.from_url(redis_server.url, socket_timeout=TIMEOUT)
    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        alice, bob = connect(a, "alice", "c1"), connect(b, "bob", "c2")
        try:
            assert subscribers(r, channel("alice")) == 1   # A only
            assert subscribers(r, channel("bob")) == 1     # B only
            assert subscribers(r, rs.log_keys("sente", rs.BROADCAST_KEY)[2]) == 2
            assert r.pubsub_numpat() == 0                  # no catch-all pattern
            wait_for(lambda: "alice" in sb.connected_uids.ws)
            for i in range(3):
                sb.send("alice", ("t/n", i))               # from the worker that does not hear
            got: list[t.Any] = []
            while len(numbers(got)) < 3:
                got.append(recv(alice))
            assert numbers(got) == [0, 1, 2]
        finally:
            alice.close()
            bob.close()


def test_a_dropped_log_is_no_longer_heard_and_is_heard_again_when_read(
        redis_server: t.Any) -> None:
    r = redis.Redis.from_url(redis_server.url, socket_timeout=TIMEOUT)
    with worker(redis_server.url, history_ttl=0.5, reconnect_grace_ws=0.2) as (a, sa, _), \
            worker(redis_server.url) as (b, sb, _):
        alice = connect(a, "alice", "c1")
        assert subscribers(r, channel("alice")) == 1
        alice.close()
        # The grace window, then the history's TTL, then a housekeeping heartbeat (2 s).
        wait_for(lambda: subscribers(r, channel("alice")) == 0, timeout=4 * TIMEOUT)
        alice = connect(a, "alice", "c3")
        try:
            assert subscribers(r, channel("alice")) == 1
            wait_for(lambda: "alice" in sb.connected_uids.ws)
            sb.send("alice", ("t/n", 7))
            got: list[t.Any] = []
            while not numbers(got):
                got.append(recv(alice))
            assert numbers(got) == [7]
        finally:
            alice.close()


def test_a_log_being_read_is_not_dropped_by_the_housekeeping(redis_server: t.Any) -> None:
    """Found by ``python -m bench.capacity`` at ``-w 8`` (62 of 5,000 pushes lost): the
    housekeeping loop dropped the subscription of a log whose stream a new reader was
    reading — not mirrored yet — so the log was read here but never heard. Run at the
    moment it used to strike: between the SUBSCRIBE and the mirror holding the log."""
    r = redis.Redis.from_url(redis_server.url, socket_timeout=TIMEOUT)
    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        bob = connect(a, "bob", "c0")  # the backplane is running
        backplane = sa._state().hub.backplane
        subscriptions = backplane._subscriptions
        with subscriptions.holding(channel("alice")):
            wait_for(lambda: subscribers(r, channel("alice")) == 1)
            subscriptions.keep_only(backplane._mirror.channels())  # alice not mirrored yet
        assert subscribers(r, channel("alice")) == 1
        alice = connect(a, "alice", "c1")
        try:
            wait_for(lambda: "alice" in sb.connected_uids.ws)
            sb.send("alice", ("t/n", 1))
            got: list[t.Any] = []
            while not numbers(got):
                got.append(recv(alice))
            assert numbers(got) == [1]
            subscriptions.keep_only(backplane._mirror.channels())
            assert subscribers(r, channel("alice")) == 1
        finally:
            alice.close()
            bob.close()
