"""Where pushed events go: ``on()`` handlers, run one at a time on the dispatcher thread,
or the bounded queue :meth:`Client.receive` reads.

Why a thread of its own: a handler may block or call the server (``chsk.call`` inside a
handler is normal), and it must never run on a socket reader, which would stall every
message behind it. The dispatcher shares the client's lock and condition, so a state
change and the ``chsk/state`` event it queues are one step.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
import typing as t

from ..protocol import events as ev

__all__ = ["Dispatcher", "Handler"]

logger = logging.getLogger("flask_sente.client")

Handler = t.Callable[[t.Any], t.Any]


class Dispatcher:
    """The handlers and the receive queue of one client.

    :param changed: the client's condition; its lock guards everything here.
    """

    def __init__(self, changed: threading.Condition, *, receive_system_events: bool,
                 queue_size: int) -> None:
        self._changed = changed
        #: Set by :meth:`close` (the client closed): the thread drains and stops.
        self._closed = False
        self._receive_system_events = receive_system_events
        self._handlers: dict[str, list[Handler]] = {}
        self._inbox: collections.deque[ev.Event] = collections.deque(maxlen=queue_size)
        self._dropped_warned = False
        self._jobs: collections.deque[tuple[list[Handler], t.Any]] = collections.deque()
        #: Jobs queued so far, and jobs whose handlers have all returned (lock held).
        self.queued = 0
        self._done = 0
        self._thread: threading.Thread | None = None

    def add(self, event_id: str, handler: Handler) -> None:
        with self._changed:
            self._handlers.setdefault(event_id, []).append(handler)

    def remove(self, event_id: str, handler: Handler) -> None:
        with self._changed:
            handlers = self._handlers.get(event_id, [])
            if handler in handlers:
                handlers.remove(handler)
            if not handlers:
                self._handlers.pop(event_id, None)

    def queue(self, handlers: list[Handler], data: t.Any) -> None:
        """Queue ``handlers`` to be called with ``data`` (call with the lock held)."""
        self._jobs.append((handlers, data))
        self.queued += 1
        self._changed.notify_all()

    def emit(self, event_id: str, data: t.Any, *, system: bool = False) -> None:
        """Hand an event to its handlers or to receive() (call with the lock held).

        System events (``chsk/state``, ``chsk/handshake``) without a handler only reach
        receive() when the client asked for them.
        """
        handlers = self._handlers.get(event_id)
        if handlers:
            self.queue(list(handlers), data)
        elif not system or self._receive_system_events:
            if len(self._inbox) == self._inbox.maxlen:
                if not self._dropped_warned:
                    self._dropped_warned = True
                    logger.warning("receive() queue full (%d): dropping the oldest events; "
                                   "call receive() more often or register handlers",
                                   self._inbox.maxlen)
            else:
                self._dropped_warned = False
            self._inbox.append((event_id, data))
            self._changed.notify_all()

    def receive(self, timeout: float | None) -> ev.Event | None:
        """The next queued event; None on timeout, or when closed and nothing is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._inbox:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._changed.wait(remaining)
            return self._inbox.popleft()

    def wait_done(self, ticket: int, deadline: float) -> bool:
        """Wait until the first ``ticket`` jobs queued have been handled (False: the
        ``deadline``, a ``time.monotonic()`` value, passed first, or the client closed).

        On the dispatcher thread itself (a handler that calls the server) it returns at
        once: waiting there for the jobs queued after the running one would never end.
        """
        if threading.current_thread() is self._thread:
            return self._done >= ticket
        with self._changed:
            while self._done < ticket:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                self._changed.wait(remaining)
            return True

    def close(self) -> None:
        """The client is closed (call with the lock held): :meth:`run` finishes what is
        queued and returns, waits in :meth:`receive` and :meth:`wait_done` end."""
        self._closed = True
        self._changed.notify_all()

    def run(self) -> None:
        """The dispatcher thread: handlers in order, one at a time; drains what is queued
        before stopping."""
        self._thread = threading.current_thread()
        while True:
            with self._changed:
                while not self._jobs and not self._closed:
                    self._changed.wait()
                if not self._jobs:
                    return
                handlers, data = self._jobs.popleft()
            try:
                for handler in handlers:
                    try:
                        handler(data)
                    except Exception:
                        logger.exception("client event handler %r raised", handler)
            finally:
                with self._changed:
                    self._done += 1
                    self._changed.notify_all()
