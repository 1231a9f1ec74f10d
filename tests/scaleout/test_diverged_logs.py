"""How a worker tells a log that went back (a failover lost entries it had delivered) from a
notification it simply got twice, on a real Redis. The second is normal (gap repair and the
subscription both bring an entry) and must change nothing; the first gets the log a new
epoch, so its readers hear ``recovered: false`` instead of silently skipping the entries
that reuse those seqs (tests/scaleout/test_sentinel.py makes one with a real failover)."""
from __future__ import annotations

import contextlib
import typing as t

import gevent
import msgpack
import redis

from flask_sente.backplanes import redis_scripts as rs

from .test_backplane import TIMEOUT, recv, wait_for, worker
from .test_drills import Stream, _no_silent_gap
from .test_topics_backplane import _call, _topic_numbers, _ws


@contextlib.contextmanager
def listening(url: str, channel: str) -> t.Iterator[tuple[t.Any, t.Any]]:
    """(a Redis client, a subscription to ``channel``): what a worker's subscription sees."""
    admin = redis.Redis.from_url(url, socket_timeout=TIMEOUT)
    sub = admin.pubsub(ignore_subscribe_messages=True)
    try:
        sub.subscribe(channel)
        yield admin, sub
    finally:
        sub.close()
        admin.close()


@contextlib.contextmanager
def topic_member(base: str, uid: str, topic: str) -> t.Iterator[tuple[t.Any, list[t.Any]]]:
    """A protocol-2 WebSocket of ``uid`` that joined ``topic`` (and what it was pushed)."""
    ws = _ws(base, uid)
    try:
        recv(ws)
        pushed: list[t.Any] = []
        assert _call(ws, ["chsk/join", {"topic": topic}], pushed)["ok"]
        yield ws, pushed
    finally:
        ws.close()


def _next_notification(sub: t.Any) -> bytes:
    with gevent.Timeout(TIMEOUT):
        while True:
            message = sub.get_message(timeout=0.1)
            if message is not None and message["type"] == "message":
                return t.cast(bytes, message["data"])


def test_a_notification_received_twice_changes_nothing(redis_server):
    meta, _, channel = rs.log_keys("sente", rs.topic_key("room/1"))
    with listening(redis_server.url, channel) as (admin, sub), \
            worker(redis_server.url) as (a, sa, _):
        sa.on_join("room/*")(lambda msg: True)
        with topic_member(a, "ann", "room/1") as (ws, pushed):
            # An entry with an excluded client: stored split in two, compared joined.
            sa.publish("room/1", ("t/n", 0), exclude_client_id="someone-else")
            raw = _next_notification(sub)
            epoch = admin.hget(meta, "epoch")
            with gevent.Timeout(TIMEOUT):
                while _topic_numbers(pushed, "room/1") != [0]:
                    pushed.append(recv(ws)[0])
            admin.publish(channel, raw)                      # the same notification again
            sa.publish("room/1", ("t/n", 1), exclude_client_id="someone-else")
            with gevent.Timeout(TIMEOUT):
                while _topic_numbers(pushed, "room/1") != [0, 1]:
                    pushed.append(recv(ws)[0])               # the socket stays open
            assert admin.hget(meta, "epoch") == epoch


def test_another_entry_at_a_delivered_seq_tells_the_readers(redis_server):
    channel = rs.log_keys("sente", rs.user_key("bo"))[2]
    with listening(redis_server.url, channel) as (admin, sub), \
            worker(redis_server.url) as (a, sa, _):
        s = Stream(a, "bo")
        try:
            wait_for(lambda: s.recovered == [None])
            for n in range(5):
                sa.send("bo", ("t/n", n))
            raws = [_next_notification(sub) for _ in range(5)]
            wait_for(lambda: len(s.numbers) >= 5)
            # What a new master that lost the last entry would publish for its next push:
            # the same epoch and seq, another entry.
            epoch, seq, target, control, _ = msgpack.unpackb(raws[-1], raw=True)
            admin.publish(channel, msgpack.packb(
                [epoch, seq, target, control, rs.pack_event(["t/n", 99])]))
            wait_for(lambda: False in s.recovered)           # told, not a silent skip
            for n in range(5, 10):
                sa.send("bo", ("t/n", n))
            wait_for(lambda: s.numbers[-1] == 9)
            _no_silent_gap(s, 10)
            assert 99 not in s.numbers
        finally:
            s.stop()
