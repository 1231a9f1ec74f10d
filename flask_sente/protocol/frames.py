"""RFC 6455 frames, sans-I/O: the one codec of the server socket and the Python client.

Why one module: the server (``transports/frames.py``) and the Python client
(``client/websocket.py``) used to carry their own parsers with different limits and
different strictness. Both now hand their bytes to :class:`FrameReader` and build frames
with :func:`encode_frame`; only the socket handling stays with them. The rules that differ
between the two ends are a ``side`` flag: a server reads masked frames (a client must mask
every frame), a client reads unmasked ones.

Performance is part of the contract: the server's receive path runs here. Unmasking is one
big-integer XOR (C speed, not a byte loop), UTF-8 is validated by the codec (and
incrementally across fragments), the size limit is checked from the frame header before a
payload is buffered, and one :meth:`FrameReader.next` call yields one whole message.

No I/O, no clock, no randomness: a client passes the 4-byte mask key in.
"""
from __future__ import annotations

import base64
import codecs
import hashlib
import struct
import typing as t

from ..exceptions import LocalProtocolError, RemoteProtocolError
from .closecodes import (
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    may_send,
)

__all__ = [
    "CLIENT", "SERVER", "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG",
    "DEFAULT_MAX_MESSAGE_SIZE", "CLIENT_MAX_MESSAGE_SIZE", "MAX_CONTROL_PAYLOAD",
    "FIN_TEXT", "FIN_BINARY", "OnControl", "FrameReader", "encode_frame",
    "server_frame", "mask", "close_payload", "parse_close", "accept_key",
]

Side = t.Literal["server", "client"]
#: We are the server: incoming frames must be masked.
SERVER: Side = "server"
#: We are the client: incoming frames must not be masked.
CLIENT: Side = "client"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_VALID_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
#: First bytes of a final (unfragmented) text / binary frame.
FIN_TEXT = 0x80 | OP_TEXT
FIN_BINARY = 0x80 | OP_BINARY

#: Default limit for one message (all fragments together) the *server* accepts: a client
#: is untrusted, and a message is buffered whole before it is unpacked.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
#: Default limit for one message the *Python client* accepts: server pushes are trusted
#: more and may carry a large batch, but a client's memory is still not unbounded.
CLIENT_MAX_MESSAGE_SIZE = 16 << 20
#: A control frame (close, ping, pong) carries at most 125 bytes (RFC 6455 §5.5).
MAX_CONTROL_PAYLOAD = 125

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack
_utf8_incremental = codecs.getincrementaldecoder("utf-8")


#: Called by :meth:`FrameReader.next` with ``(opcode, payload)`` for each control frame.
OnControl = t.Callable[[int, bytes], None]


def _error(code: int, reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, close_code=code)


