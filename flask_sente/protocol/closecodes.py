"""The one table of WebSocket close codes: the server, the Python client and ``sente.js``
(its ``CLOSE`` object, checked against this table by ``tests/vectors``) all use these.

RFC 6455 §7.4 codes first, then ours in the private range 4000-4999. Which codes a peer
may put on the wire is a rule of the protocol, so it lives here too: both ends of the
codec (``protocol/frames.py``) refuse the reserved ones.
"""
from __future__ import annotations

#: The purpose of the connection is fulfilled (also: ``disconnect()``).
CLOSE_NORMAL = 1000
#: The server is shutting down (or a browser tab navigates away).
CLOSE_GOING_AWAY = 1001
#: The peer broke RFC 6455 (unmasked frame, reserved bits, bad opcode...).
CLOSE_PROTOCOL_ERROR = 1002
#: Reserved: reported locally when a close frame had no code; never sent.
CLOSE_NO_STATUS = 1005
#: Reserved: reported locally when the TCP connection ended without a close frame.
CLOSE_ABNORMAL = 1006
#: A message was not what its frame type promised (invalid UTF-8, a bad package).
CLOSE_INVALID_DATA = 1007
#: A message exceeded ``max_message_size`` (refused from the frame header).
CLOSE_TOO_BIG = 1009
#: The server failed while handling the connection.
CLOSE_SERVER_ERROR = 1011
#: The peer did not read its pushes fast enough (Ajax: pushes were dropped).
CLOSE_TOO_SLOW = 1013
#: Closed by ``sente.kick(uid)``: clients must not reconnect.
CLOSE_KICKED = 4001
#: The peer did not answer a keep-alive ping in time.
CLOSE_PING_TIMEOUT = 4002
#: Another connection with the same client id replaced this one.
CLOSE_REPLACED = 4003
#: A client broke its own connection on purpose (sente.js ``breakConnection()``, Sente's
#: ``chsk-break-connection!``): it reconnects as after a network failure.
CLOSE_BROKEN = 3000

#: Close codes after which a client does not reconnect on its own.
NO_RECONNECT_CODES = frozenset({CLOSE_KICKED})

#: Every named code, by the name ``sente.js`` uses in its ``CLOSE`` object.
BY_NAME: dict[str, int] = {
    "NORMAL": CLOSE_NORMAL,
    "GOING_AWAY": CLOSE_GOING_AWAY,
    "PROTOCOL_ERROR": CLOSE_PROTOCOL_ERROR,
    "NO_STATUS": CLOSE_NO_STATUS,
    "ABNORMAL": CLOSE_ABNORMAL,
    "INVALID_DATA": CLOSE_INVALID_DATA,
    "TOO_BIG": CLOSE_TOO_BIG,
    "SERVER_ERROR": CLOSE_SERVER_ERROR,
    "TOO_SLOW": CLOSE_TOO_SLOW,
    "KICKED": CLOSE_KICKED,
    "PING_TIMEOUT": CLOSE_PING_TIMEOUT,
    "REPLACED": CLOSE_REPLACED,
    "BROKEN": CLOSE_BROKEN,
}


def may_send(code: int) -> bool:
    """Whether ``code`` may travel in a close frame (RFC 6455 §7.4; 1012-1014 are
    IANA-registered since). 1005, 1006 and 1015 are for local reporting only."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
