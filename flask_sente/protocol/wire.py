"""The wire envelope: what each message means, independent of packer and transport.

Every message, both directions, both transports, is the packed array ``[payload, cb_id]``.
``cb_id`` is a string when the message asks for (client -> server) or carries
(server -> client) a reply, else null. Server -> client payloads are one event (a handshake,
a reply outcome, a ping, a long-poll timeout, an ack, a close) or a *batch*: an array of
events. ``docs/protocol.md`` is the prose form of this module.
"""
from __future__ import annotations

import dataclasses
import json
import typing as t

from ..exceptions import LocalProtocolError, RemoteProtocolError
from . import PROTOCOL_VERSION, SUPPORTED_PROTOCOLS
from . import events as ev

if t.TYPE_CHECKING:
    from .packers import Packer

# The close codes, re-exported from the one table (``closecodes.py``) for the modules that
# have always read them here.
from .closecodes import CLOSE_GOING_AWAY as CLOSE_GOING_AWAY
from .closecodes import CLOSE_INVALID_DATA as CLOSE_INVALID_DATA
from .closecodes import CLOSE_KICKED as CLOSE_KICKED
from .closecodes import CLOSE_NORMAL as CLOSE_NORMAL
from .closecodes import CLOSE_PING_TIMEOUT as CLOSE_PING_TIMEOUT
from .closecodes import CLOSE_PROTOCOL_ERROR as CLOSE_PROTOCOL_ERROR
from .closecodes import CLOSE_REPLACED as CLOSE_REPLACED
from .closecodes import CLOSE_SERVER_ERROR as CLOSE_SERVER_ERROR
from .closecodes import CLOSE_TOO_BIG as CLOSE_TOO_BIG
from .closecodes import CLOSE_TOO_SLOW as CLOSE_TOO_SLOW
from .closecodes import NO_RECONNECT_CODES as NO_RECONNECT_CODES

#: The cb_id an Ajax POST sends when it wants the reply in its own response.
AJAX_CB = "ajax"


def envelope(payload: t.Any, cb_id: str | None = None) -> list[t.Any]:
    return [payload, cb_id]


# --- server -> client -------------------------------------------------------------------

def handshake(uid: t.Any, handshake_data: t.Any = None, *, version: int = PROTOCOL_VERSION,
              positions: Positions | None = None,
              recovered: bool | None = None) -> list[t.Any]:
    """The handshake, in the client's protocol ``version``. Version 2 adds where the client
    stands in each log it reads and whether the positions it came back with were
    ``recovered`` (None: it brought none)."""
    info: dict[str, t.Any] = {"uid": uid, "handshake_data": handshake_data,
                              "protocol": version}
    if version >= 2:
        info["positions"] = {name: list(pos) for name, pos in (positions or {}).items()}
        info["recovered"] = recovered
    return [[ev.HANDSHAKE, info], None]


#: Log name -> (epoch, seq): where a client stands (protocol 2).
Positions = t.Mapping[str, "tuple[str, int]"]


def position_mark(positions: Positions) -> list[t.Any]:
    """The event that ends every protocol-2 push batch: where the client stands after it."""
    return [ev.POSITION, {name: [epoch, seq] for name, (epoch, seq) in positions.items()}]


#: The response header that gives an admitted Ajax client its fast-path key, and the
#: request header its later requests send the key back in (docs/protocol.md §6).
FAST_KEY_HEADER = "X-Sente-Key"
#: Response header of an Ajax POST's reply (protocol 2): the positions the client should
#: reach — through its polls — before it acts on the reply, because the handler pushed to
#: those logs before replying (docs/protocol.md §6, "Replies after their pushes").
AFTER_HEADER = "X-Sente-After"

#: Longest ``pos`` query parameter accepted (the user's and broadcast logs and the topics
#: joined: about 30 bytes plus the name per topic). The whole request line must also pass
#: the server's limit: 8 KiB for gevent's, 4094 bytes by default under gunicorn
#: (``--limit-request-line``).
MAX_POSITIONS_PARAM = 8192


