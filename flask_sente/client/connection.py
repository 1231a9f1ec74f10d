"""The connection machinery of a :class:`~flask_sente.client.Client`: the connector
thread that makes connections (with backoff), serves each one until it ends and applies the
state machine's decisions; the dispatcher thread's start and stop; what a message from a
link means; and the lifecycle requests the public API makes (connect, disconnect,
reconnect, break the connection, close). Mirrors sente.js's ``Connection`` helper.

Why an object of its own: the :class:`~flask_sente.client.Client` keeps the public API, one
screen per method group; this keeps the machinery. It is handed what it shares with the
others when it is made — the client's state and lock (:class:`~.status.ClientStatus`), the
endpoint, the dispatcher, the calls in flight, the topics (through :class:`TopicHooks`) —
and reaches into none of them. Nothing here is public.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed
from ..protocol import events as ev
from ..protocol import wire
from .ajax import AjaxLink
from .answers import Answers
from .calls import Calls
from .dispatch import Dispatcher
from .endpoint import Aborter, AttemptFailed, Endpoint, Handshake, checked_handshake, error_text
from .links import Link, LinkEnv, Upgrade, WsLink
from .pending import PendingCalls
from .state import CloseInfo, ConnectionMachine, state_after_close, state_after_handshake
from .status import ClientStatus

__all__ = ["Connection", "JOIN_TIMEOUT", "TopicHooks"]

logger = logging.getLogger("flask_sente.client")

#: How long ``close()`` waits for each thread before giving up on it (it is a daemon).
JOIN_TIMEOUT = 5.0


class TopicHooks(t.Protocol):
    """What the connection tells the client's topics (:class:`~.topics.Topics`); each is
    called with the client's lock held."""

    def system_push(self, event_id: str, data: t.Any) -> bool:
        """A pushed ``chsk/`` event; False if it is not a topic's."""

    def at_handshake(self, handshake: t.Mapping[str, t.Any]) -> bool | None:
        """A handshake, before its events; returns ``recovered``."""

    def kicked(self) -> None:
        """The client was kicked."""

    def rejoin_all(self) -> None:
        """A handshake was processed: rejoin the topics."""


