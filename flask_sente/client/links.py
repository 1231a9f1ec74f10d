"""Links: one open connection of the client each, WebSocket or Ajax, owning its I/O. This
module has what they share and the WebSocket link; :mod:`.ajax` has the Ajax link.

Why classes: a WebSocket link and an Ajax link read, send, call, keep alive and shut down in
different ways, and the client used to ask ``isinstance`` at every step. Now each link owns
its read loop (:meth:`Link.read_loop`), its helper thread (the WebSocket keep-alive
watchdog, the Ajax upgrader), how it sends and calls, and how it lets go of its sockets; the
client only sees :class:`Link`. What a message *means* is the client's business: links hand
every decoded message to ``env.on_message``.
"""
from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
import typing as t

from ..exceptions import ConnectionClosed, RemoteProtocolError, ReplyTimeout
from ..protocol import events as ev
from ..protocol import wire
from ..protocol.closecodes import CLOSE_NORMAL
from .endpoint import Aborter, Endpoint, Handshake, error_text
from .pending import PendingCalls
from .positions import Position
from .state import CloseInfo, describe_ws_close
from .websocket import WebSocket

__all__ = ["Link", "LinkEnv", "Upgrade", "WsLink", "CLOSE_WAIT"]

logger = logging.getLogger("flask_sente.client")

#: How long a graceful shutdown waits for the server to echo a WebSocket close frame.
CLOSE_WAIT = 2.0


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
