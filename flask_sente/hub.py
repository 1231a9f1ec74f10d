"""The hub: one per app, the gevent shell around the sans-I/O core.

What is owed to whom (logs, readers, batches) and who is connected (presence, grace
windows) are decided by ``flask_sente.core`` behind a backplane
(``flask_sente.backplanes``). The hub feeds them — connections opening and closing, pushes,
the clock — and performs what they decide: it keeps the table of live connections, runs
the flush timers and the keep-alive sweep, packs batches (once per distinct batch, split so
no message exceeds ``max_message_size``), writes them, answers long-polls, and turns
presence changes into signals and ``chsk/uidport-*`` events. Every greenlet it starts is in
one group, killed by :meth:`Hub.close`. It never imports Flask: the extension hands it plain
:class:`RequestInfo` snapshots, and it hands events to a ``dispatch`` callable (the router).

Public methods that push (``send``, ``broadcast``, ``kick``, ``flush``) may be called from
any OS thread: off the hub's own thread they are handed to its event loop.
"""
from __future__ import annotations

import logging
import time
import typing as t

import gevent
import gevent.event
import gevent.pool

from . import signals
from .backplanes import Backplane, LocalBackplane
from .backplanes.base import request_scope
from .config import Options
from .connections import AjaxClient, Limits, WsConnection, thread_ident
from .core.delivery import GAP, Batch, Reader
from .core.packing import pack_batch
from .core.presence import TRANSPORTS, Change, ConnectedUids, Transport
from .exceptions import (
    BackplaneError,
    ConnectionClosed,
    LocalProtocolError,
    RemoteProtocolError,
)
from .longpoll import WAKE, LongPolls
from .messages import EventMsg, RequestInfo, WsReplier
from .metrics import NO_METRICS, NoMetrics
from .protocol import events as ev
from .protocol import wire
from .protocol.packers import Packer
from .topics import Topics

if t.TYPE_CHECKING:  # pragma: no cover
    from .router import Dispatch, HandOff
    from .transports.base import WebSocket

logger = logging.getLogger("flask_sente")

__all__ = ["ConnectedUids", "Hub"]
#: Seconds :meth:`Hub.close` waits for the sockets' queued messages and close frames.
CLOSE_WAIT = 3.0

#: Reserved ids a WebSocket client may send: keep-alive and topic requests.
_WS_SYSTEM_IDS = frozenset({ev.WS_PING, ev.WS_PONG, *ev.TOPIC_REQUESTS})

#: Seconds past its due time after which a pusher that has not yielded does the flush
#: itself (see :meth:`Hub.logs_appended`): short enough that a burst to a thousand users
#: leaves in slices, long enough that a handler's handful of pushes still shares a frame.
OVERDUE_FLUSH = 0.001

#: How often idle logs and history past ``history_ttl`` are dropped.
HOUSEKEEPING_INTERVAL = 5.0
#: Seconds before topic grants are renewed again after a renewal failed.
GRANT_RETRY = 60.0


