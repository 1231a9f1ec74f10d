"""Issue 14, on real sockets: bad input is answered, the handler pool is shared fairly,
handler errors are logged at a bounded rate."""
from __future__ import annotations

import logging

import gevent
import gevent.event

from .conftest import running


def test_bad_event_without_cb_id_gets_a_notice():
    """A malformed event sent without a cb_id used to vanish without a word: now the sender
    gets a one-event ``chsk/bad-event`` push (a batch, so old clients ignore it), and the
    socket stays usable."""
    with running() as h:
        ws = h.ws()
        try:
            h.send(ws, [1, 2])                          # id not a string
            assert h.recv(ws) == [[["chsk/bad-event", {"reason": "wrong-id-type"}]], None]
            h.send(ws, ["no-namespace", 1])             # id without "ns/"
            notice = h.recv(ws)
            assert notice[0][0][0] == "chsk/bad-event"
            assert notice[0][0][1]["id"] == "no-namespace"
            h.send(ws, ["chsk/uidport-open", "spoof"])  # reserved id
            assert h.recv(ws)[0][0][1] == {"reason": "reserved-id", "id": "chsk/uidport-open"}
            h.send(ws, ["t/echo", 1], "ok")
            assert h.recv(ws) == [["chsk/reply", 1], "ok"]
        finally:
            ws.close()


def _blocking_handler(h, event_id: str = "t/block"):
    """Register a handler that holds its pool slot until ``release`` is set."""
    release = gevent.event.Event()
    started: list[object] = []

    @h.sente.on(event_id)
    def block(msg):
        started.append(msg)
        release.wait(10)
        if msg.expects_reply:
            msg.reply("done")

    return release, started


def test_one_client_cannot_fill_the_handler_pool():
    """A client flooding a slow handler holds at most ``client_events_in_flight`` slots;
    its next events wait on its own connection, and another client's call is answered.

    Before: the flooder took the whole pool and every other client's call waited for it."""
    with running(handler_pool_size=8, client_events_in_flight=2) as h:
        release, started = _blocking_handler(h)
        flooder, other = h.ws(), h.ws()
        try:
            for _ in range(8):
                h.send(flooder, ["t/block", None])
            h.send(flooder, ["t/echo", "mine"], "f1")
            h.wait_for(lambda: len(started) == 2)
            h.send(other, ["t/echo", "theirs"], "o1")
            assert h.recv(other) == [["chsk/reply", "theirs"], "o1"]
            assert len(started) == 2          # the flooder's other events still wait
            release.set()
            assert h.recv_until(flooder, lambda m: m[1] == "f1") == [["chsk/reply", "mine"],
                                                                       "f1"]
            h.wait_for(lambda: len(started) == 8)
        finally:
            release.set()
            flooder.close()
            other.close()


def test_keepalive_is_answered_while_the_pool_is_full():
    """With every pool slot taken by slow handlers, an idle client's pings are still
    answered, one after the other (its reader never waits for the pool).

    Before: the first ping's pong went out, then the reader waited in the pool behind the
    slow handlers, so the next ping went unanswered and the client dropped the socket."""
    with running(handler_pool_size=4, client_events_in_flight=4) as h:
        release, started = _blocking_handler(h)
        flooder, idle = h.ws(), h.ws()
        try:
            for _ in range(6):
                h.send(flooder, ["t/block", None])
            h.wait_for(lambda: len(started) == 4)
            for n in range(3):
                h.send(idle, ["chsk/ws-ping"], f"p{n}")
                assert h.recv(idle) == [["chsk/reply", "pong"], f"p{n}"]
                h.send(idle, ["chsk/ws-pong"])   # an answer to a server ping never waits
        finally:
            release.set()
            flooder.close()
            idle.close()


def test_a_failing_handler_is_logged_once_per_interval(caplog):
    """A handler raising on every call: one traceback per interval, not per call; every
    caller still gets its ``chsk/error`` reply.

    Before: one full traceback per call (27.9 MB of log in 30 s with 100 clients)."""
    caplog.set_level(logging.INFO, logger="flask_sente")
    with running(error_log_interval=3600) as h:
        ws = h.ws()
        try:
            for n in range(20):
                h.send(ws, ["t/boom", n], f"b{n}")
            for _ in range(20):
                reply = h.recv_until(ws, lambda m: m[1] is not None)
                assert reply[0] == ["chsk/error",
                                    {"message": "the handler for 't/boom' raised an error"}]
        finally:
            ws.close()
    logged = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_error_log_limiter_counts_what_it_suppressed():
    """The next occurrence after the interval is logged with the count of those not logged;
    another exception type or line is a different key (logged at once)."""
    from flask_sente.router import ErrorLogLimiter

    now = [100.0]
    limiter = ErrorLogLimiter(60, clock=lambda: now[0])

    def handler(msg):
        raise ValueError(msg)

    def key_of(exc_type):
        try:
            if exc_type is ValueError:
                handler("x")
            raise KeyError("y")
        except Exception as exc:
            return limiter.key(handler, exc)

    value_key, key_key = key_of(ValueError), key_of(KeyError)
    assert value_key != key_key
    assert limiter.check(value_key) == 0
    assert [limiter.check(value_key) for _ in range(5)] == [None] * 5
    assert limiter.check(key_key) == 0
    now[0] += 61
    assert limiter.check(value_key) == 5
    assert limiter.check(value_key) is None
