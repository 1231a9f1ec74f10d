"""The backplane and the emitter through Redis Sentinel: a real master, a replica and a
Sentinel on loopback, both connected with a ``redis+sentinel://`` URL; then the master is
killed in the middle of the pushes and the Sentinel promotes the replica, which the worker,
its subscription and the emitter all follow: every push still arrives once and in order,
or the client is told ``recovered: false``. And a graceful ``SENTINEL FAILOVER``, whose old
master drops the pushes it took after the promotion: never a silent gap."""
from __future__ import annotations

import contextlib
import typing as t

import gevent
import pytest
import redis

from flask_sente.emitter import Emitter
from flask_sente.exceptions import BackplaneError

from .conftest import RedisServer, running
from .test_backplane import wait_for, worker
from .test_drills import Stream, _no_silent_gap

SERVICE = "sente-test"


class SentinelSetup(t.NamedTuple):
    master: RedisServer
    replica: RedisServer
    sentinel: RedisServer
    url: str

    def master_port(self) -> int:
        admin = redis.Redis(port=self.sentinel.port, socket_timeout=2)
        try:
            return int(admin.sentinel_get_master_addr_by_name(SERVICE)[1])
        finally:
            admin.close()


@pytest.fixture
def sentinel_setup() -> t.Iterator[SentinelSetup]:
    master = RedisServer()
    replica = RedisServer("--replicaof", "127.0.0.1", str(master.port))
    # One Sentinel with quorum 1: enough to fail over on request (three would vote).
    sentinel = RedisServer("--sentinel", config=(
        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"))
    with running(master, replica, sentinel):
        setup = SentinelSetup(master, replica, sentinel,
                              f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}/0")
        admin = redis.Redis(port=sentinel.port, socket_timeout=2)
        try:   # a failover needs a replica the Sentinel knows, in sync
            wait_for(lambda: any(r.get("master-link-status") == "ok" for r in
                                 admin.sentinel_slaves(SERVICE)), timeout=15)
        finally:
            admin.close()
        yield setup


def _send_retrying(emitter: Emitter, uid: str, event: t.Any) -> None:
    """What a task does with the emitter's BackplaneError: try again (a new
    master takes a few seconds to be elected)."""
    for _ in range(50):
        try:
            emitter.send(uid, event)
            return
        except BackplaneError:
            gevent.sleep(0.2)
    raise AssertionError("the emitter never reached the new master")


@contextlib.contextmanager
def streaming(url: str, uid: str) -> t.Iterator[tuple[t.Any, Emitter, Stream]]:
    """A worker and an emitter on ``url``, and a protocol-2 client of ``uid`` on the worker,
    connected."""
    with worker(url) as (a, sa, _), Emitter(url) as emitter:
        s = Stream(a, uid)
        try:
            wait_for(lambda: s.recovered == [None])
            yield sa, emitter, s
        finally:
            s.stop()


def test_backplane_and_emitter_follow_a_sentinel_failover(sentinel_setup):
    """The master SIGKILLed mid-pushes: the worker, its subscription and the emitter move
    to the promoted replica, and at the wire every push arrives once, in order, on the
    socket opened before the failover (docs/scaleout.md's row for this drill).

    Shown to fail by having the hub close its WebSockets (1013) when the backplane reports
    Redis down (``Hub.backplane_state``): the client reconnected and was replayed, so the
    old "no silent gap" check still passed, but the socket had dropped (2 sockets)."""
    with streaming(sentinel_setup.url, "sam") as (sa, emitter, s):
        for n in range(5):
            emitter.send("sam", ("t/n", n))
        wait_for(lambda: len(s.numbers) >= 5)       # two writers: one after the other
        for n in range(5, 10):
            sa.send("sam", ("t/n", n))
        wait_for(lambda: len(s.numbers) >= 10)
        assert s.numbers == list(range(10))

        sentinel_setup.master.proc.kill()            # SIGKILL: the Sentinel fails over
        for n in range(10, 30):                      # during and after the switch
            sa.send("sam", ("t/n", n))
            gevent.sleep(0.1)
        wait_for(lambda: sentinel_setup.master_port() == sentinel_setup.replica.port,
                 timeout=15)
        wait_for(lambda: len(s.numbers) >= 30, timeout=15)  # the outbox, drained
        for n in range(30, 35):
            _send_retrying(emitter, "sam", ("t/n", n))
        s.finish(lambda event: sa.send("sam", event))
        _no_silent_gap(s, 35)
        # What docs/scaleout.md says of this failover: every push once, in order (up to a
        # final marker, so a late repeat would show), and the socket never dropped.
        assert s.numbers == list(range(35))
        assert s.recovered == [None] and s.sockets == 1 and s.closes == []
        new_master = redis.Redis(port=sentinel_setup.replica.port, socket_timeout=2)
        try:   # the pushes after the switch were written to the new master
            assert int(new_master.hget('sente:{"sam"}:meta', "seq")) >= 25
        finally:
            new_master.close()


def test_pushes_a_graceful_failover_loses_are_never_a_silent_gap(sentinel_setup):
    """``SENTINEL FAILOVER``: the old master takes writes for a while after the replica was
    promoted, and drops them when it becomes a replica itself. The logs on the new master
    then stand behind what the worker delivered; the worker notices (a seq it saw comes
    back with another entry, or the log is behind its mirror) and gives the log a new
    epoch, so the client hears ``recovered: false`` — and the pushes after it arrive."""
    with streaming(sentinel_setup.url, "gus") as (sa, emitter, s):
        for n in range(10):
            sa.send("gus", ("t/n", n))
        wait_for(lambda: len(s.numbers) >= 10)
        admin = redis.Redis(port=sentinel_setup.sentinel.port, socket_timeout=2)
        try:
            admin.execute_command("SENTINEL", "FAILOVER", SERVICE)
        finally:
            admin.close()
        for n in range(10, 30):                      # some reach only the old master
            sa.send("gus", ("t/n", n))
            gevent.sleep(0.1)
        wait_for(lambda: sentinel_setup.master_port() == sentinel_setup.replica.port,
                 timeout=15)
        old = redis.Redis(port=sentinel_setup.master.port, socket_timeout=2)
        try:
            wait_for(lambda: old.role()[0] == b"slave", timeout=15)   # it resynced
        finally:
            old.close()
        for n in range(30, 35):
            _send_retrying(emitter, "gus", ("t/n", n))
            gevent.sleep(0.1)
        # All of them arrived, or the client was told it missed some (and stands at
        # the log's new epoch): the pushes from then on arrive.
        wait_for(lambda: s.numbers[-1] == 34 or s.recovered[-1] is False, timeout=15)
        for n in range(35, 40):
            sa.send("gus", ("t/n", n))
        wait_for(lambda: s.numbers[-1] == 39, timeout=15)
        _no_silent_gap(s, 40)
