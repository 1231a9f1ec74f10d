"""Links: one open connection of the client each, WebSocket or Ajax, owning its I/O.

Why classes: a WebSocket link and an Ajax link read, send, call, keep alive and shut down in
different ways, and the client used to ask ``isinstance`` at every step. Now each link owns
its read loop (:meth:`Link.read_loop`), its helper thread (the WebSocket keep-alive
watchdog, the Ajax upgrader), how it sends and calls, and how it lets go of its sockets; the
client only sees :class:`Link`. What a message *means* is the client's business: links hand
every decoded message to ``env.on_message``.
"""
from __future__ import annotations

import dataclasses
import http.client
import logging
import secrets
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed, Rejected, RemoteProtocolError, ReplyTimeout
from ..protocol import events as ev
from ..protocol import wire
from ..protocol.closecodes import CLOSE_NORMAL, CLOSE_TOO_SLOW
from .calls import PendingCalls, outcome
from .endpoint import (
    Aborter,
    AttemptFailed,
    Endpoint,
    Handshake,
    HttpAnswer,
    ajax_close_info,
    error_text,
    shutdown_socket,
)
from .positions import Position, read_after
from .state import CloseInfo, describe_http_failure, describe_ws_close
from .websocket import WebSocket

__all__ = ["AjaxLink", "Link", "LinkEnv", "Upgrade", "WsLink", "CLOSE_WAIT"]

logger = logging.getLogger("flask_sente.client")

#: How long a graceful shutdown waits for the server to echo a WebSocket close frame.
CLOSE_WAIT = 2.0
#: How long a link waits for its helper thread to stop.
JOIN_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class LinkEnv:
    """What every link of one client needs from it."""

    endpoint: Endpoint
    pending: PendingCalls
    #: Called on the link's reader thread with each decoded message it does not handle
    #: itself (pushed events, replies, handshakes).
    on_message: t.Callable[[Link, wire.ServerMessage], None]
    keepalive: float | None
    ping_timeout: float
    #: Seconds between WebSocket attempts while on Ajax; None: no upgrader.
    upgrade_retry: float | None
    thread_name: str
    #: Called on the caller's thread once a call's reply is in, before the call returns:
    #: ``settle(after, ticket, deadline)`` waits (until ``deadline`` at most) for the
    #: client's positions to reach ``after`` (an Ajax reply's ``X-Sente-After``), then for
    #: the handlers of the events that came before the reply (the dispatcher's jobs below
    #: ``ticket``, or, after ``after``, all queued by then) to have run.
    settle: t.Callable[[t.Mapping[str, Position] | None, int | None, float], None]


@dataclasses.dataclass
class Upgrade:
    """The Ajax read loop's way of saying: a WebSocket opened, continue on it."""

    ws: WebSocket
    handshake: Handshake


class Link:
    """One open connection. Subclasses implement the transport-specific parts."""

    transport: t.ClassVar[str]
    #: The close code calls waiting on this link fail with when the client drops it.
    drop_code: t.ClassVar[int | None] = None

    def __init__(self, env: LinkEnv) -> None:
        self.env = env
        self.aborter = Aborter()
        #: Set before the link is shut down on purpose: the close reason to record.
        self.intent: CloseInfo | None = None
        #: Set by ``break_connection()``: the link is going away, new calls wait for the
        #: next one (as in sente.js, where breaking closes the link at once).
        self.broken = False
        self.ended = threading.Event()

    def read_loop(self) -> CloseInfo | Upgrade:
        """Read until the connection ends; say how it ended (or where it moved)."""
        raise NotImplementedError

    def call(self, pair: ev.Event, deadline: float, timeout: float) -> t.Any:
        """Send ``pair`` asking for a reply and return the reply's value."""
        raise NotImplementedError

    def send(self, packed: str | bytes, deadline: float) -> None:
        """Send a packed event that asks for no reply."""
        raise NotImplementedError

    def shutdown(self, intent: CloseInfo | None, graceful: bool) -> None:
        raise NotImplementedError

    def release(self, keep_posts: bool = False) -> None:
        """Let go of the sockets once the reader has finished."""
        raise NotImplementedError

    def _helper(self, stop: threading.Event) -> None:
        """The thread that runs beside the reader, if this link has one."""

    def _has_helper(self) -> bool:
        return False

    def start_helper(self, stop: threading.Event) -> threading.Thread | None:
        if not self._has_helper():
            return None
        thread = threading.Thread(target=self._helper, args=(stop,), daemon=True,
                                  name=f"{self.env.thread_name}-{self.transport}-helper")
        thread.start()
        return thread


