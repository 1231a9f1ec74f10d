"""Packers turn envelopes into text or bytes and back.

A packer is anything with the :class:`Packer` shape. Its ``binary`` flag decides the frame
type: text packers produce ``str`` (WebSocket text frames), binary packers produce ``bytes``
(binary frames). Ajax bodies are the same text (UTF-8) or bytes; the server labels its
answers with the packer's ``content_type`` (:func:`content_type_of`: ``application/json;
charset=utf-8`` for JSON, ``application/msgpack`` for msgpack). The server does not read a
request's content type, except that a form (``application/x-www-form-urlencoded``) is
Sente's ``ppstr`` form. Both ends must use the same packer. ``unpack`` raises
:class:`RemoteProtocolError` on bad input so the server can answer it with a 400 / close
1007 instead of a traceback.
"""
from __future__ import annotations

import json
import json.scanner
import typing as t

import msgpack

from ..exceptions import PackError, RemoteProtocolError


@t.runtime_checkable
class Packer(t.Protocol):
    """The packer interface (Sente's IPacker2, synchronous).

    A packer may also have a ``content_type`` attribute: the media type the server labels
    its Ajax answers with. It is optional, so that packers written before it still are
    packers; without it the server uses ``DEFAULT_CONTENT_TYPES`` for the packer's
    ``binary`` (:func:`~flask_sente.protocol.packers.content_type_of`). Set it when the
    default does not name your format (``"application/transit+json"``, ``"application/cbor"``).
    """

    #: A short name, sent by clients so a mismatch is reported clearly.
    name: str
    #: True when ``pack`` returns bytes.
    binary: bool

    def pack(self, value: t.Any) -> str | bytes:
        """Encode a value; raise PackError if it cannot be encoded."""

    def unpack(self, data: str | bytes) -> t.Any:
        """Decode a value; raise RemoteProtocolError if ``data`` is malformed."""


def _not_serializable(value: t.Any) -> t.Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class JsonPacker:
    """Compact JSON (the default): readable in devtools, native in browsers."""

    name = "json"
    binary = False
    content_type = "application/json; charset=utf-8"

    def __init__(self) -> None:
        self._encode = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode
        # The C encoder behind JSONEncoder.encode, built once: encode() builds a new one per
        # call, which costs as much as encoding a small message. Same output and errors.
        make = getattr(json.encoder, "c_make_encoder", None)
        self._markers: dict[int, t.Any] = {}  # cycle detection, as check_circular=True
        self._c_encode = None if make is None else make(
            self._markers, _not_serializable, json.encoder.encode_basestring, None, ":", ",",
            False, False, False)
        decoder = json.JSONDecoder()
        self._decode = decoder.decode
        # The decoder's own scanner, called directly: ``decode`` wraps it in two Python
        # calls and two regex matches, as much as scanning a small message. A message that
        # is one value from its first character to its last (what clients send) is taken
        # as is; anything else goes to ``decode``, whose answer (or error) counts.
        # (typeshed types make_scanner as a class taking a scanner context, not a decoder)
        make_scanner: t.Any = json.scanner.make_scanner
        self._scan: t.Callable[[str, int], tuple[t.Any, int]] = make_scanner(decoder)

    def pack(self, value: t.Any) -> str:
        try:
            if self._c_encode is not None and type(value) is list:
                return "".join(self._c_encode(value, 0))
            return self._encode(value)
        except (TypeError, ValueError) as exc:
            self._markers.clear()  # an encode that failed half-way leaves entries behind
            raise PackError(f"cannot pack as JSON: {exc}") from exc

    def unpack(self, data: str | bytes) -> t.Any:
        try:
            text = data if isinstance(data, str) else bytes(data).decode("utf-8")
            try:
                value, end = self._scan(text, 0)
            except StopIteration:  # leading whitespace, or no value at all
                return self._decode(text)
            if end != len(text):  # trailing whitespace or extra data
                return self._decode(text)
            return value
        except (ValueError, UnicodeDecodeError) as exc:
            raise RemoteProtocolError(f"malformed JSON: {exc}") from exc


class MsgpackPacker:
    """MessagePack: smaller and faster, carries bytes natively; binary frames."""

    name = "msgpack"
    binary = True
    content_type = "application/msgpack"

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def pack(self, value: t.Any) -> bytes:
        try:
            packed: bytes = self._packer.pack(value)
            return packed
        except (TypeError, ValueError, OverflowError) as exc:
            # A failed pack can leave a partial buffer behind; start clean next time.
            self._packer.reset()
            raise PackError(f"cannot pack as msgpack: {exc}") from exc

    def unpack(self, data: str | bytes) -> t.Any:
        if isinstance(data, str):
            raise RemoteProtocolError("msgpack data must arrive as bytes (a binary frame)")
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise RemoteProtocolError(f"malformed msgpack: {exc}") from exc


#: The content type of a packer without ``content_type``, by its ``binary`` flag: what the
#: server has always labelled every text and binary packer's answers with.
DEFAULT_CONTENT_TYPES: t.Mapping[bool, str] = {False: "application/json; charset=utf-8",
                                               True: "application/msgpack"}


def content_type_of(packer: Packer) -> str:
    """The media type of ``packer``'s Ajax answers: its ``content_type`` attribute, else
    ``DEFAULT_CONTENT_TYPES`` for its ``binary`` flag."""
    named = getattr(packer, "content_type", None)
    if isinstance(named, str) and named:
        return named
    return DEFAULT_CONTENT_TYPES[bool(packer.binary)]


_BUILT_IN: dict[str, t.Callable[[], Packer]] = {"json": JsonPacker, "msgpack": MsgpackPacker}


def get_packer(spec: str | Packer) -> Packer:
    """A packer from a name (``"json"``, ``"msgpack"``) or a ready packer object."""
    if isinstance(spec, str):
        try:
            return _BUILT_IN[spec]()
        except KeyError:
            raise PackError(
                f"unknown packer {spec!r}; use 'json', 'msgpack' or a Packer object"
            ) from None
    if isinstance(spec, Packer):
        return spec
    raise PackError(f"{spec!r} is not a packer: it needs name, binary, pack() and unpack()")
