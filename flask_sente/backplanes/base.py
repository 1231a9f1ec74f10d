"""The backplane seam: everything the hub does that must reach other processes.

A push, a broadcast, a presence attach/detach and the expiry of grace windows go through a
:class:`Backplane`. It owns the logs and presence (the sans-I/O objects of
``flask_sente.core``) and reports back through a :class:`BackplaneListener` — the hub —
when logs grew (so their readers are flushed) and when presence changed (so signals and
``chsk/uidport-*`` events fire). Reporting by callback rather than by return value is what
lets an implementation learn of appends made by other processes (a Redis subscription) the
same way it learns of its own.

This module may import only the standard library and ``flask_sente.core``.
"""
from __future__ import annotations

import typing as t

from ..core.delivery import Delivery
from ..core.presence import Change, Presence, Transport


class BackplaneListener(t.Protocol):
    """What a backplane calls back into (the hub)."""

    def logs_appended(self, transports: tuple[Transport, ...]) -> None:
        """Readers on these transports are owed new entries: schedule a flush."""

    def presence_changed(self, changes: list[Change]) -> None:
        """Members joined or left; tell the app (signals, ``chsk/uidport-*``)."""


class Backplane(t.Protocol):
    """Logs, presence and their fan-out. Methods never block: they may run in the event
    loop. ``now`` is monotonic seconds."""

    #: This process's readers and the logs as it sees them.
    delivery: Delivery
    #: Presence as this process sees it (cluster-wide for a shared backplane).
    presence: Presence

    def start(self, listener: BackplaneListener) -> None:
        """Begin reporting to ``listener``."""

    def push(self, uid: t.Any, event: t.Any, target: str | None, now: float) -> None:
        """Append ``event`` to ``uid``'s log (for the one client ``target`` if given)."""

    def broadcast(self, event: t.Any, now: float) -> None:
        """Append ``event`` to the broadcast log."""

    def attach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int) -> None:
        """A member's connection is there."""

    def detach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> None:
        """A member's connection ended: it leaves at ``deadline`` unless it comes back."""

    def remove(self, uid: t.Any, transport: Transport, client_id: str) -> None:
        """A member is gone at once (kicked)."""

    def expire(self, now: float) -> None:
        """Grace windows and history that ended by ``now``."""

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do."""

    def close(self) -> None:
        """Forget everything; report nothing more."""
