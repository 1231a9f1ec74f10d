"""Closing the Redis backplane leaves no socket to the garbage collector.

Fresh-clone CI failed three times on a ``ResourceWarning: unclosed <socket ...>`` (the suite
makes it an error): a loop of the backplane killed at close while redis-py was connecting.
redis-py closes the socket it is connecting only on an ``OSError``; a kill (GreenletExit)
leaves it in a frame that is then dropped (tracemalloc: ``socket.socket(...)`` in
``redis/connection.py`` ``_connect``, from the subscriber's ``psubscribe``).
"""
from __future__ import annotations

import contextlib
import gc
import socket
import time
import typing as t
import warnings

import gevent
import pytest
import redis

from flask_sente.backplanes.redis import RedisBackplane

TIMEOUT = 5


class Quiet:
    """A listener that takes every report and does nothing."""

    def __getattr__(self, name: str) -> t.Callable[..., None]:
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def unanswering_port() -> t.Iterator[int]:
    """A loopback port whose connects hang: a listener with a full accept queue (the
    kernel drops further SYNs until the client's connect timeout)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(3):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        gevent.sleep(0.1)
        with socket.socket() as probe:
            probe.settimeout(0.3)
            with pytest.raises(TimeoutError):
                probe.connect(("127.0.0.1", port))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_close_while_a_loop_connects_leaves_no_socket_to_the_collector():
    """The subscriber is inside redis-py's connect when the backplane closes.

    Without the fix (the loops killed at close) the connect's socket was left unclosed:
    failed 3 runs of 3."""
    with unanswering_port() as port:
        backplane = RedisBackplane(f"redis://127.0.0.1:{port}/0", history_size=10,
                                   history_ttl=60)
        backplane.start(Quiet())  # type: ignore[arg-type]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            # The first use starts the loops (and waits for the subscription, in vain).
            first = gevent.spawn(backplane.push, "ann", ["t/n", 1], None, time.monotonic())
            gevent.sleep(0.3)  # the subscriber is connecting
            started = time.monotonic()
            backplane.close()
            closing = time.monotonic() - started
            first.join(timeout=TIMEOUT)
            assert first.dead
            del backplane, first
            gevent.sleep(0.1)  # the dead greenlets' links run: nothing holds them then
            gc.collect()
        assert _resource_warnings(caught) == []
        assert closing < TIMEOUT  # bounded by the connect timeout, not a hang


def test_close_closes_the_connections_to_redis(redis_server):
    """Closed, the backplane holds no connection to Redis: its pool's sockets are closed
    then, not when the garbage collector gets to them (before: every pooled connection
    stayed open while the backplane object lived)."""
    backplane = RedisBackplane(redis_server.url, history_size=10, history_ttl=60)
    with redis.Redis.from_url(redis_server.url, socket_timeout=TIMEOUT) as admin:
        try:
            backplane.start(Quiet())  # type: ignore[arg-type]
            backplane.push("ann", ["t/n", 1], None, time.monotonic())
            backplane.settled(timeout=TIMEOUT)
            assert len(admin.client_list()) > 1  # the backplane's connections
        finally:
            backplane.close()
        deadline = time.monotonic() + TIMEOUT
        while len(admin.client_list()) > 1 and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert [c["name"] or c["addr"] for c in admin.client_list()
                if c["id"] != str(admin.client_id())] == []
