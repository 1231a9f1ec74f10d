"""Who is here, as the hub acts on it: members attached and detached with their grace
windows, the one expiry timer, the presence signals and ``chsk/uidport-*`` events, topic
presence (``topic_joined`` / ``topic_left``, the ``chsk/members`` diff), and forgetting a
client that is gone for good.

The backplane decides (``flask_sente.core.presence`` behind it) and reports changes back;
this service turns them into what the app sees, in the order and with the state of
docs/concepts.md ("Presence signals").
"""
from __future__ import annotations

import logging
import time
import typing as t

from .. import signals
from ..backplanes import Backplane
from ..config import Options
from ..core.delivery import Delivery
from ..core.presence import Change, ConnectedUids, Transport, Uid
from ..exceptions import BackplaneError
from ..protocol import events as ev
from ..protocol import wire
from .events import SystemEvents
from .loop import HubLoop
from .table import Connection, ConnectionTable

logger = logging.getLogger("flask_sente")


class PresenceService:
    def __init__(self, loop: HubLoop, options: Options, backplane: Backplane,
                 table: ConnectionTable, events: SystemEvents, sender: t.Any) -> None:
        self.loop = loop
        self._options = options
        self._backplane = backplane
        self._delivery: Delivery = backplane.delivery
        self._table = table
        self._events = events
        self._sender = sender
        self._expiry_timer: t.Any = None
        self._expiry_at: float | None = None

    # --- the state ------------------------------------------------------------------------

    @property
    def connected_uids(self) -> ConnectedUids:
        return self._backplane.connected_uids

    def clients_of(self, uid: Uid) -> dict[str, list[str]]:
        return self._backplane.clients_of(uid)

    def members(self, topic: str) -> frozenset[Uid]:
        return self._backplane.members(topic)

    # --- connections coming and going -------------------------------------------------------

    def attach(self, conn: Connection) -> None:
        try:
            self._backplane.attach(conn.uid, conn.transport, conn.client_id, conn.conn_id)
        except BackplaneError as exc:  # served all the same; presence catches up later
            logger.warning("presence not recorded for uid=%r: %s", conn.uid, exc)

    def detach(self, conn: Connection, conn_id: int, grace: float) -> None:
        """Connection (or Ajax poll) ``conn_id`` ended: its member leaves after ``grace``
        unless a newer one is there by then (the id is the one it attached with, not the
        client's current one: a poll superseded by a newer one must not end that one)."""
        try:
            self._backplane.detach(conn.uid, conn.transport, conn.client_id, conn_id,
                                   time.monotonic() + grace)
        except BackplaneError as exc:
            logger.warning("presence not updated for uid=%r: %s", conn.uid, exc)
        if grace <= 0:
            self.expire()
        else:
            self._arm_expiry()

    def remove(self, conn: Connection) -> None:
        """The member is gone at once (a kick): its ``client_disconnected`` follows."""
        try:
            self._backplane.remove(conn.uid, conn.transport, conn.client_id)
        except BackplaneError as exc:
            logger.warning("presence not updated for uid=%r: %s", conn.uid, exc)

    def forget_connection(self, conn: Connection) -> None:
        """:meth:`forget` ``conn``'s client — unless a newer connection of the same client
        id took its place in the table meanwhile (a reconnect that came while this one was
        being refused or kicked): that one is not this connection's to end."""
        if self._table.holds(conn):
            self.forget(conn.transport, conn.uid, conn.client_id)

    def forget(self, transport: Transport, uid: Uid, client_id: str) -> None:
        """The client is gone for good here: out of the table, its topic memberships ended,
        its reader closed, its grants dropped (a shared store lets them expire instead)."""
        conn = self._table.pop(transport, uid, client_id)
        if conn is None:
            return
        if conn.reader is not None:
            now = time.monotonic()
            if transport == "ajax":
                # Its polls may be going to another process that does not read its topics
                # yet: one sent before a join names none, and its successor, which names
                # them there, comes within lp_timeout. Until then its memberships stay.
                self.topics_end(conn, now + self._options.lp_timeout)
            self._backplane.close_reader(conn.reader, now)
        self._backplane.drop_grants(uid, client_id)

    # --- the one expiry timer ---------------------------------------------------------------

    def _arm_expiry(self) -> None:
        """Keep the one expiry timer at the backplane's next deadline."""
        deadline = self._backplane.next_deadline()
        if deadline is None or self.loop.closed or (
                self._expiry_at is not None and self._expiry_at <= deadline):
            return
        if self._expiry_timer is not None:
            self._expiry_timer.close()
        self._expiry_at = deadline
        self._expiry_timer = self.loop.timer(deadline - time.monotonic())
        self._expiry_timer.start(self._expiry_due)

    def _expiry_due(self) -> None:
        self._expiry_timer = self._expiry_at = None
        if not self.loop.closed:  # signal receivers may block: run them in a greenlet
            self.loop.spawn(self.expire)

    def expire(self) -> None:
        try:
            self._backplane.expire(time.monotonic())
        except BackplaneError as exc:  # local deadlines are reported; the cluster's wait
            logger.warning("grace windows not ended in the backplane now: %s", exc)
        self._arm_expiry()

    def stop(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.close()
        self._expiry_timer = self._expiry_at = None

    # --- what the backplane reports ----------------------------------------------------------

    def changed(self, changes: list[Change]) -> None:
        """Members joined or left: tell the app, in order; forget clients that left."""
        send = self._sender
        for change in changes:
            uid = change.uid
            if change.kind == "user-online":
                signals.user_connected.send(send, uid=uid)
                self._events.emit(ev.UIDPORT_OPEN, uid)
            elif change.kind == "user-offline":
                signals.user_disconnected.send(send, uid=uid)
                self._events.emit(ev.UIDPORT_CLOSE, uid)
            elif change.kind == "client-joined":
                signals.client_connected.send(send, uid=uid, client_id=change.client_id,
                                              transport=change.transport)
            else:
                transport = t.cast(Transport, change.transport)
                self.forget(transport, uid, t.cast(str, change.client_id))
                signals.client_disconnected.send(send, uid=uid, client_id=change.client_id,
                                                 transport=transport)

    def backplane_state(self, healthy: bool) -> None:
        (signals.backplane_up if healthy else signals.backplane_down).send(self._sender)

    # --- topic presence ---------------------------------------------------------------------

    def topic_attach(self, conn: Connection, topic: str) -> None:
        # An Ajax client's connection id changes with every poll; its topic membership
        # lives as long as the client does here, so it is member 0.
        conn_id = conn.conn_id if conn.transport == "ws" else 0
        self._backplane.topic_attach(topic, conn.uid, conn.transport, conn.client_id, conn_id)

    def topics_end(self, conn: Connection, deadline: float) -> None:
        """``conn`` ended: its topic memberships leave at ``deadline`` unless it rejoins."""
        reader = conn.reader
        if reader is None:
            return
        conn_id = conn.conn_id if conn.transport == "ws" else 0
        for topic in self._delivery.topics_of(reader):
            try:
                self._backplane.topic_detach(topic, conn.uid, conn.transport, conn.client_id,
                                             conn_id, deadline)
            except BackplaneError as exc:
                logger.warning("topic presence not updated for uid=%r: %s", conn.uid, exc)
        self._arm_expiry()

    def topics_changed(self, changes: list[Change]) -> None:
        """Users joined or left topics (each change seen once in the cluster): signals, and
        the ``chsk/members`` diff when ``topic_presence`` is on."""
        diffs: dict[str, dict[str, list[Uid]]] = {}
        for change in changes:
            topic, uid = change.uid
            joined = change.kind == "user-online"
            (signals.topic_joined if joined else signals.topic_left).send(
                self._sender, topic=topic, uid=uid)
            diff = diffs.setdefault(topic, {"joined": [], "left": []})
            diff["joined" if joined else "left"].append(uid)
        if self._options.topic_presence and not self.loop.closed:
            for topic, diff in diffs.items():
                self._backplane.publish(topic, wire.topic_event(topic, [ev.MEMBERS, diff]),
                                        None, time.monotonic())