def decode_positions(text: str) -> dict[str, tuple[str, int]]:
    """Parse the ``pos`` query parameter: a JSON object ``{log: [epoch, seq]}``.

    Raises RemoteProtocolError for anything else (the caller answers 400).
    """
    if len(text) > MAX_POSITIONS_PARAM:
        raise RemoteProtocolError("pos is too long")
    try:
        value = json.loads(text)
    except ValueError:
        raise RemoteProtocolError("pos is not JSON") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError("pos must be an object {log: [epoch, seq]}")
    positions: dict[str, tuple[str, int]] = {}
    for name, pos in value.items():
        if not (isinstance(pos, list) and len(pos) == 2 and isinstance(pos[0], str)
                and type(pos[1]) is int and pos[1] >= 0):
            raise RemoteProtocolError(f"pos[{name!r}] must be [epoch, seq]")
        positions[name] = (pos[0], pos[1])
    return positions


def topic_event(topic: str, event: t.Any) -> list[t.Any]:
    """A topic's event as it travels in a push batch: the receiver can tell the topic."""
    return [ev.TOPIC, [topic, event]]


def topic_error(topic: object, max_length: int) -> str | None:
    """Why ``topic`` cannot be a topic name, or None."""
    if not isinstance(topic, str) or not topic:
        return "a topic is a non-empty string"
    if len(topic) > max_length:
        return f"topic names are at most {max_length} characters"
    if not topic.isprintable():
        return "topic names are printable characters"
    return None


@dataclasses.dataclass(frozen=True)
class JoinRequest:
    """A client's ``chsk/join``: the topic, its data for the join handler, and where the
    client stood in the topic's log (a rejoin after a reconnect) or None."""

    topic: str
    data: t.Any
    position: tuple[str, int] | None


def decode_join(value: t.Any, max_length: int) -> JoinRequest:
    """Parse a ``chsk/join`` event's data; RemoteProtocolError says what is wrong."""
    if not isinstance(value, dict):
        raise RemoteProtocolError("chsk/join takes {topic, data, position}")
    topic = value.get("topic")
    error = topic_error(topic, max_length)
    if error is not None:
        raise RemoteProtocolError(error)
    pos = value.get("position")
    position = None
    if pos is not None:
        if not (isinstance(pos, list) and len(pos) == 2 and isinstance(pos[0], str)
                and type(pos[1]) is int and pos[1] >= 0):
            raise RemoteProtocolError("position must be [epoch, seq] or null")
        position = (pos[0], pos[1])
    return JoinRequest(t.cast(str, topic), value.get("data"), position)


def decode_leave(value: t.Any, max_length: int) -> str:
    """The topic of a ``chsk/leave`` event's data."""
    topic = value.get("topic") if isinstance(value, dict) else None
    error = topic_error(topic, max_length)
    if error is not None:
        raise RemoteProtocolError(error)
    return t.cast(str, topic)


def batch(events: t.Iterable[ev.Event]) -> list[t.Any]:
    return [[ev.to_wire(e) for e in events], None]


def reply(value: t.Any, cb_id: str | None) -> list[t.Any]:
    return [[ev.REPLY, value], cb_id]


def failure(kind: str, cb_id: str | None, info: t.Any = None) -> list[t.Any]:
    """A reply outcome that is not a value: ``chsk/timeout``, ``chsk/error``, ``chsk/closed``."""
    if kind not in ev.FAILURE_IDS:
        raise LocalProtocolError(f"{kind!r} is not a reply failure; use one of "
                                 f"{sorted(ev.FAILURE_IDS)}")
    return [[kind] if info is None else [kind, info], cb_id]


PING: list[t.Any] = [[ev.WS_PING], None]
LP_TIMEOUT: list[t.Any] = [[ev.TIMEOUT], None]
ACK: list[t.Any] = [[ev.ACK], None]


def close(code: int, reason: str) -> list[t.Any]:
    """Ajax's way of saying what a WebSocket says with a close frame."""
    return [[ev.CLOSE, {"code": code, "reason": reason}], None]


def bad_event_notice(reason: str, raw: t.Any) -> list[t.Any]:
    """A one-event push telling a WebSocket client that an event it sent without a cb_id
    was refused (malformed or reserved id). A batch, so clients that do not know
    ``chsk/bad-event`` ignore it like any unknown system event. Only the reason and the
    offending id (when it is a string, cut to 100 characters) go back, not the data."""
    info: dict[str, t.Any] = {"reason": reason}
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        info["id"] = raw[0][:100]
    return [[[ev.BAD_EVENT, info]], None]


