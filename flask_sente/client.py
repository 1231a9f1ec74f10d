"""The Python client of a flask_sente channel socket: WebSocket with Ajax long-poll fallback.

Why it exists: services, scripts, workers and tests talk to a flask_sente server the way
``sente.js`` does in a browser — one logical connection that reconnects on its own, pushes
from the server, requests with replies — without a browser and without new dependencies.
It speaks ``docs/protocol.md`` exactly and reuses :mod:`flask_sente.protocol` for every
wire decision.

::

    from flask_sente.client import Client

    with Client("http://127.0.0.1:5000/chsk") as chsk:        # type="auto" by default
        reply = chsk.call(("todo/add", {"text": "milk"}), timeout=5)
        chsk.send(("todo/log", "hi"))
        event = chsk.receive(timeout=5)                        # ("todo/added", {...}) or None

Design, in short:

* **Standard library only** for I/O: :mod:`http.client` for Ajax, :mod:`flask_sente.client_ws`
  (our RFC 6455 codec over :mod:`socket`) for WebSocket. Threads everywhere, so it works in a
  plain program and, unchanged, in a gevent-patched one (where threads are greenlets).
* **Threads**: a *connector* connects, runs the current connection's read loop (WebSocket
  frames or Ajax polls) and reconnects with backoff; a *dispatcher* runs ``on()`` handlers
  one at a time, in order, never on the socket reader; while a connection is open, one
  helper runs beside it: the keep-alive watchdog (WebSocket) or the upgrade prober (Ajax in
  auto mode). ``close()`` joins all of them.
* **Nothing happens on construction**: :meth:`Client.connect` (or ``with``) starts the
  threads, so handlers registered right after construction see the first state change and
  handshake.
* **No offline buffering**: ``call()``/``send()`` on a client that is connecting or
  reconnecting wait for the open (within their timeout); on a stopped client they raise at
  once. Calls in flight fail at once with :class:`ConnectionClosed` when their connection
  drops (Sente lets them wait for their timeout).
* **Auto mode** starts with WebSocket, falls back to Ajax when a WebSocket cannot open but
  Ajax can, and retries WebSocket every ``upgrade_retry`` seconds while on Ajax, moving back
  up when it works (Sente never moves back up). A 401/403 is a rejection, never a reason to
  fall back.
"""
from __future__ import annotations

import collections
import dataclasses
import http.client
import http.cookiejar
import logging
import random
import secrets
import socket
import ssl
import threading
import time
import typing as t
import urllib.request
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .client_ws import DEFAULT_MAX_MESSAGE_SIZE, WebSocket
from .exceptions import (
    ConnectionClosed,
    LocalProtocolError,
    Rejected,
    RemoteProtocolError,
    ReplyError,
    ReplyTimeout,
)
from .protocol import PROTOCOL_VERSION
from .protocol import events as ev
from .protocol import wire
from .protocol.backoff import DEFAULT_CAP, backoff_delay
from .protocol.packers import Packer, get_packer

__all__ = ["Client", "ClientState", "CloseInfo", "default_backoff"]

logger = logging.getLogger("flask_sente.client")

#: Event ids the client delivers itself (through ``on()`` and, if asked, ``receive()``).
STATE = ev.STATE
HANDSHAKE = ev.HANDSHAKE

#: A client's own Ajax request timeout; longer than any server's long-poll hold (< 60 s).
AJAX_TIMEOUT = 60.0
DEFAULT_CALL_TIMEOUT = 30.0
#: How long ``disconnect()`` waits for the server to echo a WebSocket close frame.
CLOSE_WAIT = 2.0
#: How long ``close()`` waits for each thread before giving up on it (it is a daemon).
JOIN_TIMEOUT = 5.0
AUTH_STATUSES = frozenset({401, 403})
#: A connection open at least this long counts as stable: its loss is retried at once.
STABLE_AFTER = 2.0
TRANSPORT_TYPES = ("auto", "ws", "ajax")


def default_backoff(cap: float = DEFAULT_CAP) -> t.Callable[[int], float]:
    """The default reconnect schedule: attempt 1 at once, then doubling from 1 s with equal
    jitter, never above ``cap`` seconds (see :func:`flask_sente.protocol.backoff.backoff_delay`)."""

    def backoff(attempt: int) -> float:
        return backoff_delay(attempt, random.random(), cap=cap)

    return backoff


@dataclasses.dataclass(frozen=True)
class CloseInfo:
    """How the last connection, or connection attempt, ended.

    :ivar reason: ``clean`` (the server closed with a close frame), ``unexpected`` (the
        connection broke, or could not be made), ``requested-disconnect``,
        ``requested-reconnect``, ``ping-timeout`` (no answer to a keep-alive ping),
        ``rejected`` (an HTTP status refused us; see ``status``) or ``kicked`` (close 4001).
    :ivar code: the WebSocket close code (or the code of an Ajax ``chsk/close``), if any.
    :ivar status: the HTTP status of a rejection, if any.
    :ivar message: the close reason text, the rejection body or the error, for humans.
    :ivar at: ``time.time()`` when it happened.
    """

    reason: str
    code: int | None = None
    status: int | None = None
    message: str = ""
    at: float = dataclasses.field(default_factory=time.time, compare=False)


@dataclasses.dataclass(frozen=True)
class ClientState:
    """A snapshot of the client's state (Sente's state atom, with snake_case keys).

    :ivar type: the transport in use (or last used): ``ws`` or ``ajax``; before the first
        handshake, the requested type (``auto``, ``ws`` or ``ajax``).
    :ivar open: a connection is open now.
    :ivar ever_opened: a handshake has completed at least once.
    :ivar uid: the user id from the last handshake.
    :ivar handshake_data: the app's data from the last handshake.
    :ivar last_close: a :class:`CloseInfo`, or None.
    :ivar active: the client is connected or trying to be (connecting, open, waiting to
        reconnect). False after ``disconnect()``, ``close()``, a kick, or a 401/403.
    :ivar attempt: failed connection attempts in a row (0 once open).
    :ivar next_reconnect: ``time.time()`` of the next attempt while waiting in backoff.
    """

    type: str
    open: bool = False
    ever_opened: bool = False
    uid: t.Any = None
    handshake_data: t.Any = None
    last_close: CloseInfo | None = None
    active: bool = False
    attempt: int = 0
    next_reconnect: float | None = None


