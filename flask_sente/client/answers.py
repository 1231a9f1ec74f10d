"""The client's answers to server -> client calls (protocol 3, docs/protocol.md §12).

A call request arrives as a pushed ``chsk/call`` event, in batch order with the pushes
around it. :class:`Answers` runs the one handler registered for the request's event id on a
thread of its own — an answer may wait on a person or on the network, and must not hold up
the events after it — started from the dispatcher once the ``on()`` handlers of the events
before it have run (a handler answering about a todo just pushed finds it handled), and
sends the one answer back. A call id seen among the last
:data:`~flask_sente.protocol.calls.SEEN_CALLS` is not run again. An answer that cannot go
out because the client is reconnecting is sent once it is open again, until the call's
timeout; a client stopped for good drops it. sente.js has the same helper (its
``Answers``); both follow ``tests/vectors/calls.json``.
"""
from __future__ import annotations

import collections
import inspect
import logging
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed, PackError, Rejected, RemoteProtocolError, ReplyTimeout
from ..protocol import calls
from ..protocol import events as ev
from .dispatch import Dispatcher
from .status import ClientStatus

logger = logging.getLogger("flask_sente.client")


class CallInfo(t.NamedTuple):
    """What an answer handler ``fn(data, info)`` (one that requires a second argument) is
    given besides the data: the call's id and the event id it answers (sente.js's
    ``info``, ``{id, eventId}``)."""

    #: The call's id (unique per call; the server routes the answer by it).
    id: str
    #: The event id of the call, the one the handler was registered for.
    event_id: str


#: An answer handler: ``fn(data)`` or ``fn(data, info)`` (a :class:`CallInfo`); what it
#: returns is the answer.
AnswerHandler = t.Callable[[t.Any], t.Any] | t.Callable[[t.Any, CallInfo], t.Any]
#: Sends one event without a reply: ``send(event, deadline, link_deadline)``, waiting for
#: an open link until ``link_deadline``, the send itself bounded by ``deadline``.
SendFn = t.Callable[[ev.Event, float, float], None]
#: A registered handler, and whether it is given a :class:`CallInfo`.
Registered = tuple[t.Callable[..., t.Any], bool]


def takes_info(fn: t.Callable[..., t.Any]) -> bool:
    """Whether ``fn`` requires a second positional argument (the :class:`CallInfo`).

    Only a required one counts: ``lambda data, i=i: ...`` (a loop's value bound as a
    default) and ``def f(*args)`` get the data alone, as before; a callable whose signature
    cannot be read too.
    """
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [p for p in parameters
                if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                              inspect.Parameter.POSITIONAL_OR_KEYWORD)
                and p.default is inspect.Parameter.empty]
    return len(required) >= 2


class Answers:
    """Answer handlers by event id, and the answering of requests (see the module
    docstring)."""

    def __init__(self, status: ClientStatus, dispatch: Dispatcher, send: SendFn,
                 thread_name: str, send_timeout: float) -> None:
        self._status = status
        self._dispatch = dispatch
        self._send = send
        self._thread_name = thread_name
        #: Bound on sending one answer once a link is open (the client's connect timeout,
        #: as for ``send()``): an Ajax POST gets at least that, whatever is left of the
        #: call's timeout.
        self._send_timeout = send_timeout
        self._handlers: dict[str, Registered] = {}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, event_id: str, fn: AnswerHandler) -> None:
        ev.validate_outgoing((event_id,))
        with self._lock:
            if event_id in self._handlers:
                raise ValueError(f"an answer handler for {event_id!r} is already registered")
            self._handlers[event_id] = (fn, takes_info(fn))

    def remove(self, event_id: str) -> None:
        with self._lock:
            self._handlers.pop(event_id, None)

    def request(self, data: t.Any) -> None:
        """A ``chsk/call`` arrived (from the reader, in batch order, the client's lock
        held): answer it once, after the handlers of what came before it."""
        try:
            req = calls.decode_request(data)
        except RemoteProtocolError as exc:
            logger.warning("ignoring a malformed call request: %s", exc)
            return
        with self._lock:
            if req.id in self._seen:
                return
            self._seen[req.id] = None
            if len(self._seen) > calls.SEEN_CALLS:
                self._seen.popitem(last=False)
            handler = self._handlers.get(req.event[0])
        job = (req, handler, time.monotonic() + req.timeout)
        self._dispatch.queue([self._start], job)

    def _start(self, job: tuple[calls.CallRequest, Registered | None, float]) -> None:
        """On the dispatcher thread: the answer runs beside it, not on it."""
        threading.Thread(target=self._answer, args=job, name=f"{self._thread_name}-answer",
                         daemon=True).start()

    def _answer(self, req: calls.CallRequest, handler: Registered | None,
                deadline: float) -> None:
        if handler is None:
            answer = calls.answer_error(req.id, calls.NO_HANDLER,
                                        f"no answer handler for {req.event[0]!r}")
        else:
            fn, with_info = handler
            try:
                value = (fn(req.event[1], CallInfo(req.id, req.event[0])) if with_info
                         else fn(req.event[1]))
                answer = calls.answer_value(req.id, value)
            except Exception as exc:  # the server raises it as ClientCallError
                logger.debug("answer handler for %r raised", req.event[0], exc_info=True)
                answer = calls.answer_error(req.id, calls.HANDLER_ERROR,
                                            str(exc) or type(exc).__name__)
        self._deliver(req, (answer[0], answer[1]), deadline)

    def _deliver(self, req: calls.CallRequest, answer: ev.Event, deadline: float) -> None:
        """Send, waiting for an open link (a reconnect) until the call's deadline."""
        while True:
            try:
                self._send(answer, max(deadline, time.monotonic() + self._send_timeout),
                           deadline)
                return
            except PackError as exc:  # the handler's value: answer that instead
                answer = (ev.ANSWER, calls.answer_error(
                    req.id, calls.HANDLER_ERROR, f"the answer cannot be packed: {exc}")[1])
            except Rejected as exc:  # the server refused the POST: resending cannot help
                logger.warning("the answer to call %s was refused: %s", req.id, exc)
                return
            except ConnectionClosed:  # stopped for good, past the deadline, or a drop
                if not self._status.state.active or time.monotonic() >= deadline:
                    logger.debug("the answer to call %s was not sent: the client is not "
                                 "connected", req.id)
                    return
                time.sleep(0.05)  # the link broke under the send: wait for the next
            except ReplyTimeout as exc:  # an Ajax POST not acked in time: not resent
                logger.warning("the answer to call %s may not have arrived: %s", req.id, exc)
                return
