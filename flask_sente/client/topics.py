"""Topics in the Python client: join, leave, the topic handlers, and rejoining after every
handshake (docs/protocol.md §11). Mirrors sente.js's ``Topics`` helper.

A topic's events arrive inside push batches as ``["chsk/topic", [topic, event]]`` and its
position rides in the same marks as the user's log, so what is missed while away is
replayed by the rejoin (which carries the position) or reported ``recovered: false`` for
that topic. :class:`Topics` is held by the :class:`~flask_sente.client.Client`, which
hands it the public calls, and by the client's :class:`~.connection.Connection`, which
tells it of the system events, handshakes and kicks (its :class:`~.connection.TopicHooks`).

Which topics the client is in or joining, and what a handshake, a reply, a leave or a kick
does to them, is decided without I/O by :class:`~.topicbook.TopicBook`, so ``join()`` and
``leave()`` work whenever they are called — before the first handshake, during a reconnect.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed, JoinRefused, LocalProtocolError, ReplyTimeout
from ..protocol import events as ev
from ..protocol import wire
from .calls import DEFAULT_CALL_TIMEOUT, Calls
from .dispatch import Dispatcher
from .positions import Positions
from .status import ClientStatus
from .topicbook import TopicBook

__all__ = ["Topics", "LEFT", "MAX_TOPIC_LENGTH", "REJOINED", "REJOIN_TIMEOUT"]

logger = logging.getLogger("flask_sente.client")

#: Longest topic name the client sends (the server's default limit).
MAX_TOPIC_LENGTH = 200
#: Each rejoin after a reconnect waits this long for its reply at most: a call's default
#: timeout, as in sente.js (whose rejoins take ``callTimeoutMs``).
REJOIN_TIMEOUT = DEFAULT_CALL_TIMEOUT
#: Events the client emits about topics (``on()`` handlers; ``receive()`` with
#: ``receive_system_events``): a topic rejoined after a reconnect ``{topic, recovered}``,
#: and a topic left by the server or refused on rejoin ``{topic, reason}``.
REJOINED = "chsk/rejoined"
LEFT = ev.LEFT

TopicHandler = t.Callable[[str, t.Any], t.Any]


class Topics:
    """The topics of one client.

    :param status: the client's state (whether it is closed) and its lock.
    :param calls: how a join or leave call goes out.
    :param dispatch: where the topics' events and the notices for the app go.
    :param positions: the client's positions, the topics' among them.
    """

    def __init__(self, status: ClientStatus, *, calls: Calls, dispatch: Dispatcher,
                 positions: Positions) -> None:
        self._status = status
        self._lock = status.changed
        self._changed = status.changed
        self._calls = calls
        self._dispatch = dispatch
        self._book = TopicBook(positions)
        self._topic_handlers: dict[str, list[t.Callable[[t.Any], t.Any]]] = {}
        self._rejoin_generation = 0
        self._rejoiner: threading.Thread | None = None
        #: topic -> the join and leave calls of it, in the order they were made (the first
        #: one is in flight): see _topic_turn
        self._turns: dict[str, collections.deque[object]] = {}

    # --- for the Client's public API -------------------------------------------------------

    def names(self) -> list[str]:
        """The topics this client is in (joined, or put in by the server)."""
        with self._lock:
            return sorted(self._book.joins)

    def join(self, topic: str, data: t.Any, timeout: float) -> t.Any:
        """:meth:`flask_sente.client.Client.join`."""
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

    def leave(self, topic: str, timeout: float) -> None:
        """:meth:`flask_sente.client.Client.leave`."""
        with self._lock:
            self._book.leave(topic)
        self._topic_call(ev.LEAVE, topic, lambda: {"topic": topic}, timeout)

    def on_topic(self, topic: str, fn: TopicHandler | None = None) -> t.Any:
        """:meth:`flask_sente.client.Client.on_topic`."""
        def register(handler: TopicHandler) -> TopicHandler:
            def job(pair: tuple[str, t.Any]) -> t.Any:
                return handler(*pair)

            job.topic_handler = handler  # type: ignore[attr-defined]
            with self._lock:
                self._topic_handlers.setdefault(topic, []).append(job)
            return handler

        return register if fn is None else register(fn)

    def off_topic(self, topic: str, fn: TopicHandler) -> None:
        """:meth:`flask_sente.client.Client.off_topic`."""
        with self._lock:
            jobs = [j for j in self._topic_handlers.get(topic, [])
                    if getattr(j, "topic_handler", None) is not fn]
            if jobs:
                self._topic_handlers[topic] = jobs
            else:
                self._topic_handlers.pop(topic, None)

    # --- calls in turns --------------------------------------------------------------------

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
            reply = self._calls.call(pair, deadline, timeout)
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

    # --- for the Connection (its TopicHooks) ------------------------------------------------

    def system_push(self, event_id: str, data: t.Any) -> bool:
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

    def at_handshake(self, handshake: t.Mapping[str, t.Any]) -> bool | None:
        """(lock held) A handshake, before its events: adopt its positions and drop the
        topics of another user (the app is told); returns ``recovered``. The rejoins follow
        the handshake's events (:meth:`rejoin_all`)."""
        recovered, dropped = self._book.handshake(handshake)
        for topic in dropped:
            self._dispatch.emit(LEFT, {"topic": topic, "reason": "user-changed"}, system=True)
        return recovered

    def kicked(self) -> None:
        """(lock held) Kicked: every topic goes, with the positions; the app is told."""
        for topic in self._book.kicked():
            self._dispatch.emit(LEFT, {"topic": topic, "reason": "kicked"}, system=True)

    def rejoin_all(self) -> None:
        """(lock held) After a handshake: rejoin every topic the client is in, in a thread of
        its own (each rejoin is a call; the handshake is processed on a reader thread). A
        topic still joining is not rejoined: its own call answers for it."""
        joins = self._book.rejoin_round()
        if not joins or self._status.closed:
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
                if (generation != self._rejoin_generation or self._status.closed
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

    def stop_rejoining(self, timeout: float) -> None:
        """The client is closing: no more rejoins; wait for the thread making them."""
        with self._lock:
            self._rejoin_generation += 1
            thread = self._rejoiner
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