# --- client -> server -------------------------------------------------------------------

PONG: list[t.Any] = [[ev.WS_PONG], None]


def client_event(event: ev.Event, cb_id: str | None = None) -> list[t.Any]:
    return [ev.to_wire(event), cb_id]


class ClientMessage(t.NamedTuple):
    """A decoded client -> server message (immutable).

    ``event`` is None when the payload was not a valid event; ``bad_reason`` then says why
    and ``raw`` holds what arrived, so the server can deliver ``chsk/bad-event``.
    A named tuple, not a frozen dataclass: one is built per incoming event, and a frozen
    dataclass's ``__init__`` costs several times as much.
    """

    event: ev.Event | None
    cb_id: str | None
    raw: t.Any = None
    bad_reason: str | None = None


#: Builds a :class:`ClientMessage` from its four fields without the Python-level
#: ``__new__`` that handles defaults and keywords.
_client_message = tuple.__new__


def decode_client(value: t.Any) -> ClientMessage:
    """Decode an unpacked client message; raise RemoteProtocolError if it is no envelope."""
    if not isinstance(value, list) or len(value) != 2:
        raise RemoteProtocolError("expected the envelope [payload, cb_id]")
    payload, cb_id = value
    if cb_id is not None and (not isinstance(cb_id, str) or not cb_id or len(cb_id) > 64):
        raise RemoteProtocolError("cb_id must be null or a non-empty string of <= 64 chars")
    reason = ev.event_error(payload)
    if reason is not None:
        return _client_message(ClientMessage, (None, cb_id, payload, reason))
    return _client_message(ClientMessage, (ev.as_event(payload), cb_id, None, None))



# --- the envelope one connection speaks -------------------------------------------------

class Wire:
    """The envelope one connection speaks, chosen when it is admitted and kept beside the
    channel's :class:`~flask_sente.protocol.packers.Packer`: the packer says how a message
    becomes text or bytes, the wire what the message is.

    The hub's services build and read every message through their connection's wire and
    nothing else, so a second dialect (Sente's own, for unmodified Sente clients) is a
    second implementation of these methods, not a change to the hub. Today there is one
    dialect in two protocol versions (:func:`wire_for`). A Wire is immutable and shared by
    every connection of its version; the constant messages are packed once per packer
    (:class:`PackedConstants`).
    """

    __slots__ = ("version",)
    #: The dialect's name, as logs and metrics could show it.
    dialect: t.ClassVar[str] = "flask-sente"

    def __init__(self, version: int) -> None:
        self.version = version

    def __repr__(self) -> str:
        return f"<Wire {self.dialect} v{self.version}>"

    @property
    def packer(self) -> Packer | None:
        """The packer this wire's messages are packed with; None: the channel's own (a
        dialect brings its own: Sente's wire, EDN)."""
        return None

    @property
    def calls(self) -> bool:
        """Whether the client answers server -> client calls (protocol 3)."""
        return self.version >= 3

    @property
    def marks(self) -> bool:
        """Whether push batches end with a position mark (protocol 2: positions and
        replay)."""
        return self.version >= 2

    def handshake(self, uid: t.Any, handshake_data: t.Any = None, *,
                  positions: Positions | None = None,
                  recovered: bool | None = None) -> list[t.Any]:
        return handshake(uid, handshake_data, version=self.version, positions=positions,
                         recovered=recovered)

    def push(self, events: list[t.Any]) -> list[t.Any]:
        """A push batch of events already in their wire form (``[id, data]`` lists)."""
        return [events, None]

    def position_mark(self, positions: Positions) -> list[t.Any]:
        return position_mark(positions)

    def reply(self, value: t.Any, cb_id: str | None) -> list[t.Any]:
        return reply(value, cb_id)

    def failure(self, kind: str, cb_id: str | None, info: t.Any = None) -> list[t.Any]:
        return failure(kind, cb_id, info)

    def close(self, code: int, reason: str) -> list[t.Any]:
        return close(code, reason)

    def bad_event_notice(self, reason: str, raw: t.Any) -> list[t.Any] | None:
        """The notice of a refused event sent without a callback id; None: this wire has
        none (the event is dropped after the app heard of it)."""
        return bad_event_notice(reason, raw)

    def constant(self, name: Constant) -> list[t.Any]:
        """One of the messages that never change: ``ping``, ``lp-timeout``, ``ack``."""
        return _CONSTANTS[name]

    def decode_client(self, value: t.Any) -> ClientMessage:
        return decode_client(value)


