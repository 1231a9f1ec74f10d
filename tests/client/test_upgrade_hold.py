"""Auto mode moving up from Ajax to WebSocket delivers each push once (issue 24 #8,
docs/protocol.md §10, last paragraph).

The upgrade's WebSocket asks the server to replay from the positions the client had when
it was opened. A poll answered while the upgrade is under way must not be processed
meanwhile: the WebSocket replays it, in batches that can overlap it (the client can only
drop a repeat whole). The client holds that answer until the WebSocket's handshake (then
drops it) or its failure (then processes it), and makes no new poll in between.

The test drives the race on real sockets: a middleware holds the upgrade request (its URL
already carries the positions) while a push answers the parked poll and a second push
waits in the log; then the upgrade goes on, and the server replays both in one batch.

Before the fix (``AjaxLink`` processing the answer at once) the first push reached the app
twice; at the positions level, the WebSocket's handshake moved the client back in its
user's log (to where the upgrade started), and the replay gave the first push again.
"""
from __future__ import annotations

import itertools
import threading
import typing as t

from flask_sente.client import Client

from .conftest import TIMEOUT, Server, wait_until


class Gate:
    """WSGI middleware in front of the app. WebSocket upgrades: refused (``ws ==
    "refuse"``), let through (``"pass"``), or held until :attr:`release_ws` is set and then
    let through (``"hold"``) or refused (``"hold-then-refuse"``). With ``hold_polls``,
    Ajax GETs are held and answered 504 at :attr:`release_polls`, never reaching the app."""

    def __init__(self, app: t.Any) -> None:
        self.app = app
        self.ws = "refuse"
        self.hold_polls = False
        self.ws_held = threading.Event()
        self.release_ws = threading.Event()
        self.release_polls = threading.Event()
        self.polls_held = 0

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            if self.ws.startswith("hold"):
                self.ws_held.set()
                self.release_ws.wait(TIMEOUT)
            if self.ws in ("refuse", "hold-then-refuse"):
                start_response("400 Bad Request", [("Content-Type", "text/plain")])
                return [b"no upgrades"]
        elif environ["REQUEST_METHOD"] == "GET" and self.hold_polls:
            self.polls_held += 1
            self.release_polls.wait(TIMEOUT)
            start_response("504 Gateway Timeout", [("Content-Type", "text/plain")])
            return [b"held by the test"]
        return self.app(environ, start_response)


class PositionSpy:
    """Records where the client stands in its user's log after each batch and handshake
    it processes (:attr:`trail`), and for each batch how far it moved that log and how many
    of its events reached the app (:attr:`steps`: equal for every batch here, since every
    push is for this client, unless a batch repeats what the client had)."""

    def __init__(self, chsk: Client) -> None:
        self.steps: list[tuple[int, int]] = []
        self.trail: list[tuple[str, int]] = []
        positions = chsk._endpoint.positions
        batch, handshake = positions.batch, positions.handshake

        def spy_batch(events: list[tuple[str, t.Any]]) -> list[tuple[str, t.Any]]:
            before = positions.current.get("u")
            out = batch(events)
            after = positions.current.get("u")
            if before is not None and after is not None and after != before:
                self.steps.append((after[1] - before[1], len(out)))
                self.trail.append(after)
            return out

        def spy_handshake(info: t.Mapping[str, t.Any]) -> tuple[bool | None, bool]:
            out = handshake(info)
            self.trail.append(positions.current["u"])
            return out

        positions.batch = spy_batch  # type: ignore[method-assign]
        positions.handshake = spy_handshake  # type: ignore[method-assign]

    def check(self) -> None:
        """No position went back within its epoch; no batch gave more than it moved."""
        for (epoch, seq), (next_epoch, next_seq) in itertools.pairwise(self.trail):
            assert epoch != next_epoch or next_seq >= seq, self.trail
        assert all(moved == events for moved, events in self.steps), self.steps


def _on_ajax(make_client: t.Callable[..., Client], server: Server
             ) -> tuple[Client, list[str], PositionSpy]:
    chsk = make_client(server.url, type="auto", upgrade_retry=0.2, connect_timeout=5.0,
                       connect=False)
    got: list[str] = []
    chsk.on("t/ev", got.append)
    spy = PositionSpy(chsk)
    chsk.connect()
    wait_until(lambda: chsk.state.open and chsk.state.type == "ajax", message="open over Ajax")
    return chsk, got, spy


def _settle(gate: Gate) -> None:
    """A client without the hold takes a poll's answer within milliseconds and polls again;
    one with the hold keeps it: give either the time to do what it does (a bounded wait,
    not an assertion)."""
    try:
        wait_until(lambda: gate.polls_held, timeout=1.0)
    except AssertionError:
        pass


def test_a_poll_answered_while_the_upgrade_opens_is_replayed_once(
        make_client: t.Callable[..., Client]) -> None:
    server = Server()
    gate = Gate(server.app.wsgi_app)
    server.app.wsgi_app = gate  # type: ignore[method-assign]
    try:
        with server.running():
            chsk, got, spy = _on_ajax(make_client, server)
            uid = chsk.state.uid
            gate.ws = "hold"
            assert gate.ws_held.wait(TIMEOUT)  # its URL carries the positions of now
            gate.hold_polls = True  # the poll parked now is the last to reach the app
            server.sente.send(uid, ("t/ev", "first"), flush=True)  # answers that poll
            _settle(gate)
            server.sente.send(uid, ("t/ev", "second"), flush=True)  # waits in the log
            gate.release_ws.set()  # the WebSocket opens and replays both, in one batch
            wait_until(lambda: chsk.state.type == "ws", message="moved up")
            wait_until(lambda: "second" in got, message="the second push")
            assert chsk.call(("t/echo", "sync"), timeout=TIMEOUT) == "sync"
            spy.check()
            assert got == ["first", "second"], got
            chsk.close()
    finally:
        gate.release_ws.set()
        gate.release_polls.set()


def test_a_poll_answered_while_the_upgrade_fails_is_processed_then(
        make_client: t.Callable[..., Client]) -> None:
    """Once the WebSocket failed, the held answer is processed and polling goes on, each
    push delivered once. (Broken on purpose by the upgrader not ending its trial after a
    failed attempt: the read loop stayed held and "first" never came.)"""
    server = Server()
    gate = Gate(server.app.wsgi_app)
    server.app.wsgi_app = gate  # type: ignore[method-assign]
    try:
        with server.running():
            chsk, got, spy = _on_ajax(make_client, server)
            uid = chsk.state.uid
            gate.ws = "hold-then-refuse"
            assert gate.ws_held.wait(TIMEOUT)
            server.sente.send(uid, ("t/ev", "first"), flush=True)
            _settle(gate)
            gate.release_ws.set()
            wait_until(lambda: "first" in got, message="the held answer")
            server.sente.send(uid, ("t/ev", "second"), flush=True)
            wait_until(lambda: "second" in got, message="the next poll")
            assert chsk.state.type == "ajax"
            assert got == ["first", "second"], got
            spy.check()
            chsk.close()
    finally:
        gate.release_ws.set()
        gate.release_polls.set()
