"""Topics in the Python client: join, leave, the topic handlers, and rejoining after every
handshake (docs/protocol.md §11). Mirrors the topics section of sente.js.

A topic's events arrive inside push batches as ``["chsk/topic", [topic, event]]`` and its
position rides in the same marks as the user's log, so what is missed while away is
replayed by the rejoin (which carries the position) or reported ``recovered: false`` for
that topic. A base class of :class:`~flask_sente.client.Client`.
"""
from __future__ import annotations

import logging
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed, JoinRefused, LocalProtocolError, ReplyTimeout
from ..protocol import events as ev
from ..protocol import wire
from .dispatch import Dispatcher
from .endpoint import Endpoint

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


class ClientTopics:
    """The topics of one client (a base class of :class:`Client`)."""

    _lock: t.Any
    _endpoint: Endpoint
    _dispatch: Dispatcher
    _closed: bool

    if t.TYPE_CHECKING:
        def _wait_for_link(self, deadline: float) -> Link: ...

    def _init_topics(self) -> None:
        #: topic -> the data it was joined with (sent again on every rejoin)
        self._joins: dict[str, t.Any] = {}
        self._topic_handlers: dict[str, list[t.Callable[[t.Any], t.Any]]] = {}
        self._rejoin_generation = 0
        self._rejoiner: threading.Thread | None = None

    # --- public API ------------------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        """The topics this client is in (joined, or put in by the server)."""
        with self._lock:
            return sorted(self._joins)

    def join(self, topic: str, data: t.Any = None, timeout: float = REJOIN_TIMEOUT) -> t.Any:
        """Join ``topic``; returns the data the server's join handler gave back (or None).

        After a reconnect the client rejoins by itself, with its position in the topic, so
        what was published meanwhile is replayed (a ``chsk/rejoined`` event says whether it
        all was: ``{"topic", "recovered"}``).

        :raises JoinRefused: the server refused; ``.reason`` is the server's.
        :raises ReplyTimeout, ConnectionClosed: as :meth:`call`.
        :raises LocalProtocolError: not a valid topic name.
        """
        error = wire.topic_error(topic, MAX_TOPIC_LENGTH)
        if error is not None:
            raise LocalProtocolError(error)
        with self._lock:
            sent = self._endpoint.positions.follow(topic)
        try:
            reply = self._topic_call(ev.JOIN, {"topic": topic, "data": data,
                                               "position": list(sent) if sent else None},
                                     timeout)
        except BaseException:
            with self._lock:
                if topic not in self._joins:
                    self._endpoint.positions.unfollow(topic)
            raise
        with self._lock:
            if not reply.get("ok"):
                if topic not in self._joins:
                    self._endpoint.positions.unfollow(topic)
                raise JoinRefused(str(reply.get("reason") or "refused"))
            self._joins[topic] = data
            self._endpoint.positions.joined(topic, reply.get("position"), sent)
        return reply.get("data")

    def leave(self, topic: str, timeout: float = REJOIN_TIMEOUT) -> None:
        """Leave ``topic``: its events stop at once here (the server is told too)."""
        with self._lock:
            self._joins.pop(topic, None)
            self._endpoint.positions.unfollow(topic)
        self._topic_call(ev.LEAVE, {"topic": topic}, timeout)

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

    def _topic_call(self, event_id: str, data: t.Any, timeout: float) -> dict[str, t.Any]:
        pair = ev.validate_outgoing((event_id, data), allow_reserved=True)
        deadline = time.monotonic() + timeout
        reply = self._wait_for_link(deadline).call(pair, deadline, timeout)
        if not isinstance(reply, dict):
            raise ConnectionClosed(f"the server does not answer {event_id} (protocol 2?)")
        return reply

    def _system_push(self, event_id: str, data: t.Any) -> bool:
        """A pushed event in the ``chsk/`` namespace (lock held); False if unknown."""
        if event_id == ev.TOPIC:
            if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], str)
                    and isinstance(data[1], list) and data[1]):
                return False
            topic, event = data[0], data[1]
            if not self._endpoint.positions.follows(topic):
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
            topic = data["topic"]
            if topic not in self._joins:
                self._joins[topic] = None
                self._endpoint.positions.follow(topic)
                self._endpoint.positions.joined(topic, data.get("position"), None)
            self._dispatch.emit(ev.JOINED, data, system=True)
            return True
        if event_id == ev.LEFT and isinstance(data, dict) and isinstance(
                data.get("topic"), str):
            # One it is not in (left already, e.g. a poll that named it crossed the leave)
            # is no news for the app: sente.js drops it the same way.
            if data["topic"] in self._joins:
                self._forget_topic(data["topic"], data.get("reason"))
            return True
        return False

    def _forget_topic(self, topic: str, reason: t.Any) -> None:
        """(lock held) The topic is gone for this client: tell the app."""
        self._joins.pop(topic, None)
        self._endpoint.positions.unfollow(topic)
        self._dispatch.emit(LEFT, {"topic": topic, "reason": reason}, system=True)

    def _rejoin_all(self) -> None:
        """(lock held) After a handshake: rejoin every topic, in a thread of its own (each
        rejoin is a call; the handshake is processed on a reader thread)."""
        for topic in [tp for tp in self._joins if not self._endpoint.positions.follows(tp)]:
            del self._joins[topic]  # another user's: their history is not ours
        if not self._joins or self._closed:
            return
        self._rejoin_generation += 1
        generation = self._rejoin_generation
        thread = threading.Thread(target=self._rejoin, args=(generation, dict(self._joins)),
                                  name="flask_sente.client-rejoin", daemon=True)
        self._rejoiner = thread
        thread.start()

    def _rejoin(self, generation: int, joins: dict[str, t.Any]) -> None:
        for topic, data in joins.items():
            with self._lock:
                if (generation != self._rejoin_generation or self._closed
                        or topic not in self._joins):
                    continue
                sent = self._endpoint.positions.follow(topic)
            try:
                reply = self._topic_call(ev.JOIN, {"topic": topic, "data": data,
                                                   "position": list(sent) if sent else None},
                                         REJOIN_TIMEOUT)
            except (ConnectionClosed, ReplyTimeout) as exc:
                logger.info("rejoining %r stopped (%s); the next connection tries again",
                            topic, exc)
                return
            except Exception:
                logger.exception("rejoining %r failed", topic)
                continue
            with self._lock:
                if topic not in self._joins:
                    continue
                if not reply.get("ok"):
                    self._forget_topic(topic, reply.get("reason"))
                    continue
                self._endpoint.positions.joined(topic, reply.get("position"), sent)
                self._dispatch.emit(REJOINED, {"topic": topic,
                                               "recovered": reply.get("recovered")},
                                    system=True)

    def _stop_rejoining(self, timeout: float) -> None:
        with self._lock:
            self._rejoin_generation += 1
            thread = self._rejoiner
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