def mask(data: bytes | bytearray, key: bytes | bytearray) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``key``: masking and unmasking are the same.

    One big-integer XOR runs at C speed (hundreds of MB/s); a byte loop would stall the
    server at ~13 MB/s, which is what gevent-websocket does.
    """
    n = len(data)
    if not n:
        return b""
    repeated = (key * ((n + 3) >> 2))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


def server_frame(first_byte: int, payload: bytes) -> bytes:
    """An unmasked frame, header and payload in one bytes object (written with one ``send``).

    ``first_byte`` is FIN and the opcode (:data:`FIN_TEXT`, :data:`FIN_BINARY`, or
    ``0x80 | opcode``). This is the server's send path, so it does nothing else: the general
    :func:`encode_frame` costs ~100 ns more per message.
    """
    n = len(payload)
    if n < 126:
        return bytes((first_byte, n)) + payload
    if n < 65536:
        return _pack_16(first_byte, 126, n) + payload
    return _pack_64(first_byte, 127, n) + payload


def encode_frame(opcode: int, payload: bytes, mask_key: bytes | None = None, *,
                 fin: bool = True) -> bytes:
    """One frame, header and payload in one bytes object (written with one ``send``).

    A server passes no ``mask_key`` (server frames are never masked); a client passes a
    fresh random 4-byte key for every frame (RFC 6455 §5.3).
    """
    first = opcode | 0x80 if fin else opcode
    if mask_key is None:
        return server_frame(first, payload)
    n = len(payload)
    if len(mask_key) != 4:
        raise LocalProtocolError("a mask key is 4 bytes")
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = _pack_16(first, 0x80 | 126, n)
    else:
        head = _pack_64(first, 0x80 | 127, n)
    return head + mask_key + mask(payload, mask_key)


def close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a close frame: empty without a code, else code + UTF-8 reason cut to
    fit the 125-byte control frame on a character boundary."""
    if code is None:
        return b""
    if not may_send(code):
        raise LocalProtocolError(f"close code {code} may not be sent")
    raw = reason.encode("utf-8")
    if len(raw) > MAX_CONTROL_PAYLOAD - 2:
        raw = raw[:MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode("utf-8")
    return code.to_bytes(2, "big") + raw


def parse_close(payload: bytes) -> tuple[int, str]:
    """``(code, reason)`` of a received close frame; ``(1005, "")`` when it had no code.

    :raises RemoteProtocolError: a 1-byte payload or a code that may not be sent (1002),
        a reason that is not UTF-8 (1007).
    """
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise _error(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not may_send(code):
        raise _error(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise _error(CLOSE_INVALID_DATA, "invalid UTF-8 in the close reason") from None


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value that answers ``Sec-WebSocket-Key: key``."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


class FrameReader:
    """Turns received bytes into whole messages and control frames, for one side.

    The owner appends what it reads to :attr:`buffer` (a ``bytearray``, so ``+=`` is cheap
    and a partly received frame simply waits there) and calls :meth:`next` until it
    returns None. Fragmented messages are reassembled here. Control frames (close, ping,
    pong), which may arrive between fragments, go to ``on_control`` as they are parsed,
    so :meth:`next` returns messages only: bare ``str``/``bytes``, the cheapest thing to
    hand over on the server's hot path (no event object to build and inspect per message).
    ``on_control`` may raise (to end the connection on a close frame); the reader's state
    is consistent when it is called. Any violation raises
    :class:`RemoteProtocolError` whose ``close_code`` is what to close the connection with
    (1002 protocol error, 1007 invalid UTF-8, 1009 too big); the reader is then unusable.

    :param side: :data:`SERVER` (incoming frames must be masked) or :data:`CLIENT`.
    :param on_control: called with ``(opcode, payload)`` for each control frame; a close
        payload is not interpreted here (see :func:`parse_close`).
    :param max_message_size: bytes per message, all fragments together (None or 0: no
        limit). Checked from each frame header, before its payload is buffered.
    """

    __slots__ = ("buffer", "side", "_on_control", "_mask_bit", "_max", "_frag_op",
                 "_frag_parts", "_frag_size", "_frag_decoder")

    def __init__(self, side: Side, on_control: OnControl, *,
                 max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                 buffered: bytes = b"") -> None:
        if side not in (SERVER, CLIENT):
            raise LocalProtocolError(f"side must be 'server' or 'client', got {side!r}")
        #: Received bytes not yet parsed (the owner appends to it).
        self.buffer = bytearray(buffered)
        self.side = side
        self._on_control = on_control
        self._mask_bit = 0x80 if side == SERVER else 0
        self._max = max_message_size or 0
        self._frag_op = 0
        self._frag_parts: list[t.Any] = []
        self._frag_size = 0
        self._frag_decoder: codecs.IncrementalDecoder | None = None

    @property
    def in_message(self) -> bool:
        """A fragmented message has started and not ended."""
        return self._frag_op != 0

    def next(self) -> str | bytes | None:  # noqa: C901 - one inlined pass per frame
        """The next whole message (``str`` for text, ``bytes`` for binary), or None until
        more bytes arrive. Control frames parsed on the way go to ``on_control``.

        Every check of the frame header is inline, in one function: it runs for every
        message a server reads (a call per check cost ~4 % of W1's round trips)."""
        buf = self.buffer
        mask_bit = self._mask_bit
        while True:
            n = len(buf)
            if n < 2:
                return None
            b0 = buf[0]
            b1 = buf[1]
            if (b1 & 0x80) != mask_bit:
                raise _error(CLOSE_PROTOCOL_ERROR, "client frame not masked" if mask_bit
                             else "the server masked a frame")
            if b0 & 0x70:
                raise _error(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
            op = b0 & 0x0F
            if op not in _VALID_OPCODES:
                raise _error(CLOSE_PROTOCOL_ERROR, f"reserved opcode {op:#x}")
            length = b1 & 0x7F
            hlen = 6 if mask_bit else 2
            if length == 126:
                if n < 4:
                    return None
                length = (buf[2] << 8) | buf[3]
                hlen += 2
            elif length == 127:
                if n < 10:
                    return None
                length = int.from_bytes(buf[2:10], "big")
                hlen += 8
                if length >> 63:
                    raise _error(CLOSE_PROTOCOL_ERROR, "frame length has the top bit set")
            if op & 0x8:
                if length > MAX_CONTROL_PAYLOAD or not b0 & 0x80:
                    raise _error(CLOSE_PROTOCOL_ERROR, "oversized or fragmented control frame")
            elif self._max and self._frag_size + length > self._max:
                raise _error(CLOSE_TOO_BIG, f"message of at least {self._frag_size + length} "
                             f"bytes exceeds the limit of {self._max}")
            end = hlen + length
            if n < end:
                return None
            if mask_bit:
                payload = mask(buf[hlen:end], buf[hlen - 4:hlen])
            else:
                payload = bytes(buf[hlen:end])
            del buf[:end]
            if op & 0x8:
                self._on_control(op, payload)
                continue
            if b0 & 0x80 and op and not self._frag_op:
                # The common case, inline: a whole message in one frame.
                if op == OP_BINARY:
                    return payload
                try:
                    return payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise _error(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message") from None
            message = self._data_frame(b0 & 0x80, op, payload)
            if message is not None:
                return message

    def _data_frame(self, fin: int, op: int, payload: bytes) -> str | bytes | None:
        """Assemble one data frame into a message; None while a message is incomplete."""
        if op != OP_CONT:
            if self._frag_op:
                raise _error(CLOSE_PROTOCOL_ERROR, "new message started inside a fragmented one")
            if fin:
                if op == OP_BINARY:
                    return payload
                try:
                    return payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise _error(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message") from None
            self._frag_op = op
            self._frag_size = len(payload)
            if op == OP_TEXT:
                self._frag_decoder = _utf8_incremental("strict")
                self._frag_parts = [self._decode(payload, False)]
            else:
                self._frag_parts = [payload]
            return None
        if not self._frag_op:
            raise _error(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
        self._frag_size += len(payload)
        text = self._frag_decoder is not None
        self._frag_parts.append(self._decode(payload, bool(fin)) if text else payload)
        if not fin:
            return None
        parts, op = self._frag_parts, self._frag_op
        self._frag_op = 0
        self._frag_parts = []
        self._frag_size = 0
        self._frag_decoder = None
        return "".join(parts) if text else b"".join(parts)

    def _decode(self, payload: bytes, final: bool) -> str:
        """Validate text as it arrives: a bad byte fails the message at its fragment."""
        decoder = self._frag_decoder
        assert decoder is not None  # only called for text messages (internal invariant)
        try:
            return decoder.decode(payload, final)
        except UnicodeDecodeError:
            raise _error(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message") from None
