"""The hub: one per app, the gevent shell around the sans-I/O core — a facade over the
services of this package.

What is owed to whom (logs, readers, batches) and who is connected (presence, grace
windows) are decided by ``flask_sente.core`` behind a backplane
(``flask_sente.backplanes``). The hub feeds them — connections opening and closing, pushes,
the clock — and its services perform what they decide:

* :class:`~.table.ConnectionTable` — the live connections, typed;
* :class:`~.flushing.Flusher` — flush timers, batches packed once, polls woken;
* :class:`~.presence.PresenceService` — members, grace windows, presence signals, forgetting;
* :class:`~.topics.TopicService` — joins, leaves, publishing;
* :class:`~.calls.CallService` — server -> client calls, their answers and outcomes;
* :class:`~.websockets.WebSockets` and :class:`~.longpolls.LongPolls` — the transports;
* :class:`~.sweeper.Sweeper` — keep-alive, history expiry, grant renewal;
* :class:`~.events.SystemEvents` — ``chsk/uidport-*`` and bad-input events for the app.

``ext`` and ``views`` call the :class:`Hub`; the backplane reports to it (it is the
backplane's listener) and it hands each report to the service it concerns. Every greenlet
is in one group (:class:`~.loop.HubLoop`), killed by :meth:`Hub.close`. It never imports
Flask. Public methods that push may be called from any OS thread (``loop.from_any_thread``).
"""
from __future__ import annotations

import time
import typing as t

import gevent
import gevent.pool

from ..backplanes import Backplane, LocalBackplane
from ..backplanes.base import request_scope
from ..config import Options
from ..connections import AjaxClient
from ..core.delivery import Reader
from ..core.presence import Change, ConnectedUids, Transport, Uid
from ..exceptions import BackplaneError, LocalProtocolError
from ..messages import EventMsg, RequestInfo
from ..metrics import NO_METRICS, NoMetrics
from ..protocol import events as ev
from ..protocol import wire
from ..protocol.packers import Packer
from ..protocol.wire import Wire
from .calls import CallService
from .events import SystemEvents
from .flushing import Flusher
from .inspect import Inspector
from .longpolls import LongPolls, PostAnswer
from .loop import HubLoop, from_any_thread
from .presence import PresenceService
from .sweeper import Sweeper
from .table import Connection, ConnectionTable
from .topics import JoinHandlers, TopicService
from .websockets import WebSockets

if t.TYPE_CHECKING:  # pragma: no cover
    from ..router import Dispatch, Handler
    from ..transports.base import WebSocket

__all__ = ["ConnectedUids", "Hub"]
#: Seconds :meth:`Hub.close` waits for the sockets' queued messages and close frames.
CLOSE_WAIT = 3.0


