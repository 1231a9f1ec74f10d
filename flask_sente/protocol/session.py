"""A session's decisions that need no I/O: how logs are named on the wire, and what an
incoming client message is.

Both the server (``flask_sente.core``, the hub) and the Python client name a reader's logs
the same way on the wire — positions, marks, ``X-Sente-After``: ``"u"`` (its user's log),
``"*"`` (broadcasts), ``"t:" + topic``. And both transports of the server classify an incoming
message the same way, so what a WebSocket frame and an Ajax POST may carry is written once
(:func:`classify`). No I/O here: this is part of the protocol layer.
"""
from __future__ import annotations

import enum
import typing as t

from . import events as ev
from .wire import ClientMessage

#: The name of a reader's own user's log (one user per connection, so one "u").
USER = "u"
#: The name of the broadcast log.
BROADCAST = "*"
#: What a topic's log name starts with.
TOPIC_PREFIX = "t:"

Transport = t.Literal["ws", "ajax"]


def topic_log_name(topic: str) -> str:
    """The name a reader (and the wire: positions, marks) knows a topic's log by."""
    return TOPIC_PREFIX + topic


def is_topic_log(name: str) -> bool:
    return name.startswith(TOPIC_PREFIX)


def topic_of(name: str) -> str:
    """The topic whose log is named ``name`` (see :func:`topic_log_name`)."""
    return name[len(TOPIC_PREFIX):]


def main_positions(positions: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Only the user's and the broadcast log of these positions (what a handshake resumes:
    topics are resumed by their rejoins)."""
    return {name: pos for name, pos in positions.items() if not is_topic_log(name)}


def main_logs_intact(lost: t.Iterable[str]) -> bool:
    """Whether none of the logs named ``lost`` is the user's or the broadcast log: what a
    handshake's ``recovered`` says (a topic's loss is told by its rejoin instead)."""
    return all(is_topic_log(name) for name in lost)


class Incoming(enum.Enum):
    """What a client message is, for the server."""

    #: An application event: to the app's handlers.
    EVENT = "event"
    #: The client's keep-alive ping (WebSocket): answered ``pong`` at once.
    PING = "ping"
    #: The answer to the server's ping (WebSocket).
    PONG = "pong"
    #: ``chsk/join`` / ``chsk/leave``: answered by the server itself.
    TOPIC = "topic"
    #: ``chsk/answer`` (a client's answer to a server -> client call) and ``chsk/bye`` (an
    #: Ajax client stopping): protocol 3, handled by the server's call service.
    CALLS = "calls"
    #: Malformed, or a reserved id this transport does not take (docs/protocol.md §4).
    BAD = "bad"


#: Reserved ids each transport takes from clients.
_ALLOWED: dict[str, frozenset[str]] = {
    "ws": frozenset({ev.WS_PING, ev.WS_PONG, ev.ANSWER, *ev.TOPIC_REQUESTS}),
    "ajax": frozenset({ev.ANSWER, ev.BYE, *ev.TOPIC_REQUESTS}),
}


def classify(msg: ClientMessage, transport: Transport) -> tuple[Incoming, str | None]:
    """What ``msg`` is on ``transport``, and for :attr:`Incoming.BAD` the reason."""
    event = msg.event
    if event is None:
        return Incoming.BAD, msg.bad_reason or "malformed"
    event_id = event[0]
    if not ev.is_reserved(event_id):
        return Incoming.EVENT, None
    if event_id not in _ALLOWED[transport]:
        return Incoming.BAD, msg.bad_reason or "reserved-id"
    if event_id == ev.WS_PING:
        return Incoming.PING, None
    if event_id == ev.WS_PONG:
        return Incoming.PONG, None
    if event_id == ev.ANSWER or event_id == ev.BYE:
        return Incoming.CALLS, None
    return Incoming.TOPIC, None


class PollStep(enum.Enum):
    """What the server does with one Ajax GET (docs/protocol.md §6 and §10)."""

    #: The server is stopping: close 1001, reconnect elsewhere.
    GOING_AWAY = "going-away"
    #: The client was kicked between two polls: its close 4001.
    KICKED = "kicked"
    #: A handshake: a new reader, resumed at the client's main positions.
    CONNECT = "connect"
    #: A poll of a client another process served until now: its positions are all this one
    #: needs (a shared backplane), it is taken in here.
    ADOPT = "adopt"
    #: A close is pending for the client (it was found too slow or kicked): answered with it.
    CLOSE = "close"
    #: An ordinary poll of a client held here.
    POLL = "poll"


def poll_step(*, draining: bool, handshake: bool, kicked: bool, held: bool,
              has_positions: bool, close_pending: bool) -> PollStep:
    """Which way one Ajax GET goes, from what the server knows when it arrives.

    ``held``: this process holds the client; ``has_positions``: the request brought the
    client's positions (protocol 2) or the shared store kept them (protocol 1);
    ``close_pending``: a close waits for the client's next poll. A handshake is served even
    while draining (the client learns where it stands before it goes); a poll with neither
    a client here nor positions can only start again.
    """
    if draining and not handshake:
        return PollStep.GOING_AWAY
    if kicked:
        return PollStep.KICKED
    if handshake or (not held and not has_positions):
        return PollStep.CONNECT
    if not held:
        return PollStep.ADOPT
    if close_pending:
        return PollStep.CLOSE
    return PollStep.POLL
