"""The backplane and the emitter through Redis Sentinel: a real master, a replica and a
Sentinel on loopback, both connected with a ``redis+sentinel://`` URL; then the master is
killed in the middle of the pushes and the Sentinel promotes the replica, which the worker,
its subscription and the emitter all follow: every push still arrives once and in order,
or the client is told ``recovered: false``."""
from __future__ import annotations

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


def test_backplane_and_emitter_follow_a_sentinel_failover(sentinel_setup):
    url = sentinel_setup.url
    with worker(url) as (a, sa, _), Emitter(url) as emitter:
        s = Stream(a, "sam")
        try:
            wait_for(lambda: s.recovered == [None])
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
            wait_for(lambda: s.numbers and s.numbers[-1] == 34, timeout=10)
            _no_silent_gap(s.numbers, 35)
            new_master = redis.Redis(port=sentinel_setup.replica.port, socket_timeout=2)
            try:   # the pushes after the switch were written to the new master
                assert int(new_master.hget('sente:{"sam"}:meta', "seq")) >= 25
            finally:
                new_master.close()
        finally:
            s.stop()