class Hub:
    """The server state of one app. See the module docstring."""

    def __init__(self, options: Options, packer: Packer, dispatch: Dispatch, *,
                 signal_sender: t.Any = None, wants: t.Callable[[str], bool] | None = None,
                 backplane: Backplane | None = None, metrics: NoMetrics = NO_METRICS,
                 join_handlers: JoinHandlers | None = None,
                 wire_for: t.Callable[[int], Wire] = wire.wire_for,
                 dialects: t.Mapping[str, Wire] | None = None) -> None:
        self.options = options
        #: The envelope a client of each protocol version speaks on this channel: where a
        #: second dialect (Sente's own wire) plugs in, beside the packer.
        self._wire_for = wire_for
        #: What an Ajax POST's body is read in (the same in every version).
        self._post_wire = wire_for(1)
        #: Other wires by dialect name, each spoken on a channel URL of its own (``"sente"``:
        #: unmodified Sente clients, ``sente_url``): one wire whatever the version.
        self._dialects = dict(dialects or {})
        #: Where what happens is counted (a no-op unless the ``metrics`` option is on).
        self.metrics = metrics
        self.packer = packer
        self.backplane: Backplane = backplane or LocalBackplane(
            history_size=options.history_size, history_ttl=options.history_ttl)
        self.loop = loop = HubLoop()
        shared = self.backplane.shared
        #: Waits until this process's pushes are in the shared log (shared backplanes only).
        settle: t.Callable[[], None] | None = self.backplane.settled if shared else None
        #: Serves one request so that its pushes are in the shared log before its response
        #: leaves (shared backplanes only; see ``backplanes.base.request_scope``).
        self.request_scope: t.Callable[[], t.ContextManager[None]] | None = (
            request_scope if shared else None)
        #: Waits until this process's own pushes are back in its mirror of a reader's logs.
        caught_up: t.Callable[[Reader], None] | None = (
            self.backplane.caught_up if shared else None)
        self.table = table = ConnectionTable(on_first=self._first_connection)
        events = SystemEvents(loop, dispatch, wants)
        self._calls = CallService(loop, self.backplane, table, events)
        self._flusher = Flusher(loop, options, packer, self.backplane.delivery, table,
                                metrics, self._calls.refuse_legacy)
        self._calls.flush_now = self._flusher.flush_connection
        self._presence = PresenceService(loop, options, self.backplane, table, events,
                                         signal_sender)
        self._topics = TopicService(loop, options, self.backplane, table, self._presence,
                                    self._flusher, join_handlers or JoinHandlers(), metrics)
        self._websockets = WebSockets(loop, options, packer, self.backplane, table,
                                      self._presence, self._flusher, events, dispatch,
                                      metrics, settle, caught_up,
                                      on_client_close=self._client_closed)
        self._longpolls = LongPolls(loop, options, packer, self.backplane, table,
                                    self._presence, self._topics, events, dispatch, metrics,
                                    settle, caught_up, self._calls.refuse_legacy)
        self._sweeper = Sweeper(loop, options, packer, self.backplane, table, metrics)
        #: Greenlets telling the other processes of a client's own close (``_client_closed``):
        #: let finish before the backplane closes (see :meth:`close`).
        self._announcing = gevent.pool.Group()
        #: This process's part of the admin dashboard (``admin_report``).
        self._inspector = Inspector(self)
        self.backplane.start(self)

    def _first_connection(self) -> None:
        self.metrics.watch(self)
        self._sweeper.start()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.loop.closed

    def spawn(self, fn: t.Callable[..., t.Any], *args: t.Any) -> gevent.Greenlet:
        return self.loop.spawn(fn, *args)

    def close(self) -> None:
        """Stop: pushes made so far go out, parked polls are told to reconnect (``drain``),
        every WebSocket is closed with 1001 after what was queued for it (waiting up to
        ``CLOSE_WAIT``), then every greenlet is stopped."""
        if self.loop.closed:
            return
        self._flusher.flush_all()
        self.drain()
        self.loop.closed = True
        # A client's close announced while it stops is let finish (a PUBLISH; bounded by
        # the store's socket timeout): killed while it connects, it would leave the
        # socket it was opening to the garbage collector.
        self._announcing.join(timeout=CLOSE_WAIT)
        self._announcing.kill(block=True, timeout=1)
        self._calls.stop()
        self._sweeper.stop()
        self._presence.stop()
        self._flusher.stop()
        self._websockets.close_all(CLOSE_WAIT)
        self.backplane.close()
        gevent.sleep(0)
        self.loop.kill(timeout=5)

    def drain(self) -> None:
        """Stopping: answer every parked poll, and every poll from now on, with close 1001
        (the Ajax equivalent: "server going away, reconnect")."""
        self._longpolls.drain()

    @property
    def draining(self) -> bool:
        """True once the server began stopping (:meth:`drain`): no new work is taken."""
        return self._longpolls.draining or self.loop.closed

    @property
    def healthy(self) -> bool:
        """False while a shared backplane cannot be reached (always True in memory)."""
        return self.backplane.healthy

    # --- who is here -----------------------------------------------------------------------

    @property
    def connected_uids(self) -> ConnectedUids:
        return self._presence.connected_uids

    def clients_of(self, uid: Uid) -> dict[str, list[str]]:
        """Client ids of a user by transport (tabs and devices), e.g. for a presence panel."""
        return self._presence.clients_of(uid)

    def members(self, topic: str) -> frozenset[Uid]:
        """The users in ``topic`` (every process's, with a shared backplane)."""
        return self._presence.members(topic)

    def connections(self, transport: Transport) -> list[Connection]:
        """The connections (WebSocket) or clients (Ajax) of this process on ``transport``,
        those within their reconnect grace included (sampled by metrics)."""
        return self.table.all(transport)

    # --- the transports ----------------------------------------------------------------------

    def wire_of(self, version: int = 1, dialect: str | None = None) -> Wire:
        """The wire a client of protocol ``version`` speaks, or that of ``dialect``."""
        if dialect is None:
            return self._wire_for(version)
        try:
            return self._dialects[dialect]
        except KeyError:
            raise LocalProtocolError(f"no {dialect!r} dialect on this channel") from None

    def serve_websocket(self, ws: WebSocket, uid: Uid, client_id: str, request: RequestInfo,
                        handshake_data: t.Any = None, *, grace: float | None = None,
                        version: int = 1, positions: wire.Positions | None = None,
                        dialect: str | None = None) -> None:
        """Run one WebSocket until it closes (see :meth:`WebSockets.serve`)."""
        self._websockets.serve(ws, uid, client_id, request, handshake_data, grace=grace,
                               wire=self.wire_of(version, dialect), positions=positions)

    def ajax_get(self, uid: Uid, client_id: str, request: RequestInfo, *, handshake: bool,
                 handshake_data: t.Callable[[], t.Any], version: int = 1,
                 positions: wire.Positions | None = None,
                 dialect: str | None = None) -> str | bytes:
        """Answer one Ajax GET (see :meth:`LongPolls.ajax_get`)."""
        return self._longpolls.ajax_get(uid, client_id, request, handshake=handshake,
                                        handshake_data=handshake_data,
                                        wire=self.wire_of(version, dialect),
                                        positions=positions)

    def ajax_post(self, uid: Uid, client_id: str, request: RequestInfo,
                  body: str | bytes, dialect: str | None = None) -> PostAnswer:
        """Handle one Ajax event (see :meth:`LongPolls.ajax_post`)."""
        return self._longpolls.ajax_post(
            uid, client_id, request, body,
            self._post_wire if dialect is None else self.wire_of(dialect=dialect))

    def ajax_key(self, uid: Uid, client_id: str, credentials: t.Any) -> str | None:
        return self._longpolls.ajax_key(uid, client_id, credentials)

    def keyed_client(self, client_id: str, key: str, credentials: t.Any) -> AjaxClient | None:
        return self._longpolls.keyed_client(client_id, key, credentials)

    def handlers(self) -> dict[str, Handler]:
        """The hub's own event handlers (the router runs them in the app context, in its
        pool, like the app's): the topic requests ``chsk/join`` and ``chsk/leave``,
        ``chsk/answer`` (a client's answer to a call) and ``chsk/bye``."""
        own: dict[str, Handler] = {name: self._topics.request for name in ev.TOPIC_REQUESTS}
        own[ev.ANSWER] = self._calls.answered
        own[ev.BYE] = self._bye
        return own

    def _bye(self, msg: EventMsg) -> None:
        """An Ajax client stopping for good (``chsk/bye``): as a WebSocket's own close."""
        self._client_closed(msg.uid, t.cast(str, msg.client_id))

    def topic_request(self, msg: EventMsg) -> None:
        self._topics.request(msg)

    # --- pushing ------------------------------------------------------------------------------

    def send(self, uid: Uid, event: object, *, client_id: str | None = None,
             flush: bool = False) -> None:
        """Push ``event`` to every client of ``uid`` (or one, with ``client_id``)."""
        if uid is None:
            raise LocalProtocolError(
                "cannot send to uid None; anonymous users share the uid "
                "flask_sente.ANONYMOUS_UID, send to that instead"
            )
        self._push(uid, ev.to_wire(ev.validate_outgoing(event)), client_id, flush)

    @from_any_thread
    def _push(self, uid: Uid, wire_event: ev.WireEvent, client_id: str | None, flush: bool) -> None:
        self.backplane.push(uid, wire_event, client_id, time.monotonic())
        if flush:
            self._flusher.flush_all()

    def broadcast(self, event: object, *, flush: bool = False) -> None:
        """Push ``event`` to every connected client of every user (packed once)."""
        self._broadcast(ev.to_wire(ev.validate_outgoing(event)), flush)

    @from_any_thread
    def _broadcast(self, wire_event: ev.WireEvent, flush: bool) -> None:
        self.backplane.broadcast(wire_event, time.monotonic())
        if flush:
            self._flusher.flush_all()

    def publish(self, topic: str, event: object, *, exclude_client_id: str | None = None,
                flush: bool = False) -> None:
        """Push ``event`` to every member of ``topic`` (but ``exclude_client_id``)."""
        self._topics.publish(topic, event, exclude_client_id=exclude_client_id, flush=flush)

    def join(self, topic: str, uid: Uid, client_id: str | None = None) -> None:
        """Put every client of ``uid`` (or one) in ``topic``, on every process."""
        self._topics.join(topic, uid, client_id)

    def leave(self, topic: str, uid: Uid, client_id: str | None = None) -> None:
        """Take every client of ``uid`` (or one) out of ``topic``, on every process."""
        self._topics.leave(topic, uid, client_id)

    def call(self, uid: Uid, event: object, *, client_id: str, timeout: float) -> t.Any:
        """Ask one client of ``uid`` and wait for its answer (see :mod:`.calls`)."""
        return self._calls.call(uid, event, client_id, timeout)

    def call_all(self, uid: Uid, event: object, *, timeout: float) -> dict[str, t.Any]:
        """Ask every client of ``uid``; per client id, its value or its CallError."""
        return self._calls.call_all(uid, event, timeout)

    def _client_closed(self, uid: Uid, client_id: str) -> None:
        """A client closed its connection itself (a WebSocket close, an Ajax
        ``chsk/bye``): its calls fail at once here, and the other processes are told in a
        greenlet of its own — the connection's end (its grace window, its presence) never
        waits on the shared store."""
        self._calls.client_closed(repr(uid), client_id)
        if self.backplane.shared and not self.loop.closed:
            self._announcing.spawn(self._announce_closed, repr(uid), client_id)

    def _announce_closed(self, uid_key: str, client_id: str) -> None:
        try:
            self.backplane.announce_closed(uid_key, client_id)
        except BackplaneError:  # the others see it leave when its grace window ends
            pass

    @from_any_thread
    def flush(self) -> None:
        """Send everything buffered now, in order (what ``flush=True`` does)."""
        self._flusher.flush_all()

    @from_any_thread
    def kick(self, uid: Uid, reason: str = "kicked") -> None:
        """Close every connection of ``uid``; the clients are told not to reconnect.

        The kick is a record in the user's log, after every earlier push: a WebSocket gets
        those pushes and then the 4001 close, a poller gets them on its next poll and then
        the close.
        """
        self.backplane.kick(uid, reason, time.monotonic())

    def close_client(self, uid: Uid, client_id: str, reason: str) -> int:
        """Close one client of ``uid`` held by this process as a kick closes them all
        (after what it was owed; it is told not to reconnect); how many were closed (0
        or 1). The admin dashboard's "close" reaches every process through the backplane."""
        held = [conn for conn in self.table.of_user(uid) if conn.client_id == client_id]
        if held:
            ws = self.table.ws(uid, client_id)
            if ws is not None and ws.reader is not None:  # what it was owed, then the close
                self._flusher.flush_connection(ws, ws.reader)
            self._websockets.kicked(uid, reason, client_id)
            self._longpolls.kicked(uid, reason, client_id)
            self._calls.client_closed(repr(uid), client_id)
        return len(held)

    # --- the backplane's listener -----------------------------------------------------------

    def logs_appended(self, transports: tuple[Transport, ...]) -> None:
        """Readers on these transports are owed new entries: schedule their flush."""
        self._flusher.logs_appended(transports)

    def presence_changed(self, changes: list[Change]) -> None:
        """Members joined or left: tell the app, in order; forget clients that left."""
        self._presence.changed(changes)

    def topic_presence_changed(self, changes: list[Change]) -> None:
        """Users joined or left topics: signals, and the ``chsk/members`` diff."""
        self._presence.topics_changed(changes)

    def kicked(self, uid: Uid, reason: str) -> None:
        """``uid`` was kicked (here or elsewhere): close its connections in this process,
        after the pushes made before the kick."""
        self._flusher.flush("ws", everything=True)
        self._websockets.kicked(uid, reason)
        self._longpolls.kicked(uid, reason)
        self._calls.kicked(uid)

    def topic_command(self, uid: Uid, client_id: str | None, kind: str, topic: str) -> None:
        """The server joined or removed a user (or one client) to/from ``topic``."""
        self._topics.command(uid, client_id, kind, topic)

    def backplane_state(self, healthy: bool) -> None:
        """Redis went away or came back."""
        self._presence.backplane_state(healthy)

    def call_routed(self, outcome: dict[str, t.Any]) -> None:
        """An outcome of one of this process's calls."""
        self._calls.routed(outcome)

    def client_closed(self, uid_key: str, client_id: str) -> None:
        """A client closed its connection itself, here or elsewhere."""
        self._calls.client_closed(uid_key, client_id)

    def admin_report(self, ask: dict[str, t.Any]) -> dict[str, t.Any]:
        """This process's part of the admin dashboard's picture."""
        return self._inspector.report(ask)
