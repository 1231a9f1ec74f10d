"""The hub: one per app, the server side of every channel socket.

It owns the connection table (``transport -> uid -> client_id -> connection``), the
connected-uids sets, the push buffers and their flush timers, reply functions, and every
greenlet it starts (in one :class:`gevent.pool.Group`, killed by :meth:`Hub.close`). It
never imports Flask: the extension hands it plain :class:`RequestInfo` snapshots, and it
hands events to a ``dispatch`` callable (the router).

Delivery rules, per client:

* pushes keep their send order, ``flush=True`` or not: every push enters the same
  per-transport buffer with a sequence number, and a flush drains the whole buffer in order;
* a batch is packed once per distinct event list (once for a whole broadcast);
* a WebSocket message is written at once when the socket takes it without waiting, else
  queued in a bounded queue that a writer greenlet (started on demand) drains in order; a
  client that lets the queue fill up is closed with 1013 and reconnects;
* an Ajax client between two polls, or inside its grace window, keeps what was pushed to it
  (bounded the same way) and gets it with its next poll.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
import typing as t

import gevent
import gevent.event
import gevent.pool

from . import signals
from .config import Options
from .connections import (
    AjaxClient,
    EventMsg,
    RequestInfo,
    Transport,
    WsConnection,
    AjaxReplier,
    WsReplier,
    new_conn_id,
)
from .exceptions import ConnectionClosed, PackError, RemoteProtocolError
from .protocol import events as ev
from .protocol import wire
from .protocol.packers import Packer

if t.TYPE_CHECKING:  # pragma: no cover
    from .transports.base import WebSocket

logger = logging.getLogger("flask_sente")

TRANSPORTS: tuple[Transport, ...] = ("ws", "ajax")
#: Seconds :meth:`Hub.close` waits for the sockets' queued messages and close frames.
CLOSE_WAIT = 3.0


@dataclasses.dataclass(frozen=True)
class ConnectedUids:
    """Connected users by transport. ``any`` is the union of ``ws`` and ``ajax``."""

    ws: frozenset[t.Any] = frozenset()
    ajax: frozenset[t.Any] = frozenset()
    any: frozenset[t.Any] = frozenset()


class _Buffer:
    """Pending pushes of one transport until its next flush."""

    __slots__ = ("direct", "shared", "timer")

    def __init__(self) -> None:
        #: uid -> [(seq, wire_event, client_id or None)]
        self.direct: dict[t.Any, list[tuple[int, t.Any, str | None]]] = {}
        #: broadcasts: [(seq, wire_event, None)]
        self.shared: list[tuple[int, t.Any, str | None]] = []
        self.timer: t.Any = None


class Hub:
    """The server state of one app. See the module docstring for the delivery rules."""

    def __init__(
        self,
        options: Options,
        packer: Packer,
        dispatch: t.Callable[[EventMsg], None],
        *,
        signal_sender: t.Any = None,
        wants: t.Callable[[str], bool] | None = None,
    ) -> None:
        self.options = options
        self.packer = packer
        self._dispatch = dispatch
        #: Whether an event id would reach anybody (the router's ``wants``): system events
        #: nobody wants are not dispatched at all — each would cost a greenlet.
        self._wants = wants
        self._sender = signal_sender
        self._group = gevent.pool.Group()
        self._clients: dict[Transport, dict[t.Any, dict[str, t.Any]]] = {"ws": {}, "ajax": {}}
        self._in_ws: set[t.Any] = set()
        self._in_ajax: set[t.Any] = set()
        self._snapshot: ConnectedUids | None = ConnectedUids()
        self._buffers: dict[Transport, _Buffer] = {"ws": _Buffer(), "ajax": _Buffer()}
        self._windows: dict[Transport, float] = {
            "ws": options.send_buffer_ws, "ajax": options.send_buffer_ajax,
        }
        self._seq = itertools.count()
        self._kicked: dict[str, str | bytes] = {}
        self._lp_timeout_packed = packer.pack(wire.LP_TIMEOUT)
        self._ack_packed = packer.pack(wire.ACK)
        self._ping_packed = packer.pack(wire.PING)
        self._sweeper: t.Any = None
        self.closed = False
        #: Set by :meth:`drain`: the answer to every poll from then on.
        self._going_away_packed: str | bytes | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def spawn(self, fn: t.Callable[..., t.Any], *args: t.Any) -> gevent.Greenlet:
        return self._group.spawn(fn, *args)

    def spawn_later(self, seconds: float, fn: t.Callable[..., t.Any], *args: t.Any) -> None:
        if self.closed:  # a connection ending during shutdown needs no grace timer
            return
        g = gevent.Greenlet(fn, *args)
        self._group.add(g)
        g.start_later(seconds)

    def close(self) -> None:
        """Close every connection (WebSocket 1001, parked polls answered) and stop all greenlets."""
        if self.closed:
            return
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.close()
            self._sweeper = None
        for buf in self._buffers.values():
            if buf.timer is not None:
                buf.timer.close()
                buf.timer = None
        self.flush()  # pushes made so far still go out, before the close
        self.drain()
        writers = []
        for clients in self._clients["ws"].values():
            for conn in list(clients.values()):
                if conn.open:  # the close frame follows what is already queued
                    conn.close(wire.CLOSE_GOING_AWAY, "server shutting down")
                    if conn._writer is not None:
                        writers.append(conn._writer)
        gevent.joinall(writers, timeout=CLOSE_WAIT)
        gevent.sleep(0)
        self._group.kill(block=True, timeout=5)

    def drain(self) -> None:
        """Stopping: answer every parked poll, and every poll from now on, with close 1001
        (the Ajax equivalent: "server going away, reconnect")."""
        if self._going_away_packed is None:
            self._going_away_packed = self.packer.pack(
                wire.close(wire.CLOSE_GOING_AWAY, "server shutting down"))
        for clients in self._clients["ajax"].values():
            for client in clients.values():
                if client.parked is not None:
                    client.parked.set(self._going_away_packed)
                    client.parked = None

    # --- presence ------------------------------------------------------------------------

    @property
    def connected_uids(self) -> ConnectedUids:
        if self._snapshot is None:
            ws, ajax = frozenset(self._in_ws), frozenset(self._in_ajax)
            self._snapshot = ConnectedUids(ws, ajax, ws | ajax)
        return self._snapshot

    def clients_of(self, uid: t.Any) -> dict[str, list[str]]:
        """Client ids of a user by transport (tabs and devices), e.g. for a presence panel."""
        return {tr: list(self._clients[tr].get(uid, ())) for tr in TRANSPORTS}

    def _recompute(self, uid: t.Any) -> None:
        was = uid in self._in_ws or uid in self._in_ajax
        for transport, members in (("ws", self._in_ws), ("ajax", self._in_ajax)):
            if self._clients[transport].get(uid):
                if uid not in members:
                    members.add(uid)
                    self._snapshot = None
            elif uid in members:
                members.discard(uid)
                self._snapshot = None
        now = uid in self._in_ws or uid in self._in_ajax
        if now and not was:
            signals.user_connected.send(self._sender, uid=uid)
            self._system_event(ev.UIDPORT_OPEN, uid)
        elif was and not now:
            signals.user_disconnected.send(self._sender, uid=uid)
            self._system_event(ev.UIDPORT_CLOSE, uid)

    def _system_event(self, event_id: str, data: t.Any, uid: t.Any = None,
                      client_id: str | None = None, transport: str | None = None,
                      request: RequestInfo | None = None) -> None:
        if self.closed or (self._wants is not None and not self._wants(event_id)):
            return
        msg = EventMsg((event_id, data), data if uid is None else uid, client_id, transport,
                       request)
        self.spawn(self._dispatch, msg)

    def _add(self, conn: t.Any) -> None:
        clients = self._clients[conn.transport].setdefault(conn.uid, {})
        old = clients.get(conn.client_id)
        clients[conn.client_id] = conn
        if isinstance(old, WsConnection) and old.open:
            old.close_now(wire.CLOSE_REPLACED, "replaced by a newer connection")
        self._recompute(conn.uid)
        if old is None:
            signals.client_connected.send(self._sender, uid=conn.uid, client_id=conn.client_id,
                                          transport=conn.transport)

    def _remove_if_current(self, transport: Transport, uid: t.Any, client_id: str,
                           conn_id: int) -> None:
        """Grace timer end: drop the client unless a newer connection replaced it."""
        clients = self._clients[transport].get(uid)
        conn = clients.get(client_id) if clients else None
        if conn is None or conn.conn_id != conn_id:
            return
        if transport == "ws" and conn.open:
            return
        if transport == "ajax" and conn.parked is not None:
            return
        self._drop(transport, uid, client_id)

    def _drop(self, transport: Transport, uid: t.Any, client_id: str) -> None:
        clients = self._clients[transport].get(uid)
        if clients is None or clients.pop(client_id, None) is None:
            return
        if not clients:
            del self._clients[transport][uid]
        self._recompute(uid)
        signals.client_disconnected.send(self._sender, uid=uid, client_id=client_id,
                                         transport=transport)

    # --- WebSocket -----------------------------------------------------------------------

    def serve_websocket(self, ws: WebSocket, uid: t.Any, client_id: str,
                        request: RequestInfo, handshake_data: t.Any = None, *,
                        grace: float | None = None) -> None:
        """Run one WebSocket until it closes; called on the request's greenlet (the reader).

        ``grace`` overrides ``reconnect_grace_ws`` for this connection (the in-process test
        client uses 0 so that a test's disconnect shows up at once).
        """
        conn = WsConnection(self, ws, uid, client_id, request)
        conn.offer(self.packer.pack(wire.handshake(uid, handshake_data)))
        self._add(conn)
        if self._sweeper is None:
            self._start_sweeper()
        try:
            self._read_loop(conn)
        finally:
            conn.stop_writer()
            self.spawn_later(self.options.reconnect_grace_ws if grace is None else grace,
                             self._remove_if_current, "ws", uid, client_id, conn.conn_id)

    def _read_loop(self, conn: WsConnection) -> None:
        """Read messages until the socket closes. Keep-alive is the sweeper's job: a read
        needs no timer of its own (one per message cost more than the event's own work)."""
        receive = conn.ws.receive
        on_message = self._on_ws_message
        clock = time.monotonic
        while True:
            try:
                data = receive()
            except ConnectionClosed:
                return
            if data is None:
                continue
            conn.last_seen = clock()
            conn.pinged_at = None
            on_message(conn, data)

    def _start_sweeper(self) -> None:
        """One periodic timer per hub checks every WebSocket's keep-alive: ping one silent
        for ``ws_keepalive``, close (4002) one that then stays silent ``ws_ping_timeout``.
        It runs every quarter of the shorter of the two (at most every second)."""
        keepalive = self.options.ws_keepalive
        if keepalive is None or self.closed:
            return
        ping_timeout = self.options.ws_ping_timeout
        interval = min(1.0, keepalive / 4, (ping_timeout or keepalive) / 4)
        timer = gevent.get_hub().loop.timer(interval, interval, ref=False)
        timer.start(self._sweep)
        self._sweeper = timer

    def _sweep(self) -> None:
        """Runs in the event loop: it must not block (it only offers and spawns)."""
        try:
            keepalive = t.cast(float, self.options.ws_keepalive)
            ping_timeout = self.options.ws_ping_timeout
            now = time.monotonic()
            for clients in self._clients["ws"].values():
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
                        self.spawn(conn.close_now, wire.CLOSE_PING_TIMEOUT, "ping timeout")
        except Exception:  # runs in the event loop: never let it raise there
            logger.exception("keep-alive sweep failed")

    def _on_ws_message(self, conn: WsConnection, data: str | bytes) -> None:
        try:
            msg = wire.decode_client(self.packer.unpack(data))
        except RemoteProtocolError as exc:
            self._bad_package(exc, conn.uid, conn.client_id, "ws", conn.request)
            conn.close_now(exc.close_code, str(exc)[:120])
            return
        event, cb_id = msg.event, msg.cb_id
        if event is None or (ev.is_reserved(event[0]) and event[0] not in (ev.WS_PING, ev.WS_PONG)):
            self._bad_event(msg.raw if event is None else list(event), msg.bad_reason or
                            "reserved-id", conn.uid, conn.client_id, "ws", conn.request)
            if cb_id is not None:
                conn.offer(self.packer.pack(wire.failure(ev.ERROR, cb_id, {"message": "bad event"})))
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
            replier = WsReplier(self.packer, conn, cb_id, self.options.reply_timeout)
        self._dispatch(EventMsg(event, conn.uid, conn.client_id, "ws", conn.request, replier))

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

    # --- Ajax ----------------------------------------------------------------------------

    def ajax_get(self, uid: t.Any, client_id: str, request: RequestInfo, *,
                 handshake: bool, handshake_data: t.Callable[[], t.Any]) -> str | bytes:
        """Answer one Ajax GET: a handshake, or a long-poll parked until data or timeout."""
        if self._going_away_packed is not None and not handshake:
            return self._going_away_packed  # draining: reconnect (elsewhere)
        kicked = self._kicked.pop(client_id, None)
        if kicked is not None:
            return kicked
        clients = self._clients["ajax"].get(uid)
        client: AjaxClient | None = clients.get(client_id) if clients else None
        if handshake or client is None:
            if client is None:
                client = AjaxClient(uid, client_id, request)
                self._add(client)
            else:
                client.conn_id = new_conn_id()
            self._release(client)
            return self.packer.pack(wire.handshake(uid, handshake_data()))
        if client.close_packed is not None:
            packed = client.close_packed
            self._drop("ajax", uid, client_id)
            return packed
        client.conn_id = new_conn_id()
        if client.backlog:
            events, client.backlog = client.backlog, []
            self._release(client)
            return self.packer.pack([events, None])
        if client.parked is not None:  # an older poll of the same client is still parked
            client.parked.set(self._lp_timeout_packed)
        result = gevent.event.AsyncResult()
        client.parked = result
        try:
            return t.cast("str | bytes", result.get(timeout=self.options.lp_timeout))
        except gevent.Timeout:
            return self._lp_timeout_packed
        finally:
            if client.parked is result:
                client.parked = None
            self._release(client)

    def _release(self, client: AjaxClient) -> None:
        """A poll ended: the client has ``reconnect_grace_ajax`` to come back."""
        self.spawn_later(self.options.reconnect_grace_ajax, self._remove_if_current, "ajax",
                         client.uid, client.client_id, client.conn_id)

    def ajax_post(self, uid: t.Any, client_id: str, request: RequestInfo,
                  body: str | bytes) -> str | bytes:
        """Handle one Ajax event; returns the response body (reply, ack or failure).

        Raises RemoteProtocolError for a malformed body (the caller answers 400).
        """
        try:
            msg = wire.decode_client(self.packer.unpack(body))
        except RemoteProtocolError as exc:
            self._bad_package(exc, uid, client_id, "ajax", request)
            raise
        event, cb_id = msg.event, msg.cb_id
        if event is None or ev.is_reserved(event[0]):
            self._bad_event(msg.raw if event is None else list(event),
                            msg.bad_reason or "reserved-id", uid, client_id, "ajax", request)
            raise RemoteProtocolError(f"bad event ({msg.bad_reason or 'reserved-id'})")
        if cb_id is None:
            self._dispatch(EventMsg(event, uid, client_id, "ajax", request))
            return self._ack_packed
        replier = AjaxReplier(self.packer)
        self._dispatch(EventMsg(event, uid, client_id, "ajax", request, replier))
        try:
            return t.cast("str | bytes", replier.result.get(timeout=self.options.reply_timeout))
        except gevent.Timeout:
            replier.fail(ev.TIMEOUT)
            return t.cast("str | bytes", replier.result.get())

    # --- push ----------------------------------------------------------------------------

    def send(self, uid: t.Any, event: t.Any, *, client_id: str | None = None,
             flush: bool = False) -> None:
        """Push ``event`` to every client of ``uid`` (or one, with ``client_id``)."""
        if uid is None:
            raise ev.LocalProtocolError(
                "cannot send to uid None; anonymous users share the uid "
                "flask_sente.ANONYMOUS_UID, send to that instead"
            )
        item = (next(self._seq), ev.to_wire(ev.validate_outgoing(event)), client_id)
        for transport in TRANSPORTS:
            self._buffers[transport].direct.setdefault(uid, []).append(item)
            self._schedule(transport)
        if flush:
            self.flush()

    def broadcast(self, event: t.Any, *, flush: bool = False) -> None:
        """Push ``event`` to every connected client of every user (packed once)."""
        item = (next(self._seq), ev.to_wire(ev.validate_outgoing(event)), None)
        for transport in TRANSPORTS:
            self._buffers[transport].shared.append(item)
            self._schedule(transport)
        if flush:
            self.flush()

    def _schedule(self, transport: Transport) -> None:
        buf = self._buffers[transport]
        if buf.timer is None and not self.closed:
            buf.timer = gevent.get_hub().loop.timer(self._windows[transport])
            buf.timer.start(self._flush_from_timer, transport)

    def _flush_from_timer(self, transport: Transport) -> None:
        try:
            self._flush(transport)
        except Exception:  # runs in the event loop: never let it raise there
            logger.exception("flushing %s pushes failed", transport)

    def flush(self) -> None:
        """Send everything buffered now, in order (what ``flush=True`` does)."""
        for transport in TRANSPORTS:
            self._flush(transport)

    def _flush(self, transport: Transport) -> None:
        buf = self._buffers[transport]
        if buf.timer is not None:
            buf.timer.close()
            buf.timer = None
        direct, shared = buf.direct, buf.shared
        if not direct and not shared:
            return
        buf.direct, buf.shared = {}, []
        table = self._clients[transport]
        shared_packed: list[str | bytes] = []
        uids = list(table) if shared else [u for u in direct if u in table]
        for uid in uids:
            clients = table.get(uid)
            if not clients:
                continue
            own = direct.get(uid)
            items = shared if own is None else _merge(shared, own)
            if own is None or all(item[2] is None for item in own):
                events = [item[1] for item in items]
                if own is None:
                    if not shared_packed:
                        shared_packed.append(self._pack_batch(events))
                    packed = shared_packed[0]
                else:
                    packed = self._pack_batch(events)
                for client in list(clients.values()):
                    self._deliver(client, events, packed)
            else:
                for client in list(clients.values()):
                    events = [i[1] for i in items if i[2] is None or i[2] == client.client_id]
                    if events:
                        self._deliver(client, events, self._pack_batch(events))

    def _pack_batch(self, events: list[t.Any]) -> str | bytes:
        try:
            return self.packer.pack([events, None])
        except PackError:
            good = []
            for event in events:
                try:
                    self.packer.pack(event)
                    good.append(event)
                except PackError as exc:
                    logger.error("dropped a push of %r: %s", event[0], exc)
            return self.packer.pack([good, None])

    def _deliver(self, client: t.Any, events: list[t.Any], packed: str | bytes) -> None:
        if client.transport == "ws":
            client.offer(packed)
            return
        if client.parked is not None and not client.backlog:
            client.parked.set(packed)
            client.parked = None
            return
        client.backlog.extend(events)
        if len(client.backlog) > self.options.send_queue_size:
            logger.warning("dropping the backlog of a long-polling client that does not keep "
                           "up (uid=%r, client_id=%r)", client.uid, client.client_id)
            client.backlog = []
            client.close_packed = self.packer.pack(
                wire.close(wire.CLOSE_TOO_SLOW, "client too slow"))

    # --- kick ----------------------------------------------------------------------------

    def kick(self, uid: t.Any, reason: str = "kicked") -> None:
        """Close every connection of ``uid``; the clients are told not to reconnect."""
        for client_id, conn in list(self._clients["ws"].get(uid, {}).items()):
            conn.close(wire.CLOSE_KICKED, reason)
            self._drop("ws", uid, client_id)
        packed = self.packer.pack(wire.close(wire.CLOSE_KICKED, reason))
        for client_id, client in list(self._clients["ajax"].get(uid, {}).items()):
            if client.parked is not None:
                client.parked.set(packed)
                client.parked = None
            else:
                self._kicked[client_id] = packed
                self.spawn_later(self.options.reconnect_grace_ajax, self._kicked.pop,
                                 client_id, None)
            self._drop("ajax", uid, client_id)


def _merge(a: list[tuple[int, t.Any, str | None]],
           b: list[tuple[int, t.Any, str | None]]) -> list[tuple[int, t.Any, str | None]]:
    """Merge two seq-ordered lists into one, keeping the global send order."""
    if not a:
        return b
    return sorted(a + b, key=lambda item: item[0])
