"""Testing tools: a real server on an ephemeral port.

``serve(app)`` runs the app on 127.0.0.1 with flask_sente's WebSocket handler (the same as
``flask_sente.run`` and the gunicorn worker use) and yields its base URL; on exit it closes
every channel socket, stops the server and joins its greenlets.
"""
from __future__ import annotations

import contextlib
import typing as t
import uuid

import gevent
import gevent.queue
from flask import Flask, Response
from flask import session as flask_session

from . import admission
from .exceptions import ConnectionClosed, JoinRefused, Rejected, ReplyError, ReplyTimeout
from .protocol import PROTOCOL_VERSION, calls, events, requested_version, wire
from .server import make_server
from .views import request_snapshot

if t.TYPE_CHECKING:  # pragma: no cover
    from .state import AppState


@contextlib.contextmanager
def serve(app: Flask, host: str = "127.0.0.1", port: int = 0) -> t.Iterator[str]:
    """Run ``app`` in this process (gevent) for the duration of the ``with`` block.

    ::

        with serve(app) as base_url:
            requests.get(base_url + "/chsk?client-id=x&handshake=1")
    """
    server = make_server(app, host=host, port=port)
    server.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        state: AppState | None = app.extensions.get("sente")
        if state is not None:
            state.restart()  # answer parked polls, close WebSockets with 1001
        server.stop(timeout=2)
        if state is not None:
            state.restart()  # whatever requests read during shutdown started


