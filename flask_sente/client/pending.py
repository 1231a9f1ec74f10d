"""The calls waiting for their reply, and what a reply means to the caller.

Why a table of its own: a call that waits on a connection must fail the moment that
connection ends (Sente lets it wait for its timeout). The connection can end from several
threads — the connector seeing EOF, ``disconnect()``, a keep-alive timeout — so failing the
calls of a link is one method, :meth:`PendingCalls.fail_link`, and a call registered on a
link that has already ended fails at once instead of waiting forever. The links
(:mod:`.links`, :mod:`.ajax`) register their calls here; :class:`~.calls.Calls` hands the
replies over.
"""
from __future__ import annotations

import threading
import typing as t
import weakref

from ..exceptions import ConnectionClosed, ReplyError, ReplyTimeout
from ..protocol import events as ev
from ..protocol import wire

__all__ = ["Pending", "PendingCalls", "outcome"]


class Pending:
    """One call waiting for its reply (a WebSocket message matched by ``cb_id``)."""

    __slots__ = ("done", "message", "error", "link", "ticket")

    def __init__(self, link: object) -> None:
        self.done = threading.Event()
        self.message: wire.ServerMessage | None = None
        self.error: BaseException | None = None
        self.link = link
        #: The dispatcher's job count when the reply arrived: the events that came before
        #: it on the socket are the jobs below this number.
        self.ticket: int | None = None

    def resolve(self, message: wire.ServerMessage, ticket: int | None = None) -> None:
        if not self.done.is_set():
            self.message = message
            self.ticket = ticket
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    def result(self) -> t.Any:
        """The reply's value; raises what the failure stands for (call once ``done``)."""
        if self.error is not None:
            raise self.error
        if self.message is None:  # pragma: no cover - done is only set with one of both
            raise ConnectionClosed("the call ended without a reply")
        return outcome(self.message)


class PendingCalls:
    """The calls in flight, by ``cb_id``, each tied to the link it was sent on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, Pending] = {}
        #: Links whose calls were failed, with the error: later registrations fail too.
        self._ended: weakref.WeakKeyDictionary[object, BaseException] = (
            weakref.WeakKeyDictionary())

    def add(self, cb_id: str, link: object) -> Pending:
        """Register a call on ``link``.

        :raises ConnectionClosed: the link has ended already (nothing was sent).
        """
        with self._lock:
            error = self._ended.get(link)
            if error is not None:
                raise ConnectionClosed("the connection closed before the call was sent") from error
            pending = self._calls[cb_id] = Pending(link)
            return pending

    def discard(self, cb_id: str) -> None:
        with self._lock:
            self._calls.pop(cb_id, None)

    def resolve(self, message: wire.ServerMessage, ticket: int | None = None) -> bool:
        """Hand a reply to its call; False if no call waits for it (timed out already).
        ``ticket``: see :attr:`Pending.ticket`."""
        if message.cb_id is None:
            return False
        with self._lock:
            pending = self._calls.pop(message.cb_id, None)
        if pending is None:
            return False
        pending.resolve(message, ticket)
        return True

    def fail_link(self, link: object, error: BaseException) -> None:
        """Fail every call waiting on ``link`` with ``error``, now and from now on."""
        with self._lock:
            if link in self._ended:
                return
            self._ended[link] = error
            failing = [(cb_id, p) for cb_id, p in self._calls.items() if p.link is link]
            for cb_id, _ in failing:
                del self._calls[cb_id]
        for _, pending in failing:
            pending.fail(error)


def outcome(message: wire.ServerMessage) -> t.Any:
    """The value of a reply, or the exception its failure stands for."""
    if message.outcome == ev.REPLY:
        return message.value
    if message.outcome == ev.TIMEOUT:
        raise ReplyTimeout("the server's handler did not reply in time")
    if message.outcome == ev.ERROR:
        info = message.value if isinstance(message.value, dict) else {}
        raise ReplyError(str(info.get("message") or "the server answered with an error"),
                         message.value)
    raise ConnectionClosed("the server closed the request")
