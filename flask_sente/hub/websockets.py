"""The WebSocket side of the hub: serving one socket from its handshake to its end.

The request's greenlet reads; each message is classified (an event, a keep-alive, a topic
request, or bad input answered with a specific close code or notice) and handed to the
router, which may run the handler on this same greenlet (``hand_off`` moves the reading to
another one if the handler blocks). Replies go out after whatever the connection is owed —
the handler's pushes among it — so that a reply never overtakes them on the wire.
"""
from __future__ import annotations

import logging
import time
import typing as t

import gevent.event

from ..backplanes import Backplane
from ..config import Options
from ..connections import Limits, WsConnection
from ..core.delivery import Delivery, Reader
from ..core.presence import Uid
from ..exceptions import BackplaneError, ConnectionClosed, RemoteProtocolError
from ..messages import EventMsg, RequestInfo, WsReplier
from ..metrics import NoMetrics
from ..protocol import events as ev
from ..protocol.closecodes import (
    CLOSE_GOING_AWAY,
    CLOSE_KICKED,
    CLOSE_NORMAL,
    CLOSE_REPLACED,
    CLOSE_TOO_SLOW,
)
from ..protocol.packers import Packer
from ..protocol.session import Incoming, classify
from ..protocol.wire import DEFAULT_WIRE, ClientMessage, Positions, Wire, packer_of
from .events import SystemEvents
from .flushing import Flusher
from .loop import HubLoop
from .presence import PresenceService
from .table import ConnectionTable

if t.TYPE_CHECKING:  # pragma: no cover
    from ..router import Dispatch, HandOff
    from ..transports.base import WebSocket

logger = logging.getLogger("flask_sente")

#: Close codes of a client that closes its socket because it is leaving (``disconnect()``,
#: a page unloading) rather than being cut: its calls fail at once.
CLIENT_LEAVING = frozenset({CLOSE_NORMAL, CLOSE_GOING_AWAY})


