"""Which Redis channels one process listens to: its own few, and the channel of every log
it mirrors — no other log's.

Every append is PUBLISHed on its log's channel. A process used to hear them all (one
pattern subscription) and drop what none of its readers reads, so Redis sent every push to
every worker: its output grew with the workers, not with the clients that wanted the push.
Now a log's channel is subscribed when this process starts mirroring the log (its first
reader, a topic joined here) and unsubscribed when the mirror drops it (idle past the
history's TTL), so a push to a user goes to the processes that hold one of its clients.

No window where a push is neither delivered nor replayable: :meth:`Subscriptions.ensure`
returns only once Redis confirmed the subscription, and the mirror reads the log's stream
*after* it; a push appended before the confirmation is in the stream, one appended after it
comes through the channel (both: the mirror keeps it once). Redis confirms on the
subscription's own connection, so the confirmation is read by the subscriber loop, which
hands it over here.
"""
from __future__ import annotations

import time
import typing as t

import gevent.event

from ..exceptions import BackplaneError


class Subscriptions:
    """The channels wanted, the subscription they are made on, and their confirmations.

    ``fixed``: the channels every process always hears (presence, calls, the admin
    dashboard, the broadcast log). The subscriber loop :meth:`attach`\\ es each new
    connection, reports each confirmation (:meth:`confirmed`) and :meth:`detach`\\ es when
    the connection is lost; the mirror calls :meth:`ensure` before it reads a log's
    stream; the housekeeping loop calls :meth:`keep_only` with the mirrored logs' channels.
    """

    def __init__(self, fixed: t.Sequence[str]) -> None:
        self.fixed = tuple(fixed)
        #: Log channels wanted (the mirror's), whether subscribed yet or not.
        self.wanted: set[str] = set()
        #: Channel -> set once Redis confirmed it on the current connection.
        self._confirmed: dict[str, gevent.event.Event] = {}
        self._pubsub: t.Any = None
        #: Set while a connection is attached (a channel wanted meanwhile waits for it).
        self._attached = gevent.event.Event()

    def attach(self, pubsub: t.Any, mirrored: t.Iterable[str] = ()) -> tuple[str, ...]:
        """A new subscription connection: subscribe to every channel wanted on it, and to
        the ``mirrored`` logs' (so the catch-up that follows needs no new one); returns
        them (the subscriber loop waits for their confirmations before catching up)."""
        self.wanted.update(mirrored)
        self._pubsub = pubsub
        self._confirmed = {}
        channels = (*self.fixed, *sorted(self.wanted))
        for channel in channels:
            self._confirmed[channel] = gevent.event.Event()
        pubsub.subscribe(*channels)
        self._attached.set()
        return channels

    def detach(self) -> None:
        """The connection is lost: nothing is confirmed until the next :meth:`attach`."""
        self._attached.clear()
        self._pubsub = None
        self._confirmed = {}

    def confirmed(self, channel: str) -> None:
        """Redis confirmed a subscription (a ``subscribe`` message on the connection)."""
        event = self._confirmed.get(channel)
        if event is not None:
            event.set()

    def all_confirmed(self, channels: t.Iterable[str]) -> bool:
        return all(self._is_confirmed(channel) for channel in channels)

    def _is_confirmed(self, channel: str) -> bool:
        event = self._confirmed.get(channel)
        return event is not None and event.is_set()

    def ensure(self, channel: str, timeout: float) -> None:
        """Return once this process hears ``channel``: at once when it does already. While
        the subscription connects (the process's first clients, a reconnect) it waits for
        it; raises :class:`BackplaneError` when Redis does not confirm within ``timeout``
        (the caller's request fails as any Redis call would)."""
        event = self._confirmed.get(channel)
        if event is not None and event.is_set():
            return
        self.wanted.add(channel)  # a connection attached from now on subscribes it
        deadline = time.monotonic() + timeout
        if event is None:
            if self._pubsub is None and not self._attached.wait(timeout):
                raise BackplaneError(f"Redis: no subscription to {channel} (connecting)")
            event = self._confirmed.get(channel)
            if event is None:
                event = self._confirmed[channel] = gevent.event.Event()
                self._pubsub.subscribe(channel)
        if not event.wait(max(0.0, deadline - time.monotonic())):
            raise BackplaneError(f"Redis: the subscription to {channel} was not confirmed")

    def keep_only(self, channels: t.Collection[str]) -> None:
        """Stop hearing the log channels not in ``channels`` (logs the mirror dropped).
        Forgotten before the UNSUBSCRIBE is sent, so a log mirrored again meanwhile is
        subscribed again after it, on the same connection."""
        gone = [channel for channel in self.wanted if channel not in channels]
        if not gone:
            return
        for channel in gone:
            self.wanted.discard(channel)
            self._confirmed.pop(channel, None)
        pubsub = self._pubsub
        if pubsub is not None:
            pubsub.unsubscribe(*gone)
