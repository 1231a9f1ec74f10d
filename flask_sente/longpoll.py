"""The long-polling side of the hub: Ajax handshakes, polls and posted events.

A poll reads what its client's reader is owed, as much as fits in one message, and moves the
reader past it; with nothing owed it parks until a flush wakes it (``WAKE``) or
``lp_timeout`` passes. A protocol-2 poll carries the client's positions, so any process
can answer it (a shared backplane). Mixed into :class:`flask_sente.hub.Hub`, whose state it
uses; it never imports Flask.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import time
import typing as t

import gevent
import gevent.event

from .backplanes import Backplane
from .config import Options
from .connections import AjaxClient, new_conn_id, thread_ident
from .core.delivery import GAP, Delivery, Entry
from .core.packing import pack_owed
from .core.presence import Transport
from .exceptions import BackplaneError, RemoteProtocolError
from .messages import AjaxReplier, EventMsg, RequestInfo
from .metrics import NoMetrics
from .protocol import events as ev
from .protocol import wire
from .protocol.packers import Packer

if t.TYPE_CHECKING:  # pragma: no cover
    from .router import Dispatch

logger = logging.getLogger("flask_sente")

#: Set on a parked poll to wake it: its greenlet reads what it is owed itself.
WAKE = object()


class LongPolls:
    """Ajax requests; see the module docstring. The attributes below are the hub's."""

    options: Options
    packer: Packer
    backplane: Backplane
    closed: bool
    _delivery: Delivery
    _conns: dict[Transport, dict[t.Any, dict[str, t.Any]]]
    _kicked: dict[str, str | bytes]
    _loop: t.Any
    _thread: int
    _going_away_packed: str | bytes | None
    _lp_timeout_packed: str | bytes
    _ack_packed: str | bytes
    _settle: t.Callable[[], None] | None
    _dispatch: Dispatch
    _keyed: dict[str, AjaxClient]
    metrics: NoMetrics

    if t.TYPE_CHECKING:  # the hub's methods this side calls
        def spawn(self, fn: t.Callable[..., t.Any], *args: t.Any) -> t.Any: ...
        def _register(self, conn: t.Any) -> t.Any: ...
        def _attach(self, conn: t.Any) -> None: ...
        def _detach(self, conn: t.Any, conn_id: int, grace: float) -> None: ...
        def _topics_end(self, conn: t.Any, deadline: float) -> None: ...
        def _forget(self, transport: Transport, uid: t.Any, client_id: str) -> None: ...
        def _bad_package(self, exc: RemoteProtocolError, uid: t.Any, client_id: str | None,
                         transport: str, request: RequestInfo | None) -> None: ...
        def _bad_event(self, raw: t.Any, reason: str, uid: t.Any, client_id: str | None,
                       transport: str, request: RequestInfo | None) -> None: ...
        def adopt_topics(self, conn: t.Any, positions: wire.Positions) -> set[str]: ...

    def ajax_get(self, uid: t.Any, client_id: str, request: RequestInfo, *,
                 handshake: bool, handshake_data: t.Callable[[], t.Any], version: int = 1,
                 positions: wire.Positions | None = None) -> str | bytes:
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
        self._thread = thread_ident()
        if self._going_away_packed is not None and not handshake:
            return self._going_away_packed  # draining: reconnect (elsewhere)
        kicked = self._kicked.pop(client_id, None)
        if kicked is not None:
            return kicked
        clients = self._conns["ajax"].get(uid)
        client: AjaxClient | None = clients.get(client_id) if clients else None
        turn = client.take_turn(self._lp_timeout_packed) if client is not None else 0
        if not handshake and version == 1:
            # A protocol-1 client sends no positions: the process that answered its last
            # poll kept them (a shared backplane; None in memory, where the reader is all).
            positions = self.backplane.load_cursor(uid, client_id)
        if handshake or (client is None and positions is None):
            return self._ajax_connect(uid, client_id, request, client, version, positions,
                                      handshake_data)
        if client is None:
            # A poll this process has not seen (another worker served the client until
            # now): with a shared backplane its positions are all it needs.
            reader, _ = self.backplane.open_reader(uid, client_id, "ajax", time.monotonic(),
                                                   None)
            client = AjaxClient(uid, client_id, request, reader)
            self._register(client)
            turn = client.take_turn(self._lp_timeout_packed)
        elif client.close_packed is not None:
            packed = client.close_packed
            self._drop_ajax(client)
            return packed
        client.version = version
        if positions is not None:
            restart = self._resume_poll(client, positions, handshake_data)
            if restart is not None:
                return restart
        conn_id = client.conn_id = new_conn_id()
        self._attach(client)
        try:
            answer = self._poll(client, turn, handshake_data)
            self._save_cursor(client)
            return answer
        finally:
            if not self.closed:
                self._detach(client, conn_id, self.options.reconnect_grace_ajax)

    def _ajax_connect(self, uid: t.Any, client_id: str, request: RequestInfo,
                      client: AjaxClient | None, version: int,
                      positions: wire.Positions | None,
                      handshake_data: t.Callable[[], t.Any]) -> str | bytes:
        """A handshake: a new connection, with a new reader resumed at the client's main
        positions (its user's and the broadcast log). It reads no topic: the client
        rejoins each with its own position and learns per topic whether it was recovered
        (a reader kept from an earlier connection would hand out positions the client
        never had, or ones already moved past what it missed)."""
        main = None if positions is None else {
            name: pos for name, pos in positions.items() if not name.startswith("t:")}
        now = time.monotonic()
        reader, recovered = self.backplane.open_reader(uid, client_id, "ajax", now, main)
        held: AjaxClient | None = self._conns["ajax"].get(uid, {}).get(client_id)
        connected: AjaxClient
        if client is not None and held is client:
            self._topics_end(client, now + self.options.reconnect_grace_ajax)
            self.backplane.close_reader(client.reader, now)
            client.reader = reader
            client.conn_id = new_conn_id()
            connected = client
        else:
            connected = AjaxClient(uid, client_id, request, reader)
            self._register(connected)
        connected.version = version
        self._await_first_poll(connected)
        return self._ajax_handshake(connected, handshake_data(), recovered)

    def _resume_poll(self, client: AjaxClient, positions: wire.Positions,
                     handshake_data: t.Callable[[], t.Any]) -> str | bytes | None:
        """Move the client's reader to the poll's positions (topics it names that this
        process does not read yet are added, when the client was let in). None when every
        log still reaches; else the handshake to answer with: the main logs' verdict as
        ``recovered``, every topic dropped so that its rejoin tells its own."""
        lost_topics = self.adopt_topics(client, positions)
        lost = self.backplane.resume(client.reader, positions) | lost_topics
        if not lost:
            return None
        self._restart_topics(client)
        self._await_first_poll(client)
        return self._ajax_handshake(client, handshake_data(),
                                    not any(not name.startswith("t:") for name in lost))

    def _restart_topics(self, client: AjaxClient) -> None:
        """The client is told to reconnect (a handshake answers its poll): it rejoins every
        topic with its own position, so this reader stops reading them until then."""
        now = time.monotonic()
        self._topics_end(client, now + self.options.reconnect_grace_ajax)
        for topic in self._delivery.topics_of(client.reader):
            self.backplane.leave(client.reader, topic, now)

    def ajax_key(self, uid: t.Any, client_id: str,
                 credentials: t.Any) -> str | None:
        """The fast-path key of a client this process holds, after a request of it passed
        every admission check with these credentials (``ajax.AjaxRequest.credentials``); None
        when no such client is here (it has not polled this process, or is gone).

        One key per client, made at its first admitted request here; the credentials are
        those of its latest one, so a login, logout or new session cookie leaves the fast
        path until Flask has admitted the client again.
        """
        clients = self._conns["ajax"].get(uid)
        client: AjaxClient | None = clients.get(client_id) if clients else None
        if client is None:
            return None
        if client.fast_key is None:
            client.fast_key = secrets.token_urlsafe(18)
        client.credentials = credentials
        self._keyed[client_id] = client
        return client.fast_key

    def keyed_client(self, client_id: str, key: str,
                     credentials: t.Any) -> AjaxClient | None:
        """The client a request with this key and these credentials stands for, or None
        (the request goes through Flask and every check instead)."""
        client = self._keyed.get(client_id)
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
        return self.packer.pack(wire.handshake(
            client.uid, data, version=client.version, recovered=recovered,
            positions=self._delivery.positions_of(client.reader, topics=False)))

    def _poll(self, client: AjaxClient, turn: int,
              handshake_data: t.Callable[[], t.Any]) -> str | bytes:
        if client.turn != turn:  # a newer GET of the client came meanwhile: it reads
            return self._lp_timeout_packed
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
                    return self._lp_timeout_packed
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
                self._restart_topics(client)
                return self._ajax_handshake(client, handshake_data(), not any(
                    not name.startswith("t:") for name in gapped))
            self._delivery.skip_to_head(reader)
            return self.packer.pack(wire.close(wire.CLOSE_TOO_SLOW, "client too slow"))
        pairs = t.cast("list[tuple[str, Entry]]", pending)
        for i, (_, entry) in enumerate(pairs):
            if entry.control == "kick":  # answered after the pushes before it
                if i:
                    pairs = pairs[:i]
                    break
                self._delivery.advance(reader, pairs[:1])
                return self.packer.pack(wire.close(wire.CLOSE_KICKED, entry.event))
        epochs = {name: log.epoch for name, log in reader.logs.items()}
        packed, upto = pack_owed(self.packer, pairs, client.client_id, client.version, epochs,
                                 self.options.max_message_size)
        self.metrics.polled(pairs, upto, client.client_id, packed)
        self._delivery.advance(reader, pairs[:upto])
        return packed

    def _await_first_poll(self, client: AjaxClient) -> None:
        """Forget a client that handshook but never polled within its grace window."""
        if self.closed:
            return
        conn_id = client.conn_id
        timer = self._loop.timer(self.options.reconnect_grace_ajax)

        def check() -> None:  # in the event loop: forgetting may wait for a shared store
            timer.close()
            if not self.closed:
                self.spawn(self._forget_unpolled, client, conn_id)

        timer.start(check)

    def _forget_unpolled(self, client: AjaxClient, conn_id: int) -> None:
        if (client.conn_id == conn_id
                and self._conns["ajax"].get(client.uid, {}).get(client.client_id) is client
                and not self.backplane.is_member(client.uid, "ajax", client.client_id)):
            self._forget("ajax", client.uid, client.client_id)

    def _drop_ajax(self, client: AjaxClient) -> None:
        self.backplane.remove(client.uid, "ajax", client.client_id)
        self._forget("ajax", client.uid, client.client_id)

    def ajax_post(self, uid: t.Any, client_id: str, request: RequestInfo,
                  body: str | bytes) -> tuple[str | bytes, dict[str, list[t.Any]] | None]:
        """Handle one Ajax event; returns the response body (reply, ack or failure) and,
        for a reply whose handler pushed first, the positions the client should reach
        before acting on it (the ``X-Sente-After`` header).

        Raises RemoteProtocolError for a malformed body (the caller answers 400).
        """
        self.metrics.received("ajax", len(body))
        try:
            msg = wire.decode_client(self.packer.unpack(body))
        except RemoteProtocolError as exc:
            self._bad_package(exc, uid, client_id, "ajax", request)
            raise
        event, cb_id = msg.event, msg.cb_id
        if event is None or (ev.is_reserved(event[0]) and event[0] not in ev.TOPIC_REQUESTS):
            self._bad_event(msg.raw if event is None else list(event),
                            msg.bad_reason or "reserved-id", uid, client_id, "ajax", request)
            raise RemoteProtocolError(f"bad event ({msg.bad_reason or 'reserved-id'})")
        if cb_id is None:
            self._dispatch(EventMsg(event, uid, client_id, "ajax", request))
            return self._ack_packed, None
        replier = AjaxReplier(self.packer, self._settle, uid)
        self._dispatch(EventMsg(event, uid, client_id, "ajax", request, replier))
        try:
            answer = replier.result.get(timeout=self.options.reply_timeout)
        except gevent.Timeout:
            self.metrics.reply_timed_out("ajax")
            replier.fail(ev.TIMEOUT)
            answer = replier.result.get()
        return t.cast("str | bytes", answer), replier.after

