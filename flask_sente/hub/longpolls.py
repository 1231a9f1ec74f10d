"""The long-polling side of the hub: Ajax handshakes, polls and posted events.

A poll reads what its client's reader is owed, as much as fits in one message, and moves the
reader past it; with nothing owed it parks until a flush wakes it (``flushing.WAKE``) or
``lp_timeout`` passes. A protocol-2 poll carries the client's positions, so any process
can answer it (a shared backplane). It never imports Flask: ``views`` and ``fastpath`` hand
it the request's parts.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import time
import typing as t

import gevent
import gevent.event

from ..backplanes import Backplane
from ..config import Options
from ..connections import AjaxClient, new_conn_id
from ..core.delivery import GAP, Delivery, Entry, Reader
from ..core.packing import pack_owed
from ..core.presence import Uid
from ..core.readers import until_kick
from ..exceptions import BackplaneError, RemoteProtocolError
from ..messages import AjaxReplier, EventMsg, RequestInfo
from ..metrics import NoMetrics
from ..protocol import events as ev
from ..protocol.closecodes import CLOSE_GOING_AWAY, CLOSE_KICKED, CLOSE_TOO_SLOW
from ..protocol.packers import Packer
from ..protocol.session import (
    Incoming,
    PollStep,
    classify,
    main_logs_intact,
    main_positions,
    poll_step,
)
from ..protocol.wire import DEFAULT_WIRE, PackedConstants, Positions, Wire, packer_of
from .events import SystemEvents
from .flushing import WAKE, RefuseCalls
from .loop import HubLoop
from .presence import PresenceService
from .table import ConnectionTable
from .topics import TopicService

if t.TYPE_CHECKING:  # pragma: no cover
    from ..router import Dispatch

logger = logging.getLogger("flask_sente")

#: What ``ajax_post`` answers: the body, and the positions the client should reach before
#: acting on a reply (``X-Sente-After``), if any.
PostAnswer = tuple["str | bytes", "dict[str, list[t.Any]] | None"]


class LongPolls:
    """Ajax requests; see the module docstring."""

    def __init__(self, loop: HubLoop, options: Options, packer: Packer, backplane: Backplane,
                 table: ConnectionTable, presence: PresenceService, topics: TopicService,
                 events: SystemEvents, dispatch: Dispatch, metrics: NoMetrics,
                 settle: t.Callable[[], None] | None,
                 caught_up: t.Callable[[Reader], None] | None = None,
                 refuse_calls: RefuseCalls | None = None) -> None:
        self.loop = loop
        #: See :class:`~.flushing.Flusher`: requests about to reach an old client.
        self._refuse_calls = refuse_calls
        self.options = options
        self.packer = packer
        self.backplane = backplane
        self._delivery: Delivery = backplane.delivery
        self._table = table
        self._presence = presence
        self._topics = topics
        self._events = events
        self._dispatch = dispatch
        self.metrics = metrics
        self._settle = settle
        self._caught_up = caught_up
        #: Packed ``chsk/close`` 4001 for Ajax clients kicked between two polls.
        self._kicked: dict[str, str | bytes] = {}
        #: Set by :meth:`drain`: the answer to every poll from then on.
        self._going_away_packed: str | bytes | None = None
        #: The going-away close in each wire (a dialect's clients read their own).
        self._going_away: dict[Wire, str | bytes] = {}
        self._constants = PackedConstants(packer)

    @property
    def draining(self) -> bool:
        return self._going_away_packed is not None

    def drain(self) -> None:
        """Stopping: answer every parked poll, and every poll from now on, with close 1001
        (the Ajax equivalent: "server going away, reconnect")."""
        if self._going_away_packed is None:
            self._going_away_packed = self.packer.pack(
                DEFAULT_WIRE.close(CLOSE_GOING_AWAY, "server shutting down"))
        for client in self._table.all_ajax():
            if client.parked is not None:
                client.parked.set(self._going_away_in(client.wire))

    def _going_away_in(self, wire: Wire) -> str | bytes:
        packed = self._going_away.get(wire)
        if packed is None:
            packed = self._going_away[wire] = packer_of(wire, self.packer).pack(
                wire.close(CLOSE_GOING_AWAY, "server shutting down"))
        return packed

    def kicked(self, uid: Uid, reason: str, client_id: str | None = None) -> None:
        """``uid`` was kicked (or only its client ``client_id``): a parked poll is answered
        with the close at once, a client between two polls gets it as the answer to its
        next (within its grace window)."""
        for client in self._table.ajax_of(uid):
            if client_id is not None and client.client_id != client_id:
                continue
            packed = packer_of(client.wire, self.packer).pack(
                client.wire.close(CLOSE_KICKED, reason))
            if client.parked is not None:
                client.parked.set(packed)
            else:
                self._kicked[client.client_id] = packed
                timer = self.loop.timer(self.options.reconnect_grace_ajax)
                timer.start(self._kicked.pop, client.client_id, None)
            self._presence.remove(client)
            self._presence.forget_connection(client)  # a client that never polled is no member

    def ajax_get(self, uid: Uid, client_id: str, request: RequestInfo, *,
                 handshake: bool, handshake_data: t.Callable[[], t.Any],
                 wire: Wire = DEFAULT_WIRE, positions: Positions | None = None) -> str | bytes:
        """Answer one Ajax GET: a handshake, or a long-poll parked until data or timeout.

        A handshake alone does not make the client present (a WebSocket client probing
        whether HTTP works would flap presence): its first poll does. A protocol-2 poll
        carries the client's positions and gets everything after them; when the history of
        one of them is gone, it is answered with a handshake (``recovered: false`` when a
        main log lost entries; a topic's loss is told by its rejoin).

        One request at a time moves a client's reader (docs/protocol.md §10): a GET of a
        client this process holds takes the reader over before it can yield
        (:meth:`AjaxClient.take_turn`).
        """
        self.loop.serving_here()
        draining = self._going_away_packed is not None
        kicked = None if draining and not handshake else self._kicked.pop(client_id, None)
        client = self._table.ajax(uid, client_id)
        turn = 0
        if client is not None:  # the superseded poll is answered in the wire it spoke
            turn = client.take_turn(self._constants(client.wire, "lp-timeout"))
        if not handshake and not draining and kicked is None and wire.version == 1:
            # A protocol-1 client sends no positions: the process that answered its last
            # poll kept them (a shared backplane; None in memory, where the reader is all).
            positions = self.backplane.load_cursor(uid, client_id)
        step = poll_step(draining=draining, handshake=handshake, kicked=kicked is not None,
                         held=client is not None, has_positions=positions is not None,
                         close_pending=client is not None and client.close_packed is not None)
        if step is PollStep.GOING_AWAY:
            return self._going_away_in(wire)
        if step is PollStep.KICKED:
            return t.cast("str | bytes", kicked)
        if step is PollStep.CONNECT:
            return self._ajax_connect(uid, client_id, request, client, wire, positions,
                                      handshake_data)
        if step is PollStep.ADOPT:
            # Another worker served the client until now: with a shared backplane its
            # positions are all this process needs.
            reader, _ = self.backplane.open_reader(uid, client_id, "ajax", time.monotonic(),
                                                   None)
            client = AjaxClient(uid, client_id, request, reader)
            self._table.register(client)
            turn = client.take_turn(self._constants(wire, "lp-timeout"))
        client = t.cast(AjaxClient, client)
        if step is PollStep.CLOSE:
            packed = t.cast("str | bytes", client.close_packed)
            self._drop(client)
            return packed
        client.wire = wire
        if positions is not None:
            restart = self._resume_poll(client, positions, handshake_data)
            if restart is not None:
                return restart
        conn_id = client.conn_id = new_conn_id()
        self._presence.attach(client)
        try:
            answer = self._poll(client, turn, handshake_data)
            self._save_cursor(client)
            return answer
        finally:
            if not self.loop.closed:
                self._presence.detach(client, conn_id, self.options.reconnect_grace_ajax)

    def _ajax_connect(self, uid: Uid, client_id: str, request: RequestInfo,
                      client: AjaxClient | None, wire: Wire,
                      positions: Positions | None,
                      handshake_data: t.Callable[[], t.Any]) -> str | bytes:
        """A handshake: a new connection, with a new reader resumed at the client's main
        positions (its user's and the broadcast log). It reads no topic: the client
        rejoins each with its own position and learns per topic whether it was recovered
        (a reader kept from an earlier connection would hand out positions the client
        never had, or ones already moved past what it missed)."""
        main = None if positions is None else main_positions(positions)
        now = time.monotonic()
        reader, recovered = self.backplane.open_reader(uid, client_id, "ajax", now, main)
        held = self._table.ajax(uid, client_id)
        connected: AjaxClient
        if client is not None and held is client:
            self._presence.topics_end(client, now + self.options.reconnect_grace_ajax)
            self.backplane.close_reader(client.reader, now)
            client.reader = reader
            client.conn_id = new_conn_id()
            connected = client
        else:
            connected = AjaxClient(uid, client_id, request, reader)
            self._table.register(connected)
        connected.wire = wire
        self._await_first_poll(connected)
        return self._ajax_handshake(connected, handshake_data(), recovered)

    def _resume_poll(self, client: AjaxClient, positions: Positions,
                     handshake_data: t.Callable[[], t.Any]) -> str | bytes | None:
        """Move the client's reader to the poll's positions (topics it names that this
        process does not read yet are added, when the client was let in). None when every
        log still reaches; else the handshake to answer with: the main logs' verdict as
        ``recovered``, every topic dropped so that its rejoin tells its own."""
        lost_topics = self._topics.adopt(client, positions)
        lost = self.backplane.resume(client.reader, positions) | lost_topics
        if not lost:
            return None
        self._topics.drop_all(client, self.options.reconnect_grace_ajax)
        self._await_first_poll(client)
        return self._ajax_handshake(client, handshake_data(),
                                    main_logs_intact(lost))

    def ajax_key(self, uid: Uid, client_id: str,
                 credentials: t.Any) -> str | None:
        """The fast-path key of a client this process holds, after a request of it passed
        every admission check with these credentials (``ajax.AjaxRequest.credentials``); None
        when no such client is here (it has not polled this process, or is gone).

        One key per client, made at its first admitted request here; the credentials are
        those of its latest one, so a login, logout or new session cookie leaves the fast
        path until Flask has admitted the client again.
        """
        client = self._table.ajax(uid, client_id)
        if client is None:
            return None
        if client.fast_key is None:
            client.fast_key = secrets.token_urlsafe(18)
        client.credentials = credentials
        self._table.keyed[client_id] = client
        return client.fast_key

    def keyed_client(self, client_id: str, key: str,
                     credentials: t.Any) -> AjaxClient | None:
        """The client a request with this key and these credentials stands for, or None
        (the request goes through Flask and every check instead)."""
        client = self._table.keyed.get(client_id)
        if client is None or client.fast_key is None or client.credentials != credentials:
            return None
        # WSGI gives header values as latin-1 text: the bytes as sent.
        if not hmac.compare_digest(client.fast_key.encode(), key.encode("latin-1")):
            return None
        return client

    def _save_cursor(self, client: AjaxClient) -> None:
        """A protocol-1 client's positions, kept where any process can answer its next
        poll (a shared backplane; a no-op in memory)."""
        if client.version == 1:
            try:
                self.backplane.save_cursor(client.uid, client.client_id,
                                           self._delivery.positions_of(client.reader))
            except BackplaneError as exc:  # the answer still goes out (at most once)
                logger.warning("protocol-1 cursor not saved: %s", exc)

    def _ajax_handshake(self, client: AjaxClient, data: t.Any,
                        recovered: bool | None) -> str | bytes:
        self._save_cursor(client)
        self.metrics.handshake("ajax")
        return packer_of(client.wire, self.packer).pack(client.wire.handshake(
            client.uid, data, recovered=recovered,
            positions=self._delivery.positions_of(client.reader, topics=False)))

    def _poll(self, client: AjaxClient, turn: int,
              handshake_data: t.Callable[[], t.Any]) -> str | bytes:
        if client.turn != turn:  # a newer GET of the client came meanwhile: it reads
            return self._constants(client.wire, "lp-timeout")
        answer = self._owed(client, handshake_data)
        if answer is not None:
            return answer
        result = gevent.event.AsyncResult()
        client.parked = result
        client.reader.ready = True
        deadline = time.monotonic() + self.options.lp_timeout
        try:
            while True:
                try:
                    woken = result.get(timeout=max(0.0, deadline - time.monotonic()))
                except gevent.Timeout:
                    return self._constants(client.wire, "lp-timeout")
                if woken is not WAKE:
                    return t.cast("str | bytes", woken)
                if client.close_packed is not None:
                    return client.close_packed
                answer = self._owed(client, handshake_data)
                if answer is not None:
                    return answer
                result = gevent.event.AsyncResult()  # all of it was for other tabs
                client.parked = result
                client.reader.ready = True
        finally:
            if client.parked is result:
                client.parked = None
                client.reader.ready = False

    def _owed(self, client: AjaxClient,
              handshake_data: t.Callable[[], t.Any]) -> str | bytes | None:
        """Pack what the client's reader is owed (as much as fits in one message) and move
        it past that; None when nothing is owed to this client."""
        reader = client.reader
        pending = self._delivery.pending(reader)
        if pending is GAP:
            gapped = self._delivery.gaps(reader)
            logger.warning("a long-polling client fell behind the push history of %s "
                           "(uid=%r, client_id=%r)", ", ".join(gapped), client.uid,
                           client.client_id)
            self._delivery.skip_to_head(reader, gapped)
            self.metrics.closed_1013("history-gap")
            if client.version >= 2:  # told, and where to go on from (topics: by rejoins)
                self._topics.drop_all(client, self.options.reconnect_grace_ajax)
                return self._ajax_handshake(client, handshake_data(),
                                            main_logs_intact(gapped))
            self._delivery.skip_to_head(reader)
            return packer_of(client.wire, self.packer).pack(
                client.wire.close(CLOSE_TOO_SLOW, "client too slow"))
        pairs, kick = until_kick(t.cast("list[tuple[str, Entry]]", pending))
        if kick is not None:  # answered after the pushes before it, alone
            self._delivery.advance(reader, [kick])
            return packer_of(client.wire, self.packer).pack(
                client.wire.close(CLOSE_KICKED, kick[1].event))
        epochs = {name: log.epoch for name, log in reader.logs.items()}
        packed, upto = pack_owed(packer_of(client.wire, self.packer), pairs, client.client_id,
                                 client.wire, epochs,
                                 self.options.max_message_size)
        self.metrics.polled(pairs, upto, client.client_id, packed)
        if not client.wire.calls and self._refuse_calls is not None:
            self._refuse_calls(client, pairs[:upto])
        self._delivery.advance(reader, pairs[:upto])
        return packed

    def _await_first_poll(self, client: AjaxClient) -> None:
        """Forget a client that handshook but never polled within its grace window."""
        if self.loop.closed:
            return
        conn_id = client.conn_id
        timer = self.loop.timer(self.options.reconnect_grace_ajax)

        def check() -> None:  # in the event loop: forgetting may wait for a shared store
            timer.close()
            if not self.loop.closed:
                self.loop.spawn(self._forget_unpolled, client, conn_id)

        timer.start(check)

    def _forget_unpolled(self, client: AjaxClient, conn_id: int) -> None:
        if (client.conn_id == conn_id and self._table.holds(client)
                and not self.backplane.is_member(client.uid, "ajax", client.client_id)):
            self._presence.forget("ajax", client.uid, client.client_id)

    def _drop(self, client: AjaxClient) -> None:
        self._presence.remove(client)
        self._presence.forget_connection(client)

    def ajax_post(self, uid: Uid, client_id: str, request: RequestInfo,
                  body: str | bytes, wire: Wire = DEFAULT_WIRE) -> PostAnswer:
        """Handle one Ajax event; returns the response body (reply, ack or failure) and,
        for a reply whose handler pushed first, the positions the client should reach
        before acting on it (the ``X-Sente-After`` header).

        Raises RemoteProtocolError for a malformed body (the caller answers 400).
        """
        self.metrics.received("ajax", len(body))
        try:
            msg = wire.decode_client(packer_of(wire, self.packer).unpack(body))
        except RemoteProtocolError as exc:
            self._events.bad_package(exc, uid, client_id, "ajax", request)
            raise
        kind, reason = classify(msg, "ajax")
        if kind is Incoming.BAD:
            self._events.bad_event(msg.raw if msg.event is None else list(msg.event),
                                   t.cast(str, reason), uid, client_id, "ajax", request)
            raise RemoteProtocolError(f"bad event ({reason})")
        event, cb_id = t.cast(ev.Event, msg.event), msg.cb_id
        if cb_id is None:
            self._dispatch(EventMsg(event, uid, client_id, "ajax", request))
            return self._constants(wire, "ack"), None
        replier = AjaxReplier(packer_of(wire, self.packer), wire, self._settle, uid, client_id)
        self._dispatch(EventMsg(event, uid, client_id, "ajax", request, replier))
        try:
            answer = replier.result.get(timeout=self.options.reply_timeout)
        except gevent.Timeout:
            self.metrics.reply_timed_out("ajax")
            replier.fail(ev.TIMEOUT)
            answer = replier.result.get()
        if replier.after:
            self._wake(uid, client_id)
        return t.cast("str | bytes", answer), replier.after

    def _wake(self, uid: Uid, client_id: str) -> None:
        """The client holds this reply until a poll brings it its handler's pushes: if its
        poll is parked here, it is answered now rather than at the end of the Ajax batching
        window (``send_buffer_ajax``). With a shared backplane the pushes are waited back
        into this process's copy of the logs first."""
        client = self._table.ajax(uid, client_id)
        if client is None or client.parked is None or not client.reader.ready:
            return
        if self._caught_up is not None:
            self._caught_up(client.reader)
        if client.parked is not None and client.reader.ready and client.reader.owed():
            client.reader.ready = False
            client.parked.set(WAKE)

