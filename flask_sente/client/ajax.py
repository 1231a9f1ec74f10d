"""The Ajax link: one open Ajax session of the client — its long-poll loop, its POSTs, and
the WebSocket upgrades it tries in auto mode (the base class and the WebSocket link are in
:mod:`.links`).
"""
from __future__ import annotations

import http.client
import logging
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed, Rejected, RemoteProtocolError, ReplyTimeout
from ..protocol import events as ev
from ..protocol import wire
from ..protocol.closecodes import CLOSE_TOO_SLOW
from .endpoint import (
    Aborter,
    AttemptFailed,
    HttpAnswer,
    ajax_close_info,
    error_text,
    shutdown_socket,
)
from .links import Link, LinkEnv, Upgrade
from .pending import outcome
from .positions import read_after
from .state import CloseInfo, describe_http_failure

__all__ = ["AjaxLink"]

logger = logging.getLogger("flask_sente.client")

#: Seconds the goodbye POST of a stopping client may take (``disconnect()`` waits for it,
#: as it waits for a WebSocket's close handshake).
BYE_TIMEOUT = 1.0


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
        if graceful and not self.broken:
            self._bye()  # as a WebSocket's close waits for its close frame's echo
        self.aborter.fire()

    def _bye(self) -> None:
        """Tell the server this client is leaving (``chsk/bye``, best effort, on a
        connection of its own, within :data:`BYE_TIMEOUT`): its calls fail at once rather
        than when its grace window ends. A WebSocket says the same with its close frame."""
        endpoint = self.env.endpoint
        body = endpoint.packer.pack(wire.client_event((ev.BYE, None), None))
        try:
            conn = endpoint.http_connection(BYE_TIMEOUT)
            try:
                endpoint.request(conn, "POST", endpoint.request_url(), Aborter(), body=body)
            finally:
                conn.close()
        except Exception as exc:  # the server sees the client leave by its grace window
            logger.debug("chsk/bye not sent: %s", error_text(exc))

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