class _MemoryWebSocket:
    """A WebSocket made of two in-memory queues (the transport interface, no socket)."""

    def __init__(self) -> None:
        self.to_server: gevent.queue.Queue[t.Any] = gevent.queue.Queue()
        self.to_client: gevent.queue.Queue[t.Any] = gevent.queue.Queue()
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        if self.closed:
            raise ConnectionClosed(self.close_reason or "closed", self.close_code)
        try:
            item = self.to_server.get(timeout=timeout)
        except gevent.queue.Empty:
            return None
        if item is None:
            raise ConnectionClosed(self.close_reason or "closed", self.close_code)
        return t.cast("str | bytes", item)

    def send(self, message: str | bytes) -> None:
        if self.closed:
            raise ConnectionClosed(self.close_reason or "closed", self.close_code)
        self.to_client.put(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.close_code, self.close_reason = code, reason
            self.to_server.put(None)
            self.to_client.put(None)


class SenteTestClient:
    """An in-process channel-socket client for testing handlers: no sockets, no server.

    Every message goes through the app's real packer, hub, router, reply and push paths,
    as if it came over a WebSocket. The uid comes from the app's ``user_id`` hook, run in a
    test request context with the ``session`` you give (or pass ``uid`` directly). The
    ``authorize`` hook runs too; a refusal raises :class:`~flask_sente.exceptions.Rejected`.

    ::

        with sente.test_client(app, session={"uid": "alice"}) as client:
            assert client.call(("todo/add", {"text": "milk"}))["ok"]
            assert ("todo/added", ...) in client.received()

    It speaks the newest protocol (3; ``query_string={"protocol": "2"}`` for an older
    client) and answers the server's calls (``sente.call``) with
    the handlers given to :meth:`answer`, whenever it reads what the server sent: in
    :meth:`call`, :meth:`join` and :meth:`received` — a handler that calls the client while
    the test waits for its reply is answered. Position marks are not shown in
    :meth:`received`.
    """

    def __init__(self, app: Flask, *, uid: t.Any = None, session: dict[str, t.Any] | None = None,
                 client_id: str | None = None, query_string: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.client_id = client_id or uuid.uuid4().hex
        state = app.extensions["sente"]
        self._state = state
        self._packer = state.packer
        self._ws = _MemoryWebSocket()
        self._pushed: list[tuple[str, t.Any]] = []
        self._replies: dict[str, t.Any] = {}
        self._answers: dict[str, t.Callable[[t.Any], t.Any]] = {}
        self._cb_ids = iter(range(1, 1 << 62))
        query = {"client-id": self.client_id, **(query_string or {})}
        with app.test_request_context(state.options.url, query_string=query,
                                      headers=headers or {}):
            flask_session.update(session or {})
            if uid is not None:  # the test names the user: the user_id hook is not asked
                outcome: admission.Admitted | Response = (
                    admission.check_authorized(state, uid, self.client_id)
                    or admission.Admitted(uid, self.client_id))
            else:  # the same pipeline as the views; a test client is not a browser
                outcome = admission.admit(state, skip=admission.SKIPPABLE)
            if isinstance(outcome, Response):
                raise Rejected(outcome.status_code, outcome.get_data(as_text=True).strip())
            self.uid = outcome.uid
            info = request_snapshot()
            handshake_data = admission.handshake_data(state, self.uid, self.client_id)
        # The newest protocol, or the one a ``protocol`` query parameter names (a test of
        # how the app treats an older client).
        version = requested_version(query.get("protocol", str(PROTOCOL_VERSION)))
        if version is None:
            raise ValueError(f"protocol {query['protocol']!r} is not one this server speaks")
        self._greenlet = gevent.spawn(state.hub.serve_websocket, self._ws, self.uid,
                                      self.client_id, info, handshake_data, grace=0,
                                      version=version)
        self.handshake = self._next(timeout=5)

    # --- what a test does ---

    def send(self, event: tuple[str, t.Any]) -> None:
        """Send an event without asking for a reply."""
        self._ws.to_server.put(self._packer.pack(wire.client_event(
            events.validate_outgoing(event))))

    def call(self, event: tuple[str, t.Any], timeout: float = 5) -> t.Any:
        """Send an event and return the handler's reply.

        Raises :class:`~flask_sente.exceptions.ReplyTimeout` when the server answered with a
        timeout or nothing came within ``timeout``, :class:`~flask_sente.exceptions.ReplyError`
        when the handler failed.
        """
        return self._call(events.validate_outgoing(event), timeout)

    def _call_reserved(self, event: tuple[str, t.Any], timeout: float) -> t.Any:
        return self._call(events.validate_outgoing(event, allow_reserved=True), timeout)

    def _call(self, event: tuple[str, t.Any], timeout: float) -> t.Any:
        cb_id = f"t{next(self._cb_ids)}"
        self._ws.to_server.put(self._packer.pack(wire.client_event(event, cb_id)))
        late = ReplyTimeout(f"no reply to {event[0]!r} within {timeout:g} s")
        with gevent.Timeout(timeout, late):
            while cb_id not in self._replies:
                self._next(timeout=None)
        outcome, value = self._replies.pop(cb_id)
        if outcome == events.REPLY:
            return value
        if outcome == events.TIMEOUT:
            raise ReplyTimeout(f"the server timed out waiting for the reply to {event[0]!r}")
        raise ReplyError(f"the server answered {outcome}", value)

    def join(self, topic: str, data: t.Any = None, timeout: float = 5) -> t.Any:
        """Join ``topic`` through the app's ``on_join`` handlers; returns the join data.

        A topic's events then show in :meth:`received` as ``("chsk/topic", [topic,
        [event_id, data]])``. Raises :class:`~flask_sente.exceptions.JoinRefused` when
        refused.
        """
        reply = self._call_reserved((events.JOIN, {"topic": topic, "data": data}), timeout)
        if not reply.get("ok"):
            raise JoinRefused(str(reply.get("reason")))
        return reply.get("data")

    def leave(self, topic: str, timeout: float = 5) -> None:
        """Leave ``topic``."""
        self._call_reserved((events.LEAVE, {"topic": topic}), timeout)

    def answer(self, event_id: str, fn: t.Callable[[t.Any], t.Any]) -> None:
        """Answer the server's calls of ``event_id`` with ``fn(data)`` (what it raises is
        answered as an error: ``ClientCallError`` on the server). Calls of an id with no
        handler are answered "no handler"."""
        events.validate_outgoing((event_id,))
        self._answers[event_id] = fn

    def received(self, wait: float = 0.0) -> list[tuple[str, t.Any]]:
        """Events pushed to this client so far (and within ``wait`` seconds), then forget them.

        Pushes are batched (10 ms by default): after an action, pass a ``wait`` a little
        longer than ``send_buffer_ws``, or use ``flush=True`` in the code under test.
        """
        deadline = gevent.get_hub().loop.now() + wait
        while True:
            remaining = deadline - gevent.get_hub().loop.now()
            if self._next(timeout=max(remaining, 0.0) if wait else 0.0, block=bool(wait)) is None:
                break
        pushed, self._pushed = self._pushed, []
        return pushed

    def close(self) -> None:
        """Disconnect (as a closed tab) and wait until the server has noticed."""
        self._ws.close(1000, "test client closed")
        self._greenlet.join(timeout=5)

    def __enter__(self) -> SenteTestClient:
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.close()

    # --- internals ---

    def _answer(self, data: t.Any) -> None:
        request = calls.decode_request(data)
        handler = self._answers.get(request.event[0])
        if handler is None:
            answer = calls.answer_error(request.id, calls.NO_HANDLER,
                                        f"no answer handler for {request.event[0]!r}")
        else:
            try:
                answer = calls.answer_value(request.id, handler(request.event[1]))
            except Exception as exc:
                answer = calls.answer_error(request.id, calls.HANDLER_ERROR,
                                            str(exc) or type(exc).__name__)
        self._ws.to_server.put(self._packer.pack(wire.client_event((answer[0], answer[1]))))

    def _next(self, timeout: float | None, block: bool = True) -> t.Any:
        """Take one message from the server and file it; None if nothing came."""
        try:
            packed = self._ws.to_client.get(block=block, timeout=timeout)
        except gevent.queue.Empty:
            return None
        if packed is None:
            self._ws.to_client.put(None)  # stay closed for later calls
            return None
        msg = wire.decode_server(self._packer.unpack(packed))
        if msg.kind == "events":
            for event in msg.events:
                if event[0] == events.CALL:
                    self._answer(event[1])
                elif event[0] != events.POSITION:
                    self._pushed.append(event)
        elif msg.kind == "reply" and msg.cb_id is not None:
            self._replies[msg.cb_id] = (msg.outcome, msg.value)
        elif msg.kind == "handshake":
            return msg.value
        return msg
