"""A WebSocket refused because the backplane failed must not take a newer connection of the
same client with it.

Found by the 10-minute chaos drill (seed 425882): Redis frozen, the proxy cut every
connection, a client reconnected at once to the same worker; its first attempt's reader
timed out and that attempt's refusal forgot the client id — the *second* connection's table
entry. The second connection then had its handshake and an open socket, but no pushes and
no pings for 28 s (three clients; one of them later resumed past entries it never got).

The backplane here is the in-memory one with a gate before each ``open_reader`` (an app may
pass its own backplane object), so the interleaving is exact; everything else is real: a
real server on 127.0.0.1 and plain WebSocket clients reading raw frames.
"""
from __future__ import annotations

import typing as t

import gevent
import gevent.event

from flask_sente.backplanes import LocalBackplane
from flask_sente.backplanes.base import Position
from flask_sente.core.delivery import Reader
from flask_sente.core.presence import Transport, Uid
from flask_sente.exceptions import BackplaneError

from .conftest import TIMEOUT, running


class GatedBackplane(LocalBackplane):
    """``open_reader`` waits for its gate, then fails or goes on, in the order the gates
    were queued."""

    def __init__(self) -> None:
        super().__init__(history_size=100, history_ttl=60.0)
        self.gates: list[tuple[gevent.event.Event, bool]] = []
        self.waiting = 0

    def open_reader(self, uid: Uid, client_id: str, transport: Transport, now: float,
                    positions: t.Mapping[str, Position] | None
                    ) -> tuple[Reader, bool | None]:
        if self.gates:
            gate, fail = self.gates.pop(0)
            self.waiting += 1
            gate.wait(TIMEOUT)
            self.waiting -= 1
            if fail:
                raise BackplaneError("Redis: Timeout reading (test)")
        return super().open_reader(uid, client_id, transport, now, positions)


def wait_until(pred: t.Callable[[], bool]) -> None:
    with gevent.Timeout(TIMEOUT, AssertionError("condition not met in time")):
        while not pred():
            gevent.sleep(0.01)


def test_a_refused_attempt_leaves_the_newer_connection_of_its_client_alone() -> None:
    """Shown to fail (no push reaches the second connection) by forgetting the client id
    on a refusal whatever connection the table holds for it."""
    backplane = GatedBackplane()
    first_gate, second_gate = gevent.event.Event(), gevent.event.Event()
    backplane.gates = [(first_gate, True), (second_gate, False)]
    with running(backplane=backplane) as h:
        # The 101 leaves with the first frame, after the reader is open: connect aside.
        first = gevent.spawn(h.ws, "c1", uid="ana", handshake=False)
        wait_until(lambda: backplane.waiting == 1)
        second = gevent.spawn(h.ws, "c1", uid="ana", handshake=False)
        wait_until(lambda: backplane.waiting == 2)
        try:
            first_gate.set()    # the older attempt fails first: 1013, retry later
            wait_until(lambda: backplane.waiting == 1)
            second_gate.set()   # then the newer one gets its reader
            ws = second.get(timeout=TIMEOUT)
            hello = h.recv(ws)
            assert hello[0][0] == "chsk/handshake", hello
            for n in range(3):
                h.sente.send("ana", ("t/news", n))
                batch = h.recv_until(ws, lambda m: isinstance(m[0][0], list))
                assert batch == [[["t/news", n]], None]
            assert h.sente.connected_uids.ws == {"ana"}
        finally:
            for attempt in (first, second):
                attempt.join(TIMEOUT)
                if attempt.successful():
                    attempt.value.close()
