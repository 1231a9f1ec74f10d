"""The Redis backplane's outbox: this process's appends, sent in order by one publisher.

Appends never block (they may be made in the event loop): they are queued here, and one
publisher greenlet per process drains the queue, pipelining whatever queued since its last
round trip into APPEND scripts (order kept per process; batches grow with load). A batch
that fails is sent again; the writer counter each entry carries makes Redis append it at
most once. While Redis is away the outbox is bounded in count and age: what overflows is
dropped and its log marked *gapped* — it gets a new epoch once Redis is back, so its readers
are told they missed something, never left with a silent gap.

It also answers "are this process's pushes in Redis yet?" (:meth:`Outbox.settled`), which
is what orders replies and responses after their pushes across workers.
"""
from __future__ import annotations

import logging
import time
import typing as t

import gevent
import gevent.event
import gevent.queue

from ..core.delivery import Position, WireEvent, split_target
from ..exceptions import BackplaneError, PackError
from ..metrics import NoMetrics
from . import redis_scripts as rs
from .base import PushRecord, current_record
from .common import new_epoch
from .redis_link import SOCKET_TIMEOUT, RedisLink

logger = logging.getLogger("flask_sente")

#: Pushes pipelined in one round trip at most.
PIPELINE_MAX = 500
#: Pushes kept while Redis is away, at most, and for how long (seconds).
OUTBOX_LIMIT = 10_000
OUTBOX_MAX_AGE = 30.0


#: What an entry carries: an event in wire form, a control record's value (a kick's
#: reason, a topic command's topic), or nothing (a gap record).
Payload = WireEvent | str | None


class Pending(t.NamedTuple):
    """An append waiting for the publisher."""

    #: This process's writer counter (Redis skips an entry it already appended).
    counter: int
    #: The log's Redis key (:func:`~flask_sente.backplanes.redis_scripts.user_key`,
    #: ``t:`` + a topic, or ``*``).
    ukey: str
    #: The event in wire form, or a control record's value (a kick's reason, a topic),
    #: packed for Redis by the caller of :meth:`Outbox.put` (whose mistake it is if it
    #: cannot be: the publisher must never meet a value it cannot send).
    event: bytes
    #: The target client id, "!" + an excluded one, or "".
    target: str
    #: "", "kick", a topic command, or "gap" (entries were lost: a new epoch).
    control: str
    #: Make the log if missing (broadcasts); else a log nobody read takes nothing.
    create: bool
    #: The request or handler that made it, told the position it got.
    record: PushRecord | None


