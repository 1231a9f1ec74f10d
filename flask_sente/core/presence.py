"""Who is connected: the presence state machine, without I/O.

A *member* is one client (``client_id``) of a user on one transport. It joins when its
connection is really there (a WebSocket opened, an Ajax poll parked) and, when that
connection ends, stays for a grace window so that a page reload or the gap between two
polls does not look like leaving. A user is online while it has at least one member.

Every call returns the :class:`Change` list it caused, in the order the app should hear
about them — a user's transition around its client's own: ``user-online`` before
``client-joined``, ``client-left`` before ``user-offline`` — and the state it leaves (the
snapshot, the members) is already the state after them; the caller (the hub) turns them
into signals and ``chsk/uidport-*`` events.
Time is passed in (``now``, monotonic seconds): the hub owns the clock and the one timer
that calls :meth:`Presence.expire` at :meth:`Presence.next_deadline`.

This module may import only the standard library.
"""
from __future__ import annotations

import dataclasses
import heapq
import typing as t

Transport = t.Literal["ws", "ajax"]
TRANSPORTS: tuple[Transport, ...] = ("ws", "ajax")
#: A user id: any hashable value the app's ``user_id`` hook returns. With a shared backplane
#: it must also be JSON-encodable (its JSON names the user's keys in Redis, and comes back
#: from them as the same value: ``42`` and ``"42"`` stay apart), so a string or an integer.
Uid = t.Hashable


@dataclasses.dataclass(frozen=True)
class ConnectedUids:
    """Connected users by transport. ``any`` is the union of ``ws`` and ``ajax``."""

    ws: frozenset[t.Any] = frozenset()
    ajax: frozenset[t.Any] = frozenset()
    any: frozenset[t.Any] = frozenset()


@dataclasses.dataclass(frozen=True)
class Change:
    """One presence transition.

    ``kind`` is ``"user-online"`` / ``"user-offline"`` (the user's first member joined /
    last member left: ``chsk/uidport-open`` / ``-close``) or ``"client-joined"`` /
    ``"client-left"`` (one member; ``client_id`` and ``transport`` set).
    """

    kind: t.Literal["user-online", "user-offline", "client-joined", "client-left"]
    uid: t.Any
    client_id: str | None = None
    transport: Transport | None = None


class _Member:
    __slots__ = ("conn_id", "leaving_at")

    def __init__(self, conn_id: int) -> None:
        self.conn_id = conn_id
        #: None while connected; else the moment its grace window ends.
        self.leaving_at: float | None = None


MemberKey = tuple[Transport, str]


class Presence:
    """Members per user, grace windows and the connected-uids snapshot."""

    def __init__(self) -> None:
        self._members: dict[t.Any, dict[MemberKey, _Member]] = {}
        self._by_transport: dict[Transport, set[t.Any]] = {"ws": set(), "ajax": set()}
        self._snapshot: ConnectedUids | None = ConnectedUids()
        #: (deadline, uid, transport, client_id, conn_id); stale rows are skipped on expiry.
        self._deadlines: list[tuple[float, int, t.Any, Transport, str, int]] = []
        self._tiebreak = 0

    # --- queries ---------------------------------------------------------------------------

    @property
    def connected_uids(self) -> ConnectedUids:
        if self._snapshot is None:
            ws = frozenset(self._by_transport["ws"])
            ajax = frozenset(self._by_transport["ajax"])
            self._snapshot = ConnectedUids(ws, ajax, ws | ajax)
        return self._snapshot

    def clients_of(self, uid: t.Any) -> dict[str, list[str]]:
        """Client ids of ``uid`` by transport, members in their grace window included."""
        found: dict[str, list[str]] = {"ws": [], "ajax": []}
        for transport, client_id in self._members.get(uid, ()):
            found[transport].append(client_id)
        return found

    def connected(self) -> list[tuple[t.Any, Transport, str]]:
        """Every member whose connection is there now (not in a grace window)."""
        return [(uid, transport, client_id) for uid, members in self._members.items()
                for (transport, client_id), member in members.items()
                if member.leaving_at is None]

    def is_member(self, uid: t.Any, transport: Transport, client_id: str) -> bool:
        return (transport, client_id) in self._members.get(uid, ())

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (None: nothing is leaving)."""
        return self._deadlines[0][0] if self._deadlines else None

    # --- transitions -----------------------------------------------------------------------

    def attach(self, uid: t.Any, transport: Transport, client_id: str,
               conn_id: int) -> list[Change]:
        """Connection ``conn_id`` of this member is there now (a new one, or back in grace)."""
        members = self._members.get(uid)
        changes: list[Change] = []
        if members is None:
            members = self._members[uid] = {}
            changes.append(Change("user-online", uid))
        member = members.get((transport, client_id))
        if member is None:
            members[(transport, client_id)] = _Member(conn_id)
            if uid not in self._by_transport[transport]:
                self._by_transport[transport].add(uid)
                self._snapshot = None
            changes.append(Change("client-joined", uid, client_id, transport))
        else:
            member.conn_id = conn_id
            member.leaving_at = None
        return changes

    def detach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> bool:
        """Connection ``conn_id`` ended: the member leaves at ``deadline`` unless a newer
        connection attaches first. A stale ``conn_id`` (already replaced) changes nothing.

        Returns True when a deadline was set (the caller's timer may need to move).
        """
        member = self._members.get(uid, {}).get((transport, client_id))
        if member is None or member.conn_id != conn_id:
            return False
        member.leaving_at = deadline
        self._tiebreak += 1
        heapq.heappush(self._deadlines,
                       (deadline, self._tiebreak, uid, transport, client_id, conn_id))
        return True

    def expire(self, now: float) -> list[Change]:
        """Remove every member whose grace window ended by ``now``."""
        changes: list[Change] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, uid, transport, client_id, conn_id = heapq.heappop(deadlines)
            member = self._members.get(uid, {}).get((transport, client_id))
            if (member is not None and member.conn_id == conn_id
                    and member.leaving_at is not None and member.leaving_at <= now):
                changes.extend(self.remove(uid, transport, client_id))
        return changes

    def end_leaving(self, uid: t.Any) -> list[Change]:
        """The user's grace windows ended elsewhere (a shared store says it went offline):
        its members here still in one go now. Returns their ``client-left`` changes only
        (the user's own transition is the store's to tell)."""
        members = self._members.get(uid, {})
        left: list[Change] = []
        for (transport, client_id), member in list(members.items()):
            if member.leaving_at is not None:
                left += [c for c in self.remove(uid, transport, client_id)
                         if c.kind == "client-left"]
        return left

    def remove(self, uid: t.Any, transport: Transport, client_id: str) -> list[Change]:
        """The member is gone now, no grace (a kick, or its grace window ended)."""
        members = self._members.get(uid)
        if members is None or members.pop((transport, client_id), None) is None:
            return []
        changes = [Change("client-left", uid, client_id, transport)]
        if not any(tr == transport for tr, _ in members):
            self._by_transport[transport].discard(uid)
            self._snapshot = None
        if not members:
            del self._members[uid]
            changes.append(Change("user-offline", uid))
        return changes