class Hub(LongPolls, Topics):
    """The server state of one app. See the module docstring."""

    def __init__(
        self,
        options: Options,
        packer: Packer,
        dispatch: Dispatch,
        *,
        signal_sender: t.Any = None,
        wants: t.Callable[[str], bool] | None = None,
        backplane: Backplane | None = None,
        metrics: NoMetrics = NO_METRICS,
    ) -> None:
        self.options = options
        #: Where what happens is counted (a no-op unless the ``metrics`` option is on).
        self.metrics = metrics
        self.packer = packer
        self._dispatch = dispatch
        #: Whether an event id would reach anybody (the router's ``wants``): system events
        #: nobody wants are not dispatched at all — each would cost a greenlet.
        self._wants = wants
        self._sender = signal_sender
        self._group = gevent.pool.Group()
        self.backplane: Backplane = backplane or LocalBackplane(
            history_size=options.history_size, history_ttl=options.history_ttl)
        self._delivery = self.backplane.delivery
        shared = self.backplane.shared
        #: Waits until this process's pushes are in the shared log (shared backplanes only).
        self._settle: t.Callable[[], None] | None = self.backplane.settled if shared else None
        #: Serves one request so that its pushes are in the shared log before its response
        #: leaves (shared backplanes only; see ``backplanes.base.request_scope``).
        self.request_scope: t.Callable[[], t.ContextManager[None]] | None = (
            request_scope if shared else None)
        #: Waits until this process's own pushes are back in its mirror of a reader's logs.
        self._caught_up: t.Callable[[Reader], None] | None = (
            self.backplane.caught_up if shared else None)
        #: Live connection objects: transport -> uid -> client_id -> connection.
        self._conns: dict[Transport, dict[t.Any, dict[str, t.Any]]] = {"ws": {}, "ajax": {}}
        self._windows: dict[Transport, float] = {
            "ws": options.send_buffer_ws, "ajax": options.send_buffer_ajax,
        }
        self._flush_timers: dict[Transport, t.Any] = {"ws": None, "ajax": None}
        #: ``time.monotonic()`` of each transport's last flush (a quiet transport flushes at
        #: once), and when its pending timer is due. Real time, not the loop's cached time:
        #: a pusher that does not yield leaves the loop's clock behind.
        self._last_flush: dict[Transport, float] = {"ws": float("-inf"), "ajax": float("-inf")}
        self._flush_due: dict[Transport, float] = {"ws": 0.0, "ajax": 0.0}
        self._limits = Limits(options.send_queue_size, options.send_queue_bytes,
                              options.write_timeout, metrics)
        self._kicked: dict[str, str | bytes] = {}
        #: Ajax clients by client id that were given a fast-path key (``fastpath``).
        self._keyed: dict[str, AjaxClient] = {}
        self._lp_timeout_packed = packer.pack(wire.LP_TIMEOUT)
        self._ack_packed = packer.pack(wire.ACK)
        self._ping_packed = packer.pack(wire.PING)
        self._sweeper: t.Any = None
        self._next_grant_refresh: float | None = None
        self._expiry_timer: t.Any = None
        self._expiry_at: float | None = None
        self._loop = gevent.get_hub().loop
        self._thread = thread_ident()
        self.closed = False
        #: Set by :meth:`drain`: the answer to every poll from then on.
        self._going_away_packed: str | bytes | None = None
        self.backplane.start(self)

    # --- lifecycle -----------------------------------------------------------------------

    def spawn(self, fn: t.Callable[..., t.Any], *args: t.Any) -> gevent.Greenlet:
        return self._group.spawn(fn, *args)

    def close(self) -> None:
        """Stop: pushes made so far go out, parked polls are told to reconnect (``drain``),
        every WebSocket is closed with 1001 after what was queued for it (waiting up to
        ``CLOSE_WAIT``), then every greenlet is stopped."""
        if self.closed:
            return
        self.flush()
        self.drain()
        self.closed = True
        for timer in (self._sweeper, self._expiry_timer, *self._flush_timers.values()):
            if timer is not None:
                timer.close()
        self._sweeper = self._expiry_timer = None
        self._flush_timers = {"ws": None, "ajax": None}
        writers = []
        for clients in self._conns["ws"].values():
            for conn in list(clients.values()):
                if conn.open:  # the close frame follows what is already queued
                    conn.close(wire.CLOSE_GOING_AWAY, "server shutting down")
                    if conn.writer is not None:
                        writers.append(conn.writer)
        gevent.joinall(writers, timeout=CLOSE_WAIT)
        self.backplane.close()
        gevent.sleep(0)
        self._group.kill(block=True, timeout=5)

    def drain(self) -> None:
        """Stopping: answer every parked poll, and every poll from now on, with close 1001
        (the Ajax equivalent: "server going away, reconnect")."""
        if self._going_away_packed is None:
            self._going_away_packed = self.packer.pack(
                wire.close(wire.CLOSE_GOING_AWAY, "server shutting down"))
        for clients in self._conns["ajax"].values():
            for client in clients.values():
                if client.parked is not None:
                    client.parked.set(self._going_away_packed)

    def _on_hub_thread(self) -> bool:
        return thread_ident() == self._thread

    def _threadsafe(self, fn: t.Callable[..., t.Any], *args: t.Any) -> None:
        """Run ``fn(*args)`` in a greenlet of the hub's loop (calls from one thread keep
        their order: the loop runs callbacks, and greenlets start, first in first out)."""
        self._loop.run_callback_threadsafe(self.spawn, fn, *args)

    # --- presence ------------------------------------------------------------------------

    @property
    def connected_uids(self) -> ConnectedUids:
        return self.backplane.connected_uids

    def clients_of(self, uid: t.Any) -> dict[str, list[str]]:
        """Client ids of a user by transport (tabs and devices), e.g. for a presence panel."""
        return self.backplane.clients_of(uid)

    def presence_changed(self, changes: list[Change]) -> None:
        """Backplane listener: tell the app, in order; drop connections that left."""
        for change in changes:
            uid = change.uid
            if change.kind == "user-online":
                signals.user_connected.send(self._sender, uid=uid)
                self._system_event(ev.UIDPORT_OPEN, uid)
            elif change.kind == "user-offline":
                signals.user_disconnected.send(self._sender, uid=uid)
                self._system_event(ev.UIDPORT_CLOSE, uid)
            elif change.kind == "client-joined":
                signals.client_connected.send(self._sender, uid=uid, client_id=change.client_id,
                                              transport=change.transport)
            else:
                transport = t.cast(Transport, change.transport)
                self._forget(transport, uid, t.cast(str, change.client_id))
                signals.client_disconnected.send(self._sender, uid=uid,
                                                 client_id=change.client_id,
                                                 transport=transport)

    def connections(self, transport: Transport) -> list[t.Any]:
        """The connections (WebSocket) or clients (Ajax) of this process on ``transport``,
        those within their reconnect grace included (sampled by metrics)."""
        return [conn for clients in self._conns[transport].values() for conn in clients.values()]

    @property
    def draining(self) -> bool:
        """True once the server began stopping (:meth:`drain`): no new work is taken."""
        return self._going_away_packed is not None or self.closed

    @property
    def healthy(self) -> bool:
        """False while a shared backplane cannot be reached (always True in memory)."""
        return self.backplane.healthy

    def backplane_state(self, healthy: bool) -> None:
        """Backplane listener: Redis went away or came back."""
        (signals.backplane_up if healthy else signals.backplane_down).send(self._sender)

    def _attach(self, conn: t.Any) -> None:
        try:
            self.backplane.attach(conn.uid, conn.transport, conn.client_id, conn.conn_id)
        except BackplaneError as exc:  # served all the same; presence catches up later
            logger.warning("presence not recorded for uid=%r: %s", conn.uid, exc)

    def _detach(self, conn: t.Any, conn_id: int, grace: float) -> None:
        """Connection (or Ajax poll) ``conn_id`` ended: its member leaves after ``grace``
        unless a newer one is there by then (the id is the one it attached with, not the
        client's current one: a poll superseded by a newer one must not end that one)."""
        now = time.monotonic()
        try:
            self.backplane.detach(conn.uid, conn.transport, conn.client_id, conn_id,
                                  now + grace)
        except BackplaneError as exc:
            logger.warning("presence not updated for uid=%r: %s", conn.uid, exc)
        if grace <= 0:
            self._expire()
        else:
            self._arm_expiry()

    def _arm_expiry(self) -> None:
        """Keep the one expiry timer at the backplane's next deadline."""
        deadline = self.backplane.next_deadline()
        if deadline is None or self.closed or (
                self._expiry_at is not None and self._expiry_at <= deadline):
            return
        if self._expiry_timer is not None:
            self._expiry_timer.close()
        self._expiry_at = deadline
        self._expiry_timer = self._loop.timer(max(0.0, deadline - time.monotonic()))
        self._expiry_timer.start(self._expiry_due)

    def _expiry_due(self) -> None:
        self._expiry_timer = self._expiry_at = None
        if not self.closed:  # signal receivers may block: run them in a greenlet
            self.spawn(self._expire)

    def _expire(self) -> None:
        try:
            self.backplane.expire(time.monotonic())
        except BackplaneError as exc:  # local deadlines are reported; the cluster's wait
            logger.warning("grace windows not ended in the backplane now: %s", exc)
        self._arm_expiry()

    def _forget(self, transport: Transport, uid: t.Any, client_id: str) -> None:
        clients = self._conns[transport].get(uid)
        conn = clients.pop(client_id, None) if clients else None
        if conn is None:
            return
        self._unkey(client_id, conn)
        if not clients:
            del self._conns[transport][uid]
        if conn.reader is not None:
            now = time.monotonic()
            if transport == "ajax":
                self._topics_end(conn, now)
            self.backplane.close_reader(conn.reader, now)
        self.backplane.drop_grants(uid, client_id)

    def _system_event(self, event_id: str, data: t.Any, uid: t.Any = None,
                      client_id: str | None = None, transport: str | None = None,
                      request: RequestInfo | None = None) -> None:
        if self.closed or (self._wants is not None and not self._wants(event_id)):
            return
        msg = EventMsg((event_id, data), data if uid is None else uid, client_id, transport,
                       request)
        self.spawn(self._dispatch, msg)

    def _register(self, conn: t.Any) -> t.Any:
        """Put ``conn`` in the table; returns the connection it replaced (or None)."""
        self.metrics.watch(self)
        if self._sweeper is None:  # keep-alive, history expiry, grant refresh
            self._start_sweeper()
        clients = self._conns[conn.transport].setdefault(conn.uid, {})
        old = clients.get(conn.client_id)
        clients[conn.client_id] = conn
        if old is not None:
            self._unkey(conn.client_id, old)  # its key stood for the connection replaced
        return old

    def _unkey(self, client_id: str, conn: object) -> None:
        """Forget the fast-path key of ``conn`` (when it has the one of its client id)."""
        if self._keyed.get(client_id) is conn:
            del self._keyed[client_id]

    # --- WebSocket -----------------------------------------------------------------------

    def serve_websocket(self, ws: WebSocket, uid: t.Any, client_id: str,
                        request: RequestInfo, handshake_data: t.Any = None, *,
                        grace: float | None = None, version: int = 1,
                        positions: wire.Positions | None = None) -> None:
        """Run one WebSocket until it closes; called on the request's greenlet (the reader).

        A protocol-2 client coming back with ``positions`` is first replayed what it
        missed (or told it was not recovered), before anything new.
        ``grace`` overrides ``reconnect_grace_ws`` for this connection (the in-process test
        client uses 0 so that a test's disconnect shows up at once).
        """
        self._thread = thread_ident()
        conn = WsConnection(ws, uid, client_id, request, spawn=self.spawn, limits=self._limits,
                            version=version)
        old = self._register(conn)
        if old is not None:
            if old.reader is not None:
                self.backplane.close_reader(old.reader, time.monotonic())
            if old.open:
                old.close_now(wire.CLOSE_REPLACED, "replaced by a newer connection")
        try:
            reader, recovered = self.backplane.open_reader(uid, client_id, "ws",
                                                           time.monotonic(), positions)
        except BackplaneError as exc:  # the 101 is out: say "later" with a close code
            logger.warning("refusing a WebSocket for now: %s", exc)
            self._forget("ws", uid, client_id)
            self.metrics.closed_1013("backplane")
            conn.close_now(wire.CLOSE_TOO_SLOW, "backplane unavailable, retry")
            return
        conn.reader = reader
        conn.offer(self.packer.pack(wire.handshake(
            uid, handshake_data, version=version, recovered=recovered,
            positions=self._delivery.positions_of(reader))))
        self.metrics.handshake("ws")
        if reader.owed():
            self._flush("ws")  # the replay goes out before anything pushed from now on
        self._attach(conn)
        grace = self.options.reconnect_grace_ws if grace is None else grace
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
        on_message = self._on_ws_message
        clock = time.monotonic
        moved = False

        def hand_off() -> None:  # from gevent's switch_out hook: never block here
            nonlocal moved
            moved = True
            if conn.read_done is None:
                conn.read_done = gevent.event.Event()
            self.spawn(self._read_loop, conn, grace)

        try:
            while True:
                try:
                    data = receive()
                except ConnectionClosed:
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
                self._ws_ended(conn, grace)

    def _ws_ended(self, conn: WsConnection, grace: float) -> None:
        """The socket closed: stop its writer, leave the logs, and start the grace window."""
        try:
            conn.stop_writer()
            if conn.reader is not None:
                self.backplane.close_reader(conn.reader, time.monotonic())
            if not self.closed:
                self._topics_end(conn, time.monotonic() + grace)
                self._detach(conn, conn.conn_id, grace)
        finally:
            if conn.read_done is not None:
                conn.read_done.set()

    def _start_sweeper(self) -> None:
        """One periodic timer per hub, started with the first client: it checks every
        WebSocket's keep-alive (ping one silent for ``ws_keepalive``, close one that then
        stays silent ``ws_ping_timeout`` with 4002), every few seconds drops history past
        ``history_ttl``, and keeps the topic grants of the clients held here from expiring
        in a shared backplane. It runs every quarter of the shorter keep-alive interval, at
        most every second."""
        if self.closed:
            return
        keepalive = self.options.ws_keepalive
        ping_timeout = self.options.ws_ping_timeout
        interval = min(1.0, (keepalive or 4.0) / 4, (ping_timeout or keepalive or 4.0) / 4)
        timer = self._loop.timer(interval, interval, ref=False)
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        ttl = self.backplane.grants_ttl
        self._next_grant_refresh = None if ttl is None else time.monotonic() + ttl / 4
        timer.start(self._sweep)
        self._sweeper = timer

    def _sweep(self) -> None:
        """Runs in the event loop: it must not block (it only offers and spawns)."""
        try:
            now = time.monotonic()
            if now >= self._next_housekeeping:
                self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
                self._delivery.expire(now)
            refresh_at = self._next_grant_refresh
            if refresh_at is not None and now >= refresh_at:
                self._next_grant_refresh = now + t.cast(float, self.backplane.grants_ttl) / 4
                self.spawn(self._refresh_grants)
            keepalive = self.options.ws_keepalive
            if keepalive is None:
                return
            ping_timeout = self.options.ws_ping_timeout
            for clients in self._conns["ws"].values():
                for conn in clients.values():
                    if not conn.open:
                        continue
                    if conn.pinged_at is None:
                        if now - conn.last_seen >= keepalive:
                            conn.pinged_at = now
                            conn.offer(self._ping_packed)
                    elif ping_timeout is None:
                        if now - conn.pinged_at >= keepalive:  # no timeout: keep pinging
                            conn.pinged_at = now
                            conn.offer(self._ping_packed)
                    elif now - conn.pinged_at >= ping_timeout:
                        logger.info("closing a silent WebSocket (uid=%r, client_id=%r)",
                                    conn.uid, conn.client_id)
                        conn.open = False
                        self.metrics.keepalive_closed()
                        self.spawn(conn.close_now, wire.CLOSE_PING_TIMEOUT, "ping timeout")
        except Exception:  # runs in the event loop: never let it raise there
            logger.exception("keep-alive sweep failed")

    def _refresh_grants(self) -> None:
        """Renew the grants of every client held here that reads a topic: a grant lasts
        ``grants_ttl`` after the last join, and a client connected longer than that (an
        Ajax client polling one process for days) must still find it when its next request
        reaches a process that never saw the join."""
        held = [(conn.uid, conn.client_id) for transport in self._conns.values()
                for clients in transport.values() for conn in clients.values()
                if conn.reader is not None and self._delivery.topics_of(conn.reader)]
        if not held:
            return
        try:
            self.backplane.refresh_grants(held)
        except BackplaneError as exc:
            retry = min(GRANT_RETRY, t.cast(float, self.backplane.grants_ttl) / 4)
            self._next_grant_refresh = time.monotonic() + retry
            logger.warning("could not renew topic grants (next try in %g s): %s", retry, exc)

    def _on_ws_message(self, conn: WsConnection, data: str | bytes,
                       hand_off: HandOff | None = None) -> None:
        self.metrics.received("ws", len(data))
        try:
            msg = wire.decode_client(self.packer.unpack(data))
        except RemoteProtocolError as exc:
            self._bad_package(exc, conn.uid, conn.client_id, "ws", conn.request)
            conn.close_now(exc.close_code, str(exc)[:120])
            return
        event, cb_id = msg.event, msg.cb_id
        if event is None or (ev.is_reserved(event[0]) and event[0] not in _WS_SYSTEM_IDS):
            self._bad_event(msg.raw if event is None else list(event), msg.bad_reason or
                            "reserved-id", conn.uid, conn.client_id, "ws", conn.request)
            if cb_id is not None:
                conn.offer(self.packer.pack(
                    wire.failure(ev.ERROR, cb_id, {"message": "bad event"})))
            else:  # no reply to carry the refusal: tell the sender with a one-event push
                conn.offer(self.packer.pack(wire.bad_event_notice(
                    msg.bad_reason or "reserved-id", msg.raw if event is None else list(event))))
            return
        if event[0] == ev.WS_PING:
            if cb_id is not None:
                conn.offer(self.packer.pack(wire.reply("pong", cb_id)))
            self._dispatch(EventMsg(event, conn.uid, conn.client_id, "ws", conn.request))
            return
        replier = None
        if cb_id is not None:
            replier = WsReplier(self.packer, conn, cb_id, self.options.reply_timeout,
                                self._before_ws_reply, self.metrics)
        self._dispatch(EventMsg(event, conn.uid, conn.client_id, "ws", conn.request, replier),
                       hand_off)

    def _before_ws_reply(self, conn: WsConnection) -> None:
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
            self._flush_connection(conn, reader)

    def _flush_connection(self, conn: WsConnection, reader: Reader) -> None:
        """Send one connection's batch now (the others wait for their flush)."""
        batch = self._delivery.collect_reader(reader, time.monotonic())
        if batch is GAP:
            self._delivery.skip_to_head(reader)
            self.metrics.closed_1013("history-gap")
            conn.close(wire.CLOSE_TOO_SLOW, "client too slow")
        elif isinstance(batch, Batch):
            messages = pack_batch(self.packer, batch, conn.version,
                                  self.options.max_message_size)
            for packed in messages:
                conn.offer(packed)
            self.metrics.pushed("ws", batch, messages)

    def _bad_package(self, exc: RemoteProtocolError, uid: t.Any, client_id: str | None,
                     transport: str, request: RequestInfo | None) -> None:
        logger.info("bad package from uid=%r client_id=%r: %s", uid, client_id, exc)
        self._system_event(ev.BAD_PACKAGE, {"reason": str(exc)}, uid, client_id, transport,
                           request)

    def _bad_event(self, raw: t.Any, reason: str, uid: t.Any, client_id: str | None,
                   transport: str, request: RequestInfo | None) -> None:
        logger.info("bad event from uid=%r client_id=%r (%s): %.200r", uid, client_id, reason,
                    raw)
        self._system_event(ev.BAD_EVENT, {"event": raw, "reason": reason}, uid, client_id,
                           transport, request)

    # --- push ----------------------------------------------------------------------------

    def send(self, uid: t.Any, event: t.Any, *, client_id: str | None = None,
             flush: bool = False) -> None:
        """Push ``event`` to every client of ``uid`` (or one, with ``client_id``)."""
        if uid is None:
            raise LocalProtocolError(
                "cannot send to uid None; anonymous users share the uid "
                "flask_sente.ANONYMOUS_UID, send to that instead"
            )
        wire_event = ev.to_wire(ev.validate_outgoing(event))
        if not self._on_hub_thread():
            self._threadsafe(self._push, uid, wire_event, client_id, flush)
            return
        self._push(uid, wire_event, client_id, flush)

    def _push(self, uid: t.Any, wire_event: t.Any, client_id: str | None,
              flush: bool) -> None:
        self.backplane.push(uid, wire_event, client_id, time.monotonic())
        if flush:
            self.flush()

    def broadcast(self, event: t.Any, *, flush: bool = False) -> None:
        """Push ``event`` to every connected client of every user (packed once)."""
        wire_event = ev.to_wire(ev.validate_outgoing(event))
        if not self._on_hub_thread():
            self._threadsafe(self._broadcast, wire_event, flush)
            return
        self._broadcast(wire_event, flush)

    def _broadcast(self, wire_event: t.Any, flush: bool) -> None:
        self.backplane.broadcast(wire_event, time.monotonic())
        if flush:
            self.flush()

    def logs_appended(self, transports: tuple[Transport, ...]) -> None:
        """Backplane listener: schedule the flush of these transports.

        WebSocket batching is per connection: a push leaves as soon as the pusher yields
        (every push made until then shares its frames), unless its connection was written
        less than a window (``send_buffer_ws``) ago — then it waits for the rest of that
        window. So a busy connection gets one batch per window, and a burst to a thousand
        users is not held back by any of them. Ajax polls are woken at most once per
        ``send_buffer_ajax`` (each answer costs the client a new poll).

        A pusher that does not yield (a loop over a thousand users) would hold the timer
        back until it ends, and every push would wait for the whole loop: a push that finds
        its transport's flush overdue by :data:`OVERDUE_FLUSH` does the flush itself, so a
        long burst leaves in slices as it is made.
        """
        if self.closed:
            return
        timers = self._flush_timers
        now = time.monotonic()
        for transport in transports:
            if timers[transport] is None:
                due = now if transport == "ws" else max(
                    now, self._last_flush[transport] + self._windows[transport])
                self._schedule_flush(transport, due, now)
            elif now - self._flush_due[transport] >= OVERDUE_FLUSH:
                self._flush(transport)

    def _schedule_flush(self, transport: Transport, due: float, now: float) -> None:
        self._flush_due[transport] = due
        timer = self._flush_timers[transport] = self._loop.timer(max(0.0, due - now))
        timer.start(self._flush_from_timer, transport, update=True)

    def _flush_from_timer(self, transport: Transport) -> None:
        try:
            self._flush(transport)
        except Exception:  # runs in the event loop: never let it raise there
            logger.exception("flushing %s pushes failed", transport)

    def flush(self) -> None:
        """Send everything buffered now, in order (what ``flush=True`` does)."""
        if not self._on_hub_thread():
            self._threadsafe(self.flush)
            return
        for transport in TRANSPORTS:
            self._flush(transport, everything=True)

    def _flush(self, transport: Transport, everything: bool = False) -> None:
        """Send what is due: every connection's batch, except (WebSocket) those written
        less than a window ago, which get a timer; ``everything``: those too."""
        timer = self._flush_timers[transport]
        if timer is not None:
            timer.close()
            self._flush_timers[transport] = None
        now = self._last_flush[transport] = time.monotonic()
        window = 0.0 if everything or transport != "ws" else self._windows["ws"]
        batches, gapped, woken, later = self._delivery.collect_due(transport, now, window)
        if later is not None and not self.closed:
            self._schedule_flush(transport, later, now)
        table = self._conns["ws"]
        pushed = self.metrics.pushed
        for batch in batches:
            by_version: dict[int, list[str | bytes]] = {}
            for reader in batch.readers:
                conn = table.get(reader.uid, {}).get(reader.client_id)
                if conn is None or conn.reader is not reader:
                    continue
                messages = by_version.get(conn.version)
                if messages is None:
                    messages = by_version[conn.version] = pack_batch(
                        self.packer, batch, conn.version, self.options.max_message_size)
                for packed in messages:
                    conn.offer(packed)
                pushed("ws", batch, messages)
        for reader in gapped:  # cannot happen while WebSocket readers are collected often
            self._delivery.skip_to_head(reader)
            conn = self._conns["ws"].get(reader.uid, {}).get(reader.client_id)
            if conn is not None and conn.open:
                self.metrics.closed_1013("history-gap")
                conn.close(wire.CLOSE_TOO_SLOW, "client too slow")
        for reader in woken:
            client = self._conns["ajax"].get(reader.uid, {}).get(reader.client_id)
            if client is not None and client.parked is not None:
                client.parked.set(WAKE)

    # --- kick ----------------------------------------------------------------------------

    def kick(self, uid: t.Any, reason: str = "kicked") -> None:
        """Close every connection of ``uid``; the clients are told not to reconnect.

        The kick is a record in the user's log, after every earlier push: a WebSocket gets
        those pushes and then the 4001 close, a poller gets them on its next poll and then
        the close.
        """
        if not self._on_hub_thread():
            self._threadsafe(self.kick, uid, reason)
            return
        self.backplane.kick(uid, reason, time.monotonic())

    def kicked(self, uid: t.Any, reason: str) -> None:
        """Backplane listener: ``uid`` was kicked; close its connections here."""
        self._flush("ws", everything=True)  # the pushes before the kick go out first
        for client_id, conn in list(self._conns["ws"].get(uid, {}).items()):
            conn.close(wire.CLOSE_KICKED, reason)
            self.backplane.remove(uid, "ws", client_id)
            self._forget("ws", uid, client_id)
        packed = self.packer.pack(wire.close(wire.CLOSE_KICKED, reason))
        for client_id, client in list(self._conns["ajax"].get(uid, {}).items()):
            if client.parked is not None:
                client.parked.set(packed)
            else:
                self._kicked[client_id] = packed
                timer = self._loop.timer(self.options.reconnect_grace_ajax)
                timer.start(self._kicked.pop, client_id, None)
            self.backplane.remove(uid, "ajax", client_id)
            self._forget("ajax", uid, client_id)
