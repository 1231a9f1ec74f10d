"""The in-memory backplane: one process, logs and presence in this process only.

Every call acts at once and reports to the listener synchronously. History survives
network drops and client reconnects, not a restart: a new process has new epochs, so a
returning client learns that it missed something. What it shares with the Redis backplane
(the logs, the members, the listener) is :class:`~flask_sente.backplanes.common.BackplaneBase`;
this module is only what memory does differently.
"""
from __future__ import annotations

import typing as t

from ..core.delivery import BROADCAST, TOPIC, USER, Position, Reader, WireEvent
from ..core.presence import ConnectedUids, Transport, Uid
from ..protocol.wire import Positions
from .common import BackplaneBase


class LocalBackplane(BackplaneBase):
    """See the module docstring; satisfies :class:`~flask_sente.backplanes.base.Backplane`."""

    def __init__(self, *, history_size: int, history_ttl: float) -> None:
        super().__init__(history_size=history_size, history_ttl=history_ttl)
        self._grants: dict[tuple[Uid, str], set[str]] = {}

    # --- logs ------------------------------------------------------------------------------

    def open_reader(self, uid: Uid, client_id: str, transport: Transport, now: float,
                    positions: Positions | None) -> tuple[Reader, bool | None]:
        reader = self.delivery.open_reader(uid, client_id, transport, now)
        return reader, None if positions is None else self.delivery.resume(reader, positions)

    def resume(self, reader: Reader, positions: Positions) -> set[str]:
        return self.delivery.resume_logs(reader, positions)

    def kick(self, uid: Uid, reason: str, now: float) -> None:
        self.delivery.kick(uid, reason, now)
        self.report_kicked(uid, reason)

    def push(self, uid: Uid, event: WireEvent, target: str | None, now: float) -> None:
        due = self.delivery.push(uid, event, target, now)
        self.record_position((USER, uid), target=target)
        self.report_appended(due)

    def broadcast(self, event: WireEvent, now: float) -> None:
        due = self.delivery.broadcast(event, now)
        self.record_position(BROADCAST)
        self.report_appended(due)

    def join(self, reader: Reader | None, topic: str, now: float,
             position: Position | None) -> tuple[bool | None, Position]:
        if reader is None:
            return self.delivery.topic_position(topic, now, position)
        return self.delivery.join(reader, topic, now, position)

    def publish(self, topic: str, event: WireEvent, exclude: str | None, now: float) -> None:
        due = self.delivery.publish(topic, event, exclude, now)
        self.record_position((TOPIC, topic), exclude=exclude)
        self.report_appended(due)

    def command(self, uid: Uid, client_id: str | None, kind: str, topic: str) -> None:
        self.report_command(uid, client_id, kind, topic)

    # --- grants and cursors ----------------------------------------------------------------

    def grant(self, uid: Uid, client_id: str, topic: str) -> None:
        self._grants.setdefault((uid, client_id), set()).add(topic)

    def revoke(self, uid: Uid, client_id: str, topic: str) -> None:
        self._grants.get((uid, client_id), set()).discard(topic)

    def granted(self, uid: Uid, client_id: str) -> set[str]:
        return set(self._grants.get((uid, client_id), ()))

    def drop_grants(self, uid: Uid, client_id: str) -> None:
        self._grants.pop((uid, client_id), None)

    def refresh_grants(self, held: t.Sequence[tuple[Uid, str]]) -> None:
        """Nothing to renew: see :attr:`grants_ttl`."""

    def save_cursor(self, uid: Uid, client_id: str, positions: Positions) -> None:
        """One process serves every poll: its reader is the cursor."""

    def load_cursor(self, uid: Uid, client_id: str) -> dict[str, Position] | None:
        return None

    # --- presence --------------------------------------------------------------------------

    @property
    def connected_uids(self) -> ConnectedUids:
        return self.presence.connected_uids

    def clients_of(self, uid: Uid) -> dict[str, list[str]]:
        return self.presence.clients_of(uid)

    def attach(self, uid: Uid, transport: Transport, client_id: str, conn_id: int) -> None:
        self.report(self.presence.attach(uid, transport, client_id, conn_id))

    def detach(self, uid: Uid, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> None:
        self.presence.detach(uid, transport, client_id, conn_id, deadline)

    def remove(self, uid: Uid, transport: Transport, client_id: str) -> None:
        self.report(self.presence.remove(uid, transport, client_id))

    def topic_attach(self, topic: str, uid: Uid, transport: Transport, client_id: str,
                     conn_id: int) -> None:
        self.report_topics(self.topic_presence.attach((topic, uid), transport, client_id,
                                                      conn_id))

    def topic_detach(self, topic: str, uid: Uid, transport: Transport, client_id: str,
                     conn_id: int, deadline: float) -> None:
        self.topic_presence.detach((topic, uid), transport, client_id, conn_id, deadline)

    def topic_remove(self, topic: str, uid: Uid, transport: Transport,
                     client_id: str) -> None:
        self.report_topics(self.topic_presence.remove((topic, uid), transport, client_id))

    def expire(self, now: float) -> None:
        # Presence deadlines only: the hub's sweep expires the logs every few seconds (a
        # scan of every log per ended grace window made connect storms quadratic).
        self.report(self.presence.expire(now))
        self.report_topics(self.topic_presence.expire(now))