class WebSockets:
    def __init__(self, loop: HubLoop, options: Options, packer: Packer, backplane: Backplane,
                 table: ConnectionTable, presence: PresenceService, flusher: Flusher,
                 events: SystemEvents, dispatch: Dispatch, metrics: NoMetrics,
                 settle: t.Callable[[], None] | None,
                 caught_up: t.Callable[[Reader], None] | None, *,
                 on_client_close: t.Callable[[Uid, str], None] | None = None) -> None:
        self.loop = loop
        #: Told when a client closes its socket itself (1000, 1001): it is leaving, not cut.
        self._on_client_close = on_client_close
        self._options = options
        self._packer = packer
        self._backplane = backplane
        self._delivery: Delivery = backplane.delivery
        self._table = table
        self._presence = presence
        self._flusher = flusher
        self._events = events
        self._dispatch = dispatch
        self._metrics = metrics
        self._settle = settle
        self._caught_up = caught_up
        self._limits = Limits(options.send_queue_size, options.send_queue_bytes,
                              options.write_timeout, metrics)

    def serve(self, ws: WebSocket, uid: Uid, client_id: str, request: RequestInfo,
              handshake_data: t.Any = None, *, grace: float | None = None,
              wire: Wire = DEFAULT_WIRE, positions: Positions | None = None) -> None:
        """Run one WebSocket until it closes; called on the request's greenlet (the reader).

        ``wire`` is the envelope the client speaks (its dialect and protocol version).
        A protocol-2 client coming back with ``positions`` is first replayed what it
        missed (or told it was not recovered), before anything new.
        ``grace`` overrides ``reconnect_grace_ws`` for this connection (the in-process test
        client uses 0 so that a test's disconnect shows up at once).
        """
        self.loop.serving_here()
        conn = WsConnection(ws, uid, client_id, request, spawn=self.loop.spawn,
                            limits=self._limits, wire=wire)
        old = self._table.register(conn)
        if isinstance(old, WsConnection):
            if old.reader is not None:
                self._backplane.close_reader(old.reader, time.monotonic())
            if old.open:
                old.close_now(CLOSE_REPLACED, "replaced by a newer connection")
        try:
            reader, recovered = self._backplane.open_reader(uid, client_id, "ws",
                                                            time.monotonic(), positions)
        except BackplaneError as exc:  # the 101 is out: say "later" with a close code
            logger.warning("refusing a WebSocket for now: %s", exc)
            self._presence.forget_connection(conn)
            self._metrics.closed_1013("backplane")
            conn.close_now(CLOSE_TOO_SLOW, "backplane unavailable, retry")
            return
        conn.reader = reader
        conn.offer(packer_of(wire, self._packer).pack(wire.handshake(
            uid, handshake_data, recovered=recovered,
            positions=self._delivery.positions_of(reader))))
        self._metrics.handshake("ws")
        if reader.owed():
            self._flusher.flush("ws")  # the replay goes out before anything pushed from now
        self._presence.attach(conn)
        grace = self._options.reconnect_grace_ws if grace is None else grace
        if not self._read_loop(conn, grace):
            # A handler run here blocked and the reading moved on: this greenlet (the
            # request's, whose return closes the socket) waits for the connection's end.
            assert conn.read_done is not None
            conn.read_done.wait()

    def _read_loop(self, conn: WsConnection, grace: float) -> bool:
        """Read messages until the socket closes, then end the connection (True).

        Handlers may run on this greenlet (the router's ``hand_off``): if one blocks, the
        reading moves to a new greenlet (which runs this same loop) and this one returns
        False once the handler has ended. Whichever greenlet reads when the socket closes
        ends the connection. Keep-alive is the sweeper's job: a read needs no timer of its
        own (one per message cost more than the event's own work)."""
        receive = conn.ws.receive
        on_message = self._on_message
        clock = time.monotonic
        moved = False

        def hand_off() -> None:  # from gevent's switch_out hook: never block here
            nonlocal moved
            moved = True
            if conn.read_done is None:
                conn.read_done = gevent.event.Event()
            self.loop.spawn(self._read_loop, conn, grace)

        try:
            while True:
                try:
                    data = receive()
                except ConnectionClosed as exc:
                    if (exc.code in CLIENT_LEAVING and not self.loop.closed
                            and self._on_client_close is not None):
                        self._on_client_close(conn.uid, conn.client_id)
                    return True
                if data is None:
                    continue
                conn.last_seen = clock()
                conn.pinged_at = None
                on_message(conn, data, hand_off)
                if moved:
                    return False
        finally:
            if not moved:
                self._ended(conn, grace)

    def _ended(self, conn: WsConnection, grace: float) -> None:
        """The socket closed: stop its writer, leave the logs, and start the grace window."""
        try:
            conn.stop_writer()
            if conn.reader is not None:
                self._backplane.close_reader(conn.reader, time.monotonic())
            if not self.loop.closed:
                self._presence.topics_end(conn, time.monotonic() + grace)
                self._presence.detach(conn, conn.conn_id, grace)
        finally:
            if conn.read_done is not None:
                conn.read_done.set()

    def _on_message(self, conn: WsConnection, data: str | bytes,
                    hand_off: HandOff | None = None) -> None:
        self._metrics.received("ws", len(data))
        try:
            msg = conn.wire.decode_client(packer_of(conn.wire, self._packer).unpack(data))
        except RemoteProtocolError as exc:
            self._events.bad_package(exc, conn.uid, conn.client_id, "ws", conn.request)
            conn.close_now(exc.close_code, str(exc)[:120])
            return
        kind, reason = classify(msg, "ws")
        if kind is Incoming.BAD:
            self._bad_event(conn, msg, t.cast(str, reason))
            return
        event, cb_id = t.cast(ev.Event, msg.event), msg.cb_id
        if kind is Incoming.PING:
            if cb_id is not None:
                conn.offer(packer_of(conn.wire, self._packer).pack(
                    conn.wire.reply("pong", cb_id)))
            self._dispatch(EventMsg(event, conn.uid, conn.client_id, "ws", conn.request))
            return
        replier = None
        if cb_id is not None:
            replier = WsReplier(packer_of(conn.wire, self._packer), conn, cb_id,
                                self._options.reply_timeout,
                                self._before_reply, self._metrics)
        self._dispatch(EventMsg(event, conn.uid, conn.client_id, "ws", conn.request, replier),
                       hand_off)

    def _bad_event(self, conn: WsConnection, msg: ClientMessage, reason: str) -> None:
        """Never dropped in silence: the app hears of it, and the sender is told — in the
        reply it asked for, or in a one-event push (docs/protocol.md §4)."""
        raw = msg.raw if msg.event is None else list(msg.event)
        self._events.bad_event(raw, reason, conn.uid, conn.client_id, "ws", conn.request)
        if msg.cb_id is not None:
            conn.offer(packer_of(conn.wire, self._packer).pack(
                conn.wire.failure(ev.ERROR, msg.cb_id, {"message": "bad event"})))
        else:
            notice = conn.wire.bad_event_notice(reason, raw)
            if notice is not None:
                conn.offer(packer_of(conn.wire, self._packer).pack(notice))

    def _before_reply(self, conn: WsConnection) -> None:
        """A reply is about to be offered to ``conn``: whatever is owed to that connection —
        its handler's pushes among it — is sent first, so that the reply never overtakes
        them on the wire (other connections keep their batching). With a shared backplane
        the pushes are first waited into the shared log and back into this process's
        mirror."""
        reader = conn.reader
        if self._settle is not None:
            self._settle()
            if reader is not None and self._caught_up is not None:
                self._caught_up(reader)
        if reader is not None and conn.open and reader.owed():
            self._flusher.flush_connection(conn, reader)

    def kicked(self, uid: Uid, reason: str, client_id: str | None = None) -> None:
        """``uid`` was kicked (or only its client ``client_id``): its sockets here close
        with 4001 after what they were owed (the caller flushed it), and their members go
        at once."""
        for conn in self._table.ws_of(uid):
            if client_id is not None and conn.client_id != client_id:
                continue
            conn.close(CLOSE_KICKED, reason)
            self._presence.remove(conn)
            self._presence.forget_connection(conn)  # unless the removal's report did

    def close_all(self, wait: float) -> None:
        """Stopping: every socket gets 1001 after what was queued for it (up to ``wait``)."""
        writers = []
        for conn in list(self._table.all_ws()):
            if conn.open:  # the close frame follows what is already queued
                conn.close(CLOSE_GOING_AWAY, "server shutting down")
                if conn.writer is not None:
                    writers.append(conn.writer)
        gevent.joinall(writers, timeout=wait)
