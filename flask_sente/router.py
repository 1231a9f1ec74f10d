"""Router: event id -> handler, run on a bounded set of reused worker greenlets.

Handlers never run on a transport's greenlet: a reader hands each event to :meth:`Router.dispatch`,
which gives it to an idle worker greenlet, or starts a new one. At most ``pool_size`` handlers
run (or wait to) at once; beyond that ``dispatch`` waits, so a flood of events slows its own
sender's reads rather than growing memory. Workers are reused — starting a greenlet costs
more than a typical handler — and up to ``MAX_IDLE_WORKERS`` of them wait for the next event;
the others end when they find nothing to do. An exception in a handler is logged with the
uid and client id, answers a pending reply with ``chsk/error``, and never stops the router.
"""
from __future__ import annotations

import contextlib
import logging
import typing as t

import gevent
import gevent.lock
import gevent.pool
import gevent.queue
from gevent.hub import Waiter

from .protocol import events as ev

if t.TYPE_CHECKING:  # pragma: no cover
    from .messages import EventMsg

logger = logging.getLogger("flask_sente")

Handler = t.Callable[["EventMsg"], t.Any]
#: Catch-all key in the handler registry: runs for ids nobody else handles.
DEFAULT = "*"
#: Worker greenlets kept waiting for the next event after a burst (each costs a few KiB).
MAX_IDLE_WORKERS = 256


class Router:
    """Dispatches event messages of one hub to the handlers of one registry."""

    def __init__(
        self,
        handlers: t.Mapping[str, Handler],
        *,
        pool_size: int,
        receive_queue_size: int,
        context: t.Callable[[], t.ContextManager[t.Any]] = contextlib.nullcontext,
    ) -> None:
        self._handlers = handlers
        self._context = context
        self._slots = gevent.lock.Semaphore(pool_size)
        self._workers = gevent.pool.Group()
        self._idle: list[Waiter] = []
        self._max_idle = min(MAX_IDLE_WORKERS, pool_size)
        self._closed = False
        self._mailbox: gevent.queue.Queue[EventMsg] = gevent.queue.Queue(receive_queue_size)
        self._mailbox_used = False
        self._warned: set[str] = set()

    def dispatch(self, msg: EventMsg) -> None:
        """Hand one event to its handler (or the catch-all, or ``receive()``); may wait."""
        handler = self._handlers.get(msg.id) or self._handlers.get(DEFAULT)
        if handler is not None:
            self._slots.acquire()  # waits while pool_size handlers are running
            if self._idle:
                waiter = self._idle.pop()
                gevent.get_hub().loop.run_callback(waiter.switch, (handler, msg))
            else:
                self._workers.spawn(self._work, handler, msg)
        elif self._mailbox_used:
            self._mailbox.put(msg)
        elif not ev.is_reserved(msg.id):
            self._unhandled(msg)

    def wants(self, event_id: str) -> bool:
        """Whether :meth:`dispatch` would do anything with an event of this id: a handler,
        the catch-all, ``receive()``, or the "no handler" answer to an application id."""
        return (event_id in self._handlers or DEFAULT in self._handlers
                or self._mailbox_used or not ev.is_reserved(event_id))

    def receive(self, timeout: float | None = None) -> EventMsg | None:
        """The next event no handler took, or None after ``timeout`` seconds.

        The first call switches unhandled events from "log and answer with an error" to
        "queue for receive()" (bounded: when the queue is full, senders wait).
        """
        self._mailbox_used = True
        try:
            msg: EventMsg = self._mailbox.get(timeout=timeout)
            return msg
        except gevent.queue.Empty:
            return None

    def close(self) -> None:
        self._closed = True
        self._idle.clear()
        self._workers.kill(block=True, timeout=5)

    def _work(self, handler: Handler, msg: EventMsg) -> None:
        """A worker greenlet: run this event's handler, then wait for the next (or end)."""
        idle = self._idle
        while True:
            try:
                self._run(handler, msg)
            finally:
                self._slots.release()
            del handler, msg  # hold no event while idle
            if self._closed or len(idle) >= self._max_idle:
                return
            waiter = Waiter()
            idle.append(waiter)
            handler, msg = waiter.get()

    def _run(self, handler: Handler, msg: EventMsg) -> None:
        try:
            with self._context():
                handler(msg)
        except Exception:
            logger.exception(
                "handler for %r raised (uid=%r, client_id=%r)", msg.id, msg.uid, msg.client_id
            )
            msg._fail(ev.ERROR, {"message": f"the handler for {msg.id!r} raised an error"})

    def _unhandled(self, msg: EventMsg) -> None:
        if msg.id not in self._warned:
            self._warned.add(msg.id)
            logger.warning(
                "no handler for event %r (logged once per id); register one with "
                "@sente.on(%r) or a catch-all with @sente.on('*')", msg.id, msg.id
            )
        msg._fail(ev.ERROR, {"message": f"no handler for event {msg.id!r}"})
