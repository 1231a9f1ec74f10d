"""The client's connection state machine, sans-I/O: the Python twin of sente.js's pure
``state`` section.

Why it is separate: every decision the client takes about its connection — what the state
becomes after a handshake or a close, whether to reconnect, which transport to try, how
long to back off, whether the server speaks our protocol — is a function of values here,
with the clock and the random number passed in. The threads of :mod:`.connection` only perform
the outcome. The same decisions are written in ``sente.js`` (``initialState``,
``stateAfterHandshake``, ``stateAfterClose``, ``shouldReconnect``, ``afterWsFailure``,
``backoffDelay``) and both are run against the JSON files in ``tests/vectors/``, so the two
clients cannot drift apart.

No sockets, no threads, no clock reads (``CloseInfo.at`` is the one timestamp, taken when a
close is described, for humans).
"""
from __future__ import annotations

import dataclasses
import time
import typing as t

from ..protocol import PROTOCOL_VERSION
from ..protocol.closecodes import NO_RECONNECT_CODES

__all__ = [
    "AUTH_STATUSES", "FINAL_REASONS", "STABLE_AFTER", "STOP_STATUSES", "TRANSPORT_TYPES",
    "ClientState",
    "CloseInfo", "ConnectionMachine", "after_ws_failure", "describe_http_failure",
    "describe_ws_close", "handshake_error", "initial_state", "should_reconnect",
    "state_after_close", "state_after_handshake",
]

#: The ``type`` a client may be created with.
TRANSPORT_TYPES = ("auto", "ws", "ajax")
#: Refusals that would only be refused again: stop (call ``reconnect()`` after logging in).
AUTH_STATUSES = frozenset({401, 403})
#: Other refusals that retrying cannot fix, so the client stops (``active`` False) with the
#: status and the server's text in ``last_close`` instead of retrying forever: the request
#: itself is wrong — 400 (bad positions, packer or protocol mismatch, missing client id, a
#: server that cannot upgrade), 404 and 410 (no channel socket at this URL), 405 (a method
#: it does not take), 413, 414 and 431 (a body, URL or headers too large). Every other
#: status — 408, 425, 429, 5xx, a proxy's 502/503/504 during a deploy — and every network
#: error is retried with backoff. docs/protocol.md §1 "Rejections".
STOP_STATUSES = frozenset({400, 404, 405, 410, 413, 414, 431})
#: Close reasons after which a client never reconnects on its own: it asked to stop, was
#: kicked, or the server speaks another protocol version.
FINAL_REASONS = frozenset({"requested-disconnect", "kicked", "protocol-mismatch"})
#: A connection open at least this long counts as stable: its loss is retried at once.
STABLE_AFTER = 2.0

Decision = t.Literal["downgrade", "stop", "retry"]


