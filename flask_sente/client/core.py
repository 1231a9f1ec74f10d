"""The :class:`Client`: the public API of the Python client, and the objects it is made of.

The client is a facade over collaborators that each get what they share in their
constructors: :class:`~.status.ClientStatus` (the state, the link in use, the lock),
:class:`~.connection.Connection` (the connector thread, reconnects, what a message means),
:class:`~.calls.Calls` (calls, sends, and the hold on replies), :class:`~.topics.Topics`
(join, leave, rejoins) and :class:`~.dispatch.Dispatcher` (handlers and the receive
queue). Elsewhere: the decisions (state after a handshake or close, reconnect or stop, which
transport, fallback) in :mod:`.state`; the open connections and their read loops in
:mod:`.links` and :mod:`.ajax`; requests and opening connections in :mod:`.endpoint`.
sente.js is built the same way (its ``Connection``, ``Calls`` and ``Topics`` helpers).
"""
from __future__ import annotations

import http.cookiejar
import logging
import random
import ssl
import threading
import time
import typing as t
import uuid

from ..config import CLIENT_AJAX_TIMEOUT
from ..exceptions import LocalProtocolError
from ..protocol import events as ev
from ..protocol.backoff import DEFAULT_CAP, backoff_delay
from ..protocol.packers import Packer, get_packer
from .answers import AnswerHandler, Answers
from .calls import DEFAULT_CALL_TIMEOUT, Calls
from .connection import Connection
from .dispatch import Dispatcher, Handler
from .endpoint import Endpoint
from .pending import PendingCalls
from .state import TRANSPORT_TYPES, ClientState, CloseInfo, ConnectionMachine
from .status import ClientStatus
from .topics import REJOIN_TIMEOUT, TopicHandler, Topics
from .websocket import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["Client", "default_backoff"]

logger = logging.getLogger("flask_sente.client")

#: Event ids the client delivers itself (through ``on()`` and, if asked, ``receive()``).
STATE = ev.STATE
HANDSHAKE = ev.HANDSHAKE

#: A client's own Ajax request timeout: longer than any server's long-poll hold, which the
#: server keeps below it (``lp_timeout`` < this; flask_sente.config). One value, in
#: ``flask_sente.config``, for the server's check and this client; sente.js has the same
#: (``DEFAULTS.ajaxTimeoutMs``), and ``tests/vectors/defaults.json`` ties them.
AJAX_TIMEOUT = CLIENT_AJAX_TIMEOUT

__all__ += ["AJAX_TIMEOUT", "DEFAULT_CALL_TIMEOUT", "HANDSHAKE", "STATE"]


def default_backoff(cap: float = DEFAULT_CAP) -> t.Callable[[int], float]:
    """The default reconnect schedule: attempt 1 at once, then doubling from 1 s with equal
    jitter, never above ``cap`` seconds (see :func:`flask_sente.protocol.backoff.backoff_delay`)."""

    def backoff(attempt: int) -> float:
        return backoff_delay(attempt, random.random(), cap=cap)

    return backoff


