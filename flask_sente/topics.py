"""Topics, the hub's side: joins and leaves (asked by clients or made by the server),
publishing, members and topic presence.

A topic is one more log a reader reads (``flask_sente.core.delivery``), so its events keep
their order, are batched with the user's own pushes, and are replayed to a client that
rejoins with its position. Who may read a topic is decided once per client by the app's
``on_join`` handler and recorded as a *grant* in the backplane: any process may then add the
topic to that client's reader (an Ajax poll served by another worker names the topic in its
positions), and a server-side join is a grant plus a command every process applies to its
own readers. Topic presence counts users, not tabs, with the same grace windows as the
user's own presence; its transitions fire ``topic_joined`` / ``topic_left`` once in the
cluster and, with ``topic_presence``, a ``chsk/members`` diff in the topic itself.

Mixed into :class:`flask_sente.hub.Hub`, whose state it uses; it never imports Flask.
"""
from __future__ import annotations

import logging
import time
import typing as t

from . import signals
from .backplanes import Backplane
from .config import Options
from .core.delivery import Delivery, Reader
from .core.presence import Change, Transport
from .exceptions import BackplaneError, JoinRefused, LocalProtocolError, RemoteProtocolError
from .messages import EventMsg, JoinMsg
from .protocol import events as ev
from .protocol import wire

logger = logging.getLogger("flask_sente")

JoinHandler = t.Callable[[JoinMsg], t.Any]


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


def _refused(topic: str | None, reason: str) -> dict[str, t.Any]:
    return {"ok": False, "topic": topic, "reason": reason}