class WsLink(Link):
    """One open WebSocket connection of the client."""

    transport = "ws"
    drop_code = CLOSE_NORMAL

    def __init__(self, env: LinkEnv, ws: WebSocket) -> None:
        super().__init__(env)
        self.ws = ws
        self.aborter.register(ws.abort)
        #: cb_ids of our keep-alive pings whose replies the reader swallows.
        self.ping_ids: set[str] = set()

    def read_loop(self) -> CloseInfo:
        ws, packer = self.ws, self.env.endpoint.packer
        while True:
            try:
                data = ws.receive()
            except ConnectionClosed as exc:
                if self.intent is not None:
                    return self.intent
                if ws.close_received:
                    return describe_ws_close(ws.close_code, ws.close_reason, received=True)
                return describe_ws_close(exc.code, exc.reason, received=False)
            try:
                message = wire.decode_server(packer.unpack(data))
            except RemoteProtocolError as exc:
                logger.warning("ignoring a malformed message from the server: %s", exc)
                continue
            if message.kind == "ping":
                try:
                    ws.send(packer.pack(wire.PONG))
                except (OSError, ConnectionClosed):
                    self.aborter.fire()
            elif message.kind == "reply" and message.cb_id in self.ping_ids:
                self.ping_ids.discard(message.cb_id)
            else:
                self.env.on_message(self, message)

    def _write(self, packed: str | bytes) -> None:
        try:
            self.ws.send(packed)
        except (OSError, ConnectionClosed) as exc:
            self.aborter.fire()  # the socket is broken: let the connector reconnect
            raise ConnectionClosed(f"sending failed: {error_text(exc)}") from exc

    def send(self, packed: str | bytes, deadline: float) -> None:
        self._write(packed)

    def call(self, pair: ev.Event, deadline: float, timeout: float) -> t.Any:
        cb_id = secrets.token_urlsafe(6)
        packed = self.env.endpoint.packer.pack(wire.client_event(pair, cb_id))
        pending = self.env.pending.add(cb_id, self)
        try:
            self._write(packed)
            if not pending.done.wait(max(0.0, deadline - time.monotonic())):
                raise ReplyTimeout(f"no reply to {pair[0]!r} within {timeout:g} s")
        finally:
            self.env.pending.discard(cb_id)
        if pending.message is not None:
            # The server sent what the handler pushed before the reply; the reader has
            # queued it for the handlers: let them run first (docs/protocol.md §6).
            self.env.settle(None, pending.ticket, deadline)
        return pending.result()

    def shutdown(self, intent: CloseInfo | None, graceful: bool) -> None:
        if intent is not None and self.intent is None:
            self.intent = intent
        if graceful:
            self.ws.close(CLOSE_NORMAL, intent.reason if intent else "")
            if self.ended.wait(CLOSE_WAIT):
                return
        self.aborter.fire()

    def release(self, keep_posts: bool = False) -> None:
        self.ws.release()

    def _has_helper(self) -> bool:
        return self.env.keepalive is not None

    def _helper(self, stop: threading.Event) -> None:
        """Ping a WebSocket that has been quiet for ``keepalive`` seconds; drop it if nothing
        at all arrives within ``ping_timeout`` after the ping."""
        interval = t.cast(float, self.env.keepalive)
        ping_timeout = self.env.ping_timeout
        ws = self.ws
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
                    if len(self.ping_ids) > 16:  # answers that never came: forget them
                        self.ping_ids.clear()
                    self.ping_ids.add(cb_id)
                    try:
                        ws.send(self.env.endpoint.packer.pack(
                            wire.envelope([ev.WS_PING], cb_id)))
                    except (OSError, ConnectionClosed):
                        self.aborter.fire()
                        return
                    pinged_at = now
                    wait = ping_timeout
                else:
                    wait = due - now
            else:
                deadline = pinged_at + ping_timeout
                if now >= deadline:
                    logger.warning("no answer to a keep-alive ping within %g s; reconnecting",
                                   ping_timeout)
                    self.shutdown(CloseInfo("ping-timeout"), graceful=False)
                    return
                wait = deadline - now
            if stop.wait(wait):
                return


