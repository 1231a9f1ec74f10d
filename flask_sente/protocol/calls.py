"""Server -> client calls (protocol 3), without I/O: the request the server pushes, the
answer the client sends back, and the call ids that say which process is waiting.

A request is an ordinary pushed event, ``["chsk/call", {"id", "event", "timeout"}]``,
appended to the user's log for one client: it travels in push batches, in order with the
pushes around it, gets a position and is replayed after a reconnect like them — so a call
survives a cut connection that comes back within its grace window, and reaches an Ajax
client through whichever worker its next poll reaches. The answer is an ordinary event,
``["chsk/answer", {"id", "value"}]`` or ``{"id", "error": {"kind", "message"}}``, sent
without a callback id; a call id names the process waiting for it (``"<n>@<node>"``), so
any worker that receives the answer can route it there. docs/protocol.md §12 is the prose.
"""
from __future__ import annotations

import math
import typing as t

from ..exceptions import (
    CallError,
    CallsUnsupported,
    ClientCallError,
    NoAnswerHandler,
    RemoteProtocolError,
)
from . import events as ev

#: Longest call id a client may send back (a counter, ``@`` and a node id).
MAX_CALL_ID = 80
#: Longest error message a client sends (and the server keeps) in an error answer.
MAX_ERROR_MESSAGE = 500
#: How many recent call ids a client remembers to run each call's handler at most once.
SEEN_CALLS = 1024

#: The kinds of error answer: no handler for the event id, or the handler failed.
NO_HANDLER = "no-handler"
HANDLER_ERROR = "error"
ERROR_KINDS = frozenset({NO_HANDLER, HANDLER_ERROR})
#: A routed outcome's kind when the client speaks protocol 1 or 2 (the server's, never a
#: client's).
UNSUPPORTED = "unsupported"


def call_id(counter: int, node: str) -> str:
    """The id of a process's ``counter``-th call: any worker can tell whose it is."""
    return f"{counter}@{node}"


def node_of(call: str) -> str:
    """The node (process) a call id belongs to."""
    return call.partition("@")[2]


def request(call: str, event: ev.Event, timeout: float) -> ev.WireEvent:
    """The pushed event that asks one client: ``event`` in wire form, the server's wait
    in whole milliseconds."""
    return [ev.CALL, {"id": call, "event": ev.to_wire(event), "timeout": int(timeout * 1000)}]


class CallRequest(t.NamedTuple):
    """A ``chsk/call`` as a client reads it."""

    id: str
    event: ev.Event
    #: Seconds the server waits for the answer (0 when the request names no valid wait).
    timeout: float


def decode_request(data: t.Any) -> CallRequest:
    """A ``chsk/call`` event's data; RemoteProtocolError says what is wrong with it (no
    call id of 1 to 80 characters, or no valid event).

    A timeout that is not a number of milliseconds >= 0 (or none) counts as 0: the call is
    still answered, if the client is open when the answer is ready, and the answer is not
    kept for a reconnect. Other fields are ignored (sente.js's ``readCall``, the last case
    of ``tests/vectors/calls.json``).
    """
    if not isinstance(data, dict):
        raise RemoteProtocolError("chsk/call takes {id, event, timeout}")
    call = data.get("id")
    if not isinstance(call, str) or not 0 < len(call) <= MAX_CALL_ID:
        raise RemoteProtocolError("a call id is a string of 1 to 80 characters")
    event = data.get("event")
    reason = ev.event_error(event)
    if reason is not None:
        raise RemoteProtocolError(f"the call's event is malformed ({reason})")
    timeout = data.get("timeout")
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not 0 <= timeout < math.inf):
        timeout = 0
    return CallRequest(call, ev.as_event(t.cast(list[t.Any], event)), timeout / 1000)


def answer_value(call: str, value: t.Any) -> ev.WireEvent:
    """The client's answer: the handler's value."""
    return [ev.ANSWER, {"id": call, "value": value}]


