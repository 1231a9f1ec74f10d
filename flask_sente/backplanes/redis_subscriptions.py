"""Which Redis channels one process listens to: its own few, and the channel of every log
it mirrors — no other log's.

Every append is PUBLISHed on its log's channel. A process used to hear them all (one
pattern subscription) and drop what none of its readers reads, so Redis sent every push to
every worker: its output grew with the workers, not with the clients that wanted the push.
Now a log's channel is subscribed when this process starts mirroring the log (its first
reader, a topic joined here) and unsubscribed when the mirror drops it (idle past the
history's TTL), so a push to a user goes to the processes that hold one of its clients.

No window where a push is neither delivered nor replayable, and no wait for it: the mirror
asks for a log's channel (:meth:`Subscriptions.ensure` sends the SUBSCRIBE and returns) and
reads the log's stream at once. Redis confirms the subscription on the subscription's own
connection, read by the subscriber loop; the stream is read once more after the
confirmation — by the backplane when it comes after the mirror holds the log
(``on_confirmed``), by the mirror itself when it came before the mirror's own read finished
(:meth:`Subscriptions.heard`). A push appended before the confirmation is in one of the
reads, one appended after it comes through the channel; the mirror keeps each entry once.
Nothing waits on the subscriber loop, which may be slow to read while the connection pool is
busy (a burst of handshakes).
"""
from __future__ import annotations

import contextlib
import typing as t


class Subscriptions:
    """The channels wanted and the subscription connection they are made on.

    ``fixed``: the channels every process always hears (presence, calls, the admin
    dashboard, the broadcast log). The subscriber loop :meth:`attach`\\ es each new
    connection, reports each confirmation (:meth:`confirmed`, which calls
    ``on_confirmed`` for a log's channel subscribed on the way) and :meth:`detach`\\ es when
    the connection is lost; the mirror calls :meth:`ensure` before it reads a log's
    stream; the housekeeping loop calls :meth:`keep_only` with the mirrored logs' channels.
    """

    def __init__(self, fixed: t.Sequence[str],
                 on_confirmed: t.Callable[[str], None] = lambda channel: None) -> None:
        self.fixed = tuple(fixed)
        self._on_confirmed = on_confirmed
        #: Log channels wanted (the mirror's), whether subscribed yet or not.
        self.wanted: set[str] = set()
        #: Log channels subscribed on the current connection since :meth:`attach` (their
        #: confirmation calls ``on_confirmed``).
        self._sent: set[str] = set()
        #: Every channel confirmed on the current connection.
        self._heard: set[str] = set()
        #: Channels whose log the mirror is reading now (:meth:`holding`): not mirrored
        #: yet, but not to be dropped by :meth:`keep_only` either.
        self._held: dict[str, int] = {}
        self._pubsub: t.Any = None

    def attach(self, pubsub: t.Any, mirrored: t.Iterable[str] = ()) -> tuple[str, ...]:
        """A new subscription connection: subscribe to every channel wanted on it, and to
        the ``mirrored`` logs' (the catch-up that follows the confirmations reads them
        all); returns them."""
        self.wanted.update(mirrored)
        self._sent = set()
        self._heard = set()
        channels = (*self.fixed, *sorted(self.wanted))
        # The connection is made by this first SUBSCRIBE (it may wait for the pool): only
        # then may :meth:`ensure` use it — redis-py's PubSub would otherwise make one per
        # concurrent caller and keep only the last, the others lost to the pool.
        pubsub.subscribe(*channels)
        self._pubsub = pubsub
        missed = sorted(self.wanted.difference(channels))  # asked for meanwhile
        if missed:
            self._sent.update(missed)
            pubsub.subscribe(*missed)
        return channels

    def detach(self) -> None:
        """The connection is lost: the next :meth:`attach` subscribes everything again."""
        self._pubsub = None
        self._sent = set()
        self._heard = set()

    def confirmed(self, channel: str) -> None:
        """Redis confirmed a subscription (a ``subscribe`` message on the connection)."""
        self._heard.add(channel)
        if channel in self._sent:
            self._sent.discard(channel)
            self._on_confirmed(channel)

    def all_heard(self, channels: t.Iterable[str]) -> bool:
        return all(channel in self._heard for channel in channels)

    def heard(self, channel: str) -> bool:
        """Whether Redis confirmed ``channel`` on the current connection."""
        return channel in self._heard

    def ensure(self, channel: str) -> bool:
        """Hear ``channel`` from now on: the SUBSCRIBE is sent (or, while the connection is
        down, made by the next :meth:`attach`); returns at once: True when this call asked
        for it (the caller then reads the stream again if :meth:`heard` says the
        confirmation came while it read)."""
        if channel in self.wanted:
            return False
        self.wanted.add(channel)
        pubsub = self._pubsub
        if pubsub is not None:
            self._sent.add(channel)
            pubsub.subscribe(channel)
        return True

    @contextlib.contextmanager
    def holding(self, channel: str) -> t.Iterator[bool]:
        """:meth:`ensure` ``channel`` (the value) and keep it from :meth:`keep_only` until
        the block ends: the mirror reads the log's stream in the block, and only holds the
        log once the read came back (a round trip during which the housekeeping loop,
        seeing no mirrored log, would otherwise unsubscribe it — a log read here but not
        heard: pushes to it lost until the next resubscription)."""
        held = self._held
        held[channel] = held.get(channel, 0) + 1
        try:
            yield self.ensure(channel)
        finally:
            left = held[channel] - 1
            if left:
                held[channel] = left
            else:
                del held[channel]

    def keep_only(self, channels: t.Collection[str]) -> None:
        """Hear exactly the log channels in ``channels`` (the mirrored logs'), besides the
        ones being read now (:meth:`holding`). One dropped is forgotten before the
        UNSUBSCRIBE is sent, so a log mirrored again meanwhile is subscribed again after
        it, on the same connection; one missing (it should not be) is subscribed, and its
        stream read again once confirmed."""
        for channel in channels:
            if channel not in self.wanted:
                self.ensure(channel)
        gone = [channel for channel in self.wanted
                if channel not in channels and channel not in self._held]
        if not gone:
            return
        for channel in gone:
            self.wanted.discard(channel)
            self._sent.discard(channel)
            self._heard.discard(channel)
        pubsub = self._pubsub
        if pubsub is not None:
            pubsub.unsubscribe(*gone)
