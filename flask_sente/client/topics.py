"""Topics in the Python client: join, leave, the topic handlers, and rejoining after every
handshake (docs/protocol.md §11). Mirrors the topics section of sente.js.

A topic's events arrive inside push batches as ``["chsk/topic", [topic, event]]`` and its
position rides in the same marks as the user's log, so what is missed while away is
replayed by the rejoin (which carries the position) or reported ``recovered: false`` for
that topic. :class:`ClientTopics` is a base class of :class:`~flask_sente.client.Client`.

Which topics the client is in or joining, and what a handshake, a reply, a leave or a kick
does to them, is decided without I/O by :class:`TopicBook` and :func:`topics_at_handshake`,
so ``join()`` and ``leave()`` work whenever they are called — before the first handshake,
during a reconnect — and the rule is stated once for both clients, as data:
``tests/vectors/topics_handshake.json`` runs against this module and against sente.js.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed, JoinRefused, LocalProtocolError, ReplyTimeout
from ..protocol import events as ev
from ..protocol import wire
from .dispatch import Dispatcher
from .endpoint import Endpoint
from .positions import Positions

if t.TYPE_CHECKING:  # pragma: no cover
    from .links import Link

logger = logging.getLogger("flask_sente.client")

#: Longest topic name the client sends (the server's default limit).
MAX_TOPIC_LENGTH = 200
#: Each rejoin after a reconnect waits this long for its reply at most.
REJOIN_TIMEOUT = 30.0
#: Events the client emits about topics (``on()`` handlers; ``receive()`` with
#: ``receive_system_events``): a topic rejoined after a reconnect ``{topic, recovered}``,
#: and a topic left by the server or refused on rejoin ``{topic, reason}``.
REJOINED = "chsk/rejoined"
LEFT = ev.LEFT

TopicHandler = t.Callable[[str, t.Any], t.Any]

#: A topic's states in the client: in it (rejoined after every handshake), or joining it
#: (a join call not answered yet, which answers for the topic whenever it is sent).
JOINED = "joined"
JOINING = "joining"


@dataclasses.dataclass(frozen=True)
class HandshakeTopics:
    """What one handshake does to the topics: rejoin some (in join order), drop others."""

    rejoin: tuple[str, ...]
    dropped: tuple[str, ...]


def topics_at_handshake(states: t.Mapping[str, str], user_changed: bool) -> HandshakeTopics:
    """The rule both clients follow after a handshake (sente.js: ``topicsAtHandshake``).

    ``states``: topic -> :data:`JOINED` or :data:`JOINING`, in join order. A new connection
    starts with no topics on the server, so every topic the client is in is rejoined from
    its position — unless the user changed since the last handshake (never on the first):
    the topics then were the other user's, and are dropped (the app gets ``chsk/left``,
    reason ``user-changed``). A topic still joining is in neither list: its own join call,
    sent on the new connection when it waited for one, answers for it, so it is neither
    joined twice nor lost — a join made right after ``connect()`` or during a reconnect
    (even one that signs in another user) is the new connection's.
    """
    joined = tuple(topic for topic, state in states.items() if state == JOINED)
    if user_changed:
        return HandshakeTopics(rejoin=(), dropped=joined)
    return HandshakeTopics(rejoin=joined, dropped=())


class TopicBook:
    """The topics one client is in or joining, without I/O; the caller holds the client's
    lock, makes the calls and tells the app. Twin of the topic records of sente.js.

    A topic is followed (its events and marks are taken) from the moment the app joins it
    — over Ajax the topic's first batch can overtake the join's reply — until it is left,
    refused, dropped or its join fails; it is joined once a join's reply allowed it.
    """

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        #: topic -> the data it was joined with (sent again on every rejoin), in join order
        self.joins: dict[str, t.Any] = {}

    def states(self) -> dict[str, str]:
        """topic -> :data:`JOINED` or :data:`JOINING`: joined ones first, in join order."""
        states = {topic: JOINED for topic in self.joins}
        for topic in self.positions.followed():
            states.setdefault(topic, JOINING)
        return states

    def follows(self, topic: str) -> bool:
        return self.positions.follows(topic)

    def join(self, topic: str) -> tuple[str, int] | None:
        """A join (or rejoin) call for ``topic`` is about to be made: follow the topic;
        returns the position the call carries (None: a first join)."""
        return self.positions.follow(topic)

    def allowed(self, topic: str, data: t.Any, position: t.Any,
                sent: tuple[str, int] | None) -> bool:
        """A join's reply let the client in: the topic is joined, at the reply's position
        unless a mark moved it since the call carried ``sent``. False when the topic was
        left or dropped meanwhile: it stays out (its leave told the server)."""
        if not self.positions.follows(topic):
            return False
        self.joins[topic] = data
        self.positions.joined(topic, position, sent)
        return True

    def failed(self, topic: str) -> None:
        """The app's join was refused or did not get through: a topic the client was not
        in already is not followed any more."""
        if topic not in self.joins:
            self.positions.unfollow(topic)

    def leave(self, topic: str) -> bool:
        """Out of ``topic`` from now on; False if the client was not in it."""
        joined = topic in self.joins
        self.joins.pop(topic, None)
        self.positions.unfollow(topic)
        return joined

    def handshake(self, info: t.Mapping[str, t.Any]) -> tuple[bool | None, tuple[str, ...]]:
        """A handshake: its positions adopted, the topics of another user dropped
        (:func:`topics_at_handshake`). Returns ``(recovered, dropped)``."""
        recovered, user_changed = self.positions.handshake(info)
        dropped = topics_at_handshake(self.states(), user_changed).dropped
        for topic in dropped:
            self.leave(topic)
        return recovered, dropped

    def rejoin_round(self) -> dict[str, t.Any]:
        """The topics to rejoin now (after a handshake), with the data of each."""
        return {topic: self.joins[topic]
                for topic in topics_at_handshake(self.states(), False).rejoin}

    def kicked(self) -> list[str]:
        """A kick: every topic goes, with the positions (the next connection starts afresh);
        returns the topics the client was in (a join in flight fails by itself)."""
        dropped = list(self.joins)
        self.joins.clear()
        self.positions.forget()
        return dropped

    def server_joined(self, topic: str, position: t.Any) -> None:
        """``chsk/joined``: the server put the client in ``topic``."""
        if topic not in self.joins:
            self.joins[topic] = None
            self.positions.follow(topic)
            self.positions.joined(topic, position, None)


class ClientTopics:
    """The topics of one client (a base class of :class:`Client`)."""

    _lock: t.Any
    _changed: threading.Condition
    _endpoint: Endpoint
    _dispatch: Dispatcher
    _closed: bool

    if t.TYPE_CHECKING:
        def _wait_for_link(self, deadline: float) -> Link: ...

    def _init_topics(self) -> None:
        self._book = TopicBook(self._endpoint.positions)
        self._topic_handlers: dict[str, list[t.Callable[[t.Any], t.Any]]] = {}
        self._rejoin_generation = 0
        self._rejoiner: threading.Thread | None = None
        #: topic -> the join and leave calls of it, in the order they were made (the first
        #: one is in flight): see _topic_turn
        self._turns: dict[str, collections.deque[object]] = {}

    # --- public API ------------------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        """The topics this client is in (joined, or put in by the server)."""
        with self._lock:
            return sorted(self._book.joins)

    def join(self, topic: str, data: t.Any = None, timeout: float = REJOIN_TIMEOUT) -> t.Any:
        """Join ``topic``; returns the data the server's join handler gave back (or None).

        Callable at any time: right after ``connect()``, or while the client reconnects, the
        join waits for the connection (within ``timeout``) and is that connection's. From
        the call on, the topic's events reach the app. After a reconnect the client rejoins
        by itself, with its position in the topic, so what was published meanwhile is
        replayed (a ``chsk/rejoined`` event says whether it all was: ``{"topic",
        "recovered"}``).

        :raises JoinRefused: the server refused; ``.reason`` is the server's.
        :raises ReplyTimeout, ConnectionClosed: as :meth:`call`.
        :raises LocalProtocolError: not a valid topic name.
        """
        error = wire.topic_error(topic, MAX_TOPIC_LENGTH)
        if error is not None:
            raise LocalProtocolError(error)
        with self._lock:
            self._book.join(topic)  # its events are taken from now on
        sent: tuple[str, int] | None = None

        def payload() -> dict[str, t.Any]:
            nonlocal sent
            sent = self._book.positions.position(topic)
            return {"topic": topic, "data": data, "position": list(sent) if sent else None}

        try:
            reply = self._topic_call(ev.JOIN, topic, payload, timeout)
        except BaseException:
            with self._lock:
                self._book.failed(topic)
            raise
        reply = t.cast(dict[str, t.Any], reply)  # this payload never skips the call
        with self._lock:
            if not reply.get("ok"):
                self._book.failed(topic)
                raise JoinRefused(str(reply.get("reason") or "refused"))
            self._book.allowed(topic, data, reply.get("position"), sent)
        return reply.get("data")

    def leave(self, topic: str, timeout: float = REJOIN_TIMEOUT) -> None:
        """Leave ``topic``: its events stop at once here (the server is told too).

        Callable at any time, like :meth:`join`: a leave while the client reconnects keeps
        the topic out of the next connection's rejoins, and is sent on it. A join or rejoin
        of the topic still unanswered is waited for first (the join and leave calls of a
        topic go out one at a time, in order), so the server, which runs a client's events
        side by side, cannot do the leave before it."""
        with self._lock:
            self._book.leave(topic)
        self._topic_call(ev.LEAVE, topic, lambda: {"topic": topic}, timeout)

    def on_topic(self, topic: str, fn: TopicHandler | None = None) -> t.Any:
        """Register ``fn(event_id, data)`` for the events published to ``topic`` (usable
        as a decorator). A topic's events with no such handler go to :meth:`on` handlers
        of their id, or to :meth:`receive`, like any push."""
        def register(handler: TopicHandler) -> TopicHandler:
            def job(pair: tuple[str, t.Any]) -> t.Any:
                return handler(*pair)

            job.topic_handler = handler  # type: ignore[attr-defined]
            with self._lock:
                self._topic_handlers.setdefault(topic, []).append(job)
            return handler

        return register if fn is None else register(fn)

    def off_topic(self, topic: str, fn: TopicHandler) -> None:
        """Remove a handler registered with :meth:`on_topic`."""
        with self._lock:
            jobs = [j for j in self._topic_handlers.get(topic, [])
                    if getattr(j, "topic_handler", None) is not fn]
            if jobs:
                self._topic_handlers[topic] = jobs
            else:
                self._topic_handlers.pop(topic, None)

    # --- internals -------------------------------------------------------------------------

    def _topic_call(self, event_id: str, topic: str,
                    payload: t.Callable[[], dict[str, t.Any] | None],
                    timeout: float) -> dict[str, t.Any] | None:
        """A ``chsk/join`` or ``chsk/leave`` call of ``topic``, made in its turn.
        ``payload`` is called with the lock held once the turn has come: the call's data,
        or None to make no call after all (then None is returned)."""
        deadline = time.monotonic() + timeout
        with self._topic_turn(topic, deadline, event_id):
            with self._lock:
                data = payload()
            if data is None:
                return None
            pair = ev.validate_outgoing((event_id, data), allow_reserved=True)
            reply = self._wait_for_link(deadline).call(pair, deadline, timeout)
        if not isinstance(reply, dict):
            raise ConnectionClosed(f"the server does not answer {event_id} (protocol 2?)")
        return reply

    @contextlib.contextmanager
    def _topic_turn(self, topic: str, deadline: float, event_id: str) -> t.Iterator[None]:
        """The join and leave calls of one topic go out one at a time, in the order they
        were made, each once the one before it is answered (or failed).

        Why: the server runs a client's events side by side, so a leave sent while a join
        of the same topic is unanswered (the rejoin a handshake started, say, with an app
        join handler that takes its time) could be done first — and the join would then
        put the client back in, the server sending the topic to a client that drops it.
        In turns, the server ends up where the app's last call says.

        :raises ReplyTimeout: the turn did not come before ``deadline``.
        """
        token = object()
        with self._lock:
            queue = self._turns.setdefault(topic, collections.deque())
            queue.append(token)
            try:
                while queue[0] is not token:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ReplyTimeout(f"{event_id} of {topic!r} not sent: the call of "
                                           "that topic before it is still unanswered")
                    self._changed.wait(remaining)
            except BaseException:
                self._end_turn(topic, queue, token)
                raise
        try:
            yield
        finally:
            with self._lock:
                self._end_turn(topic, queue, token)

    def _end_turn(self, topic: str, queue: collections.deque[object], token: object) -> None:
        """(lock held) ``token``'s call is done (or given up): the next one may go."""
        queue.remove(token)
        if not queue and self._turns.get(topic) is queue:
            del self._turns[topic]
        self._changed.notify_all()

    def _system_push(self, event_id: str, data: t.Any) -> bool:
        """A pushed event in the ``chsk/`` namespace (lock held); False if unknown."""
        if event_id == ev.TOPIC:
            if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], str)
                    and isinstance(data[1], list) and data[1]):
                return False
            topic, event = data[0], data[1]
            if not self._book.follows(topic):
                return True  # left meanwhile
            inner_id, inner_data = event[0], event[1] if len(event) > 1 else None
            jobs = self._topic_handlers.get(topic)
            if jobs:
                self._dispatch.queue(list(jobs), (inner_id, inner_data))
            elif not ev.is_reserved(inner_id) or inner_id == ev.MEMBERS:
                self._dispatch.emit(inner_id, inner_data)
            return True
        if event_id == ev.JOINED and isinstance(data, dict) and isinstance(
                data.get("topic"), str):
            self._book.server_joined(data["topic"], data.get("position"))
            self._dispatch.emit(ev.JOINED, data, system=True)
            return True
        if event_id == ev.LEFT and isinstance(data, dict) and isinstance(
                data.get("topic"), str):
            # One it is not in (left already, e.g. a poll that named it crossed the leave)
            # is no news for the app: sente.js drops it the same way.
            if data["topic"] in self._book.joins:
                self._forget_topic(data["topic"], data.get("reason"))
            return True
        return False

    def _forget_topic(self, topic: str, reason: t.Any) -> None:
        """(lock held) The topic is gone for this client: tell the app."""
        self._book.leave(topic)
        self._dispatch.emit(LEFT, {"topic": topic, "reason": reason}, system=True)

    def _topics_at_handshake(self, handshake: t.Mapping[str, t.Any]) -> bool | None:
        """(lock held) A handshake, before its events: adopt its positions and drop the
        topics of another user (the app is told); returns ``recovered``. The rejoins follow
        the handshake's events (:meth:`_rejoin_all`)."""
        recovered, dropped = self._book.handshake(handshake)
        for topic in dropped:
            self._dispatch.emit(LEFT, {"topic": topic, "reason": "user-changed"}, system=True)
        return recovered

    def _topics_kicked(self) -> None:
        """(lock held) Kicked: every topic goes, with the positions; the app is told."""
        for topic in self._book.kicked():
            self._dispatch.emit(LEFT, {"topic": topic, "reason": "kicked"}, system=True)

    def _rejoin_all(self) -> None:
        """(lock held) After a handshake: rejoin every topic the client is in, in a thread of
        its own (each rejoin is a call; the handshake is processed on a reader thread). A
        topic still joining is not rejoined: its own call answers for it."""
        joins = self._book.rejoin_round()
        if not joins or self._closed:
            return
        self._rejoin_generation += 1
        generation = self._rejoin_generation
        thread = threading.Thread(target=self._rejoin, args=(generation, joins),
                                  name="flask_sente.client-rejoin", daemon=True)
        self._rejoiner = thread
        thread.start()

    def _rejoin(self, generation: int, joins: dict[str, t.Any]) -> None:
        for topic, data in joins.items():
            sent: tuple[str, int] | None = None

            def payload(topic: str = topic, data: t.Any = data) -> dict[str, t.Any] | None:
                nonlocal sent
                if (generation != self._rejoin_generation or self._closed
                        or topic not in self._book.joins):
                    return None  # a newer round, closed, or left meanwhile
                sent = self._book.join(topic)
                return {"topic": topic, "data": data,
                        "position": list(sent) if sent else None}

            try:
                reply = self._topic_call(ev.JOIN, topic, payload, REJOIN_TIMEOUT)
            except (ConnectionClosed, ReplyTimeout) as exc:
                logger.info("rejoining %r stopped (%s); the next connection tries again",
                            topic, exc)
                return
            except Exception:
                logger.exception("rejoining %r failed", topic)
                continue
            if reply is None:
                continue
            with self._lock:
                if not reply.get("ok"):
                    if topic in self._book.joins:
                        self._forget_topic(topic, reply.get("reason"))
                    continue
                if self._book.allowed(topic, data, reply.get("position"), sent):
                    self._dispatch.emit(REJOINED, {"topic": topic,
                                                   "recovered": reply.get("recovered")},
                                        system=True)

    def _stop_rejoining(self, timeout: float) -> None:
        with self._lock:
            self._rejoin_generation += 1
            thread = self._rejoiner
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
