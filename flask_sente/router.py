"""Router: event id -> handler, run on a bounded set of reused worker greenlets.

A reader hands each event to :meth:`Router.dispatch`, which gives it to an idle worker
greenlet, or starts a new one. A WebSocket reader that can hand its reading over to another
greenlet (it passes ``hand_off``) gets its client's event run on its own greenlet instead,
when that needs no wait and nothing of that client is in flight: no greenlet switch for the
common handler that replies and returns. Handlers still run concurrently with the reading:
gevent calls a greenlet's ``switch_out`` just before it blocks, and there the handler's
greenlet calls ``hand_off``, which moves the reading to another greenlet while the handler
waits. A handler that blocked that way has its next ``INLINE_COOL_DOWN`` events go to workers
(moving the reading costs a greenlet start, more than a worker). At most ``pool_size`` handlers
run (or wait to) at once; beyond that ``dispatch`` waits, so a flood of events slows its own
sender's reads rather than growing memory. Workers are reused — starting a greenlet costs
more than a typical handler — and up to ``MAX_IDLE_WORKERS`` of them wait for the next event;
the others end when they find nothing to do. An exception in a handler is logged with the
uid and client id, answers a pending reply with ``chsk/error``, and never stops the router.

Errors are logged at a bounded rate: a handler that raises on every call (100 clients, one
bug) would otherwise write one traceback per call and fill the disk. The first occurrence
of an error (same handler, exception type and raising line) is logged with its traceback;
repeats within ``error_log_interval`` are counted, and the next one after the interval is
logged with its traceback and the count of those suppressed. Clients get the same
``chsk/error`` reply either way.

Fairness: each client (transport, uid, client id) has at most ``client_events_in_flight``
events in the pool; its next event waits on its own connection (the reader greenlet, or the
Ajax POST's request) until one of its handlers ends. So one client flooding a slow handler
slows itself down, not everybody. Keep-alive events (``chsk/ws-ping``, ``chsk/ws-pong``)
never wait: they are dispatched only when a slot is free at once (a full pool drops the
notification, not the client).
"""
from __future__ import annotations

import contextlib
import logging
import time
import traceback
import typing as t

import gevent
import gevent.lock
import gevent.pool
import gevent.queue
from gevent import getcurrent
from gevent.hub import Waiter

from .backplanes.base import recording
from .protocol import events as ev

if t.TYPE_CHECKING:  # pragma: no cover
    from .messages import EventMsg

logger = logging.getLogger("flask_sente")

Handler = t.Callable[["EventMsg"], t.Any]
#: Called (once, from gevent's ``switch_out`` hook, on the greenlet running a handler) when a
#: handler run by :meth:`Router.dispatch` on the reader's own greenlet is about to block: it
#: must move the reading to another greenlet, and never block.
HandOff = t.Callable[[], None]


class Dispatch(t.Protocol):
    """Where transports hand events (:meth:`Router.dispatch`); a WebSocket reader passes
    ``hand_off`` so that the handler may run on its own greenlet."""

    def __call__(self, msg: EventMsg, hand_off: HandOff | None = None) -> None: ...

#: Catch-all key in the handler registry: runs for ids nobody else handles.
DEFAULT = "*"
#: Worker greenlets kept waiting for the next event after a burst (each costs a few KiB).
MAX_IDLE_WORKERS = 256
#: Events of a handler that blocked on a reader's greenlet sent to workers before the next try.
INLINE_COOL_DOWN = 64
#: Events that must never make a reader wait: the keep-alive answer is already sent, the
#: handler only gets a notification.
_NEVER_WAIT = frozenset({ev.WS_PING, ev.WS_PONG})