# --- internal helpers ---------------------------------------------------------------------


class _AttemptFailed(Exception):
    """Internal: one connection attempt failed (never escapes the connector thread)."""

    def __init__(self, info: CloseInfo, *, may_fall_back: bool = True) -> None:
        super().__init__(info.message or info.reason)
        self.info = info
        self.may_fall_back = may_fall_back


class _Aborter:
    """Lets another thread interrupt blocking I/O: register an abort function for each
    socket in use; :meth:`fire` calls them all, and anything registered afterwards is
    aborted at once (so there is no window where an abort is missed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fns: dict[int, t.Callable[[], None]] = {}
        self._next = 0
        self.fired = False

    def register(self, fn: t.Callable[[], None]) -> int:
        with self._lock:
            self._next += 1
            token = self._next
            if not self.fired:
                self._fns[token] = fn
                return token
        _call_quietly(fn)
        return token

    def unregister(self, token: int) -> None:
        with self._lock:
            self._fns.pop(token, None)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            fns, self._fns = list(self._fns.values()), {}
        for fn in fns:
            _call_quietly(fn)


def _call_quietly(fn: t.Callable[[], None]) -> None:
    try:
        fn()
    except (OSError, ValueError):
        pass


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass


class _Pending:
    """A call waiting for its reply (WebSocket) or its POST's response (Ajax)."""

    __slots__ = ("done", "message", "error", "link")

    def __init__(self, link: t.Any) -> None:
        self.done = threading.Event()
        self.message: wire.ServerMessage | None = None
        self.error: BaseException | None = None
        self.link = link

    def resolve(self, message: wire.ServerMessage) -> None:
        if not self.done.is_set():
            self.message = message
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


def _outcome(message: wire.ServerMessage) -> t.Any:
    """The value of a reply, or the exception its failure stands for."""
    if message.outcome == ev.REPLY:
        return message.value
    if message.outcome == ev.TIMEOUT:
        raise ReplyTimeout("the server's handler did not reply in time")
    if message.outcome == ev.ERROR:
        info = message.value if isinstance(message.value, dict) else {}
        raise ReplyError(str(info.get("message") or "the server answered with an error"),
                         message.value)
    raise ConnectionClosed("the server closed the request")


def _ajax_close_info(message: wire.ServerMessage) -> CloseInfo:
    """What an Ajax ``chsk/close`` means: ``kicked`` for 4001, else a ``clean`` close."""
    info = message.value if isinstance(message.value, dict) else {}
    code = info.get("code")
    reason = "kicked" if code in wire.NO_RECONNECT_CODES else "clean"
    return CloseInfo(reason, code=code, message=str(info.get("reason", "")))


def _rejection_info(exc: Rejected) -> CloseInfo:
    return CloseInfo("rejected", status=exc.status, message=exc.body)


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclasses.dataclass
class _Upgrade:
    """The Ajax read loop's way of saying: a WebSocket opened, continue on it."""

    ws: WebSocket
    handshake: dict[str, t.Any]


class _WsLink:
    """One open WebSocket connection of the client."""

    transport = "ws"

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.aborter = _Aborter()
        self.aborter.register(ws.abort)
        #: Set before the link is shut down on purpose: the close reason to record.
        self.intent: CloseInfo | None = None
        self.ended = threading.Event()
        self.ping_ids: set[str] = set()

    def shutdown(self, intent: CloseInfo | None, graceful: bool) -> None:
        if intent is not None and self.intent is None:
            self.intent = intent
        if graceful:
            self.ws.close(wire.CLOSE_NORMAL, intent.reason if intent else "")
            if self.ended.wait(CLOSE_WAIT):
                return
        self.aborter.fire()


class _AjaxLink:
    """One open Ajax session: a poll connection, POSTs in flight, maybe an upgrade offer."""

    transport = "ajax"

    def __init__(self, poll_conn: http.client.HTTPConnection) -> None:
        self.poll_conn: http.client.HTTPConnection | None = poll_conn
        self.aborter = _Aborter()
        self.aborter.register(self._abort_poll)
        self.intent: CloseInfo | None = None
        self.ended = threading.Event()
        self.upgrade: _Upgrade | None = None
        self._lock = threading.Lock()

    def _abort_poll(self) -> None:
        conn = self.poll_conn
        _shutdown(conn.sock if conn is not None else None)

    def offer_upgrade(self, upgrade: _Upgrade) -> bool:
        """From the prober: hand over an open WebSocket; False if this link is gone."""
        with self._lock:
            if self.ended.is_set() or self.intent is not None or self.aborter.fired:
                return False
            self.upgrade = upgrade
        self._abort_poll()
        return True

    def shutdown(self, intent: CloseInfo | None, graceful: bool) -> None:
        with self._lock:
            if intent is not None and self.intent is None:
                self.intent = intent
        self.aborter.fire()


_Link = t.Union[_WsLink, _AjaxLink]


# --- the client ---------------------------------------------------------------------------