class Connection:
    """The connection machinery of one client.

    :param status: the client's state, link and lock, which this object changes.
    :param endpoint: the server, and how to open a connection to it.
    :param machine: the decisions across connections (backoff attempts, transport, stop).
    :param pending: the calls waiting on a link, failed when it ends.
    :param dispatch: where events go; its thread is started and stopped here.
    :param calls: where replies go, and the hold on them (:meth:`Calls.settle`).
    :param topics: what a handshake, a kick and a topic's event mean to the topics.
    :param backoff: ``(attempt) -> seconds`` before attempt ``attempt``.
    :param keepalive, ping_timeout, upgrade_retry: the links' options (see ``Client``).
    :param thread_name: the prefix of this client's thread names.
    """

    def __init__(self, status: ClientStatus, *, endpoint: Endpoint,
                 machine: ConnectionMachine, pending: PendingCalls, dispatch: Dispatcher,
                 calls: Calls, topics: TopicHooks, backoff: t.Callable[[int], float],
                 keepalive: float | None, ping_timeout: float, upgrade_retry: float | None,
                 thread_name: str, answers: Answers | None = None) -> None:
        self._status = status
        self._lock = status.changed
        self._changed = status.changed
        self._endpoint = endpoint
        self._machine = machine
        self._pending = pending
        self._dispatch = dispatch
        self._calls = calls
        self._topics = topics
        self._answers = answers
        self._backoff = backoff
        self._connect_timeout = endpoint.connect_timeout
        self.url = endpoint.url
        self._env = LinkEnv(
            endpoint=endpoint, pending=pending, on_message=self._on_message,
            keepalive=keepalive, ping_timeout=ping_timeout, upgrade_retry=upgrade_retry,
            thread_name=thread_name, settle=calls.settle)
        self._attempt_aborter: Aborter | None = None
        self._connector: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None

    # --- what the public API asks for ------------------------------------------------------

    def start(self) -> None:
        """``connect()``: start the threads (once) and be active."""
        status = self._status
        with self._lock:
            if status.closed:
                raise ConnectionClosed("this client was closed; create a new one")
            self._start_threads()
            if status.active:
                return
            status.active = True
            status.session += 1
            status.set_state(active=True)

    def reconnect(self) -> None:
        """``reconnect()``: drop the connection and make a new one at once, WebSocket first
        again in auto mode."""
        with self._lock:
            if self._status.closed:
                raise ConnectionClosed("this client was closed; create a new one")
            self._machine.reset_transport()
            self._start_threads()
        self.drop(CloseInfo("requested-reconnect"), keep_active=True)

    def break_link(self) -> None:
        """``break_connection()``: drop the link as a network failure would."""
        with self._lock:
            link = self._status.link
            if link is not None:
                link.broken = True  # calls from now on wait for the next connection
        if link is not None:
            link.shutdown(None, graceful=False)

    def drop(self, info: CloseInfo, *, keep_active: bool) -> None:
        """End the current connection (and any attempt) on the user's request.

        The state changes here, at once, so ``disconnect()`` returns with ``open`` False;
        the connector then sees the new session and either waits or reconnects.
        """
        status = self._status
        with self._lock:
            status.session += 1
            status.active = keep_active and not status.closed
            if self._attempt_aborter is not None:
                self._attempt_aborter.fire()
            link = status.link
            changes: dict[str, t.Any] = {"active": status.active, "next_reconnect": None}
            if link is not None:
                status.link = None
                link.intent = link.intent or info
                self._pending.fail_link(link, ConnectionClosed(
                    f"connection closed: {info.reason}", link.drop_code))
                if status.state.open:
                    changes.update(open=False, last_close=info)
            status.set_state(**changes)
            self._changed.notify_all()
        if link is not None:
            link.shutdown(info, graceful=True)

    def close(self) -> float:
        """``close()``, after its :meth:`drop`: the client is closed for good, the
        dispatcher drains and stops. Returns how long to wait for each thread of the client
        (:meth:`join_threads`): a TCP connect cannot be interrupted, so one may run into its
        timeout first."""
        with self._lock:
            self._status.closed = True
            self._dispatch.close()
        return JOIN_TIMEOUT + self._connect_timeout

    def join_threads(self, patience: float) -> None:
        """Wait for the connector and the dispatcher to end (not from one of them)."""
        current = threading.current_thread()
        for thread in (self._connector, self._dispatcher):
            if thread is not None and thread is not current:
                thread.join(patience)
                if thread.is_alive():
                    logger.warning("client thread %s did not stop within %.0f s (a handler "
                                   "that does not return?)", thread.name, patience)

    # --- what a link's reader hands over ---------------------------------------------------

    def _on_message(self, link: Link, message: wire.ServerMessage) -> None:
        """A message from ``link``'s reader that the link does not handle itself."""
        kind = message.kind
        if kind == "events":
            with self._lock:
                for event_id, data in self._endpoint.positions.batch(message.events):
                    if ev.is_reserved(event_id):
                        if event_id == ev.CALL and self._answers is not None:
                            self._answers.request(data)
                        elif not self._topics.system_push(event_id, data):
                            logger.debug("ignoring unknown system event %r", event_id)
                        continue
                    self._dispatch.emit(event_id, data)
                self._changed.notify_all()  # the positions moved: see Calls.settle
        elif kind == "reply":
            self._calls.resolve(message)
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
                if self._status.link is link:
                    self._opened(link, handshake)
        # "timeout" (end of a long-poll) and "ack" need nothing.

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
                while not self._status.active and not self._status.closed:
                    self._changed.wait()
                if self._status.closed:
                    return
                if session != self._status.session:
                    session = self._status.session
                    machine.new_session()
            attempt = machine.next_attempt()
            if not self._back_off(attempt, session):
                continue
            aborter = Aborter()
            with self._lock:
                if self._status.session != session or self._status.closed:
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
            self._status.set_state(attempt=attempt - 1, next_reconnect=time.time() + delay)
            while self._status.session == session and not self._status.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._status.set_state(next_reconnect=None)
                    return True
                self._changed.wait(remaining)
            self._status.set_state(next_reconnect=None)
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
            if self._status.session != session:
                return
            changes: dict[str, t.Any] = {"last_close": info, "attempt": attempt}
            if terminal:
                self._status.active = False
                changes["active"] = False
            self._status.set_state(**changes)

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
            if self._status.session != session or self._status.closed or not self._status.active:
                link.shutdown(None, graceful=False)
                link.release()
                return
            self._status.link = link
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
                status = self._status
                with self._lock:
                    if status.link is link and link.intent is None and not status.closed:
                        status.link = new_link
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
        first = not self._status.state.ever_opened
        recovered = self._topics.at_handshake(handshake)
        self._machine.opened(link.transport)
        self._status.replace_state(dataclasses.replace(
            state_after_handshake(self._status.state, link.transport, handshake),
            recovered=recovered))
        self._dispatch.emit(ev.HANDSHAKE, {"uid": handshake.get("uid"),
                               "handshake_data": handshake.get("handshake_data"),
                               "first_handshake": first, "type": link.transport,
                               "recovered": recovered}, system=True)
        self._topics.rejoin_all()

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
                self._topics.kicked()
            if self._status.link is link:
                self._status.link = None
                new = state_after_close(self._status.state, info)
                if not self._machine.should_reconnect(info):
                    self._status.active = False
                    new = dataclasses.replace(new, active=False)
                    if info.reason == "rejected":
                        logger.warning("%s refused this client with %s (%s): stopped, as "
                                       "retrying cannot fix it; reconnect() starts again",
                                       self.url, info.status, info.message)
                self._status.replace_state(new)
        if info.reason not in ("requested-disconnect", "requested-reconnect"):
            logger.info("connection to %s closed: %s%s", self.url, info.reason,
                        f" (code {info.code})" if info.code else "")