class ErrorLogLimiter:
    """Decides whether a handler's exception is logged with its traceback now.

    Keyed by handler, exception type and the file:line that raised (so two different bugs
    in one handler are both seen); one entry per distinct key, a handful in practice.
    """

    def __init__(self, interval: float, clock: t.Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        #: key -> [time of the last logged occurrence, occurrences suppressed since]
        self._seen: dict[tuple[t.Any, ...], list[float]] = {}

    @staticmethod
    def key(handler: t.Any, exc: BaseException) -> tuple[t.Any, ...]:
        frames = traceback.extract_tb(exc.__traceback__)
        where = (frames[-1].filename, frames[-1].lineno) if frames else None
        name = getattr(handler, "__qualname__", None) or repr(handler)
        return (getattr(handler, "__module__", None), name, type(exc), where)

    def check(self, key: tuple[t.Any, ...]) -> int | None:
        """None: suppress (and count) this one; else log it, with this many suppressed
        since the last one logged."""
        now = self._clock()
        entry = self._seen.get(key)
        if entry is None:
            if len(self._seen) >= 1000:  # a pathological spread of keys: start over
                self._seen.clear()
            self._seen[key] = [now, 0]
            return 0
        if now - entry[0] < self.interval:
            entry[1] += 1
            return None
        suppressed = int(entry[1])
        entry[0], entry[1] = now, 0
        return suppressed


class Router:
    """Dispatches event messages of one hub to the handlers of one registry."""

    def __init__(
        self,
        handlers: t.Mapping[str, Handler],
        *,
        pool_size: int,
        receive_queue_size: int,
        context: t.Callable[[], t.ContextManager[t.Any]] = contextlib.nullcontext,
        client_events_in_flight: int | None = None,
        error_log_interval: float = 0.0,
        failed: t.Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._handlers = handlers
        self._context = context
        self._slots = gevent.lock.Semaphore(pool_size)
        self._pool_size = pool_size
        self._workers = gevent.pool.Group()
        self._idle: list[Waiter] = []
        self._max_idle = min(MAX_IDLE_WORKERS, pool_size)
        self._closed = False
        self._mailbox: gevent.queue.Queue[EventMsg] = gevent.queue.Queue(receive_queue_size)
        self._mailbox_used = False
        self._warned: set[str] = set()
        self._per_client = client_events_in_flight
        #: client key -> its events in flight (dropped when none are), and the greenlets
        #: waiting because that count is at its share
        self._in_flight: dict[tuple[t.Any, ...], int] = {}
        self._share_waiters: dict[tuple[t.Any, ...], list[Waiter]] = {}
        self._errors = ErrorLogLimiter(error_log_interval)
        #: Told of each handler error the log shows (the admin dashboard's recent errors).
        self._failed = failed
        #: Handler -> events still to send to workers since it blocked on a reader.
        self._cooling: dict[Handler, int] = {}
        #: Handlers of the library's own reserved ids (the hub's topic requests): looked up
        #: after the app's, before its catch-all.
        self._own: dict[str, Handler] = {}

    def add_own_handlers(self, handlers: t.Mapping[str, Handler]) -> None:
        """Handlers of reserved ids the library answers itself (the hub registers its
        ``chsk/join`` and ``chsk/leave``): run like the app's (context, pool, fairness)."""
        self._own.update(handlers)

    def dispatch(self, msg: EventMsg, hand_off: HandOff | None = None) -> None:
        """Hand one event to its handler (or the catch-all, or ``receive()``); may wait:
        for the client's own share of the pool, then for a slot in the pool.

        With ``hand_off`` (a WebSocket reader) the handler may run on the caller's greenlet
        (see the module docstring); it then returns when the handler has ended."""
        handler = (self._handlers.get(msg.id) or self._own.get(msg.id)
                   or self._handlers.get(DEFAULT))
        if (hand_off is not None and handler is not None and msg.id not in _NEVER_WAIT
                and self._run_here(handler, msg, hand_off)):
            return
        msg._reply_later()
        if handler is not None:
            if msg.id in _NEVER_WAIT:
                self._dispatch_nowait(handler, msg)
                return
            share = self._take_share(msg)  # waits while the client has its share in flight
            try:
                self._slots.acquire()  # waits while pool_size handlers are running
            except BaseException:
                self._release_share(share)
                raise
            self._start(handler, msg, share)
        elif self._mailbox_used:
            self._mailbox.put(msg)
        elif not ev.is_reserved(msg.id):
            self._unhandled(msg)

    def _run_here(self, handler: Handler, msg: EventMsg, hand_off: HandOff) -> bool:
        """Run the handler on this greenlet if that needs no wait and keeps the client's
        order (none of its events in flight); False: dispatch it as usual."""
        if self._cooling and self._cool_down(handler):
            return False
        if self._per_client is None or msg.client_id is None:
            return False
        key = (msg.transport, msg.uid, msg.client_id)
        try:
            if key in self._in_flight:
                return False
        except TypeError:  # an unhashable uid
            return False
        if not self._slots.acquire(blocking=False):
            return False
        self._in_flight[key] = 1
        current = getcurrent()

        def blocking() -> None:  # gevent's switch_out hook: never block here
            del current.switch_out
            msg._reply_later()
            hand_off()

        current.switch_out = blocking
        try:
            self._run(handler, msg)
        finally:
            if current.__dict__.pop("switch_out", None) is None:  # it blocked
                self._cooling[handler] = INLINE_COOL_DOWN
            self._slots.release()
            self._release_share(key)
            msg._reply_later()
        return True

    def _cool_down(self, handler: Handler) -> bool:
        """Whether this event of a handler that blocked on a reader goes to a worker."""
        left = self._cooling.get(handler)
        if left is None:
            return False
        if left > 1:
            self._cooling[handler] = left - 1
        else:
            del self._cooling[handler]
        return True

    def _dispatch_nowait(self, handler: Handler, msg: EventMsg) -> None:
        if not self._slots.acquire(blocking=False):
            logger.debug("handler pool full: dropped a %r notification", msg.id)
            return
        self._start(handler, msg, None)

    def _start(self, handler: Handler, msg: EventMsg, share: t.Any) -> None:
        if self._idle:
            waiter = self._idle.pop()
            gevent.get_hub().loop.run_callback(waiter.switch, (handler, msg, share))
        else:
            self._workers.spawn(self._work, handler, msg, share)

    def _take_share(self, msg: EventMsg) -> tuple[t.Any, ...] | None:
        """Count one more event of this client in flight, waiting first while it has its
        whole share in flight; returns the client's key (None: not counted — the hub's own
        events, or a uid that cannot be a key). A plain counter: no object per event."""
        if self._per_client is None or msg.client_id is None:
            return None
        key = (msg.transport, msg.uid, msg.client_id)
        try:
            count = self._in_flight.get(key, 0)
        except TypeError:  # an unhashable uid
            return None
        while count >= self._per_client:
            waiter: Waiter = Waiter()
            self._share_waiters.setdefault(key, []).append(waiter)
            try:
                waiter.get()
            finally:
                waiters = self._share_waiters.get(key)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._share_waiters[key]
            count = self._in_flight.get(key, 0)
        self._in_flight[key] = count + 1
        return key

    def _release_share(self, key: tuple[t.Any, ...] | None) -> None:
        if key is None:
            return
        count = self._in_flight[key] - 1
        if count:
            self._in_flight[key] = count
        else:
            del self._in_flight[key]
        waiters = self._share_waiters.pop(key, None)
        if waiters:  # the next of this client's events may go (from the hub: no switch here)
            waiter = waiters.pop(0)
            if waiters:
                self._share_waiters[key] = waiters
            gevent.get_hub().loop.run_callback(waiter.switch, None)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler runs, at most ``timeout`` seconds; True if none does.
        Used by a graceful stop so that handlers in flight finish and reply."""
        deadline = time.monotonic() + timeout
        while self._slots.counter < self._pool_size:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            gevent.sleep(min(0.05, left))
        return True

    def wants(self, event_id: str) -> bool:
        """Whether :meth:`dispatch` would do anything with an event of this id: a handler,
        the catch-all, ``receive()``, or the "no handler" answer to an application id."""
        return (event_id in self._handlers or event_id in self._own
                or DEFAULT in self._handlers or self._mailbox_used
                or not ev.is_reserved(event_id))

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

    def _work(self, handler: Handler, msg: EventMsg, share: t.Any) -> None:
        """A worker greenlet: run this event's handler, then wait for the next (or end)."""
        idle = self._idle
        while True:
            try:
                self._run(handler, msg)
            finally:
                self._slots.release()
                self._release_share(share)
            del handler, msg, share  # hold no event while idle
            if self._closed or len(idle) >= self._max_idle:
                return
            waiter = Waiter()
            idle.append(waiter)
            handler, msg, share = waiter.get()

    def _run(self, handler: Handler, msg: EventMsg) -> None:
        try:
            with self._context():
                if msg.transport == "ajax" and msg.expects_reply:
                    # Its reply tells the client where the handler's pushes went (they
                    # reach it through its polls, not this reply).
                    with recording():
                        handler(msg)
                else:
                    handler(msg)
        except Exception as exc:
            suppressed = self._errors.check(self._errors.key(handler, exc))
            if suppressed is not None:
                more = (f"; {suppressed} more like it in the last "
                        f"{self._errors.interval:g} s not logged" if suppressed else "")
                logger.error(
                    "handler for %r raised (uid=%r, client_id=%r)%s", msg.id, msg.uid,
                    msg.client_id, more, exc_info=True)
                if self._failed is not None:
                    self._failed(msg.id, exc)
            msg._fail(ev.ERROR, {"message": f"the handler for {msg.id!r} raised an error"})

    def _unhandled(self, msg: EventMsg) -> None:
        if msg.id not in self._warned:
            self._warned.add(msg.id)
            logger.warning(
                "no handler for event %r (logged once per id); register one with "
                "@sente.on(%r) or a catch-all with @sente.on('*')", msg.id, msg.id
            )
        msg._fail(ev.ERROR, {"message": f"no handler for event {msg.id!r}"})
