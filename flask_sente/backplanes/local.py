"""The in-memory backplane: one process, logs and presence in this process only.

Every call acts at once and reports to the listener synchronously. History survives
network drops and client reconnects, not a restart: a new process has new epochs, so a
returning client learns that it missed something.
"""
from __future__ import annotations

import secrets
import typing as t

from ..core.delivery import BROADCAST, TOPIC, USER, Delivery, Reader
from ..core.presence import Change, ConnectedUids, Presence, Transport
from .base import BackplaneListener, current_record


def new_epoch() -> str:
    """A random log epoch: 8 URL-safe characters (48 bits) are plenty per process."""
    return secrets.token_urlsafe(6)


def track_members(members: dict[str, set[t.Any]], changes: list[Change]) -> None:
    """Keep ``topic -> uids`` in step with topic presence transitions."""
    for change in changes:
        topic, uid = change.uid
        if change.kind == "user-online":
            members.setdefault(topic, set()).add(uid)
        else:
            uids = members.get(topic)
            if uids is not None:
                uids.discard(uid)
                if not uids:
                    del members[topic]


class LocalBackplane:
    """See the module docstring; satisfies :class:`~flask_sente.backplanes.base.Backplane`."""

    def __init__(self, *, history_size: int, history_ttl: float) -> None:
        self.delivery = Delivery(history_size=history_size, history_ttl=history_ttl,
                                 new_epoch=new_epoch)
        self.presence = Presence()
        #: Topic presence: a member's "uid" is ``(topic, uid)``.
        self.topic_presence = Presence()
        self._grants: dict[tuple[t.Any, str], set[str]] = {}
        self._members: dict[str, set[t.Any]] = {}
        self._listener: BackplaneListener | None = None

    def start(self, listener: BackplaneListener) -> None:
        self._listener = listener

    @property
    def connected_uids(self) -> ConnectedUids:
        return self.presence.connected_uids

    def clients_of(self, uid: t.Any) -> dict[str, list[str]]:
        return self.presence.clients_of(uid)

    def is_member(self, uid: t.Any, transport: Transport, client_id: str) -> bool:
        return self.presence.is_member(uid, transport, client_id)

    def open_reader(self, uid: t.Any, client_id: str, transport: Transport, now: float,
                    positions: t.Mapping[str, tuple[str, int]] | None
                    ) -> tuple[Reader, bool | None]:
        reader = self.delivery.open_reader(uid, client_id, transport, now)
        return reader, None if positions is None else self.delivery.resume(reader, positions)

    def close_reader(self, reader: Reader, now: float) -> None:
        self.delivery.close_reader(reader, now)

    def resume(self, reader: Reader, positions: t.Mapping[str, tuple[str, int]]) -> set[str]:
        return self.delivery.resume_logs(reader, positions)

    def kick(self, uid: t.Any, reason: str, now: float) -> None:
        self.delivery.kick(uid, reason, now)
        if self._listener is not None:
            self._listener.kicked(uid, reason)

    def push(self, uid: t.Any, event: t.Any, target: str | None, now: float) -> None:
        due = self.delivery.push(uid, event, target, now)
        self._recorded((USER, uid), target=target)
        if due and self._listener is not None:
            self._listener.logs_appended(due)

    def broadcast(self, event: t.Any, now: float) -> None:
        due = self.delivery.broadcast(event, now)
        self._recorded(BROADCAST)
        if due and self._listener is not None:
            self._listener.logs_appended(due)

    def _recorded(self, key: t.Hashable, target: str | None = None,
                  exclude: str | None = None) -> None:
        """Tell the request or handler recording its pushes where this one went."""
        record = current_record()
        if record is not None:
            log = self.delivery.logs.get(key)
            if log is not None:
                record.add(key, (log.epoch, log.seq), target, exclude)

    # --- topics ----------------------------------------------------------------------------

    def join(self, reader: Reader | None, topic: str, now: float,
             position: tuple[str, int] | None) -> tuple[bool | None, tuple[str, int]]:
        if reader is None:
            return self.delivery.topic_position(topic, now, position)
        return self.delivery.join(reader, topic, now, position)

    def leave(self, reader: Reader, topic: str, now: float) -> None:
        self.delivery.leave(reader, topic, now)

    def publish(self, topic: str, event: t.Any, exclude: str | None, now: float) -> None:
        due = self.delivery.publish(topic, event, exclude, now)
        self._recorded((TOPIC, topic), exclude=exclude)
        if due and self._listener is not None:
            self._listener.logs_appended(due)

    def grant(self, uid: t.Any, client_id: str, topic: str) -> None:
        self._grants.setdefault((uid, client_id), set()).add(topic)

    def revoke(self, uid: t.Any, client_id: str, topic: str) -> None:
        self._grants.get((uid, client_id), set()).discard(topic)

    def granted(self, uid: t.Any, client_id: str) -> set[str]:
        return set(self._grants.get((uid, client_id), ()))

    def drop_grants(self, uid: t.Any, client_id: str) -> None:
        self._grants.pop((uid, client_id), None)

    #: Grants here end with their client (``drop_grants``), never by time.
    grants_ttl: float | None = None

    def refresh_grants(self, held: t.Sequence[tuple[t.Any, str]]) -> None:
        """Nothing to renew: see :attr:`grants_ttl`."""

    def command(self, uid: t.Any, client_id: str | None, kind: str, topic: str) -> None:
        if self._listener is not None:
            self._listener.topic_command(uid, client_id, kind, topic)

    def topic_attach(self, topic: str, uid: t.Any, transport: Transport, client_id: str,
                     conn_id: int) -> None:
        self._report_topics(self.topic_presence.attach((topic, uid), transport, client_id,
                                                       conn_id))

    def topic_detach(self, topic: str, uid: t.Any, transport: Transport, client_id: str,
                     conn_id: int, deadline: float) -> None:
        self.topic_presence.detach((topic, uid), transport, client_id, conn_id, deadline)

    def topic_remove(self, topic: str, uid: t.Any, transport: Transport,
                     client_id: str) -> None:
        self._report_topics(self.topic_presence.remove((topic, uid), transport, client_id))

    def members(self, topic: str) -> frozenset[t.Any]:
        return frozenset(self._members.get(topic, ()))

    def save_cursor(self, uid: t.Any, client_id: str,
                    positions: t.Mapping[str, tuple[str, int]]) -> None:
        """One process serves every poll: its reader is the cursor."""

    def load_cursor(self, uid: t.Any, client_id: str) -> dict[str, tuple[str, int]] | None:
        return None

    def _report_topics(self, changes: list[Change]) -> None:
        changes = [c for c in changes if c.kind.startswith("user-")]
        if not changes:
            return
        track_members(self._members, changes)
        if self._listener is not None:
            self._listener.topic_presence_changed(changes)

    def attach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int) -> None:
        self._report(self.presence.attach(uid, transport, client_id, conn_id))

    def detach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> None:
        self.presence.detach(uid, transport, client_id, conn_id, deadline)

    def remove(self, uid: t.Any, transport: Transport, client_id: str) -> None:
        self._report(self.presence.remove(uid, transport, client_id))

    def expire(self, now: float) -> None:
        # Presence deadlines only: the hub's sweep expires the logs every few seconds (a
        # scan of every log per ended grace window made connect storms quadratic).
        self._report(self.presence.expire(now))
        self._report_topics(self.topic_presence.expire(now))

    def next_deadline(self) -> float | None:
        due = [d for d in (self.presence.next_deadline(), self.topic_presence.next_deadline())
               if d is not None]
        return min(due) if due else None

    def close(self) -> None:
        self._listener = None

    def _report(self, changes: list[t.Any]) -> None:
        if changes and self._listener is not None:
            self._listener.presence_changed(changes)
