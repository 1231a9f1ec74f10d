"""The :class:`Client`: lifecycle, handlers, ``call``/``send``, and the connector thread.

What lives elsewhere: the decisions (state after a handshake or close, reconnect or stop,
which transport, fallback) in :mod:`.state`; the open connections and their read loops in
:mod:`.links`; requests and opening connections in :mod:`.endpoint`; calls in flight in
:mod:`.calls`. This module owns the threads and the lock, and applies the decisions.
"""
from __future__ import annotations

import collections
import dataclasses
import http.cookiejar
import logging
import random
import ssl
import threading
import time
import typing as t
import uuid

from ..exceptions import ConnectionClosed, LocalProtocolError, Rejected
from ..protocol import events as ev
from ..protocol import wire
from ..protocol.backoff import DEFAULT_CAP, backoff_delay
from ..protocol.packers import Packer, get_packer
from .calls import PendingCalls
from .endpoint import (
    Aborter,
    AttemptFailed,
    Endpoint,
    Handshake,
    checked_handshake,
    error_text,
)
from .links import AjaxLink, Link, LinkEnv, Upgrade, WsLink
from .state import (
    TRANSPORT_TYPES,
    ClientState,
    CloseInfo,
    ConnectionMachine,
    state_after_close,
    state_after_handshake,
)
from .websocket import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["Client", "default_backoff"]

logger = logging.getLogger("flask_sente.client")

#: Event ids the client delivers itself (through ``on()`` and, if asked, ``receive()``).
STATE = ev.STATE
HANDSHAKE = ev.HANDSHAKE

#: A client's own Ajax request timeout; longer than any server's long-poll hold (< 60 s).
AJAX_TIMEOUT = 60.0
DEFAULT_CALL_TIMEOUT = 30.0
#: How long ``close()`` waits for each thread before giving up on it (it is a daemon).
JOIN_TIMEOUT = 5.0

