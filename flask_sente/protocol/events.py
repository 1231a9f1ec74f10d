"""Events: ``(event_id, data)`` pairs with namespaced string ids.

An event id is ``"namespace/name"``; the ``chsk/`` namespace is reserved for the library.
On the wire an event is a JSON/msgpack array of one or two elements. In Python an event is a
tuple ``(event_id, data)``; a one-element event has ``data=None``.
"""
from __future__ import annotations

import typing as t

from ..exceptions import LocalProtocolError

Event = tuple[str, t.Any]
#: An event as it travels: ``[event_id]`` or ``[event_id, data]``.
WireEvent = list[t.Any]

RESERVED_NAMESPACE = "chsk"
_RESERVED_PREFIX = RESERVED_NAMESPACE + "/"

# Events the server delivers to its own handlers.
UIDPORT_OPEN = "chsk/uidport-open"
UIDPORT_CLOSE = "chsk/uidport-close"
WS_PING = "chsk/ws-ping"
WS_PONG = "chsk/ws-pong"
BAD_EVENT = "chsk/bad-event"
BAD_PACKAGE = "chsk/bad-package"

# Events that travel server -> client.
HANDSHAKE = "chsk/handshake"
REPLY = "chsk/reply"
TIMEOUT = "chsk/timeout"
ERROR = "chsk/error"
CLOSED = "chsk/closed"
ACK = "chsk/ack"
CLOSE = "chsk/close"
#: Protocol 2: ends a push batch with the positions it brought the client to.
POSITION = "chsk/pos"

# Topics (protocol 2). Client -> server calls:
JOIN = "chsk/join"
LEAVE = "chsk/leave"
#: The events the server handles itself although their ids are reserved.
TOPIC_REQUESTS = frozenset({JOIN, LEAVE})
# Server -> client: a topic's event (``[TOPIC, [topic, event]]``), the server joined or
# removed the client, and the topic presence diff pushed into a topic.
TOPIC = "chsk/topic"
JOINED = "chsk/joined"
LEFT = "chsk/left"
MEMBERS = "chsk/members"

# Server -> client calls (protocol 3): the request, pushed to one client, and its answer,
# sent back as an ordinary event without a callback id.
CALL = "chsk/call"
ANSWER = "chsk/answer"
#: An Ajax client stopping for good says so (a POST): it cannot close a socket the server
#: would notice, and its calls should fail at once, not after its grace window.
BYE = "chsk/bye"

# Events the clients deliver to their own listeners.
STATE = "chsk/state"

#: Reply outcomes that are not a value: they arrive as events, never as a reply's data, so
#: no value a handler replies with can be mistaken for one.
FAILURE_IDS = frozenset({TIMEOUT, ERROR, CLOSED})


def event_error(obj: object) -> str | None:
    """Why ``obj`` is not a valid event, or None if it is one.

    The reasons mirror Sente's: ``wrong-type``, ``wrong-length``, ``wrong-id-type``,
    ``unnamespaced-id``.
    """
    if not isinstance(obj, (list, tuple)):
        return "wrong-type"
    if not 1 <= len(obj) <= 2:
        return "wrong-length"
    event_id = obj[0]
    if not isinstance(event_id, str):
        return "wrong-id-type"
    slash = event_id.find("/")
    if slash <= 0 or slash == len(event_id) - 1:
        return "unnamespaced-id"
    return None


def as_event(obj: t.Sequence[t.Any]) -> Event:
    """Turn an already validated wire array into an ``(event_id, data)`` tuple."""
    return (obj[0], obj[1] if len(obj) == 2 else None)


def validate_outgoing(event: object, *, allow_reserved: bool = False) -> Event:
    """Check an event an application is about to send; raise LocalProtocolError if bad.

    Applications may not send ``chsk/`` events: those ids mean something to the peer.
    """
    reason = event_error(event)
    if reason is not None:
        raise LocalProtocolError(
            f"invalid event {event!r} ({reason}): an event is (event_id, data) or "
            f"(event_id,) with a namespaced id such as 'todo/add'"
        )
    pair = as_event(t.cast(t.Sequence[t.Any], event))
    if not allow_reserved and is_reserved(pair[0]):
        raise LocalProtocolError(
            f"event id {pair[0]!r} is in the reserved 'chsk/' namespace; pick another namespace"
        )
    return pair


def is_reserved(event_id: str) -> bool:
    return event_id.startswith(_RESERVED_PREFIX)


def to_wire(event: Event) -> WireEvent:
    """The array form of an event: one element when there is no data."""
    return [event[0]] if event[1] is None else [event[0], event[1]]