class AjaxLink(Link):
    """One open Ajax session: a poll connection, POSTs in flight, maybe an upgrade offer.

    While its upgrader tries a WebSocket (auto mode), the read loop makes no new poll and
    holds the answer of the one in flight: the WebSocket asks the server to replay from
    the positions the client had when it was opened, and its replay may overlap that
    answer in the middle of a batch, which the client could not drop as a repeat. The
    answer is dropped when the WebSocket opens (it replays it) and processed when it fails
    (docs/protocol.md §10, last paragraph; sente.js does the same).
    """

    transport = "ajax"

    def __init__(self, env: LinkEnv, poll_conn: http.client.HTTPConnection) -> None:
        super().__init__(env)
        self.poll_conn: http.client.HTTPConnection | None = poll_conn
        self.aborter.register(self._abort_poll)
        self.upgrade: Upgrade | None = None
        self._lock = threading.RLock()
        self._turns = threading.Condition(self._lock)
        #: A WebSocket upgrade is being tried: the read loop waits (see the class doc).
        self._trial = False
        #: The read loop is processing an answer: no trial starts meanwhile, so the
        #: WebSocket's positions are never those of half a batch.
        self._reading = False
        self.aborter.register(self._wake)

    def _abort_poll(self) -> None:
        conn = self.poll_conn
        shutdown_socket(conn.sock if conn is not None else None)

    def _wake(self) -> None:
        with self._turns:
            self._turns.notify_all()

    def _interrupted(self) -> CloseInfo | Upgrade | None:
        return self.upgrade or self.intent

    def _wait_trial(self, *, reading: bool) -> CloseInfo | Upgrade | None:
        """Wait while an upgrade is tried; then say why to stop, or go on (``reading``:
        the caller is about to process an answer)."""
        with self._turns:
            while self._trial and self._interrupted() is None and not self.aborter.fired:
                self._turns.wait()
            stop = self._interrupted()
            if stop is None and reading:
                self._reading = True
            return stop

    def read_loop(self) -> CloseInfo | Upgrade:
        handshake_next = False
        while True:
            stop = self._wait_trial(reading=False)  # no new poll while an upgrade is tried
            if stop is not None:
                return stop
            try:
                answer = self._poll(handshake_next)
            except (OSError, http.client.HTTPException) as exc:
                return self._interrupted() or CloseInfo("unexpected", message=error_text(exc))
            # Held while an upgrade is tried; dropped if it opened: its replay has it.
            stop = self._wait_trial(reading=True)
            if stop is not None:
                return stop
            try:
                outcome = self._take(answer)
            finally:
                with self._turns:
                    self._reading = False
                    self._turns.notify_all()
            if isinstance(outcome, CloseInfo):
                return outcome
            handshake_next = outcome

    def _take(self, answer: HttpAnswer) -> CloseInfo | bool:
        """Process one poll's answer: how the link ends, or whether the next GET must be a
        handshake."""
        status, body, _ = answer
        if status != 200:  # stop or retry: should_reconnect decides by the status
            return describe_http_failure(status, body.decode("utf-8", "replace").strip())
        try:
            message = self.env.endpoint.decode(body)
        except RemoteProtocolError as exc:
            return CloseInfo("unexpected", message=error_text(exc))
        if message.kind == "close":
            info = ajax_close_info(message)
            if info.code == CLOSE_TOO_SLOW:
                # Not an end: the server dropped pushes we did not collect in time.
                logger.warning("the server dropped pushes this client did not collect")
                return True
            return info
        self.env.on_message(self, message)
        return False

    def _poll(self, handshake: bool) -> HttpAnswer:
        """One long-poll GET on the link's persistent connection (retried once on a fresh
        connection if a reused one turns out to be closed by the server)."""
        endpoint = self.env.endpoint
        url = endpoint.request_url(handshake=handshake, positions=True)
        for retry in (True, False):
            conn = self.poll_conn
            if conn is None:
                raise ConnectionAbortedError("the link was released")
            try:
                return endpoint.request(conn, "GET", url, self.aborter)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not retry or self.aborter.fired or self.upgrade is not None:
                    raise
                with self._lock:
                    if self.poll_conn is conn:
                        self.poll_conn = endpoint.http_connection(endpoint.ajax_timeout)
        raise AssertionError("unreachable")

    def post(self, body: str | bytes, deadline: float, what: str = "no answer",
             timeout_given: float | None = None,
             ) -> tuple[wire.ServerMessage, http.client.HTTPMessage]:
        """One POST on a connection of its own; the answer decoded, and its headers.

        A timeout raises ``ReplyTimeout`` saying ``what`` did not come within
        ``timeout_given``: the caller's own timeout, not what was left of it (a call made
        while connecting has spent some on the wait for the open).
        """
        endpoint = self.env.endpoint
        timeout = max(0.001, deadline - time.monotonic())
        conn = endpoint.http_connection(timeout)
        token = self.aborter.register(lambda: shutdown_socket(conn.sock))
        try:
            status, answer, headers = endpoint.request(
                conn, "POST", endpoint.request_url(), self.aborter, body=body)
        except TimeoutError as exc:
            if self.aborter.fired:
                raise ConnectionClosed("the connection closed while waiting") from exc
            shown = timeout if timeout_given is None else timeout_given
            raise ReplyTimeout(f"{what} within {shown:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            if self.aborter.fired:
                reason = self.intent.reason if self.intent is not None else "closed"
                raise ConnectionClosed(f"connection closed: {reason}") from exc
            raise ConnectionClosed(f"the request failed: {error_text(exc)}") from exc
        finally:
            self.aborter.unregister(token)
            conn.close()
        if status != 200:
            raise Rejected(status, answer.decode("utf-8", "replace").strip())
        return endpoint.decode(answer), headers

    def call(self, pair: ev.Event, deadline: float, timeout: float) -> t.Any:
        packer = self.env.endpoint.packer
        message, headers = self.post(packer.pack(wire.client_event(pair, wire.AJAX_CB)),
                                     deadline, f"no reply to {pair[0]!r}", timeout)
        if message.kind == "timeout":
            # A POST's ["chsk/timeout"] has no cb_id, so it decodes like a poll timeout.
            raise ReplyTimeout("the server's handler did not reply in time")
        if message.kind != "reply":
            raise RemoteProtocolError(f"expected a reply, got {message.kind!r}")
        # The handler's pushes come through the polls; the reply waits for them (§6).
        header = headers.get(wire.AFTER_HEADER)
        after = read_after(header)
        if after is not None:
            self.env.settle(after, None, deadline)
        elif header:
            logger.debug("ignoring a malformed %s header: %r", wire.AFTER_HEADER, header)
        return outcome(message)

    def send(self, packed: str | bytes, deadline: float) -> None:
        message, _ = self.post(packed, deadline)
        if message.kind not in ("ack", "reply"):
            logger.warning("unexpected answer to an Ajax event: %r", message)

    def offer_upgrade(self, upgrade: Upgrade) -> bool:
        """From the upgrader: hand over an open WebSocket; False if this link is gone."""
        with self._turns:
            if self.ended.is_set() or self.intent is not None or self.aborter.fired:
                return False
            self.upgrade = upgrade
            self._turns.notify_all()
        self._abort_poll()
        return True

    def _begin_trial(self) -> bool:
        """From the upgrader: a WebSocket is about to be tried, from the positions of now
        (once the read loop has finished processing an answer); False if the link is gone."""
        with self._turns:
            while self._reading and self._interrupted() is None and not self.aborter.fired:
                self._turns.wait()
            if self.ended.is_set() or self._interrupted() is not None or self.aborter.fired:
                return False
            self._trial = True
            return True

    def _end_trial(self) -> None:
        """The WebSocket failed: the read loop processes what it held and polls again."""
        with self._turns:
            self._trial = False
            self._turns.notify_all()

    def shutdown(self, intent: CloseInfo | None, graceful: bool) -> None:
        with self._turns:
            if intent is not None and self.intent is None:
                self.intent = intent
            self._turns.notify_all()
        self.aborter.fire()

    def release(self, keep_posts: bool = False) -> None:
        if not keep_posts:
            self.aborter.fire()
        conn, self.poll_conn = self.poll_conn, None
        if conn is not None:
            conn.close()

    def _has_helper(self) -> bool:
        return self.env.upgrade_retry is not None

    def _helper(self, stop: threading.Event) -> None:
        """While on Ajax in auto mode: try a WebSocket every ``upgrade_retry`` seconds (the
        read loop holding its answers meanwhile: see the class doc)."""
        interval = t.cast(float, self.env.upgrade_retry)
        while not stop.wait(interval):
            if not self._begin_trial():
                return
            aborter = Aborter()
            token = self.aborter.register(aborter.fire)
            try:
                ws, handshake = self.env.endpoint.open_ws(aborter)
            except AttemptFailed as failure:
                logger.debug("WebSocket still unavailable: %s",
                             failure.info.message or failure.info.reason)
                self._end_trial()
                continue
            except BaseException:
                self._end_trial()  # never leave the read loop waiting for this thread
                raise
            finally:
                self.aborter.unregister(token)
            if self.offer_upgrade(Upgrade(ws, handshake)):
                return
            self._end_trial()
            ws.close()
            ws.abort()
            ws.release()
            return
