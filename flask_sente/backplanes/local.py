"""The in-memory backplane: one process, logs and presence in this process only.

Every call acts at once and reports to the listener synchronously. History survives
network drops and client reconnects, not a restart: a new process has new epochs, so a
returning client learns that it missed something.
"""
from __future__ import annotations

import secrets
import typing as t

from ..core.delivery import Delivery
from ..core.presence import Presence, Transport
from .base import BackplaneListener


def new_epoch() -> str:
    """A random log epoch: 8 URL-safe characters (48 bits) are plenty per process."""
    return secrets.token_urlsafe(6)


class LocalBackplane:
    """See the module docstring; satisfies :class:`~flask_sente.backplanes.base.Backplane`."""

    def __init__(self, *, history_size: int, history_ttl: float) -> None:
        self.delivery = Delivery(history_size=history_size, history_ttl=history_ttl,
                                 new_epoch=new_epoch)
        self.presence = Presence()
        self._listener: BackplaneListener | None = None

    def start(self, listener: BackplaneListener) -> None:
        self._listener = listener

    def push(self, uid: t.Any, event: t.Any, target: str | None, now: float) -> None:
        due = self.delivery.push(uid, event, target, now)
        if due and self._listener is not None:
            self._listener.logs_appended(due)

    def broadcast(self, event: t.Any, now: float) -> None:
        due = self.delivery.broadcast(event, now)
        if due and self._listener is not None:
            self._listener.logs_appended(due)

    def attach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int) -> None:
        self._report(self.presence.attach(uid, transport, client_id, conn_id))

    def detach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> None:
        self.presence.detach(uid, transport, client_id, conn_id, deadline)

    def remove(self, uid: t.Any, transport: Transport, client_id: str) -> None:
        self._report(self.presence.remove(uid, transport, client_id))

    def expire(self, now: float) -> None:
        self.delivery.expire(now)
        self._report(self.presence.expire(now))

    def next_deadline(self) -> float | None:
        return self.presence.next_deadline()

    def close(self) -> None:
        self._listener = None

    def _report(self, changes: list[t.Any]) -> None:
        if changes and self._listener is not None:
            self._listener.presence_changed(changes)