class Client:
    """A channel-socket client. Thread-safe; see the module docstring for the design.

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
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ValueError(f"url must be an absolute http(s) or ws(s) URL, got {url!r}")
        secure = parts.scheme in ("https", "wss")
        self._http_scheme = "https" if secure else "http"
        self._netloc = parts.netloc.rpartition("@")[2]
        self._host = parts.hostname
        self._port = parts.port or (443 if secure else 80)
        self._path = parts.path or "/"
        self._base_query = parse_qsl(parts.query, keep_blank_values=True)
        self.url = urlunsplit((self._http_scheme, self._netloc, self._path, parts.query, ""))

        self._type = type
        self._packer = get_packer(packer)
        self.client_id = client_id or uuid.uuid4().hex
        self._headers = dict(headers or {})
        self._params = dict(params or {})
        self._csrf_token = csrf_token
        if isinstance(cookies, http.cookiejar.CookieJar):
            self._jar = cookies
            self._static_cookies: dict[str, str] = {}
        else:
            self._jar = http.cookiejar.CookieJar()
            self._static_cookies = dict(cookies or {})
        self._keepalive = keepalive
        self._ping_timeout = ping_timeout
        self._backoff = backoff or default_backoff()
        self._reconnect_on_auth_failure = reconnect_on_auth_failure
        self._connect_timeout = float(connect_timeout)
        self._upgrade_retry = upgrade_retry
        self._ajax_timeout = float(ajax_timeout)
        self._receive_system_events = receive_system_events
        self._ssl_context = ssl_context
        self._max_message_size = max_message_size

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._state = ClientState(type=type)
        self._closed = False
        self._active = False
        #: Bumped by connect/disconnect/reconnect: the connector restarts its attempts.
        self._session = 0
        self._link: _Link | None = None
        self._attempt_aborter: _Aborter | None = None
        self._pending: dict[str, _Pending] = {}
        #: monotonic time of the last WebSocket failure that made auto mode use Ajax.
        self._ws_blocked_since: float | None = None
        self._handlers: dict[str, list[t.Callable[[t.Any], t.Any]]] = {}
        self._inbox: collections.deque[ev.Event] = collections.deque(maxlen=receive_queue_size)
        self._dropped_warned = False
        self._jobs: collections.deque[tuple[list[t.Callable[[t.Any], t.Any]], t.Any]] = (
            collections.deque())
        self._connector: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None

    # --- context manager and lifecycle -----------------------------------------------------

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._state
        status = "open" if state.open else ("connecting" if state.active else "stopped")
        return f"<Client {self.url} {state.type} {status} client_id={self.client_id}>"

    def connect(self) -> None:
        """Start connecting (in the background; returns at once) and keep connected.

        Also restarts a client that stopped (after ``disconnect()``, a kick or a 401/403).
        Use :meth:`wait_open` to block until the connection is open.
        """
        with self._lock:
            if self._closed:
                raise ConnectionClosed("this client was closed; create a new one")
            self._start_threads()
            if self._active:
                return
            self._active = True
            self._session += 1
            self._set_state(active=True)
            self._changed.notify_all()

    def disconnect(self) -> None:
        """Close the connection (WebSocket close 1000) and stop reconnecting.

        ``state.last_close.reason`` becomes ``requested-disconnect``; pending calls fail with
        :class:`ConnectionClosed`. :meth:`connect` or :meth:`reconnect` starts again.
        """
        self._drop(CloseInfo("requested-disconnect"), keep_active=False)

    def reconnect(self) -> None:
        """Close the connection and make a new one at once (e.g. after a login changed the
        session, so the server computes the new uid). In auto mode WebSocket is tried first
        again."""
        with self._lock:
            if self._closed:
                raise ConnectionClosed("this client was closed; create a new one")
            self._ws_blocked_since = None
            self._start_threads()
        self._drop(CloseInfo("requested-reconnect"), keep_active=True)

    def close(self) -> None:
        """Disconnect and stop every thread of this client (joined with a timeout). Final."""
        with self._lock:
            if self._closed:
                return
        self._drop(CloseInfo("requested-disconnect"), keep_active=False)
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        current = threading.current_thread()
        # A TCP connect cannot be interrupted: allow for one to run into its timeout.
        patience = JOIN_TIMEOUT + self._connect_timeout
        for thread in (self._connector, self._dispatcher):
            if thread is not None and thread is not current:
                thread.join(patience)
                if thread.is_alive():
                    logger.warning("client thread %s did not stop within %.0f s (a handler "
                                   "that does not return?)", thread.name, patience)

    def wait_open(self, timeout: float | None = None) -> bool:
        """Block until the connection is open; False if ``timeout`` passed first.

        :raises Rejected: the client stopped after a 401/403.
        :raises ConnectionClosed: the client is not trying to connect (never connected,
            disconnected, kicked, closed).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._state.open:
                    return True
                self._raise_if_stopped()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)

    @property
    def state(self) -> ClientState:
        """The current :class:`ClientState` (an immutable snapshot)."""
        return self._state

    # --- handlers and receiving ------------------------------------------------------------

    def on(self, event_id: str, fn: t.Callable[[t.Any], t.Any] | None = None) -> t.Any:
        """Register ``fn(data)`` for pushed events with ``event_id`` (usable as decorator).

        Also for the client's own ``chsk/state`` (data ``(old, new)``) and ``chsk/handshake``
        (data: a dict with ``uid``, ``handshake_data``, ``first_handshake``, ``type``).
        Handlers run one at a time on the dispatcher thread; an exception is logged and
        changes nothing else. An event with a handler does not go to :meth:`receive`.
        """
        if not isinstance(event_id, str) or ev.event_error([event_id]) is not None:
            raise LocalProtocolError(f"event ids are namespaced like 'todo/add', got {event_id!r}")

        def register(handler: t.Callable[[t.Any], t.Any]) -> t.Callable[[t.Any], t.Any]:
            with self._lock:
                self._handlers.setdefault(event_id, []).append(handler)
            return handler

        return register if fn is None else register(fn)

    def off(self, event_id: str, fn: t.Callable[[t.Any], t.Any]) -> None:
        """Remove a handler registered with :meth:`on`."""
        with self._lock:
            handlers = self._handlers.get(event_id, [])
            if fn in handlers:
                handlers.remove(fn)
            if not handlers:
                self._handlers.pop(event_id, None)

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
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._inbox:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._changed.wait(remaining)
            return self._inbox.popleft()

    # --- sending ---------------------------------------------------------------------------

    def call(self, event: t.Any, timeout: float = DEFAULT_CALL_TIMEOUT) -> t.Any:
        """Send ``event`` and return the server handler's reply.

        A client that is connecting or reconnecting is waited for; ``timeout`` covers that
        wait and the reply.

        :raises ReplyTimeout: no reply within ``timeout`` (or the server's reply window).
        :raises ReplyError: the server answered with ``chsk/error`` (e.g. the handler raised).
        :raises ConnectionClosed: not connected within ``timeout``, the client is stopped, or
            the connection dropped while waiting (at once, not at the timeout).
        :raises Rejected: the client stopped after a 401/403, or an Ajax POST got a status.
        :raises LocalProtocolError: an invalid or reserved event, or data the packer refuses.
        """
        pair = ev.validate_outgoing(event)
        deadline = time.monotonic() + timeout
        link = self._wait_for_link(deadline)
        if isinstance(link, _AjaxLink):
            body = self._packer.pack(wire.client_event(pair, wire.AJAX_CB))
            message = self._ajax_post(link, body, deadline)
            if message.kind == "timeout":
                # A POST's ["chsk/timeout"] has no cb_id, so it decodes like a poll timeout.
                raise ReplyTimeout("the server's handler did not reply in time")
            if message.kind != "reply":
                raise RemoteProtocolError(f"expected a reply, got {message.kind!r}")
            return _outcome(message)
        cb_id = secrets.token_urlsafe(6)
        packed = self._packer.pack(wire.client_event(pair, cb_id))
        pending = _Pending(link)
        with self._lock:
            if self._link is not link or link.intent is not None:
                raise ConnectionClosed("the connection closed before the call was sent")
            self._pending[cb_id] = pending
        try:
            self._ws_send(link, packed)
            if not pending.done.wait(max(0.0, deadline - time.monotonic())):
                raise ReplyTimeout(f"no reply to {pair[0]!r} within {timeout:g} s")
        finally:
            with self._lock:
                self._pending.pop(cb_id, None)
        if pending.error is not None:
            raise pending.error
        assert pending.message is not None
        return _outcome(pending.message)

    def send(self, event: t.Any, timeout: float | None = None) -> None:
        """Send ``event`` without asking for a reply (fire and forget).

        Over WebSocket it returns once the frame is written; over Ajax once the server
        acknowledged the POST. A client that is connecting is waited for, up to ``timeout``
        (default: ``connect_timeout``). Raises like :meth:`call`, minus the reply errors.
        """
        pair = ev.validate_outgoing(event)
        deadline = time.monotonic() + (self._connect_timeout if timeout is None else timeout)
        packed = self._packer.pack(wire.client_event(pair, None))
        link = self._wait_for_link(deadline)
        if isinstance(link, _WsLink):
            self._ws_send(link, packed)
            return
        message = self._ajax_post(link, packed, deadline)
        if message.kind not in ("ack", "reply"):
            logger.warning("unexpected answer to an Ajax event: %r", message)

    # --- internals: state and events -------------------------------------------------------

    def _set_state(self, **changes: t.Any) -> None:
        """Change the state and queue a ``chsk/state`` event (call with the lock held)."""
        old = self._state
        new = dataclasses.replace(old, **changes)
        if new == old:
            return
        self._state = new
        self._changed.notify_all()
        self._emit(STATE, (old, new), system=True)

    def _emit(self, event_id: str, data: t.Any, *, system: bool = False) -> None:
        """Hand an event to its handlers (dispatcher) or to receive() (lock held)."""
        handlers = self._handlers.get(event_id)
        if handlers:
            self._jobs.append((list(handlers), data))
            self._changed.notify_all()
        elif not system or self._receive_system_events:
            if len(self._inbox) == self._inbox.maxlen:
                if not self._dropped_warned:
                    self._dropped_warned = True
                    logger.warning("receive() queue full (%d): dropping the oldest events; "
                                   "call receive() more often or register handlers",
                                   self._inbox.maxlen)
            else:
                self._dropped_warned = False
            self._inbox.append((event_id, data))
            self._changed.notify_all()

    def _raise_if_stopped(self) -> None:
        if self._closed:
            raise ConnectionClosed("the client is closed")
        if not self._active:
            last = self._state.last_close
            if last is not None and last.reason == "rejected" and last.status is not None:
                raise Rejected(last.status, last.message)
            if last is None:
                raise ConnectionClosed("not connected: call connect() first")
            raise ConnectionClosed(last.reason, last.code)

    def _wait_for_link(self, deadline: float) -> _Link:
        with self._lock:
            while True:
                if self._state.open and self._link is not None and self._link.intent is None:
                    return self._link
                self._raise_if_stopped()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectionClosed("not connected (still connecting)")
                self._changed.wait(remaining)

    def _drop(self, info: CloseInfo, *, keep_active: bool) -> None:
        """End the current connection (and any attempt) on the user's request.

        The state changes here, at once, so ``disconnect()`` returns with ``open`` False;
        the connector then sees the new session and either waits or reconnects.
        """
        with self._lock:
            self._session += 1
            self._active = keep_active and not self._closed
            if self._attempt_aborter is not None:
                self._attempt_aborter.fire()
            link = self._link
            changes: dict[str, t.Any] = {"active": self._active, "next_reconnect": None}
            if link is not None:
                self._link = None
                link.intent = link.intent or info
                error = ConnectionClosed(f"connection closed: {info.reason}", wire.CLOSE_NORMAL
                                         if isinstance(link, _WsLink) else None)
                for cb_id, pending in list(self._pending.items()):
                    if pending.link is link:
                        pending.fail(error)
                        del self._pending[cb_id]
                if self._state.open:
                    changes.update(open=False, last_close=info)
            self._set_state(**changes)
            self._changed.notify_all()
        if link is not None:
            link.shutdown(info, graceful=True)

    # --- internals: threads ----------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._connector is None:
            name = f"flask_sente.client-{self.client_id[:8]}"
            self._dispatcher = threading.Thread(target=self._dispatch_loop,
                                                name=name + "-dispatcher", daemon=True)
            self._connector = threading.Thread(target=self._connect_loop,
                                               name=name + "-connector", daemon=True)
            self._dispatcher.start()
            self._connector.start()

    def _dispatch_loop(self) -> None:
        """Run handlers in order, one at a time; drains what is queued before stopping."""
        while True:
            with self._lock:
                while not self._jobs and not self._closed:
                    self._changed.wait()
                if not self._jobs:
                    return
                handlers, data = self._jobs.popleft()
            for handler in handlers:
                try:
                    handler(data)
                except Exception:
                    logger.exception("client event handler %r raised", handler)

    def _connect_loop(self) -> None:
        """The connector: attempts with backoff, serving each connection until it ends."""
        attempt = 0
        session = -1
        while True:
            with self._lock:
                while not self._active and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                if session != self._session:
                    session, attempt = self._session, 0
            attempt += 1
            if not self._back_off(attempt, session):
                continue
            aborter = _Aborter()
            with self._lock:
                if self._session != session or self._closed:
                    continue
                self._attempt_aborter = aborter
            try:
                link, handshake = self._open_link(aborter)
            except _AttemptFailed as failure:
                self._attempt_failed(failure.info, session, attempt)
                continue
            except Exception as exc:  # e.g. a csrf_token callable that raised
                logger.exception("connecting to %s failed", self.url)
                self._attempt_failed(CloseInfo("unexpected", message=_error_text(exc)),
                                     session, attempt)
                continue
            finally:
                with self._lock:
                    self._attempt_aborter = None
            opened_at = time.monotonic()
            self._serve(link, handshake, session)
            # A connection that stayed up is followed by an immediate retry (attempt 1); one
            # that dropped at once keeps counting, so a flapping server is not hammered.
            if time.monotonic() - opened_at >= STABLE_AFTER:
                attempt = 0

    def _back_off(self, attempt: int, session: int) -> bool:
        """Wait before ``attempt``; False if the session changed or the client closed."""
        try:
            delay = max(0.0, float(self._backoff(attempt)))
        except Exception:
            logger.exception("the backoff function raised; waiting 1 s")
            delay = 1.0
        if delay <= 0:
            return True
        deadline = time.monotonic() + delay
        with self._lock:
            self._set_state(attempt=attempt - 1, next_reconnect=time.time() + delay)
            while self._session == session and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._set_state(next_reconnect=None)
                    return True
                self._changed.wait(remaining)
            self._set_state(next_reconnect=None)
            return False

    def _is_terminal(self, info: CloseInfo) -> bool:
        """Whether this end stops reconnecting: a kick, or a 401/403 unless told otherwise."""
        if info.reason == "kicked":
            return True
        return (info.reason == "rejected" and info.status in AUTH_STATUSES
                and not self._reconnect_on_auth_failure)

    def _attempt_failed(self, info: CloseInfo, session: int, attempt: int) -> None:
        terminal = self._is_terminal(info)
        level = logging.WARNING if terminal or attempt == 1 else logging.INFO
        logger.log(level, "connecting to %s failed (attempt %d): %s%s", self.url, attempt,
                   info.reason, f" {info.status}" if info.status else
                   (f" ({info.message})" if info.message else ""))
        with self._lock:
            if self._session != session:
                return
            changes: dict[str, t.Any] = {"last_close": info, "attempt": attempt}
            if terminal:
                self._active = False
                changes["active"] = False
            self._set_state(**changes)

    # --- internals: opening connections ----------------------------------------------------

    def _open_link(self, aborter: _Aborter) -> tuple[_Link, dict[str, t.Any]]:
        """One connection attempt: WebSocket and/or Ajax, per ``type``."""
        if self._type == "ajax":
            return self._open_ajax(aborter)
        blocked = self._ws_blocked_since
        try_ws = self._type == "ws" or blocked is None or (
            self._upgrade_retry is not None
            and time.monotonic() - blocked >= self._upgrade_retry)
        ws_failure: _AttemptFailed | None = None
        if try_ws:
            try:
                ws, handshake = self._open_ws(aborter)
                self._ws_blocked_since = None
                return _WsLink(ws), handshake
            except _AttemptFailed as failure:
                if self._type == "ws" or not failure.may_fall_back or aborter.fired:
                    raise
                ws_failure = failure
                logger.info("WebSocket unavailable (%s); trying Ajax",
                            failure.info.message or failure.info.reason)
        link, handshake = self._open_ajax(aborter)
        if ws_failure is not None:
            # WebSocket failed while Ajax works: the path blocks upgrades, not the server.
            self._ws_blocked_since = time.monotonic()
        return link, handshake

    def _open_ws(self, aborter: _Aborter) -> tuple[WebSocket, dict[str, t.Any]]:
        url = self._request_url(ws=True)
        headers = self._request_headers(url)
        tokens: list[int] = []
        deadline = time.monotonic() + self._connect_timeout
        try:
            ws = WebSocket.connect(
                url, headers=headers.items(), timeout=self._connect_timeout,
                ssl_context=self._ssl_context, max_message_size=self._max_message_size,
                on_socket=lambda sock: tokens.append(aborter.register(lambda: _shutdown(sock))))
        except Rejected as exc:
            raise _AttemptFailed(_rejection_info(exc),
                                 may_fall_back=exc.status not in AUTH_STATUSES) from exc
        except (OSError, ValueError, RemoteProtocolError) as exc:
            raise _AttemptFailed(CloseInfo("unexpected", message=_error_text(exc))) from exc
        finally:
            for token in tokens:
                aborter.unregister(token)
        token = aborter.register(ws.abort)
        try:
            data = ws.receive(deadline)
            message = wire.decode_server(self._packer.unpack(data))
            if message.kind != "handshake" or not isinstance(message.value, dict):
                raise RemoteProtocolError(f"expected the handshake first, got {message.kind!r}")
        except ConnectionClosed as exc:
            ws.abort()
            ws.release()
            reason = "kicked" if exc.code in wire.NO_RECONNECT_CODES else "unexpected"
            raise _AttemptFailed(CloseInfo(reason, code=exc.code, message=exc.reason),
                                 may_fall_back=reason != "kicked") from exc
        except (OSError, ValueError, RemoteProtocolError) as exc:
            ws.abort()
            ws.release()
            raise _AttemptFailed(CloseInfo("unexpected", message=_error_text(exc))) from exc
        finally:
            aborter.unregister(token)
        ws.set_timeout(self._connect_timeout)
        return ws, message.value

    def _open_ajax(self, aborter: _Aborter) -> tuple[_AjaxLink, dict[str, t.Any]]:
        conn = self._http_connection(self._connect_timeout)
        try:
            status, body = self._http(conn, "GET", self._request_url(handshake=True), aborter)
            if status != 200:
                raise Rejected(status, body.decode("utf-8", "replace").strip())
            message = self._decode(body)
            if message.kind == "close":
                raise _AttemptFailed(_ajax_close_info(message))
            if message.kind != "handshake" or not isinstance(message.value, dict):
                raise RemoteProtocolError(f"expected a handshake, got {message.kind!r}")
        except Rejected as exc:
            conn.close()
            raise _AttemptFailed(_rejection_info(exc)) from exc
        except (OSError, http.client.HTTPException, RemoteProtocolError) as exc:
            conn.close()
            raise _AttemptFailed(CloseInfo("unexpected", message=_error_text(exc))) from exc
        except BaseException:
            conn.close()
            raise
        # From now on the connection carries long-polls: give it the long Ajax timeout.
        conn.timeout = self._ajax_timeout
        if conn.sock is not None:
            conn.sock.settimeout(self._ajax_timeout)
        return _AjaxLink(conn), message.value

    # --- internals: serving an open connection ---------------------------------------------

    def _serve(self, link: _Link, handshake: dict[str, t.Any], session: int) -> None:
        """Run one logical connection until it ends (following Ajax -> WebSocket upgrades)."""
        with self._lock:
            if self._session != session or self._closed or not self._active:
                link.shutdown(None, graceful=False)
                self._release(link)
                return
            self._link = link
            self._opened(link, handshake)
        while True:
            helper_stop = threading.Event()
            helper = self._start_helper(link, helper_stop)
            result: CloseInfo | _Upgrade = CloseInfo("unexpected", message="client error")
            try:
                result = self._read_loop(link)
            except Exception as exc:  # a bug here must not leave the client half-open
                logger.exception("the client's read loop failed")
                result = CloseInfo("unexpected", message=_error_text(exc))
            finally:
                helper_stop.set()
                link.ended.set()
                if not isinstance(result, _Upgrade):
                    link.aborter.fire()  # also stops an upgrade attempt in progress
                if helper is not None:
                    helper.join(JOIN_TIMEOUT + self._connect_timeout)
            if isinstance(result, _Upgrade):
                new_link = _WsLink(result.ws)
                with self._lock:
                    if self._link is link and link.intent is None and not self._closed:
                        self._link = new_link
                        self._ws_blocked_since = None
                        self._release(link, keep_posts=True)
                        self._opened(new_link, result.handshake)
                        link = new_link
                        logger.info("moved up from Ajax to WebSocket")
                        continue
                new_link.shutdown(None, graceful=False)
                self._release(new_link)
                result = link.intent or CloseInfo("requested-disconnect")
            self._closed_link(link, result)
            return

    def _opened(self, link: _Link, handshake: dict[str, t.Any]) -> None:
        """State and events for a handshake (lock held)."""
        first = not self._state.ever_opened
        self._set_state(type=link.transport, open=True, ever_opened=True,
                        uid=handshake.get("uid"), handshake_data=handshake.get("handshake_data"),
                        attempt=0, next_reconnect=None)
        self._emit(HANDSHAKE, {"uid": handshake.get("uid"),
                               "handshake_data": handshake.get("handshake_data"),
                               "first_handshake": first, "type": link.transport}, system=True)

    def _closed_link(self, link: _Link, info: CloseInfo) -> None:
        """The connection ended: fail its calls, record why, decide about reconnecting."""
        link.aborter.fire()
        self._release(link)
        if link.intent is not None:
            info = link.intent
        error = ConnectionClosed(f"connection closed: {info.reason}", info.code)
        with self._lock:
            for cb_id, pending in list(self._pending.items()):
                if pending.link is link:
                    pending.fail(error)
                    del self._pending[cb_id]
            if self._link is link:
                self._link = None
                changes: dict[str, t.Any] = {"open": False, "last_close": info}
                if self._is_terminal(info):
                    self._active = False
                    changes["active"] = False
                self._set_state(**changes)
        if info.reason not in ("requested-disconnect", "requested-reconnect"):
            logger.info("connection to %s closed: %s%s", self.url, info.reason,
                        f" (code {info.code})" if info.code else "")

    def _release(self, link: _Link, keep_posts: bool = False) -> None:
        if isinstance(link, _WsLink):
            link.ws.release()
        else:
            if not keep_posts:
                link.aborter.fire()
            conn, link.poll_conn = link.poll_conn, None
            if conn is not None:
                conn.close()

    def _start_helper(self, link: _Link, stop: threading.Event) -> threading.Thread | None:
        """The thread beside an open connection: keep-alive (WebSocket) or upgrader (Ajax)."""
        target: t.Callable[[t.Any, threading.Event], None]
        if isinstance(link, _WsLink):
            if self._keepalive is None:
                return None
            target, kind = self._keepalive_loop, "keepalive"
        else:
            if self._type != "auto" or self._upgrade_retry is None:
                return None
            target, kind = self._upgrade_loop, "upgrader"
        thread = threading.Thread(target=target, args=(link, stop), daemon=True,
                                  name=f"flask_sente.client-{self.client_id[:8]}-{kind}")
        thread.start()
        return thread

    def _read_loop(self, link: _Link) -> CloseInfo | _Upgrade:
        if isinstance(link, _WsLink):
            return self._ws_read_loop(link)
        return self._ajax_read_loop(link)

    def _ws_read_loop(self, link: _WsLink) -> CloseInfo:
        ws = link.ws
        while True:
            try:
                data = ws.receive()
            except ConnectionClosed as exc:
                if link.intent is not None:
                    return link.intent
                if ws.close_received:
                    if ws.close_code in wire.NO_RECONNECT_CODES:
                        return CloseInfo("kicked", code=ws.close_code, message=ws.close_reason)
                    return CloseInfo("clean", code=ws.close_code, message=ws.close_reason)
                return CloseInfo("unexpected", code=exc.code, message=exc.reason)
            try:
                message = wire.decode_server(self._packer.unpack(data))
            except RemoteProtocolError as exc:
                logger.warning("ignoring a malformed message from the server: %s", exc)
                continue
            self._on_message(link, message)

    def _on_message(self, link: _Link, message: wire.ServerMessage) -> None:
        kind = message.kind
        if kind == "events":
            with self._lock:
                for event_id, data in message.events:
                    if ev.is_reserved(event_id):
                        logger.debug("ignoring unknown system event %r", event_id)
                        continue
                    self._emit(event_id, data)
        elif kind == "reply":
            if message.cb_id is None:
                logger.debug("ignoring a reply without cb_id")
                return
            if isinstance(link, _WsLink) and message.cb_id in link.ping_ids:
                link.ping_ids.discard(message.cb_id)
                return
            with self._lock:
                pending = self._pending.pop(message.cb_id, None)
            if pending is None:
                logger.debug("reply for an unknown or expired call %r", message.cb_id)
            else:
                pending.resolve(message)
        elif kind == "ping":
            if isinstance(link, _WsLink):
                try:
                    link.ws.send(self._packer.pack(wire.PONG))
                except (OSError, ConnectionClosed):
                    link.aborter.fire()
        elif kind == "handshake":
            with self._lock:
                if self._link is link and isinstance(message.value, dict):
                    self._opened(link, message.value)
        # "timeout" (end of a long-poll) and "ack" need nothing.

    def _ws_send(self, link: _WsLink, packed: str | bytes) -> None:
        try:
            link.ws.send(packed)
        except (OSError, ConnectionClosed) as exc:
            link.aborter.fire()  # the socket is broken: let the connector reconnect
            raise ConnectionClosed(f"sending failed: {_error_text(exc)}") from exc

    def _keepalive_loop(self, link: _WsLink, stop: threading.Event) -> None:
        """Ping a WebSocket that has been quiet for ``keepalive`` seconds; drop it if nothing
        at all arrives within ``ping_timeout`` after the ping."""
        interval = t.cast(float, self._keepalive)
        ws = link.ws
        pinged_at: float | None = None
        while True:
            now = time.monotonic()
            last = ws.last_activity
            if pinged_at is not None and last >= pinged_at:
                pinged_at = None  # anything at all arrived: the server is alive
            if pinged_at is None:
                due = last + interval
                if now >= due:
                    cb_id = secrets.token_urlsafe(6)
                    if len(link.ping_ids) > 16:  # answers that never came: forget them
                        link.ping_ids.clear()
                    link.ping_ids.add(cb_id)
                    try:
                        link.ws.send(self._packer.pack(wire.envelope([ev.WS_PING], cb_id)))
                    except (OSError, ConnectionClosed):
                        link.aborter.fire()
                        return
                    pinged_at = now
                    wait = self._ping_timeout
                else:
                    wait = due - now
            else:
                deadline = pinged_at + self._ping_timeout
                if now >= deadline:
                    logger.warning("no answer to a keep-alive ping within %g s; reconnecting",
                                   self._ping_timeout)
                    link.shutdown(CloseInfo("ping-timeout"), graceful=False)
                    return
                wait = deadline - now
            if stop.wait(wait):
                return

    # --- internals: Ajax --------------------------------------------------------------------

    def _ajax_read_loop(self, link: _AjaxLink) -> CloseInfo | _Upgrade:
        handshake_next = False
        while True:
            if link.upgrade is not None:
                return link.upgrade
            if link.intent is not None:
                return link.intent
            try:
                status, body = self._poll(link, handshake_next)
            except (OSError, http.client.HTTPException) as exc:
                if link.upgrade is not None:
                    return link.upgrade
                if link.intent is not None:
                    return link.intent
                return CloseInfo("unexpected", message=_error_text(exc))
            handshake_next = False
            if status != 200:
                text = body.decode("utf-8", "replace").strip()
                if status in AUTH_STATUSES:
                    return CloseInfo("rejected", status=status, message=text)
                return CloseInfo("unexpected", status=status, message=text)
            try:
                message = self._decode(body)
            except RemoteProtocolError as exc:
                return CloseInfo("unexpected", message=_error_text(exc))
            if message.kind == "close":
                info = _ajax_close_info(message)
                if info.code == wire.CLOSE_TOO_SLOW:
                    # Not an end: the server dropped pushes we did not collect in time.
                    logger.warning("the server dropped pushes this client did not collect")
                    handshake_next = True
                    continue
                return info
            self._on_message(link, message)

    def _poll(self, link: _AjaxLink, handshake: bool) -> tuple[int, bytes]:
        """One long-poll GET on the link's persistent connection (retried once on a fresh
        connection if a reused one turns out to be closed by the server)."""
        url = self._request_url(handshake=handshake)
        for retry in (True, False):
            conn = link.poll_conn
            if conn is None:
                raise ConnectionAbortedError("the link was released")
            try:
                return self._http(conn, "GET", url, link.aborter)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not retry or link.aborter.fired or link.upgrade is not None:
                    raise
                with link._lock:
                    if link.poll_conn is conn:
                        link.poll_conn = self._http_connection(self._ajax_timeout)
        raise AssertionError("unreachable")

    def _ajax_post(self, link: _AjaxLink, body: str | bytes,
                   deadline: float) -> wire.ServerMessage:
        timeout = max(0.001, deadline - time.monotonic())
        conn = self._http_connection(timeout)
        token = link.aborter.register(lambda: _shutdown(conn.sock))
        try:
            status, answer = self._http(conn, "POST", self._request_url(), link.aborter,
                                        body=body)
        except (TimeoutError, socket.timeout) as exc:
            if link.aborter.fired:
                raise ConnectionClosed("the connection closed while waiting") from exc
            raise ReplyTimeout(f"no answer within {timeout:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            if link.aborter.fired:
                reason = link.intent.reason if link.intent is not None else "closed"
                raise ConnectionClosed(f"connection closed: {reason}") from exc
            raise ConnectionClosed(f"the request failed: {_error_text(exc)}") from exc
        finally:
            link.aborter.unregister(token)
            conn.close()
        if status != 200:
            raise Rejected(status, answer.decode("utf-8", "replace").strip())
        return self._decode(answer)

    def _upgrade_loop(self, link: _AjaxLink, stop: threading.Event) -> None:
        """While on Ajax in auto mode: try a WebSocket every ``upgrade_retry`` seconds."""
        interval = t.cast(float, self._upgrade_retry)
        while not stop.wait(interval):
            aborter = _Aborter()
            token = link.aborter.register(aborter.fire)
            try:
                ws, handshake = self._open_ws(aborter)
            except _AttemptFailed as failure:
                logger.debug("WebSocket still unavailable: %s",
                             failure.info.message or failure.info.reason)
                continue
            finally:
                link.aborter.unregister(token)
            if link.offer_upgrade(_Upgrade(ws, handshake)):
                return
            ws.close()
            ws.abort()
            ws.release()
            return

    # --- internals: HTTP ---------------------------------------------------------------------

    def _token(self) -> str | None:
        token = self._csrf_token
        if callable(token):
            token = token()
        return token or None

    def _request_url(self, *, ws: bool = False, handshake: bool = False) -> str:
        query: list[tuple[str, t.Any]] = list(self._base_query)
        query += [(k, v) for k, v in self._params.items()]
        query += [("client-id", self.client_id), ("protocol", str(PROTOCOL_VERSION)),
                  ("packer", self._packer.name)]
        if handshake:
            query.append(("handshake", "1"))
        if ws:
            scheme = "wss" if self._http_scheme == "https" else "ws"
        else:
            scheme = self._http_scheme
        return urlunsplit((scheme, self._netloc, self._path, urlencode(query), ""))

    def _request_headers(self, url: str) -> dict[str, str]:
        headers = {"User-Agent": "flask_sente-client", **self._headers}
        cookie = self._cookie_header(url)
        if cookie:
            headers["Cookie"] = cookie
        # Unlike a browser, we can set headers on the WebSocket upgrade too: the token stays
        # out of URLs (and so out of access logs) on both transports.
        token = self._token()
        if token:
            headers["X-CSRF-Token"] = token
        return headers

    def _cookie_header(self, url: str) -> str | None:
        http_url = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
        request = urllib.request.Request(http_url)
        self._jar.add_cookie_header(request)
        parts = [request.get_header("Cookie") or ""]
        parts += [f"{k}={v}" for k, v in self._static_cookies.items()]
        return "; ".join(p for p in parts if p) or None

    def _http_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._http_scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._ssl_context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _http(self, conn: http.client.HTTPConnection, method: str, url: str,
              aborter: _Aborter, body: str | bytes | None = None) -> tuple[int, bytes]:
        """One request on ``conn``; the socket is registered with ``aborter`` meanwhile."""
        if conn.sock is None:
            conn.connect()
        token = aborter.register(lambda: _shutdown(conn.sock))
        try:
            headers = self._request_headers(url)
            if body is not None:
                binary = isinstance(body, bytes)
                headers["Content-Type"] = ("application/msgpack" if self._packer.name == "msgpack"
                                           else "application/json" if self._packer.name == "json"
                                           else "application/octet-stream" if binary
                                           else "text/plain; charset=utf-8")
                body = body if binary else t.cast(str, body).encode("utf-8")
            parts = urlsplit(url)
            target = parts.path + ("?" + parts.query if parts.query else "")
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            try:
                self._jar.extract_cookies(response, urllib.request.Request(url))
            except Exception:  # a cookie the jar cannot parse must not break the connection
                logger.debug("could not store a cookie from %s", url, exc_info=True)
            if response.will_close:
                conn.close()
            return response.status, data
        finally:
            aborter.unregister(token)

    def _decode(self, body: bytes) -> wire.ServerMessage:
        data: str | bytes = body if self._packer.binary else body.decode("utf-8", "replace")
        return wire.decode_server(self._packer.unpack(data))