class Outbox:
    """See the module docstring.

    :param appended: told the log key and position of each of this process's appends,
        once Redis gave it a seq (the mirror waits for those: ``caught_up``).
    """

    def __init__(self, link: RedisLink, metrics: NoMetrics,
                 appended: t.Callable[[t.Hashable, Position], None]) -> None:
        self.link = link
        self.metrics = metrics
        self._appended_to = appended
        self._queue: gevent.queue.Queue[Pending | None] = gevent.queue.Queue()
        #: Set by :meth:`stop`: the publisher's waits end, and so does the publisher.
        self._stopping = gevent.event.Event()
        #: Wake-ups (``None``) put in the queue by :meth:`stop` and not taken yet.
        self._wakes = 0
        #: Pushes queued and written so far (``settled`` waits for the second to catch up).
        self._queued = 0
        self._written = 0
        #: This process's writer counter (Redis skips an entry it already appended).
        self._counter = 0
        #: User keys whose pushes were dropped while Redis was away, and how many.
        self._gapped: set[str] = set()
        self._dropped = 0
        self._settle_waiters: list[tuple[int, gevent.event.AsyncResult]] = []

    @property
    def depth(self) -> int:
        """Pushes waiting for the publisher (they pile up while Redis is away)."""
        return int(self._queue.qsize()) - self._wakes

    def stop(self) -> None:
        """The backplane closes (``link.closed`` is set): wake the publisher so that it ends
        by itself — a round trip in progress finishes first. Killed instead, it could be
        inside redis-py's connect, which leaves the socket it was opening to the garbage
        collector (a ResourceWarning)."""
        self._stopping.set()
        self._wakes += 1
        self._queue.put(None)

    def put(self, ukey: str, event: Payload, target: str, control: str, create: bool) -> None:
        """Hand one append to the publisher. Made while a
        :class:`~flask_sente.backplanes.base.PushRecord` records, the record learns it.

        :raises PackError: the event holds a value msgpack cannot encode (the pusher hears
            of it; nothing is queued).
        """
        try:
            packed = rs.pack_event(event)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PackError(f"this push cannot be sent through Redis (msgpack): {exc}") from None
        if self._queue.qsize() >= OUTBOX_LIMIT:
            # Redis has been away too long: this push is lost, and its readers will be
            # told (the log gets a new epoch once Redis is back).
            self._gapped.add(ukey)
            self._dropped += 1
            return
        self._queued += 1
        self._counter += 1
        record = current_record()
        if record is not None:  # its request (or handler) answers after this is in Redis
            record.marks[self] = self._queued
        self._queue.put(Pending(self._counter, ukey, packed, target, control, create, record))

    def settled(self, timeout: float = 2 * SOCKET_TIMEOUT, upto: int | None = None) -> None:
        """Wait until every push queued so far (or the first ``upto``) is in Redis, or
        ``timeout`` passed: a reply sent after this cannot overtake its handler's pushes on
        another worker. Returns at once while Redis is away (the outbox keeps the order of
        this process's pushes; no order with other workers' can be promised then)."""
        target = self._queued if upto is None else upto
        if self._written >= target or not self.link.healthy:
            return
        waiter: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._settle_waiters.append((target, waiter))
        waiter.wait(timeout)

    # --- the publisher ---------------------------------------------------------------------

    def run(self) -> None:
        """Drains the outbox in order, pipelining whatever queued since the last round trip.

        A batch that fails (Redis down, or too slow) is sent again until it goes through;
        each entry carries this process's counter, so one that did reach Redis the first
        time is not appended twice. While Redis stays away, the outbox is bounded in count
        (``OUTBOX_LIMIT``) and age (``OUTBOX_MAX_AGE``): what is dropped marks its log, and
        the log gets a new epoch when Redis is back, so its readers learn they missed it.
        """
        batch: list[Pending] = []
        failing_since: float | None = None
        while not self.link.closed:
            if not batch:
                batch = self._next_batch(failing_since is None)
                if not batch:  # woken by stop()
                    continue
            started = time.monotonic()
            try:
                results = self._send(batch)
            except (self.link.errors, BackplaneError) as exc:
                failing_since, batch = self._failed(batch, failing_since, exc)
                self._stopping.wait(0.5)
                continue
            if failing_since is not None:
                logger.warning("Redis backplane: Redis is back; %d pushes could not wait",
                               self._dropped)
                failing_since = None
            self.metrics.published(len(batch), time.monotonic() - started)
            self._sent(batch, results)
            batch = []

    def _next_batch(self, reachable: bool) -> list[Pending]:
        """The gap records owed once Redis answers again, else what is queued (waiting for
        the first), up to ``PIPELINE_MAX``; empty when :meth:`stop` woke the wait."""
        if self._gapped and reachable:
            batch = [self._gap_record(ukey) for ukey in self._gapped]
            self._gapped = set()
        else:
            first = self._take(self._queue.get())
            if first is None:
                return []
            batch = [first]
        while len(batch) < PIPELINE_MAX and not self._queue.empty():
            item = self._take(self._queue.get_nowait())
            if item is None:
                break
            batch.append(item)
        return batch

    def _take(self, item: Pending | None) -> Pending | None:
        if item is None:
            self._wakes -= 1
        return item

    def _send(self, batch: list[Pending]) -> list[t.Any]:
        """One round trip: the batch's APPENDs, pipelined; their answers."""
        link = self.link
        script = link.scripts["APPEND"]
        pipe = link.client.pipeline(transaction=False)
        for item in batch:
            keys, args = rs.append_call(
                link.prefix, item.ukey, item.event, target=item.target,
                size=link.history_size, ttl=link.ttl, epoch=new_epoch(), create=item.create,
                control=item.control, writer=link.node, counter=item.counter,
                rotate=item.control == "gap")
            script(keys=keys, args=args, client=pipe)
        return t.cast("list[t.Any]", pipe.execute())

    def _failed(self, batch: list[Pending], failing_since: float | None,
                exc: Exception) -> tuple[float, list[Pending]]:
        """A round trip failed: the batch is sent again, unless Redis has been away longer
        than ``OUTBOX_MAX_AGE`` — then it and the queue are dropped, their logs gapped.
        Returns since when Redis fails and the batch to send next."""
        now = time.monotonic()
        if failing_since is None:
            failing_since = now
            logger.warning("Redis backplane: pushes wait for Redis (%s)", exc)
        self.link.set_reachable(False)
        if now - failing_since > OUTBOX_MAX_AGE:
            for item in batch:
                self._gapped.add(item.ukey)
            while not self._queue.empty():
                queued = self._take(self._queue.get_nowait())
                if queued is not None:
                    self._gapped.add(queued.ukey)
            self._dropped += len(batch)
            self._written = self._queued
            batch = []
        return failing_since, batch

    def _sent(self, batch: list[Pending], results: list[t.Any]) -> None:
        """A batch is in Redis: note where each went, and wake who waited for it."""
        self._note_positions(batch, results)
        self._written += sum(1 for item in batch if item.control != "gap")
        self.link.set_reachable(True)
        if self._settle_waiters:
            waiting = self._settle_waiters
            self._settle_waiters = [w for w in waiting if w[0] > self._written]
            for wanted, waiter in waiting:
                if wanted <= self._written:
                    waiter.set()

    def _note_positions(self, batch: list[Pending], results: list[t.Any]) -> None:
        """Note the seq each append got: for the mirror (``caught_up``), and in the record
        of the request or handler that made it. An entry sent again after a timeout whose
        first try had reached Redis gets no answer (it was not appended twice): its seq
        stays unknown, and nothing waits for it."""
        for item, result in zip(batch, results, strict=True):
            if not result:
                continue
            log_key = self.link.log_key_of(item.ukey)
            position = (result[0].decode(), int(result[1]))
            self._appended_to(log_key, position)
            if item.record is not None and not item.control:  # a push, not a control record
                item.record.add(log_key, position, *split_target(item.target or None))

    def _gap_record(self, ukey: str) -> Pending:
        self._counter += 1
        return Pending(self._counter, ukey, rs.pack_event(None), "", "gap",
                       ukey == rs.BROADCAST_KEY, None)
