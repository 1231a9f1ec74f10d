"""Topics, the hub's side: joins and leaves (asked by clients or made by the server),
publishing, and taking a connection's topics along when it reconnects.

A topic is one more log a reader reads (``flask_sente.core.delivery``), so its events keep
their order, are batched with the user's own pushes, and are replayed to a client that
rejoins with its position. Who may read a topic is decided once per client by the app's
``on_join`` handler and recorded as a *grant* in the backplane: any process may then add the
topic to that client's reader (an Ajax poll served by another worker names the topic in its
positions), and a server-side join is a grant plus a command every process applies to its
own readers. Topic presence (members, signals) is ``hub.presence``'s.
"""
from __future__ import annotations

import logging
import time
import typing as t

from ..backplanes import Backplane
from ..config import Options
from ..core.delivery import Delivery, Reader
from ..core.presence import Transport, Uid
from ..exceptions import BackplaneError, JoinRefused, LocalProtocolError, RemoteProtocolError
from ..messages import EventMsg, JoinMsg
from ..metrics import NO_METRICS, NoMetrics
from ..protocol import events as ev
from ..protocol import wire
from ..protocol.session import is_topic_log, topic_of
from .flushing import Flusher
from .loop import HubLoop, from_any_thread
from .presence import PresenceService
from .table import Connection, ConnectionTable

logger = logging.getLogger("flask_sente")

JoinHandler = t.Callable[[JoinMsg], t.Any]
Reply = dict[str, t.Any]


class JoinHandlers:
    """``on_join`` handlers by pattern: an exact topic name, or a prefix ending in ``*``
    (``"room/*"`` matches ``"room/lobby"``). An exact name wins, then the longest prefix."""

    def __init__(self) -> None:
        self._exact: dict[str, JoinHandler] = {}
        self._prefixes: list[tuple[str, JoinHandler]] = []

    def add(self, pattern: str, fn: JoinHandler) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"a topic pattern is a non-empty string, got {pattern!r}")
        if "*" in pattern[:-1]:
            raise ValueError(f"'*' may only end a topic pattern, got {pattern!r}")
        if pattern.endswith("*"):
            prefixes = [p for p in self._prefixes if p[0] != pattern[:-1]]
            prefixes.append((pattern[:-1], fn))
            self._prefixes = sorted(prefixes, key=lambda p: -len(p[0]))
        else:
            self._exact[pattern] = fn

    def find(self, topic: str) -> JoinHandler | None:
        fn = self._exact.get(topic)
        if fn is not None:
            return fn
        for prefix, handler in self._prefixes:
            if topic.startswith(prefix):
                return handler
        return None


def _refused(topic: str | None, reason: str) -> Reply:
    return {"ok": False, "topic": topic, "reason": reason}