def answer_error(call: str, kind: str, message: str) -> ev.WireEvent:
    """The client's answer when it has no handler (``no-handler``) or the handler failed
    (``error``)."""
    return [ev.ANSWER, {"id": call, "error": {"kind": kind,
                                              "message": message[:MAX_ERROR_MESSAGE]}}]


class Answer(t.NamedTuple):
    """A ``chsk/answer`` as the server reads it: ``error`` is None for a value, else
    ``(kind, message)``."""

    id: str
    value: t.Any
    error: tuple[str, str] | None


def decode_answer(data: t.Any) -> Answer:
    """A ``chsk/answer`` event's data; RemoteProtocolError says what is wrong with it."""
    if not isinstance(data, dict):
        raise RemoteProtocolError("chsk/answer takes {id, value} or {id, error}")
    call = data.get("id")
    if not isinstance(call, str) or not 0 < len(call) <= MAX_CALL_ID:
        raise RemoteProtocolError("a call id is a string of 1 to 80 characters")
    if "error" in data:
        error = data["error"]
        kind = error.get("kind") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if kind not in ERROR_KINDS or not isinstance(message, str):
            raise RemoteProtocolError(
                "an error answer is {kind: 'no-handler' | 'error', message: text}")
        return Answer(call, None, (t.cast(str, kind), message[:MAX_ERROR_MESSAGE]))
    if "value" not in data:
        raise RemoteProtocolError("chsk/answer takes {id, value} or {id, error}")
    return Answer(call, data["value"], None)


# --- outcomes between processes -----------------------------------------------------------
#
# What travels from the process that received an answer (or found the client too old) to
# the process that asked: ``{"id", "uid": repr(uid), "client", "value"}`` or ``{..., "error":
# [kind, message]}``. The ``uid`` and ``client`` let the asker drop an answer from another
# client than the one it asked.


def outcome_of(answer: Answer, uid: t.Any, client_id: str | None) -> dict[str, t.Any]:
    """The routed outcome of a client's answer."""
    outcome: dict[str, t.Any] = {"id": answer.id, "uid": repr(uid), "client": client_id}
    if answer.error is None:
        outcome["value"] = answer.value
    else:
        outcome["error"] = list(answer.error)
    return outcome


def unsupported(call: str, uid: t.Any, client_id: str, version: int,
                dialect: str = "flask-sente") -> dict[str, t.Any]:
    """The routed outcome of a request that reached a client speaking ``version`` < 3."""
    return {"id": call, "uid": repr(uid), "client": client_id,
            "error": [UNSUPPORTED, old_protocol(version, dialect)]}


def old_protocol(version: int, dialect: str = "flask-sente") -> str:
    """Why a client cannot answer calls: its protocol version, or its dialect's."""
    if dialect == "sente":
        return ("the client speaks Sente's own wire (an unmodified Sente client), which has "
                "no server -> client calls")
    return (f"the client speaks protocol {version}, which has no server -> client calls "
            f"(it needs protocol 3: a flask_sente client of this version)")


def from_asked(outcome: t.Mapping[str, t.Any], uid: t.Any, client_id: str) -> bool:
    """Whether a routed outcome comes from the client that was asked."""
    return (outcome.get("client"), outcome.get("uid")) == (client_id, repr(uid))


def result(outcome: t.Mapping[str, t.Any], client_id: str) -> tuple[t.Any, CallError | None]:
    """A routed outcome as the caller gets it: ``(value, None)`` or ``(None, the error)``."""
    error = outcome.get("error")
    if error is None:
        return outcome.get("value"), None
    kind, message = (list(error) + ["", ""])[:2] if isinstance(error, list) else ("", "")
    cls = {NO_HANDLER: NoAnswerHandler, HANDLER_ERROR: ClientCallError,
           UNSUPPORTED: CallsUnsupported}.get(kind, ClientCallError)
    return None, cls(str(message), client_id)