@dataclasses.dataclass(frozen=True)
class CloseInfo:
    """How the last connection, or connection attempt, ended.

    :ivar reason: ``clean`` (the server closed with a close frame), ``unexpected`` (the
        connection broke, or could not be made), ``requested-disconnect``,
        ``requested-reconnect``, ``ping-timeout`` (no answer to a keep-alive ping),
        ``rejected`` (an HTTP status refused us; see ``status``), ``kicked`` (close 4001)
        or ``protocol-mismatch`` (the server speaks another protocol version).
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
        reconnect). False after ``disconnect()``, ``close()``, a kick, a 401/403, another
        refusal that retrying cannot fix (:data:`~flask_sente.client.state.STOP_STATUSES`) or a
        protocol mismatch.
    :ivar attempt: failed connection attempts in a row (0 once open).
    :ivar next_reconnect: ``time.time()`` of the next attempt while waiting in backoff.
    :ivar recovered: from the last handshake (protocol 2): True when the server replayed
        everything missed since the previous connection, False when some of it was gone
        (reload your state), None on a first connection.
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
    recovered: bool | None = None


# --- the pure functions (one for one with sente.js) ---------------------------------------


def initial_state(type: str) -> ClientState:  # noqa: A002 - the API's name
    """The state of a client created with ``type`` that has not connected yet."""
    return ClientState(type=type)


def state_after_handshake(state: ClientState, type: str,  # noqa: A002
                          info: t.Mapping[str, t.Any]) -> ClientState:
    """The state after a handshake over ``type`` (``ws`` or ``ajax``)."""
    return dataclasses.replace(
        state, type=type, open=True, ever_opened=True, uid=info.get("uid"),
        handshake_data=info.get("handshake_data"), attempt=0, next_reconnect=None)


def state_after_close(state: ClientState, close: CloseInfo) -> ClientState:
    """The state after a connection closed or an attempt failed."""
    return dataclasses.replace(state, open=False, last_close=close)


def should_reconnect(close: CloseInfo, *, reconnect_on_auth_failure: bool = False) -> bool:
    """Whether to reconnect on our own after ``close`` (see :data:`FINAL_REASONS`,
    :data:`AUTH_STATUSES` and :data:`STOP_STATUSES`)."""
    if close.reason == "rejected" and close.status in AUTH_STATUSES:
        return reconnect_on_auth_failure
    if close.reason == "rejected" and close.status in STOP_STATUSES:
        return False
    if close.code in NO_RECONNECT_CODES:
        return False
    return close.reason not in FINAL_REASONS


def describe_ws_close(code: int | None, text: str, *, received: bool,
                      local_reason: str | None = None) -> CloseInfo:
    """How a WebSocket that had completed its handshake ended.

    :param received: the server sent a close frame (a clean close), else the connection
        broke. ``local_reason`` is set when this client closed it on purpose.
    """
    if local_reason is not None:
        return CloseInfo(local_reason, code=code, message=text)
    if code in NO_RECONNECT_CODES:
        return CloseInfo("kicked", code=code, message=text)
    return CloseInfo("clean" if received else "unexpected", code=code, message=text)


def describe_http_failure(status: int, message: str = "") -> CloseInfo:
    """How an HTTP exchange failed; status 0 means no response at all."""
    if not status:
        return CloseInfo("unexpected", message=message or "no response")
    return CloseInfo("rejected", status=status, message=message)


def after_ws_failure(*, auto: bool, probe_status: int, probe_handshake: bool,
                     reconnect_on_auth_failure: bool = False) -> Decision:
    """What to do after a WebSocket failed before its handshake, given what an Ajax
    handshake (the probe) answered: ``downgrade`` to Ajax (auto mode and Ajax works — even
    if a WebSocket opened before: a proxy may start refusing upgrades mid-session),
    ``stop`` (401/403, or another of :data:`STOP_STATUSES`: retrying would be refused
    too) or ``retry``.

    ``probe_status`` is 0 when there was no response. The Python client can read the status
    of a refused upgrade itself, so a 401/403 there stands in for the probe's.
    """
    if probe_status in AUTH_STATUSES:
        return "retry" if reconnect_on_auth_failure else "stop"
    if probe_status in STOP_STATUSES:
        return "stop"
    if probe_handshake and auto:
        return "downgrade"
    return "retry"


def handshake_error(info: t.Mapping[str, t.Any]) -> str | None:
    """Why we cannot talk to the server that sent handshake ``info``, or None.

    A server that names no version is accepted (as sente.js does); one that names another
    version is not: each side would misread the other, so the client stops.
    """
    if "protocol" not in info:
        return None
    version = info["protocol"]
    if not isinstance(version, bool) and isinstance(version, (int, float)) \
            and version == PROTOCOL_VERSION:  # 1 and 1.0 alike, as in JavaScript
        return None
    return (f"the server speaks protocol version {version!r}, this client "
            f"{PROTOCOL_VERSION}: install the flask_sente version the server runs")


# --- the machine --------------------------------------------------------------------------


class ConnectionMachine:
    """The decisions of one client across connections: attempt counting (for the backoff), the
    transport to try, and the auto-mode fallback rule. Times are ``time.monotonic()``
    values the caller passes in; it performs what the methods return.

    :param type: ``auto``, ``ws`` or ``ajax``.
    :param upgrade_retry: in auto mode, seconds after a fallback to Ajax before a new
        connection tries WebSocket first again (None: not until :meth:`reset_transport`).
    """

    def __init__(self, type: str, *, upgrade_retry: float | None = None,  # noqa: A002
                 reconnect_on_auth_failure: bool = False) -> None:
        if type not in TRANSPORT_TYPES:
            raise ValueError(f"type must be one of {TRANSPORT_TYPES}, got {type!r}")
        self.type = type
        self.upgrade_retry = upgrade_retry
        self.reconnect_on_auth_failure = reconnect_on_auth_failure
        #: Failed attempts in a row (the attempt being made, once :meth:`next_attempt` ran).
        self.attempt = 0
        #: When auto mode last fell back to Ajax (WebSocket failed, Ajax worked).
        self.ws_blocked_since: float | None = None

    # -- attempts and backoff --

    def new_session(self) -> None:
        """connect()/disconnect()/reconnect(): the next attempt is attempt 1 again."""
        self.attempt = 0

    def next_attempt(self) -> int:
        """Count one more attempt and return its number (1-based)."""
        self.attempt += 1
        return self.attempt

    def connection_ended(self, opened_at: float, now: float) -> None:
        """A connection that stayed up is followed by an immediate retry (attempt 1); one
        that dropped at once keeps counting, so a flapping server is not hammered."""
        if now - opened_at >= STABLE_AFTER:
            self.attempt = 0

    # -- transports --

    def transports(self, now: float) -> tuple[str, ...]:
        """The transports to try for the next connection, in order.

        Auto mode tries WebSocket and may fall back to Ajax; after a fallback it goes
        straight to Ajax until ``upgrade_retry`` has passed (the Ajax link's upgrader moves
        back up meanwhile).
        """
        if self.type == "ajax":
            return ("ajax",)
        if self.type == "ws":
            return ("ws",)
        blocked = self.ws_blocked_since
        if blocked is None or (self.upgrade_retry is not None
                               and now - blocked >= self.upgrade_retry):
            return ("ws", "ajax")
        return ("ajax",)

    def may_probe(self, ws_status: int) -> Decision:
        """A WebSocket attempt failed (``ws_status``: the refusal's HTTP status, or 0):
        ``stop`` or ``retry`` at once, or ``downgrade`` — meaning: try Ajax, and use it if
        its handshake works (the probe of :func:`after_ws_failure`).

        A 401/403 to the upgrade stands in for the probe's answer (the server refused us,
        not the upgrade). Any other refusal of the upgrade (a proxy without WebSocket
        support says 400) is no reason to stop in auto mode: the Ajax handshake decides,
        as sente.js's probe does."""
        return after_ws_failure(
            auto=self.type == "auto",
            probe_status=ws_status if ws_status in AUTH_STATUSES else 0,
            probe_handshake=True, reconnect_on_auth_failure=self.reconnect_on_auth_failure)

    def fell_back(self, now: float) -> None:
        """WebSocket failed while Ajax works: the path blocks upgrades, not the server."""
        self.ws_blocked_since = now

    def opened(self, transport: str) -> None:
        """A handshake completed over ``transport``."""
        if transport == "ws":
            self.ws_blocked_since = None

    def reset_transport(self) -> None:
        """``reconnect()``: in auto mode, WebSocket is tried first again."""
        self.ws_blocked_since = None

    # -- closes --

    def should_reconnect(self, close: CloseInfo) -> bool:
        """Whether ``close`` leaves the client trying to reconnect."""
        return should_reconnect(close, reconnect_on_auth_failure=self.reconnect_on_auth_failure)