#: The names of :meth:`Wire.constant`'s messages.
Constant = t.Literal["ping", "lp-timeout", "ack"]
_CONSTANTS: dict[str, list[t.Any]] = {"ping": PING, "lp-timeout": LP_TIMEOUT, "ack": ACK}
_WIRES = {version: Wire(version) for version in SUPPORTED_PROTOCOLS}


def wire_for(version: int) -> Wire:
    """This dialect's wire in protocol ``version`` (one of ``SUPPORTED_PROTOCOLS``)."""
    return _WIRES[version]


#: Default wire of messages that come before any version is known (an Ajax POST's body
#: reads the same in every version).
DEFAULT_WIRE = wire_for(1)


class PackedConstants:
    """The constant messages of each wire, packed once by one packer (a poll timeout or a
    ping is written thousands of times a minute)."""

    __slots__ = ("_packer", "_packed")

    def __init__(self, packer: Packer) -> None:
        self._packer = packer
        self._packed: dict[tuple[Wire, str], str | bytes] = {}

    def __call__(self, wire: Wire, name: Constant) -> str | bytes:
        packed = self._packed.get((wire, name))
        if packed is None:
            packer = wire.packer or self._packer
            packed = self._packed[(wire, name)] = packer.pack(wire.constant(name))
        return packed

def packer_of(wire: Wire, default: Packer) -> Packer:
    """The packer of a connection speaking ``wire`` on a channel whose packer is
    ``default``."""
    return wire.packer or default


# --- what a client makes of a server message --------------------------------------------

@dataclasses.dataclass(frozen=True)
class ServerMessage:
    """A decoded server -> client message.

    ``kind`` is one of ``handshake``, ``events``, ``reply``, ``ping``, ``timeout``, ``ack``,
    ``close``. ``events`` is the list of pushed events (kind ``events``); for ``reply``
    ``outcome`` is ``chsk/reply`` (``value`` holds the reply) or a failure id.
    """

    kind: str
    cb_id: str | None = None
    events: list[ev.Event] = dataclasses.field(default_factory=list)
    outcome: str | None = None
    value: t.Any = None


def decode_server(value: t.Any) -> ServerMessage:
    """Decode an unpacked server message; raise RemoteProtocolError if malformed."""
    if not isinstance(value, list) or len(value) != 2:
        raise RemoteProtocolError("expected the envelope [payload, cb_id]")
    payload, cb_id = value
    if not isinstance(payload, list) or not payload:
        raise RemoteProtocolError("server payload must be an event or a list of events")
    if isinstance(payload[0], str):
        if ev.event_error(payload) is not None:
            raise RemoteProtocolError(f"malformed server event {payload!r}")
        event_id, data = ev.as_event(payload)
        if cb_id is not None:
            if event_id != ev.REPLY and event_id not in ev.FAILURE_IDS:
                raise RemoteProtocolError(f"unexpected reply payload {event_id!r}")
            return ServerMessage("reply", cb_id, outcome=event_id, value=data)
        kind = _SINGLE_KINDS.get(event_id)
        if kind is None:
            raise RemoteProtocolError(f"unexpected server event {event_id!r}")
        return ServerMessage(kind, outcome=event_id, value=data)
    events = []
    for item in payload:
        if ev.event_error(item) is not None:
            raise RemoteProtocolError(f"malformed pushed event {item!r}")
        events.append(ev.as_event(item))
    return ServerMessage("events", events=events)


_SINGLE_KINDS = {
    ev.HANDSHAKE: "handshake",
    ev.WS_PING: "ping",
    ev.TIMEOUT: "timeout",
    ev.ACK: "ack",
    ev.CLOSE: "close",
    # An Ajax POST's reply carries no cb_id: the response itself is the correlation.
    ev.REPLY: "reply",
    ev.ERROR: "reply",
    ev.CLOSED: "reply",
}