class TopicService:
    def __init__(self, loop: HubLoop, options: Options, backplane: Backplane,
                 table: ConnectionTable, presence: PresenceService, flusher: Flusher,
                 join_handlers: JoinHandlers, metrics: NoMetrics = NO_METRICS) -> None:
        self.loop = loop
        self._metrics = metrics
        self._options = options
        self._backplane = backplane
        self._delivery: Delivery = backplane.delivery
        self._table = table
        self._presence = presence
        self._flusher = flusher
        self._join_handlers = join_handlers

    # --- clients asking --------------------------------------------------------------------

    def request(self, msg: EventMsg) -> None:
        """Answer a client's ``chsk/join`` or ``chsk/leave`` (the router runs this as the
        handler of those ids, in the app context). Refusals are replies, not errors."""
        topic = msg.data.get("topic") if isinstance(msg.data, dict) else None
        try:
            value = self._join(msg) if msg.id == ev.JOIN else self._leave(msg)
        except RemoteProtocolError as exc:
            value = {**_refused(topic if isinstance(topic, str) else None, "bad-request"),
                     "message": str(exc)}
        except BackplaneError as exc:
            logger.warning("topic request not served now: %s", exc)
            value = _refused(topic, "unavailable")
        msg.reply(value)
        if value.get("recovered"):  # the replay follows the reply
            self._flusher.logs_appended((t.cast(Transport, msg.transport),))

    def _join(self, msg: EventMsg) -> Reply:
        req = wire.decode_join(msg.data, self._options.max_topic_length)
        topic, uid, client_id = req.topic, msg.uid, t.cast(str, msg.client_id)
        transport = t.cast(Transport, msg.transport)
        conn = self._table.get(transport, uid, client_id)
        reader: Reader | None = conn.reader if conn is not None else None
        grants = self._backplane.granted(uid, client_id)
        rejoin = topic in grants
        refusal = None if rejoin else self._refusal(topic, uid, grants, reader)
        if refusal is not None:
            return refusal
        handler = self._join_handlers.find(topic)
        data = None
        if handler is not None:
            try:
                result = handler(JoinMsg(topic, req.data, uid, client_id, transport,
                                         msg.request, rejoin))
            except JoinRefused as exc:
                return _refused(topic, exc.reason)
            if result is None or result is False:
                return _refused(topic, "forbidden")
            data = None if result is True else result
        if not rejoin:
            self._backplane.grant(uid, client_id, topic)
        recovered, position = self._backplane.join(reader, topic, time.monotonic(),
                                                   req.position)
        if conn is not None:
            self._presence.topic_attach(conn, topic)
        return {"ok": True, "topic": topic, "data": data, "position": list(position),
                "recovered": recovered}

    def _refusal(self, topic: str, uid: Uid, grants: set[str],
                 reader: Reader | None) -> Reply | None:
        """Why a first join is refused before its handler is asked, or None."""
        if self._join_handlers.find(topic) is None:
            return _refused(topic, "forbidden")  # no handler: nobody may join
        joined = grants | set(self._delivery.topics_of(reader) if reader else ())
        if len(joined) >= self._options.max_topics_per_client:
            return _refused(topic, "too-many-topics")
        members = self._backplane.members(topic)
        if uid not in members and len(members) >= self._options.max_topic_members:
            return _refused(topic, "full")
        return None

    def _leave(self, msg: EventMsg) -> Reply:
        topic = wire.decode_leave(msg.data, self._options.max_topic_length)
        client_id = t.cast(str, msg.client_id)
        self._backplane.revoke(msg.uid, client_id, topic)
        conn = self._table.get(t.cast(Transport, msg.transport), msg.uid, client_id)
        if conn is not None:
            self._leave_here(conn, topic, notify=False)
        self._backplane.command(msg.uid, client_id, "leave", topic)  # its other readers
        return {"ok": True, "topic": topic}

    # --- a connection's topics ----------------------------------------------------------------

    def adopt(self, conn: Connection, positions: wire.Positions) -> set[str]:
        """A poll names topics its reader here does not read (the client joined them
        through another process, or this process forgot it): add those the client was
        granted, at its positions. Names it was not granted are ignored (they reach it
        nothing). Returns the logs (``"t:" + topic``) whose history no longer reaches the
        client's position."""
        reader = conn.reader
        assert reader is not None
        names = [topic_of(name) for name in positions
                 if is_topic_log(name) and name not in reader.logs]
        if not names:
            return set()
        grants = self._backplane.granted(conn.uid, conn.client_id)
        now = time.monotonic()
        lost: set[str] = set()
        for topic in names:
            if topic in grants:
                ok, _ = self._backplane.join(reader, topic, now, positions[f"t:{topic}"])
                if ok is False:
                    lost.add(f"t:{topic}")
                self._presence.topic_attach(conn, topic)
        return lost

    def drop_all(self, conn: Connection, grace: float) -> None:
        """The client is told to reconnect: it rejoins every topic with its own position,
        so its reader here stops reading them until then (memberships wait ``grace``)."""
        reader = conn.reader
        if reader is None:
            return
        now = time.monotonic()
        self._presence.topics_end(conn, now + grace)
        for topic in self._delivery.topics_of(reader):
            self._backplane.leave(reader, topic, now)

    # --- the server deciding ---------------------------------------------------------------

    def join(self, topic: str, uid: Uid, client_id: str | None = None) -> None:
        """Put every client of ``uid`` (or the one ``client_id``) in ``topic``, on every
        process, without asking a join handler; each is sent ``chsk/joined``."""
        self._check(topic)
        self._command("join", topic, uid, client_id)

    def leave(self, topic: str, uid: Uid, client_id: str | None = None) -> None:
        """Take every client of ``uid`` (or one) out of ``topic``; each is sent
        ``chsk/left`` with reason ``"removed"`` and will not rejoin on its own."""
        self._check(topic)
        self._command("remove", topic, uid, client_id)

    @from_any_thread
    def _command(self, kind: str, topic: str, uid: Uid, client_id: str | None) -> None:
        for cid in self._client_ids(uid, client_id):
            if kind == "join":
                self._backplane.grant(uid, cid, topic)
            else:
                self._backplane.revoke(uid, cid, topic)
        self._backplane.command(uid, client_id, kind, topic)

    def command(self, uid: Uid, client_id: str | None, kind: str, topic: str) -> None:
        """Backplane listener: apply a join or leave to this process's clients of ``uid``,
        after the user's commands before it (in the log's order). Side by side, a leave
        that came while the join before it still waited for the shared store found the
        client not in the topic yet and was lost: the client stayed in."""
        if self.loop.closed:
            return
        try:  # may wait for a shared store: not on the subscriber's greenlet
            self.loop.in_lane(("topic-commands", uid), self._apply, uid, client_id, kind,
                              topic)
        except TypeError:  # an unhashable uid has no lane: its commands run side by side
            self.loop.spawn(self._apply, uid, client_id, kind, topic)

    def _apply(self, uid: Uid, client_id: str | None, kind: str, topic: str) -> None:
        for conn in self._table.of_user(uid):
            if client_id is not None and conn.client_id != client_id or conn.reader is None:
                continue
            try:
                if kind == "join":
                    self._join_here(conn, topic)
                else:
                    self._leave_here(conn, topic, notify=kind == "remove")
            except BackplaneError as exc:
                logger.warning("topic %s of %r not applied here: %s", kind, topic, exc)

    def _join_here(self, conn: Connection, topic: str) -> None:
        reader = t.cast(Reader, conn.reader)
        if f"t:{topic}" in reader.logs:
            return
        _, (epoch, seq) = self._backplane.join(reader, topic, time.monotonic(), None)
        self._presence.topic_attach(conn, topic)
        self._backplane.push(conn.uid, [ev.JOINED, {"topic": topic, "position": [epoch, seq]}],
                             conn.client_id, time.monotonic())

    def _leave_here(self, conn: Connection, topic: str, *, notify: bool) -> None:
        reader = t.cast(Reader, conn.reader)
        if f"t:{topic}" not in reader.logs:
            return
        self._backplane.leave(reader, topic, time.monotonic())
        self._backplane.topic_remove(topic, conn.uid, conn.transport, conn.client_id)
        if notify:
            self._backplane.push(conn.uid, [ev.LEFT, {"topic": topic, "reason": "removed"}],
                                 conn.client_id, time.monotonic())

    def _client_ids(self, uid: Uid, client_id: str | None) -> list[str]:
        if client_id is not None:
            return [client_id]
        clients = self._backplane.clients_of(uid)
        return sorted({cid for ids in clients.values() for cid in ids})

    # --- publishing --------------------------------------------------------------------------

    def publish(self, topic: str, event: object, *, exclude_client_id: str | None = None,
                flush: bool = False) -> None:
        """Push ``event`` to every member of ``topic`` (but ``exclude_client_id``)."""
        self._check(topic)
        wire_event = wire.topic_event(topic, ev.to_wire(ev.validate_outgoing(event)))
        self._publish(topic, wire_event, exclude_client_id, flush)

    @from_any_thread
    def _publish(self, topic: str, wire_event: ev.WireEvent, exclude: str | None,
                 flush: bool) -> None:
        self._backplane.publish(topic, wire_event, exclude, time.monotonic())
        self._metrics.topic_published(topic)
        if flush:
            self._flusher.flush_all()

    def _check(self, topic: object) -> None:
        error = wire.topic_error(topic, self._options.max_topic_length)
        if error is not None:
            raise LocalProtocolError(error)
