"""Where one :class:`~flask_sente.client.Client` stands: its state snapshot, the link it
is using, whether it is trying to be connected or closed for good, and the waits on these.

Why an object of its own: the connection machinery (:mod:`.connection`) changes these, while
the public API (:mod:`.core`), the calls (:mod:`.calls`) and the topics (:mod:`.topics`)
read them and wait on them — all under the client's one lock. Each of them is handed this
object (and that lock) when it is made, instead of declaring the others' fields as its own.
Nothing here does I/O or starts a thread.
"""
from __future__ import annotations

import dataclasses
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed, Rejected
from ..protocol import events as ev
from .dispatch import Dispatcher
from .state import ClientState

if t.TYPE_CHECKING:  # pragma: no cover
    from .links import Link

__all__ = ["ClientStatus"]


class ClientStatus:
    """The shared state of one client. Every field is read and written with the lock of
    ``changed`` held; every change is announced on ``changed``.

    :param changed: the client's condition (its lock is the client's lock).
    :param dispatch: where a state change goes as a ``chsk/state`` event.
    :param type: the transport type the client was created with.
    """

    def __init__(self, changed: threading.Condition, dispatch: Dispatcher,
                 type: str) -> None:  # noqa: A002 - the client's option name
        self.changed = changed
        self._dispatch = dispatch
        #: The current :class:`ClientState` (an immutable snapshot, replaced on each change).
        self.state = ClientState(type=type)
        #: ``close()`` was called: final.
        self.closed = False
        #: Connected or trying to be (``connect()``; False after a stop or ``disconnect()``).
        self.active = False
        #: Bumped by connect/disconnect/reconnect: the connector restarts its attempts.
        self.session = 0
        #: The connection in use, once its handshake is in (None between connections).
        self.link: Link | None = None

    def set_state(self, **changes: t.Any) -> None:
        """Change the state and queue a ``chsk/state`` event (lock held)."""
        self.replace_state(dataclasses.replace(self.state, **changes))

    def replace_state(self, new: ClientState) -> None:
        """(lock held) The state becomes ``new``; waiters wake, ``chsk/state`` is queued."""
        old = self.state
        if new == old:
            return
        self.state = new
        self.changed.notify_all()
        self._dispatch.emit(ev.STATE, (old, new), system=True)

    def raise_if_stopped(self) -> None:
        """(lock held) Raise what a caller waiting for a connection should get when the
        client is not trying to connect: why it stopped, or that it never started."""
        if self.closed:
            raise ConnectionClosed("the client is closed")
        if not self.active:
            last = self.state.last_close
            if last is not None and last.reason == "rejected" and last.status is not None:
                raise Rejected(last.status, last.message)
            if last is None:
                raise ConnectionClosed("not connected: call connect() first")
            if last.reason == "protocol-mismatch":
                raise ConnectionClosed(f"protocol-mismatch: {last.message}")
            raise ConnectionClosed(last.reason, last.code)

    def wait_for_link(self, deadline: float) -> Link:
        """The open link to send on, waiting for one until ``deadline`` (a
        ``time.monotonic()`` value); a link being shut down or broken is not one.

        :raises ConnectionClosed: the deadline passed, or the client is stopped.
        :raises Rejected: the client stopped after a refusal.
        """
        with self.changed:
            while True:
                link = self.link
                if (self.state.open and link is not None and link.intent is None
                        and not link.broken):
                    return link
                self.raise_if_stopped()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectionClosed("not connected (still connecting)")
                self.changed.wait(remaining)

    def wait_open(self, timeout: float | None) -> bool:
        """Wait until the state is open; False if ``timeout`` passed first (raises as
        :meth:`raise_if_stopped` when the client is not trying to connect)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.changed:
            while True:
                if self.state.open:
                    return True
                self.raise_if_stopped()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.changed.wait(remaining)
