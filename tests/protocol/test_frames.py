"""The RFC 6455 codec both ends share: round trips, fragmentation, limits, invalid input.

Property-based (hypothesis): messages of any content and size, cut into any fragments,
delivered in any chunking, come out whole and in order; anything else raises
RemoteProtocolError with the close code the connection must end with, and nothing else.
"""
from __future__ import annotations

import struct
import typing as t

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_sente.exceptions import LocalProtocolError, RemoteProtocolError
from flask_sente.protocol import closecodes
from flask_sente.protocol.frames import (
    CLIENT,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SERVER,
    FrameReader,
    accept_key,
    close_payload,
    encode_frame,
    mask,
    parse_close,
)

KEY = b"\x01\x02\x03\x04"
SIDES = (SERVER, CLIENT)
quick = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def frame_for(side: str, opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A frame as the peer of ``side`` writes it: masked towards a server, not towards a
    client."""
    return encode_frame(opcode, payload, KEY if side == SERVER else None, fin=fin)


class Recorder:
    """A reader whose control frames land, as ``(opcode, payload)``, in the same list as
    its messages, so tests see the order in which everything arrived."""

    def __init__(self, side: str, **options: t.Any) -> None:
        self.out: list[t.Any] = []
        self.reader = FrameReader(side, lambda op, payload: self.out.append((op, payload)),  # type: ignore[arg-type]
                                  **options)


def reader_for(side: str, **options: t.Any) -> FrameReader:
    return Recorder(side, **options).reader


def feed(reader: FrameReader, data: bytes, cuts: list[int],
         out: list[t.Any] | None = None) -> list[t.Any]:
    """Give ``data`` to ``reader`` in pieces cut at ``cuts``; collect the messages."""
    out = [] if out is None else out
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(points, points[1:], strict=False):
        reader.buffer += data[start:end]
        while (item := reader.next()) is not None:
            out.append(item)
    return out


def fail_code(side: str, data: bytes, **options: t.Any) -> int:
    reader = reader_for(side, **options)
    reader.buffer += data
    with pytest.raises(RemoteProtocolError) as info:
        while reader.next() is not None:
            pass
    return info.value.close_code


messages = st.one_of(st.text(max_size=300), st.binary(max_size=300))


# --- round trips --------------------------------------------------------------------------


@quick
@given(side=st.sampled_from(SIDES), batch=st.lists(messages, max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
def test_messages_survive_any_chunking(side: str, batch: list[str | bytes],
                                       cuts: list[int]) -> None:
    wire = b"".join(frame_for(side, OP_TEXT, m.encode()) if isinstance(m, str)
                    else frame_for(side, OP_BINARY, m) for m in batch)
    assert feed(reader_for(side), wire, cuts) == batch


@quick
@given(side=st.sampled_from(SIDES), message=messages,
       splits=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
       ping_after=st.integers(min_value=0, max_value=6),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_fragments_reassemble_with_pings_between(side: str, message: str | bytes,
                                                 splits: list[int], ping_after: int,
                                                 cuts: list[int]) -> None:
    raw = message.encode() if isinstance(message, str) else message
    points = sorted({s % (len(raw) + 1) for s in splits} | {0, len(raw)})
    pieces = [raw[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]
    op = OP_TEXT if isinstance(message, str) else OP_BINARY
    frames = []
    for i, piece in enumerate(pieces):  # text may be cut inside a character: still valid
        frames.append(frame_for(side, op if i == 0 else OP_CONT, piece,
                                fin=i == len(pieces) - 1))
        if len(pieces) > 1 and i == ping_after % (len(pieces) - 1):
            frames.append(frame_for(side, OP_PING, b"mid"))
    recorder = Recorder(side)
    got = feed(recorder.reader, b"".join(frames), cuts, recorder.out)
    expected: list[t.Any] = [message]
    if len(pieces) > 1:
        expected.insert(0, (OP_PING, b"mid"))  # delivered as it arrives, mid-message
    assert got == expected
    assert not recorder.reader.in_message and not recorder.reader.buffer


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("side", SIDES)
def test_length_encodings_at_the_boundaries(side: str, n: int) -> None:
    data = bytes(range(256)) * (n // 256) + bytes(n % 256)
    frame = frame_for(side, OP_BINARY, data)
    header = 2 + (4 if side == SERVER else 0) + (0 if n < 126 else 2 if n < 65536 else 8)
    assert len(frame) == header + n
    assert feed(reader_for(side, max_message_size=None), frame, []) == [data]


@given(data=st.binary(max_size=200), key=st.binary(min_size=4, max_size=4))
def test_mask_is_a_bytewise_xor_and_its_own_inverse(data: bytes, key: bytes) -> None:
    assert mask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert mask(mask(data, key), key) == data


def test_accept_key_matches_rfc_6455_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# --- close frames -------------------------------------------------------------------------


@given(code=st.one_of(st.integers(1000, 1003), st.integers(1007, 1014),
                      st.integers(3000, 4999)), reason=st.text(max_size=200))
def test_close_payload_round_trips_and_fits_a_control_frame(code: int, reason: str) -> None:
    payload = close_payload(code, reason)
    assert len(payload) <= 125
    got_code, got_reason = parse_close(payload)
    assert got_code == code and reason.startswith(got_reason)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_reserved_close_codes_are_refused_both_ways(code: int) -> None:
    with pytest.raises(LocalProtocolError):
        close_payload(code)
    with pytest.raises(RemoteProtocolError) as info:
        parse_close(struct.pack("!H", code))
    assert info.value.close_code == closecodes.CLOSE_PROTOCOL_ERROR


def test_close_frame_edge_cases() -> None:
    assert parse_close(b"") == (closecodes.CLOSE_NO_STATUS, "")
    with pytest.raises(RemoteProtocolError) as info:
        parse_close(b"\x03")
    assert info.value.close_code == 1002
    with pytest.raises(RemoteProtocolError) as info:
        parse_close(struct.pack("!H", 1000) + b"\xff")
    assert info.value.close_code == 1007


# --- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_oversized_message_is_refused_from_the_header(side: str) -> None:
    head = frame_for(side, OP_BINARY, b"x" * 2000)[:8]  # header only: no payload yet
    assert fail_code(side, head, max_message_size=1000) == closecodes.CLOSE_TOO_BIG


@quick
@given(side=st.sampled_from(SIDES), sizes=st.lists(st.integers(0, 400), min_size=2,
                                                   max_size=6))
def test_the_limit_counts_all_fragments(side: str, sizes: list[int]) -> None:
    limit = 600
    frames = b"".join(frame_for(side, OP_BINARY if i == 0 else OP_CONT, b"y" * n,
                                fin=i == len(sizes) - 1) for i, n in enumerate(sizes))
    reader = reader_for(side, max_message_size=limit)
    reader.buffer += frames
    if sum(sizes) > limit:
        with pytest.raises(RemoteProtocolError) as info:
            reader.next()
        assert info.value.close_code == closecodes.CLOSE_TOO_BIG
    else:
        assert reader.next() == b"y" * sum(sizes)


# --- invalid input ------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("case, code", [
    ("wrong masking", 1002),
    ("reserved bits", 1002),
    ("reserved opcode", 1002),
    ("long control frame", 1002),
    ("fragmented control frame", 1002),
    ("continuation without a start", 1002),
    ("new message inside a fragmented one", 1002),
    ("top bit of the 64-bit length", 1002),
    ("invalid UTF-8", 1007),
    ("invalid UTF-8 in a fragment", 1007),
])
def test_invalid_frames_fail_with_the_right_close_code(side: str, case: str, code: int) -> None:
    f = lambda op, payload, fin=True: frame_for(side, op, payload, fin=fin)  # noqa: E731
    other = CLIENT if side == SERVER else SERVER
    data = {
        "wrong masking": frame_for(other, OP_TEXT, b"hi"),
        "reserved bits": bytes([f(OP_TEXT, b"x")[0] | 0x40]) + f(OP_TEXT, b"x")[1:],
        "reserved opcode": f(0x3, b"x"),
        "long control frame": f(OP_PING, b"p" * 126),
        "fragmented control frame": f(OP_PING, b"p", fin=False),
        "continuation without a start": f(OP_CONT, b"x"),
        "new message inside a fragmented one": f(OP_TEXT, b"a", fin=False) + f(OP_TEXT, b"b"),
        "top bit of the 64-bit length": bytes([0x82, 127 | (0x80 if side == SERVER else 0)])
        + struct.pack("!Q", 1 << 63) + (KEY if side == SERVER else b""),
        "invalid UTF-8": f(OP_TEXT, b"ok \xff\xfe"),
        "invalid UTF-8 in a fragment": f(OP_TEXT, b"a\xe2\x82", fin=False) + f(OP_CONT, b"("),
    }[case]
    assert fail_code(side, data) == code


@settings(max_examples=400, deadline=None)
@given(side=st.sampled_from(SIDES), junk=st.binary(max_size=300))
def test_arbitrary_bytes_give_frames_or_a_protocol_error(side: str, junk: bytes) -> None:
    recorder = Recorder(side, max_message_size=4096)
    recorder.reader.buffer += junk
    try:
        while (item := recorder.reader.next()) is not None:
            assert isinstance(item, (str, bytes))
        for item in recorder.out:
            opcode, payload = item
            assert opcode in (OP_CLOSE, OP_PING, OP_PONG)
            assert isinstance(payload, bytes) and len(payload) <= 125
    except RemoteProtocolError as exc:
        assert exc.close_code in (1002, 1007, 1009)


def test_a_partial_frame_waits_for_more_bytes() -> None:
    frame = frame_for(SERVER, OP_TEXT, "héllo".encode())
    reader = reader_for(SERVER)
    for i in range(len(frame) - 1):
        reader.buffer += frame[i:i + 1]
        assert reader.next() is None
    reader.buffer += frame[-1:]
    assert reader.next() == "héllo"


def test_side_and_mask_key_are_checked() -> None:
    with pytest.raises(LocalProtocolError):
        reader_for("peer")
    with pytest.raises(LocalProtocolError):
        encode_frame(OP_TEXT, b"x", b"abc")