class Client:
    """A channel-socket client. Thread-safe; see :mod:`flask_sente.client` for the design.

    :param url: the channel socket, e.g. ``"http://127.0.0.1:5000/chsk"`` (``https``,
        ``ws`` and ``wss`` work too; its query parameters are kept).
    :param type: ``"auto"`` (WebSocket, falling back to Ajax), ``"ws"`` or ``"ajax"``.
    :param packer: ``"json"``, ``"msgpack"`` or a :class:`~flask_sente.Packer`; must be the
        server's.
    :param client_id: this client's id (default: a random UUID4 hex).
    :param headers: extra HTTP headers on every request (WebSocket upgrade and Ajax).
    :param cookies: a dict, or an :class:`http.cookiejar.CookieJar` (e.g. a
        ``requests.Session().cookies``) that is also updated from Ajax responses.
    :param params: extra query parameters on every request.
    :param csrf_token: a string, or a callable returning one, read anew for every
        connection and every Ajax request, sent as the ``X-CSRF-Token`` header (on the
        WebSocket upgrade too, so the token never appears in a URL).
    :param keepalive: seconds without any incoming traffic on a WebSocket before the client
        pings (None disables client pings).
    :param ping_timeout: seconds to wait for the ping's answer (any traffic counts) before
        the connection is dropped and re-made.
    :param backoff: ``(attempt) -> seconds`` to wait before connection attempt ``attempt``
        (1-based, counting failures in a row); default :func:`default_backoff` (30 s cap).
    :param reconnect_on_auth_failure: keep retrying after a 401/403 (default: stop).
    :param connect_timeout: bound on opening a connection (TCP, upgrade, handshake), and
        the socket timeout of an open WebSocket's writes.
    :param upgrade_retry: in auto mode, seconds between WebSocket attempts while on Ajax
        (None: stay on Ajax until ``reconnect()``).
    :param ajax_timeout: the Ajax request timeout (must exceed the server's ``lp_timeout``).
    :param receive_system_events: also put ``chsk/state`` and ``chsk/handshake`` events
        that have no handler into :meth:`receive`.
    :param receive_queue_size: pushes kept for :meth:`receive`; when full the oldest is
        dropped (and logged).
    :param ssl_context: for ``https``/``wss`` URLs.
    :param max_message_size: largest WebSocket message accepted from the server.
    """

    def __init__(
        self,
        url: str,
        *,
        type: str = "auto",  # noqa: A002 - the name fixed by the API
        packer: str | Packer = "json",
        client_id: str | None = None,
        headers: t.Mapping[str, str] | None = None,
        cookies: t.Mapping[str, str] | http.cookiejar.CookieJar | None = None,
        params: t.Mapping[str, t.Any] | None = None,
        csrf_token: str | t.Callable[[], str | None] | None = None,
        keepalive: float | None = 20.0,
        ping_timeout: float = 10.0,
        backoff: t.Callable[[int], float] | None = None,
        reconnect_on_auth_failure: bool = False,
        connect_timeout: float = 10.0,
        upgrade_retry: float | None = 30.0,
        ajax_timeout: float = AJAX_TIMEOUT,
        receive_system_events: bool = False,
        receive_queue_size: int = 1000,
        ssl_context: ssl.SSLContext | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if type not in TRANSPORT_TYPES:
            raise ValueError(f"type must be one of {TRANSPORT_TYPES}, got {type!r}")
        for name, value in (("connect_timeout", connect_timeout), ("ping_timeout", ping_timeout),
                            ("ajax_timeout", ajax_timeout), ("keepalive", keepalive),
                            ("upgrade_retry", upgrade_retry)):
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if client_id is not None and not (isinstance(client_id, str) and 0 < len(client_id) <= 128):
            raise ValueError("client_id must be a non-empty string of at most 128 characters")
        self.client_id = client_id or uuid.uuid4().hex
        self._endpoint = Endpoint(
            url, client_id=self.client_id, packer=get_packer(packer), headers=headers,
            params=params, cookies=cookies, csrf_token=csrf_token, ssl_context=ssl_context,
            connect_timeout=float(connect_timeout), ajax_timeout=float(ajax_timeout),
            max_message_size=max_message_size)
        #: The channel socket's http(s) URL.
        self.url = self._endpoint.url
        self._connect_timeout = float(connect_timeout)
        # The one lock of the client (re-entrant: handlers of state changes may call back),
        # and the condition every wait of every collaborator is on.
        self._lock = threading.RLock()
        changed = threading.Condition(self._lock)
        self._dispatch = Dispatcher(changed, receive_system_events=receive_system_events,
                                    queue_size=receive_queue_size)
        self._status = ClientStatus(changed, self._dispatch, type)
        pending = PendingCalls()
        self._calls = Calls(self._status, packer=self._endpoint.packer,
                            positions=self._endpoint.positions, pending=pending,
                            dispatch=self._dispatch)
        self._topics = Topics(self._status, calls=self._calls, dispatch=self._dispatch,
                              positions=self._endpoint.positions)
        thread_name = f"flask_sente.client-{self.client_id[:8]}"
        self._answers = Answers(self._status, self._dispatch, self._calls.send, thread_name,
                                send_timeout=self._connect_timeout)
        self._connection = Connection(
            self._status, endpoint=self._endpoint,
            machine=ConnectionMachine(type, upgrade_retry=upgrade_retry,
                                      reconnect_on_auth_failure=reconnect_on_auth_failure),
            pending=pending, dispatch=self._dispatch, calls=self._calls, topics=self._topics,
            backoff=backoff or default_backoff(), keepalive=keepalive,
            ping_timeout=ping_timeout, upgrade_retry=upgrade_retry if type == "auto" else None,
            thread_name=thread_name, answers=self._answers)

    # --- context manager and lifecycle -----------------------------------------------------

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._status.state
        status = "open" if state.open else ("connecting" if state.active else "stopped")
        return f"<Client {self.url} {state.type} {status} client_id={self.client_id}>"

    def connect(self) -> None:
        """Start connecting (in the background; returns at once) and keep connected.

        Also restarts a client that stopped (after ``disconnect()``, a kick, a refusal or a
        protocol mismatch). Use :meth:`wait_open` to block until the connection is open.
        """
        self._connection.start()

    def disconnect(self) -> None:
        """Close the connection (WebSocket close 1000) and stop reconnecting.

        ``state.last_close.reason`` becomes ``requested-disconnect``; pending calls fail with
        :class:`~flask_sente.exceptions.ConnectionClosed`. :meth:`connect` or :meth:`reconnect`
        starts again.
        """
        self._connection.drop(CloseInfo("requested-disconnect"), keep_active=False)

    def reconnect(self) -> None:
        """Close the connection and make a new one at once (e.g. after a login changed the
        session, so the server computes the new uid). In auto mode WebSocket is tried first
        again."""
        self._connection.reconnect()

    def break_connection(self) -> None:
        """Drop the connection as a network failure would (no close frame, no intent): the
        client reconnects on its own, with its backoff, and is replayed what it missed.
        Sente's ``chsk-break-connection!`` and sente.js's ``breakConnection()``: for tests
        of an app's reconnect paths, or to force a fresh connection."""
        self._connection.break_link()

    def close(self) -> None:
        """Disconnect and stop every thread of this client (joined with a timeout). Final."""
        with self._lock:
            if self._status.closed:
                return
        self._connection.drop(CloseInfo("requested-disconnect"), keep_active=False)
        patience = self._connection.close()
        self._topics.stop_rejoining(patience)
        self._connection.join_threads(patience)

    def wait_open(self, timeout: float | None = None) -> bool:
        """Block until the connection is open; False if ``timeout`` passed first.

        :raises Rejected: the client stopped after a 401/403.
        :raises ConnectionClosed: the client is not trying to connect (never connected,
            disconnected, kicked, protocol mismatch, closed).
        """
        return self._status.wait_open(timeout)

    @property
    def state(self) -> ClientState:
        """The current :class:`ClientState` (an immutable snapshot)."""
        return self._status.state

    # --- handlers and receiving ------------------------------------------------------------

    def on(self, event_id: str, fn: Handler | None = None) -> t.Any:
        """Register ``fn(data)`` for pushed events with ``event_id`` (usable as decorator).

        Also for the client's own ``chsk/state`` (data ``(old, new)``) and ``chsk/handshake``
        (data: a dict with ``uid``, ``handshake_data``, ``first_handshake``, ``type`` and
        ``recovered``), and the topics' ``chsk/rejoined``, ``chsk/left`` and ``chsk/joined``.
        Handlers run one at a time on the dispatcher thread; an exception is logged and
        changes nothing else. An event with a handler does not go to :meth:`receive`.
        """
        if not isinstance(event_id, str) or ev.event_error([event_id]) is not None:
            raise LocalProtocolError(f"event ids are namespaced like 'todo/add', got {event_id!r}")

        def register(handler: Handler) -> Handler:
            self._dispatch.add(event_id, handler)
            return handler

        return register if fn is None else register(fn)

    def off(self, event_id: str, fn: Handler) -> None:
        """Remove a handler registered with :meth:`on`."""
        self._dispatch.remove(event_id, fn)

    def on_state(self, fn: t.Callable[[ClientState, ClientState], t.Any]) -> t.Any:
        """Register ``fn(old, new)`` for every state change (a ``chsk/state`` handler)."""
        self.on(STATE, lambda data: fn(*data))
        return fn

    def receive(self, timeout: float | None = None) -> ev.Event | None:
        """The next pushed event without a handler, as ``(event_id, data)``; None if
        ``timeout`` passes first, or at once when the client is closed and nothing is left.

        ``chsk/state`` and ``chsk/handshake`` only come here with
        ``receive_system_events=True``.
        """
        return self._dispatch.receive(timeout)

    # --- sending ---------------------------------------------------------------------------

    def call(self, event: t.Any, timeout: float = DEFAULT_CALL_TIMEOUT) -> t.Any:
        """Send ``event`` and return the server handler's reply.

        A client that is connecting or reconnecting is waited for; ``timeout`` covers that
        wait and the reply. Example: ``chsk.call(("todo/add", {"text": "milk"}), timeout=5)``.

        It returns after the pushes the handler made before replying have reached the app:
        their :meth:`on` handlers have run (or they are in :meth:`receive`), over WebSocket
        and over Ajax, where the reply is held until the polls brought them (its
        ``X-Sente-After``, docs/protocol.md §6). That wait ends at ``timeout`` too, and the
        reply is then returned anyway; a call made from an :meth:`on` handler does not wait
        for the handlers queued after its own.

        :raises ReplyTimeout: no reply within ``timeout`` (or the server's reply window).
        :raises ReplyError: the server answered with ``chsk/error`` (e.g. the handler raised).
        :raises ConnectionClosed: not connected within ``timeout``, the client is stopped, or
            the connection dropped while waiting (at once, not at the timeout).
        :raises Rejected: the client stopped after a refusal (401/403, or one of
            :data:`~flask_sente.client.state.STOP_STATUSES`), or an Ajax POST got a status.
        :raises LocalProtocolError: an invalid or reserved event, or data the packer refuses.
        """
        pair = ev.validate_outgoing(event)
        return self._calls.call(pair, time.monotonic() + timeout, timeout)

    def answer(self, event_id: str, fn: AnswerHandler | None = None) -> t.Any:
        """Register the one handler that answers the server's calls of ``event_id``
        (``sente.call(uid, (event_id, data), client_id=...)`` on the server); usable as a
        decorator. ``fn(data)`` runs on a thread of its own; what it returns is the answer,
        what it raises reaches the caller as ``ClientCallError`` with its message (cut to
        500 characters). A call with no handler is answered "no handler"
        (``NoAnswerHandler`` on the server).

        A handler whose signature requires a second positional argument,
        ``fn(data, info)``, is given a :class:`~flask_sente.client.CallInfo` ``(id,
        event_id)``: the call's id and its event id (sente.js's ``fn(data, {id,
        eventId})``). One with a default there (``lambda data, i=i: ...``) or only
        ``*args`` gets the data alone. Which form a handler has is read once, here, from
        its signature.

        :raises ValueError: a handler for ``event_id`` is already registered.
        :raises LocalProtocolError: an invalid or reserved event id.
        """
        if fn is not None:
            self._answers.add(event_id, fn)
            return fn

        def register(handler: AnswerHandler) -> AnswerHandler:
            self._answers.add(event_id, handler)
            return handler

        return register

    def remove_answer(self, event_id: str) -> None:
        """Unregister the answer handler of ``event_id`` (its calls are then answered "no
        handler")."""
        self._answers.remove(event_id)

    def send(self, event: t.Any, timeout: float | None = None) -> None:
        """Send ``event`` without asking for a reply (fire and forget).

        Over WebSocket it returns once the frame is written; over Ajax once the server
        acknowledged the POST. A client that is connecting is waited for, up to ``timeout``
        (default: ``connect_timeout``). Raises like :meth:`call`, minus the reply errors.
        """
        pair = ev.validate_outgoing(event)
        deadline = time.monotonic() + (self._connect_timeout if timeout is None else timeout)
        self._calls.send(pair, deadline)

    # --- topics ----------------------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        """The topics this client is in (joined, or put in by the server)."""
        return self._topics.names()

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
        return self._topics.join(topic, data, timeout)

    def leave(self, topic: str, timeout: float = REJOIN_TIMEOUT) -> None:
        """Leave ``topic``: its events stop at once here (the server is told too).

        Callable at any time, like :meth:`join`: a leave while the client reconnects keeps
        the topic out of the next connection's rejoins, and is sent on it. A join or rejoin
        of the topic still unanswered is waited for first (the join and leave calls of a
        topic go out one at a time, in order), so the server, which runs a client's events
        side by side, cannot do the leave before it."""
        self._topics.leave(topic, timeout)

    def on_topic(self, topic: str, fn: TopicHandler | None = None) -> t.Any:
        """Register ``fn(event_id, data)`` for the events published to ``topic`` (usable
        as a decorator). A topic's events with no such handler go to :meth:`on` handlers
        of their id, or to :meth:`receive`, like any push."""
        return self._topics.on_topic(topic, fn)

    def off_topic(self, topic: str, fn: TopicHandler) -> None:
        """Remove a handler registered with :meth:`on_topic`."""
        self._topics.off_topic(topic, fn)
