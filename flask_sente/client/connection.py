"""The connection side of :class:`~flask_sente.client.Client`: the connector thread that
makes connections (with backoff), serves each one until it ends, and applies the state
machine's decisions; plus the state helpers the public methods share.

Why a base class of its own: :mod:`.core` keeps the public API readable on one screen per
method group, this keeps the machinery; both work on the same lock and fields, declared
once below. Nothing here is public.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed, Rejected
from ..protocol import events as ev
from ..protocol import wire
from .calls import PendingCalls
from .dispatch import Dispatcher
from .endpoint import (
    Aborter,
    AttemptFailed,
    Endpoint,
    Handshake,
    checked_handshake,
    error_text,
)
from .links import AjaxLink, Link, LinkEnv, Upgrade, WsLink
from .positions import Position
from .state import (
    ClientState,
    CloseInfo,
    ConnectionMachine,
    state_after_close,
    state_after_handshake,
)

__all__ = ["ConnectionLoop", "JOIN_TIMEOUT"]

logger = logging.getLogger("flask_sente.client")

#: How long ``close()`` waits for each thread before giving up on it (it is a daemon).
JOIN_TIMEOUT = 5.0


class ConnectionLoop:
    """The client's connection machinery (a base class of :class:`Client`)."""

    url: str
    _endpoint: Endpoint
    _machine: ConnectionMachine
    _pending: PendingCalls
    _env: LinkEnv
    _dispatch: Dispatcher
    _backoff: t.Callable[[int], float]
    _connect_timeout: float
    _lock: threading.RLock
    _changed: threading.Condition
    _state: ClientState
    _closed: bool
    _active: bool
    #: Bumped by connect/disconnect/reconnect: the connector restarts its attempts.
    _session: int
    _link: Link | None
    _attempt_aborter: Aborter | None
    _connector: threading.Thread | None
    _dispatcher: threading.Thread | None

    if t.TYPE_CHECKING:  # the topics side (client/topics.py)
        def _system_push(self, event_id: str, data: t.Any) -> bool: ...
        def _topics_at_handshake(self, handshake: t.Mapping[str, t.Any]) -> bool | None: ...
        def _topics_kicked(self) -> None: ...
        def _rejoin_all(self) -> None: ...

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
        self._dispatch.emit(ev.STATE, (old, new), system=True)

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
                link = self._link
                if (self._state.open and link is not None and link.intent is None
                        and not link.broken):
                    return link
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
                for event_id, data in self._endpoint.positions.batch(message.events):
                    if ev.is_reserved(event_id):
                        if not self._system_push(event_id, data):
                            logger.debug("ignoring unknown system event %r", event_id)
                        continue
                    self._dispatch.emit(event_id, data)
                self._changed.notify_all()  # the positions moved: see _settle
        elif kind == "reply":
            with self._lock:
                ticket = self._dispatch.queued  # what came before the reply is queued
            if message.cb_id is None:
                logger.debug("ignoring a reply without cb_id")
            elif not self._pending.resolve(message, ticket):
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

    def _settle(self, after: t.Mapping[str, Position] | None, ticket: int | None,
                deadline: float) -> None:
        """A call's reply is in: hold it until what its handler pushed before replying has
        reached the app (docs/protocol.md §6, "Replies after their pushes"), so code after
        ``call()`` never reads state older than the reply.

        ``after`` (an Ajax reply's ``X-Sente-After``): first wait until the polls have
        brought the positions there (:meth:`Positions.reached`; a handshake that moved them
        to another epoch ends the wait). Then wait until the handlers of the events queued
        before then (``ticket``, over WebSocket: what the reader had queued when the reply
        arrived) have run — not on the dispatcher thread itself, where a handler calling the
        server would wait for itself. Both waits end at ``deadline`` (the call's timeout)
        or when the client stops: the reply is then delivered anyway.
        """
        if after is not None:
            with self._lock:
                positions = self._endpoint.positions
                while not positions.reached(after):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed or not self._active:
                        logger.debug("delivering a reply before its handler's pushes "
                                     "arrived (waiting for %s)", after)
                        return
                    self._changed.wait(remaining)
                ticket = self._dispatch.queued
        if ticket is not None:
            self._dispatch.wait_done(ticket, deadline)

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
            self._dispatcher = threading.Thread(target=self._dispatch.run,
                                                name=name + "-dispatcher", daemon=True)
            self._connector = threading.Thread(target=self._connect_loop,
                                               name=name + "-connector", daemon=True)
            self._dispatcher.start()
            self._connector.start()

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
        recovered = self._topics_at_handshake(handshake)
        self._machine.opened(link.transport)
        self._replace_state(dataclasses.replace(
            state_after_handshake(self._state, link.transport, handshake),
            recovered=recovered))
        self._dispatch.emit(ev.HANDSHAKE, {"uid": handshake.get("uid"),
                               "handshake_data": handshake.get("handshake_data"),
                               "first_handshake": first, "type": link.transport,
                               "recovered": recovered}, system=True)
        self._rejoin_all()

    def _closed_link(self, link: Link, info: CloseInfo) -> None:
        """The connection ended: fail its calls, record why, decide about reconnecting."""
        link.aborter.fire()
        link.release()
        if link.intent is not None:
            info = link.intent
        self._pending.fail_link(link, ConnectionClosed(f"connection closed: {info.reason}",
                                                       info.code))
        with self._lock:
            if info.reason == "kicked":
                self._topics_kicked()
            if self._link is link:
                self._link = None
                new = state_after_close(self._state, info)
                if not self._machine.should_reconnect(info):
                    self._active = False
                    new = dataclasses.replace(new, active=False)
                    if info.reason == "rejected":
                        logger.warning("%s refused this client with %s (%s): stopped, as "
                                       "retrying cannot fix it; reconnect() starts again",
                                       self.url, info.status, info.message)
                self._replace_state(new)
        if info.reason not in ("requested-disconnect", "requested-reconnect"):
            logger.info("connection to %s closed: %s%s", self.url, info.reason,
                        f" (code {info.code})" if info.code else "")