Handler = t.Callable[[t.Any], t.Any]


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
        self._type = type
        self._backoff = backoff or default_backoff()
        self._connect_timeout = float(connect_timeout)
        self._receive_system_events = receive_system_events
        self._machine = ConnectionMachine(type, upgrade_retry=upgrade_retry,
                                          reconnect_on_auth_failure=reconnect_on_auth_failure)
        self._pending = PendingCalls()
        self._env = LinkEnv(
            endpoint=self._endpoint, pending=self._pending, on_message=self._on_message,
            keepalive=keepalive, ping_timeout=ping_timeout,
            upgrade_retry=upgrade_retry if type == "auto" else None,
            thread_name=f"flask_sente.client-{self.client_id[:8]}")

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._state = ClientState(type=type)
        self._closed = False
        self._active = False
        #: Bumped by connect/disconnect/reconnect: the connector restarts its attempts.
        self._session = 0
        self._link: Link | None = None
        self._attempt_aborter: Aborter | None = None
        self._handlers: dict[str, list[Handler]] = {}
        self._inbox: collections.deque[ev.Event] = collections.deque(maxlen=receive_queue_size)
        self._dropped_warned = False
        self._jobs: collections.deque[tuple[list[Handler], t.Any]] = collections.deque()
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

        Also restarts a client that stopped (after ``disconnect()``, a kick, a 401/403 or a
        protocol mismatch). Use :meth:`wait_open` to block until the connection is open.
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
            self._machine.reset_transport()
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
            disconnected, kicked, protocol mismatch, closed).
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

    def on(self, event_id: str, fn: Handler | None = None) -> t.Any:
        """Register ``fn(data)`` for pushed events with ``event_id`` (usable as decorator).

        Also for the client's own ``chsk/state`` (data ``(old, new)``) and ``chsk/handshake``
        (data: a dict with ``uid``, ``handshake_data``, ``first_handshake``, ``type``).
        Handlers run one at a time on the dispatcher thread; an exception is logged and
        changes nothing else. An event with a handler does not go to :meth:`receive`.
        """
        if not isinstance(event_id, str) or ev.event_error([event_id]) is not None:
            raise LocalProtocolError(f"event ids are namespaced like 'todo/add', got {event_id!r}")

        def register(handler: Handler) -> Handler:
            with self._lock:
                self._handlers.setdefault(event_id, []).append(handler)
            return handler

        return register if fn is None else register(fn)

    def off(self, event_id: str, fn: Handler) -> None:
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
        wait and the reply. Example: ``chsk.call(("todo/add", {"text": "milk"}), timeout=5)``.

        :raises ReplyTimeout: no reply within ``timeout`` (or the server's reply window).
        :raises ReplyError: the server answered with ``chsk/error`` (e.g. the handler raised).
        :raises ConnectionClosed: not connected within ``timeout``, the client is stopped, or
            the connection dropped while waiting (at once, not at the timeout).
        :raises Rejected: the client stopped after a 401/403, or an Ajax POST got a status.
        :raises LocalProtocolError: an invalid or reserved event, or data the packer refuses.
        """
        pair = ev.validate_outgoing(event)
        deadline = time.monotonic() + timeout
        return self._wait_for_link(deadline).call(pair, deadline, timeout)

    def send(self, event: t.Any, timeout: float | None = None) -> None:
        """Send ``event`` without asking for a reply (fire and forget).

        Over WebSocket it returns once the frame is written; over Ajax once the server
        acknowledged the POST. A client that is connecting is waited for, up to ``timeout``
        (default: ``connect_timeout``). Raises like :meth:`call`, minus the reply errors.
        """
        pair = ev.validate_outgoing(event)
        deadline = time.monotonic() + (self._connect_timeout if timeout is None else timeout)
        self._endpoint.packer.pack(wire.client_event(pair, None))  # refuse bad data at once
        self._wait_for_link(deadline).send(pair, deadline)

    # --- internals: state and events -------------------------------------------------------

    def _set_state(self, **changes: t.Any) -> None:
        """Change the state and queue a ``chsk/state`` event (call with the lock held)."""
        self._replace_state(dataclasses.replace(self._state, **changes))

    def _replace_state(self, new: ClientState) -> None:
        old = self._state
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
            if last.reason == "protocol-mismatch":
                raise ConnectionClosed(f"protocol-mismatch: {last.message}")
            raise ConnectionClosed(last.reason, last.code)

    def _wait_for_link(self, deadline: float) -> Link:
        with self._lock:
            while True:
                if self._state.open and self._link is not None and self._link.intent is None:
                    return self._link
                self._raise_if_stopped()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectionClosed("not connected (still connecting)")
                self._changed.wait(remaining)

    def _on_message(self, link: Link, message: wire.ServerMessage) -> None:
        """A message from ``link``'s reader that the link does not handle itself."""
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
            elif not self._pending.resolve(message):
                logger.debug("reply for an unknown or expired call %r", message.cb_id)
        elif kind == "handshake":
            if not isinstance(message.value, dict):
                return
            try:
                handshake = checked_handshake(message)
            except AttemptFailed as failure:
                logger.error("%s", failure.info.message)
                link.shutdown(failure.info, graceful=False)
                return
            with self._lock:
                if self._link is link:
                    self._opened(link, handshake)
        # "timeout" (end of a long-poll) and "ack" need nothing.

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
                self._pending.fail_link(link, ConnectionClosed(
                    f"connection closed: {info.reason}", link.drop_code))
                if self._state.open:
                    changes.update(open=False, last_close=info)
            self._set_state(**changes)
            self._changed.notify_all()
        if link is not None:
            link.shutdown(info, graceful=True)

    # --- internals: threads ----------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._connector is None:
            name = self._env.thread_name
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
        machine = self._machine
        session = -1
        while True:
            with self._lock:
                while not self._active and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                if session != self._session:
                    session = self._session
                    machine.new_session()
            attempt = machine.next_attempt()
            if not self._back_off(attempt, session):
                continue
            aborter = Aborter()
            with self._lock:
                if self._session != session or self._closed:
                    continue
                self._attempt_aborter = aborter
            try:
                link, handshake = self._open_link(aborter)
            except AttemptFailed as failure:
                self._attempt_failed(failure.info, session, attempt)
                continue
            except Exception as exc:  # e.g. a csrf_token callable that raised
                logger.exception("connecting to %s failed", self.url)
                self._attempt_failed(CloseInfo("unexpected", message=error_text(exc)),
                                     session, attempt)
                continue
            finally:
                with self._lock:
                    self._attempt_aborter = None
            opened_at = time.monotonic()
            self._serve(link, handshake, session)
            machine.connection_ended(opened_at, time.monotonic())

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

    def _attempt_failed(self, info: CloseInfo, session: int, attempt: int) -> None:
        terminal = not self._machine.should_reconnect(info)
        if info.reason == "protocol-mismatch":
            logger.error("cannot talk to %s: %s", self.url, info.message)
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

    # --- internals: opening and serving connections ----------------------------------------

    def _open_link(self, aborter: Aborter) -> tuple[Link, Handshake]:
        """One connection attempt: WebSocket and/or Ajax, as the machine plans it."""
        endpoint, machine = self._endpoint, self._machine
        plan = machine.transports(time.monotonic())
        if plan[0] == "ws":
            try:
                ws, handshake = endpoint.open_ws(aborter)
                return WsLink(self._env, ws), handshake
            except AttemptFailed as failure:
                if (len(plan) == 1 or not failure.may_fall_back or aborter.fired
                        or machine.may_probe(failure.info.status or 0) != "downgrade"):
                    raise
                logger.info("WebSocket unavailable (%s); trying Ajax",
                            failure.info.message or failure.info.reason)
            conn, handshake = endpoint.open_ajax(aborter)
            machine.fell_back(time.monotonic())
            return AjaxLink(self._env, conn), handshake
        conn, handshake = endpoint.open_ajax(aborter)
        return AjaxLink(self._env, conn), handshake

    def _serve(self, link: Link, handshake: Handshake, session: int) -> None:
        """Run one logical connection until it ends (following Ajax -> WebSocket upgrades)."""
        with self._lock:
            if self._session != session or self._closed or not self._active:
                link.shutdown(None, graceful=False)
                link.release()
                return
            self._link = link
            self._opened(link, handshake)
        while True:
            helper_stop = threading.Event()
            helper = link.start_helper(helper_stop)
            result: CloseInfo | Upgrade = CloseInfo("unexpected", message="client error")
            try:
                result = link.read_loop()
            except Exception as exc:  # a bug here must not leave the client half-open
                logger.exception("the client's read loop failed")
                result = CloseInfo("unexpected", message=error_text(exc))
            finally:
                helper_stop.set()
                link.ended.set()
                if not isinstance(result, Upgrade):
                    link.aborter.fire()  # also stops an upgrade attempt in progress
                if helper is not None:
                    helper.join(JOIN_TIMEOUT + self._connect_timeout)
            if isinstance(result, Upgrade):
                new_link = WsLink(self._env, result.ws)
                with self._lock:
                    if self._link is link and link.intent is None and not self._closed:
                        self._link = new_link
                        link.release(keep_posts=True)
                        self._opened(new_link, result.handshake)
                        link = new_link
                        logger.info("moved up from Ajax to WebSocket")
                        continue
                new_link.shutdown(None, graceful=False)
                new_link.release()
                result = link.intent or CloseInfo("requested-disconnect")
            self._closed_link(link, result)
            return

    def _opened(self, link: Link, handshake: Handshake) -> None:
        """State and events for a handshake (lock held)."""
        first = not self._state.ever_opened
        self._machine.opened(link.transport)
        self._replace_state(state_after_handshake(self._state, link.transport, handshake))
        self._emit(HANDSHAKE, {"uid": handshake.get("uid"),
                               "handshake_data": handshake.get("handshake_data"),
                               "first_handshake": first, "type": link.transport}, system=True)

    def _closed_link(self, link: Link, info: CloseInfo) -> None:
        """The connection ended: fail its calls, record why, decide about reconnecting."""
        link.aborter.fire()
        link.release()
        if link.intent is not None:
            info = link.intent
        self._pending.fail_link(link, ConnectionClosed(f"connection closed: {info.reason}",
                                                       info.code))
        with self._lock:
            if self._link is link:
                self._link = None
                new = state_after_close(self._state, info)
                if not self._machine.should_reconnect(info):
                    self._active = False
                    new = dataclasses.replace(new, active=False)
                self._replace_state(new)
        if info.reason not in ("requested-disconnect", "requested-reconnect"):
            logger.info("connection to %s closed: %s%s", self.url, info.reason,
                        f" (code {info.code})" if info.code else "")