class Topics:
    """See the module docstring. The attributes below are the hub's."""

    options: Options
    backplane: Backplane
    closed: bool
    _delivery: Delivery
    _conns: dict[Transport, dict[t.Any, dict[str, t.Any]]]
    _sender: t.Any

    if t.TYPE_CHECKING:  # the hub's methods this side calls
        def spawn(self, fn: t.Callable[..., t.Any], *args: t.Any) -> t.Any: ...
        def _on_hub_thread(self) -> bool: ...
        def _threadsafe(self, fn: t.Callable[..., t.Any], *args: t.Any) -> None: ...
        def flush(self) -> None: ...
        def logs_appended(self, transports: tuple[Transport, ...]) -> None: ...
        def _push(self, uid: t.Any, wire_event: t.Any, client_id: str | None,
                  flush: bool) -> None: ...

    # --- clients asking --------------------------------------------------------------------

    def topic_request(self, msg: EventMsg, handlers: JoinHandlers) -> None:
        """Answer a client's ``chsk/join`` or ``chsk/leave`` (the router runs this as the
        handler of those ids, in the app context). Refusals are replies, not errors."""
        topic = msg.data.get("topic") if isinstance(msg.data, dict) else None
        try:
            if msg.id == ev.JOIN:
                value = self._join_request(msg, handlers)
            else:
                value = self._leave_request(msg)
        except RemoteProtocolError as exc:
            value = {**_refused(topic if isinstance(topic, str) else None, "bad-request"),
                     "message": str(exc)}
        except BackplaneError as exc:
            logger.warning("topic request not served now: %s", exc)
            value = _refused(topic, "unavailable")
        msg.reply(value)
        if value.get("recovered"):  # the replay follows the reply
            self.logs_appended((t.cast(Transport, msg.transport),))

    def _join_request(self, msg: EventMsg, handlers: JoinHandlers) -> dict[str, t.Any]:
        req = wire.decode_join(msg.data, self.options.max_topic_length)
        topic, uid, client_id = req.topic, msg.uid, t.cast(str, msg.client_id)
        transport = t.cast(Transport, msg.transport)
        conn = self._conn_of(transport, uid, client_id)
        reader: Reader | None = conn.reader if conn is not None else None
        grants = self.backplane.granted(uid, client_id)
        rejoin = topic in grants
        handler = handlers.find(topic)
        if handler is None and not rejoin:
            return _refused(topic, "forbidden")  # no handler: nobody may join
        if not rejoin:
            joined = grants | set(self._delivery.topics_of(reader) if reader else ())
            if len(joined) >= self.options.max_topics_per_client:
                return _refused(topic, "too-many-topics")
            members = self.backplane.members(topic)
            if uid not in members and len(members) >= self.options.max_topic_members:
                return _refused(topic, "full")
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
            self.backplane.grant(uid, client_id, topic)
        recovered, position = self.backplane.join(reader, topic, time.monotonic(),
                                                  req.position)
        if conn is not None:
            self._topic_attach(conn, topic)
        return {"ok": True, "topic": topic, "data": data, "position": list(position),
                "recovered": recovered}

    def _leave_request(self, msg: EventMsg) -> dict[str, t.Any]:
        topic = wire.decode_leave(msg.data, self.options.max_topic_length)
        client_id = t.cast(str, msg.client_id)
        self.backplane.revoke(msg.uid, client_id, topic)
        conn = self._conn_of(t.cast(Transport, msg.transport), msg.uid, client_id)
        if conn is not None:
            self._leave_here(conn, topic, notify=False)
        self.backplane.command(msg.uid, client_id, "leave", topic)  # its other readers
        return {"ok": True, "topic": topic}

    def adopt_topics(self, conn: t.Any, positions: wire.Positions) -> set[str]:
        """A poll names topics its reader here does not read (the client joined them
        through another process, or this process forgot it): add those the client was
        granted, at its positions. Names it was not granted are ignored (they reach it
        nothing). Returns the logs (``"t:" + topic``) whose history no longer reaches the
        client's position."""
        reader = conn.reader
        names = [name[2:] for name in positions
                 if name.startswith("t:") and name not in reader.logs]
        if not names:
            return set()
        grants = self.backplane.granted(conn.uid, conn.client_id)
        now = time.monotonic()
        lost: set[str] = set()
        for topic in names:
            if topic in grants:
                ok, _ = self.backplane.join(reader, topic, now, positions[f"t:{topic}"])
                if ok is False:
                    lost.add(f"t:{topic}")
                self._topic_attach(conn, topic)
        return lost

    # --- the server deciding ---------------------------------------------------------------

    def join(self, topic: str, uid: t.Any, client_id: str | None = None) -> None:
        """Put every client of ``uid`` (or the one ``client_id``) in ``topic``, on every
        process, without asking a join handler; each is sent ``chsk/joined``."""
        self._check_topic(topic)
        if not self._on_hub_thread():
            self._threadsafe(self.join, topic, uid, client_id)
            return
        for cid in self._client_ids(uid, client_id):
            self.backplane.grant(uid, cid, topic)
        self.backplane.command(uid, client_id, "join", topic)

    def leave(self, topic: str, uid: t.Any, client_id: str | None = None) -> None:
        """Take every client of ``uid`` (or one) out of ``topic``; each is sent
        ``chsk/left`` with reason ``"removed"`` and will not rejoin on its own."""
        self._check_topic(topic)
        if not self._on_hub_thread():
            self._threadsafe(self.leave, topic, uid, client_id)
            return
        for cid in self._client_ids(uid, client_id):
            self.backplane.revoke(uid, cid, topic)
        self.backplane.command(uid, client_id, "remove", topic)

    def topic_command(self, uid: t.Any, client_id: str | None, kind: str, topic: str) -> None:
        """Backplane listener: apply a join or leave to this process's clients of ``uid``."""
        if not self.closed:  # may wait for a shared store: not on the subscriber's greenlet
            self.spawn(self._apply_command, uid, client_id, kind, topic)

    def _apply_command(self, uid: t.Any, client_id: str | None, kind: str, topic: str) -> None:
        for transport in ("ws", "ajax"):
            for cid, conn in list(self._conns[transport].get(uid, {}).items()):
                if client_id is not None and cid != client_id or conn.reader is None:
                    continue
                try:
                    if kind == "join":
                        self._join_here(conn, topic)
                    else:
                        self._leave_here(conn, topic, notify=kind == "remove")
                except BackplaneError as exc:
                    logger.warning("topic %s of %r not applied here: %s", kind, topic, exc)

    def _join_here(self, conn: t.Any, topic: str) -> None:
        if f"t:{topic}" in conn.reader.logs:
            return
        _, (epoch, seq) = self.backplane.join(conn.reader, topic, time.monotonic(), None)
        self._topic_attach(conn, topic)
        self._push(conn.uid, [ev.JOINED, {"topic": topic, "position": [epoch, seq]}],
                   conn.client_id, False)

    def _leave_here(self, conn: t.Any, topic: str, *, notify: bool) -> None:
        if f"t:{topic}" not in conn.reader.logs:
            return
        self.backplane.leave(conn.reader, topic, time.monotonic())
        self.backplane.topic_remove(topic, conn.uid, conn.transport, conn.client_id)
        if notify:
            self._push(conn.uid, [ev.LEFT, {"topic": topic, "reason": "removed"}],
                       conn.client_id, False)

    def _client_ids(self, uid: t.Any, client_id: str | None) -> list[str]:
        if client_id is not None:
            return [client_id]
        clients = self.backplane.clients_of(uid)
        return sorted({cid for ids in clients.values() for cid in ids})

    # --- publishing and members ------------------------------------------------------------

    def publish(self, topic: str, event: t.Any, *, exclude_client_id: str | None = None,
                flush: bool = False) -> None:
        """Push ``event`` to every member of ``topic`` (but ``exclude_client_id``)."""
        self._check_topic(topic)
        wire_event = wire.topic_event(topic, ev.to_wire(ev.validate_outgoing(event)))
        if not self._on_hub_thread():
            self._threadsafe(self._publish, topic, wire_event, exclude_client_id, flush)
            return
        self._publish(topic, wire_event, exclude_client_id, flush)

    def _publish(self, topic: str, wire_event: t.Any, exclude: str | None,
                 flush: bool) -> None:
        self.backplane.publish(topic, wire_event, exclude, time.monotonic())
        if flush:
            self.flush()

    def members(self, topic: str) -> frozenset[t.Any]:
        """The users in ``topic`` (every process's, with a shared backplane)."""
        return self.backplane.members(topic)

    def topic_presence_changed(self, changes: list[Change]) -> None:
        """Backplane listener: users joined or left topics (each change seen once in the
        cluster): signals, and the ``chsk/members`` diff when ``topic_presence`` is on."""
        diffs: dict[str, dict[str, list[t.Any]]] = {}
        for change in changes:
            topic, uid = change.uid
            joined = change.kind == "user-online"
            (signals.topic_joined if joined else signals.topic_left).send(
                self._sender, topic=topic, uid=uid)
            diff = diffs.setdefault(topic, {"joined": [], "left": []})
            diff["joined" if joined else "left"].append(uid)
        if self.options.topic_presence and not self.closed:
            for topic, diff in diffs.items():
                self._publish(topic, wire.topic_event(topic, [ev.MEMBERS, diff]), None, False)

    # --- connections ending ----------------------------------------------------------------

    def _topic_attach(self, conn: t.Any, topic: str) -> None:
        # An Ajax client's connection id changes with every poll; its topic membership
        # lives as long as the client does here, so it is member 0.
        conn_id = conn.conn_id if conn.transport == "ws" else 0
        self.backplane.topic_attach(topic, conn.uid, conn.transport, conn.client_id, conn_id)

    def _topics_end(self, conn: t.Any, deadline: float) -> None:
        """``conn`` ended: its topic memberships leave at ``deadline`` unless it rejoins."""
        reader = conn.reader
        if reader is None:
            return
        conn_id = conn.conn_id if conn.transport == "ws" else 0
        for topic in self._delivery.topics_of(reader):
            try:
                self.backplane.topic_detach(topic, conn.uid, conn.transport, conn.client_id,
                                            conn_id, deadline)
            except BackplaneError as exc:
                logger.warning("topic presence not updated for uid=%r: %s", conn.uid, exc)

    def _conn_of(self, transport: Transport, uid: t.Any, client_id: str) -> t.Any:
        return self._conns[transport].get(uid, {}).get(client_id)

    def _check_topic(self, topic: t.Any) -> None:
        error = wire.topic_error(topic, self.options.max_topic_length)
        if error is not None:
            raise LocalProtocolError(error)
