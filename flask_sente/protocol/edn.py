r"""EDN, the text Sente's own Clojure and ClojureScript clients speak, and :class:`EdnPacker`.

An unmodified Sente client (v1.21) packs its envelopes as EDN text:
``[[:test/echo {:n 1, :s "héllo"}] "a6f680"]``. This module reads and writes that text, so
a server can take such clients: ``EdnPacker`` has the :class:`~.packers.Packer` shape.

Why not a library: ``edn_format`` (PyPI, Apache-2.0) was measured on the recorded Sente
traces. It is built on PLY and took about 660 µs to read the trace's echo frame
(``[[:test/echo {:n 1, :s "héllo", :kw :a/b, :v [1 2.5 nil true]}] "a6f680"]``) and 36 µs
to write it; this module takes about 18 µs and 4 µs (the JSON packer: 1.2 and 1.7 µs). It
also writes maps without the ``, `` between entries that Clojure prints, raises
``NotImplementedError`` on an unknown tag instead of its own error, and brings three runtime
dependencies (ply, pyRFC3339, pytz). Sente needs a small
part of EDN, and the server needs exact control of both the output and the errors, so the
reader and writer are here, standard library only.

The mapping
-----------

====================  =========================================  ============================
EDN                   read as                                    written from
====================  =========================================  ============================
``nil``               ``None``                                   ``None``
``true`` ``false``    ``True`` ``False``                         ``bool``
``42`` ``42N``        ``int`` (any size)                         ``int`` (``42``)
``2.5`` ``1e3``       ``float``                                  ``float`` (its ``repr``)
``##Inf`` ``##NaN``   ``inf``, ``-inf`` (``##-Inf``), ``nan``    infinite and NaN ``float``
``1.50M``             ``Decimal('1.50')`` (exact)                finite ``Decimal``
``"text"``            ``str``                                    ``str`` and subclasses [1]_
``\a`` ``\space``     :class:`Char`, a 1-character ``str``       :class:`Char`
``:a/b``, a value     :class:`Keyword`, a ``str`` == ``"a/b"``   :class:`Keyword`
``:a/b``, a map key   ``"a/b"``, or :class:`Keyword` [2]_        ``str`` or Keyword key [2]_
``sym`` ``a/b``       :class:`Symbol`, a ``str``                 :class:`Symbol`
``[1 2]``             ``list``                                   ``list``, ``tuple``
``(1 2)``             :class:`List`, a ``tuple``                 :class:`List`
``{:a 1, :b 2}``      ``dict`` (a vector key: a ``tuple``)       ``dict``
``#{1 2}``            ``frozenset``                              ``set``, ``frozenset``
``#inst "…"``         aware ``datetime`` [3]_                    aware ``datetime`` [3]_
``#uuid "…"``         ``uuid.UUID``                              ``uuid.UUID``
``#my/tag x``         an error, or :class:`Tagged` [4]_          :class:`Tagged`
``#:ns{:a 1}``        ``{:ns/a 1}`` (``:_/b`` -> ``:b``)         (never written)
====================  =========================================  ============================

.. [1] Other than :class:`Keyword`, :class:`Symbol` and :class:`Char`, which are strs too.
.. [2] ``keys="strings"`` (the default): a keyword key reads as a plain ``str``; a ``str``
   key is written as a keyword when it is keyword-shaped (``"text"`` -> ``:text``, ``"a/b"``
   -> ``:a/b``), else as a string (``"a b"``). So ``data["text"]`` works here and
   ``(:text data)`` in Clojure. ``keys="keywords"``: keyword keys read as
   :class:`Keyword`, and ``str`` keys are always written as strings. Either way a
   :class:`Keyword` key is written as a keyword.
.. [3] Read with its offset (UTC when none), to the microsecond (finer digits dropped);
   written in UTC as Clojure prints dates: ``#inst "2026-12-07T14:42:34.123-00:00"``
   (6 fraction digits when the microseconds need them).
.. [4] ``unknown_tags="error"`` (the default, as Sente's server): a tag other than
   ``#inst`` and ``#uuid`` is a RemoteProtocolError. ``unknown_tags="keep"``: it reads as
   ``Tagged(Symbol("my/tag"), x)``.

Event ids: an event is the vector ``[:ns/name data]`` (or ``[:ns/name]``). The packer cannot
tell events from other vectors, so the wire layer calls :func:`event_from_edn` (-> the
``("ns/name", data)`` pair the rest of flask_sente uses) and :func:`event_to_edn` (-> the
vector with a :class:`Keyword` id).

Not written (PackError): ``bytes``/``bytearray`` (EDN has no byte type: send base64 text or
use the msgpack packer), naive ``datetime`` (no instant: give it a tzinfo), ``date``,
``Decimal`` NaN/Infinity, ints of more than 4300 digits, anything nested deeper than
:data:`MAX_DEPTH` or circular, and any other type.

Consequences of keywords being strings (so that ``data["kw"] == "a/b"`` and
``event_error`` work unchanged): ``:a``, ``"a"`` and ``a`` are the same map key or set
element in Python, as are ``1``, ``1.0`` and ``true``. A map or set that holds two such is
refused as a duplicate (Clojure's reader refuses true duplicates likewise). With
``keys="strings"`` a string key that is keyword-shaped (``{"text" 1}``) comes back as a
keyword (``{:text 1}``).

Read errors are :class:`~flask_sente.exceptions.RemoteProtocolError` with the position (in
characters) and what is wrong; nesting past :data:`MAX_DEPTH` is one of them (the reader keeps
its own stack: no RecursionError). Not supported (refused clearly): metadata ``^``,
Clojure-only number forms (``0x1F``, ``017``, ``2r101``, ``1/2``), octal string escapes.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import math
import re
import typing as t
import uuid

from ..exceptions import ConfigError, PackError, RemoteProtocolError
from .events import event_error

__all__ = ["MAX_DEPTH", "Char", "EdnPacker", "Keyword", "List", "Symbol", "Tagged", "dumps",
           "event_from_edn", "event_to_edn", "loads"]

#: The deepest nesting read or written (collections, tags and ``#_`` count). A frame nested
#: deeper is refused; Sente's envelopes are 3 or 4 levels deep.
MAX_DEPTH = 500

KeysOption = t.Literal["strings", "keywords"]
TagsOption = t.Literal["error", "keep"]

# A token's characters: anything but whitespace, commas and the characters that end a token
# in Clojure's EDN reader.
_TOKCH = r'[^\s,;"()\[\]{}\\^]'
_NAME_CHARS = re.compile(_TOKCH + "+")
_DIGITS = frozenset("0123456789")
_T = t.TypeVar("_T", bound="_Named")
_C = t.TypeVar("_C", bound="Char")


def _name_error(text: str, *, keyword: bool) -> str | None:
    """Why ``text`` is no keyword name (``a``, ``a/b``, after the colon) or symbol, else
    None. As permissive as Clojure's reader, so whatever it reads we read; what we write
    from these reads back as the same keyword or symbol."""
    if not text:
        return "empty name"
    if _NAME_CHARS.fullmatch(text) is None:
        return "whitespace or a delimiter in the name"
    if text.endswith(":") or "::" in text or (keyword and text[0] == ":"):
        return "'::' or a trailing ':'"
    if not keyword:
        reason = _symbol_error(text)
        if reason is not None:
            return reason
    if text == "/":
        return None
    slash = text.find("/")
    if slash < 0:
        return None
    name = text[slash + 1:]
    if slash == 0 or not name:
        return "empty namespace or name"
    if name[0] in _DIGITS:
        return "the name after the namespace starts with a digit"
    if "/" in name and name != "/":
        return "more than one '/'"
    return None


def _symbol_error(text: str) -> str | None:
    """What a symbol may not be besides what a keyword may not be."""
    if text in _CONSTANTS:
        return f"{text} is not a symbol"
    if text[0] in _DIGITS or (text[0] in "+-" and len(text) > 1 and text[1] in _DIGITS):
        return "a symbol cannot look like a number"
    if text[0] == "#":
        return "a symbol cannot start with #"
    return None


class _Named(str):
    """A keyword's or symbol's text, ``"ns/name"`` or ``"name"``: a ``str``."""

    __slots__ = ()
    _is_keyword: t.ClassVar[bool]

    def __new__(cls: type[_T], text: str) -> _T:
        if not isinstance(text, str):
            raise TypeError(f"{cls.__name__} takes a str, not {type(text).__name__}")
        reason = _name_error(text, keyword=cls._is_keyword)
        if reason is not None:
            raise ValueError(f"{text!r} is no EDN {cls.__name__.lower()}: {reason}")
        return str.__new__(cls, text)

    @property
    def namespace(self) -> str | None:
        """The part before the ``/``; None when there is none (``:a``, ``:/``)."""
        slash = self.find("/")
        return None if slash <= 0 else str.__str__(self[:slash])

    @property
    def name(self) -> str:
        """The part after the ``/`` (all of it without a namespace)."""
        slash = self.find("/")
        return str.__str__(self if slash <= 0 else self[slash + 1:])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"

    def __reduce__(self) -> tuple[t.Any, ...]:
        return (type(self), (str.__str__(self),))


class Keyword(_Named):
    """An EDN keyword, ``:ns/name``, held as its text without the colon.

    A ``str`` subclass: hashable, ordered, and equal to its text (``Keyword("a/b") ==
    "a/b"``), so code written for JSON clients, which send ``"a/b"``, works unchanged; tell it
    from a string with ``isinstance(x, Keyword)``. It is written back as a keyword."""

    __slots__ = ()
    _is_keyword = True


class Symbol(_Named):
    """An EDN symbol (``foo``, ``my.ns/bar``), a ``str`` written back without quotes."""

    __slots__ = ()
    _is_keyword = False


_CHAR_NAMES = {"newline": "\n", "return": "\r", "space": " ", "tab": "\t",
               "formfeed": "\f", "backspace": "\b"}
_CHAR_TEXT = {v: "\\" + k for k, v in _CHAR_NAMES.items()}


class Char(str):
    """An EDN character (``\\a``, ``\\newline``, ``\\u00e9``): a one-character ``str`` of the
    Basic Multilingual Plane (a Java/JavaScript char), written back as a character."""

    __slots__ = ()

    def __new__(cls: type[_C], char: str) -> _C:
        if not isinstance(char, str) or len(char) != 1 or ord(char) > 0xFFFF \
                or 0xD800 <= ord(char) <= 0xDFFF:
            raise ValueError(f"{char!r} is no EDN character: one BMP character, no surrogate")
        return str.__new__(cls, char)

    def __repr__(self) -> str:
        return f"Char({str.__repr__(self)})"

    def __reduce__(self) -> tuple[t.Any, ...]:
        return (Char, (str.__str__(self),))


class List(tuple[t.Any, ...]):
    """An EDN list, ``(1 2)``: a ``tuple`` (hashable when its items are), written back in
    parentheses. Vectors read as ``list``; a ``tuple`` that is not a ``List`` writes as a
    vector."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"List({tuple.__repr__(self)})"


@dataclasses.dataclass(frozen=True)
class Tagged:
    """A tagged literal ``#tag value`` with a tag this module has no reader for: read only
    with ``unknown_tags="keep"``; always written as ``#tag value``."""

    #: The tag's symbol (``my/tag`` for ``#my/tag``); a str given is made a Symbol.
    tag: str
    value: t.Any

    def __post_init__(self) -> None:
        tag = self.tag if isinstance(self.tag, Symbol) else Symbol(self.tag)
        if not tag[:1].isalpha():
            raise ValueError(f"tag {str(tag)!r} must start with a letter")
        object.__setattr__(self, "tag", tag)


# ---------------------------------------------------------------------------------------
# Reading

_SKIP = r'(?:[\s,]|;[^\n]*(?=\n|\Z))*'  # whitespace, commas, comments (unambiguous: linear)
_TOKEN = re.compile(_SKIP + r"""(?:
     (?P<s>"[^"\\]*(?:\\.[^"\\]*)*")
    |(?P<t>[^\s,;"()\[\]{}\\^\#]""" + _TOKCH + r"""*)
    |(?P<o>[\[({]|\#\{)
    |(?P<c>[\])}])
    |(?P<ch>\\\S""" + _TOKCH + r"""*)
    |(?P<disc>\#_)
    |(?P<tag>\#[^\W\d_]""" + _TOKCH + r"""*)
    |(?P<sv>\#\#""" + _TOKCH + r"""*)
    |(?P<nsm>\#:""" + _TOKCH + r"""+[\s,]*\{)
    )""", re.X | re.S)
_SKIP_ONLY = re.compile(_SKIP, re.S)
_INT = re.compile(r"[+-]?(?:0|[1-9][0-9]*)N?")
_FLOAT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)M?"
                    r"|[+-]?[0-9]+M")
_STR_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_STR_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_INST = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})(?:T([0-9]{2})(?::([0-9]{2})"
                   r"(?::([0-9]{2})(?:\.([0-9]+))?)?)?)?)?)?(?:Z|([-+])([0-9]{2}):([0-9]{2}))?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_SYMBOLIC = {"##Inf": math.inf, "##-Inf": -math.inf, "##NaN": math.nan}
_CONSTANTS: dict[str, t.Any] = {"nil": None, "true": True, "false": False}

# Frame kinds of the reader's stack. Collections first: a kind <= _NSMAP takes items; a
# tag or a discard takes the one value after it.
_VEC, _LIST, _MAP, _SET, _NSMAP, _TAG, _DISCARD = range(7)
_OPENERS = {"[": _VEC, "(": _LIST, "{": _MAP, "#{": _SET}
_KIND_TEXT = {_VEC: "[", _LIST: "(", _MAP: "{", _SET: "#{", _NSMAP: "#:{", _TAG: "a tag",
              _DISCARD: "#_"}
_KIND_CLOSER = {_VEC: "]", _LIST: ")", _MAP: "}", _SET: "}", _NSMAP: "}"}

# Keywords read before, by name (short names only, a bounded number): reading one is then a
# dict lookup, and equal keywords are one object.
_KEYWORDS: dict[str, Keyword] = {}
_CACHE_MAX_ENTRIES = 4096
_CACHE_MAX_LEN = 64


class _Malformed(Exception):
    """Raised inside the reader; ``loads`` turns it into a RemoteProtocolError."""

    def __init__(self, pos: int, what: str) -> None:
        super().__init__(pos, what)
        self.pos = pos
        self.what = what


def _keyword(name: str, pos: int) -> Keyword:
    kw = _KEYWORDS.get(name)
    if kw is None:
        reason = _name_error(name, keyword=True)
        if reason is not None:
            raise _Malformed(pos, f"bad keyword :{name} ({reason})")
        kw = str.__new__(Keyword, name)
        if len(name) <= _CACHE_MAX_LEN and len(_KEYWORDS) < _CACHE_MAX_ENTRIES:
            _KEYWORDS[name] = kw
    return kw


def _number(tok: str, pos: int) -> t.Any:
    try:
        if _INT.fullmatch(tok):
            return int(tok[:-1] if tok[-1] == "N" else tok)
        if _FLOAT.fullmatch(tok):
            if tok[-1] == "M":
                return decimal.Decimal(tok[:-1])
            return float(tok)
    except (ValueError, decimal.DecimalException) as exc:  # ints past 4300 digits
        raise _Malformed(pos, f"number {tok[:40]!r} cannot be read: {exc}") from None
    raise _Malformed(pos, f"invalid number {tok[:40]!r}")


def _string(raw: str, pos: int) -> str:
    body = raw[1:-1]
    if "\\" not in body:
        return body

    def unescape(m: re.Match[str]) -> str:
        code = m.group(1)
        if len(code) == 5:
            return chr(int(code[1:], 16))
        try:
            return _STR_ESCAPES[code]
        except KeyError:
            raise _Malformed(pos, f"bad string escape \\{code[:1]}") from None

    text = _STR_ESCAPE.sub(unescape, body)
    if "\\u" in body and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        # \ud83d\ude00 (Java's UTF-16) is one character in Python; lone halves stay.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return text


def _char(tok: str, pos: int) -> Char:
    text = tok[1:]
    if len(text) == 1:
        code = ord(text)
    elif text in _CHAR_NAMES:
        code = ord(_CHAR_NAMES[text])
    elif re.fullmatch(r"u[0-9a-fA-F]{4}", text):
        code = int(text[1:], 16)
    elif re.fullmatch(r"o[0-7]{1,3}", text) and int(text[1:], 8) <= 0o377:
        code = int(text[1:], 8)
    else:
        raise _Malformed(pos, f"unsupported character {tok[:40]}")
    if code > 0xFFFF or 0xD800 <= code <= 0xDFFF:
        raise _Malformed(pos, f"invalid character {tok[:40]} (one BMP char, no surrogate)")
    return str.__new__(Char, chr(code))


def _inst(value: t.Any, pos: int) -> _dt.datetime:
    m = _INST.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise _Malformed(pos, f"#inst needs an RFC 3339 timestamp string, not {value!r:.60}")
    year, month, day, hour, minute, second, frac, sign, off_h, off_m = m.groups()
    try:
        tz = _dt.timezone.utc
        if sign is not None and (off_h, off_m) != ("00", "00"):
            offset = _dt.timedelta(hours=int(off_h), minutes=int(off_m))
            tz = _dt.timezone(-offset if sign == "-" else offset)
        return _dt.datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                            int(minute or 0), int(second or 0),
                            int((frac or "0")[:6].ljust(6, "0")), tzinfo=tz)
    except ValueError as exc:
        raise _Malformed(pos, f"#inst {value!r}: {exc}") from None


def _uuid(value: t.Any, pos: int) -> uuid.UUID:
    if not isinstance(value, str) or _UUID.fullmatch(value) is None:
        raise _Malformed(pos, f"#uuid needs a canonical UUID string, not {value!r:.60}")
    return uuid.UUID(value)


def _freeze(value: t.Any) -> t.Any:
    """A vector used as a map key or set element, as a (hashable) tuple; also inside lists
    and tags."""
    if type(value) is list:
        return tuple(_freeze(v) for v in value)
    if type(value) is List:
        return List(_freeze(v) for v in value)
    if type(value) is Tagged:
        return Tagged(value.tag, _freeze(value.value))
    return value


def _collection(kind: int, items: list[t.Any], pos: int, extra: t.Any,
                keys_as_str: bool) -> t.Any:
    """The value of a finished collection frame."""
    if kind == _VEC:
        return items
    if kind == _LIST:
        return List(items)
    if kind == _SET:
        try:
            made = frozenset(items)
        except TypeError:
            try:
                made = frozenset(_freeze(v) for v in items)
            except TypeError:
                raise _Malformed(pos, "a set element holds a map: not hashable in Python"
                                 ) from None
        if len(made) != len(items):
            raise _Malformed(pos, "duplicate set element (in Python :a, \"a\" and a are "
                                  "equal, as are 1, 1.0 and true)")
        return made
    if len(items) % 2:
        raise _Malformed(pos, "a map needs an even number of forms (a key without a value)")
    if kind == _NSMAP:
        items = _namespaced(items, extra, keys_as_str)
    it = iter(items)
    try:
        made_map = dict(zip(it, it, strict=False))
    except TypeError:
        it = iter(items)
        try:
            made_map = {_freeze(k): v for k, v in zip(it, it, strict=False)}
        except TypeError:
            raise _Malformed(pos, "a map key holds a map: not hashable in Python") from None
    if len(made_map) * 2 != len(items):
        raise _Malformed(pos, "duplicate map key (in Python :a, \"a\" and a are equal, "
                              "as are 1, 1.0 and true)")
    return made_map


def _namespaced(items: list[t.Any], ns: str, keys_as_str: bool) -> list[t.Any]:
    """``#:ns{:a 1, :_/b 2, "c" 3}``'s items: ``:ns/a``, ``:b``, ``"c"``."""
    out = list(items)
    for i in range(0, len(out), 2):
        key = out[i]
        if isinstance(key, _Named):
            cls = type(key)
            if key.namespace is None and key != "/":
                key = str.__new__(cls, f"{ns}/{key}")
            elif key.namespace == "_":
                key = str.__new__(cls, key.name)
            if keys_as_str and cls is Keyword:
                key = str.__str__(key)
            out[i] = key
    return out


def _unexpected(text: str, pos: int, stack: list[tuple[int, t.Any, int, t.Any]]) -> _Malformed:
    """What is wrong where no token could be read."""
    at = _SKIP_ONLY.match(text, pos)
    pos = at.end() if at is not None else pos
    if pos >= len(text):
        if stack:
            kind, _items, start, _extra = stack[-1]
            return _Malformed(pos, f"unexpected end of input: {_KIND_TEXT[kind]} at position "
                                   f"{start} is not finished")
        return _Malformed(pos, "no value: the input is empty, or only comments and #_ forms")
    c = text[pos]
    if c == '"':
        return _Malformed(pos, "unterminated string")
    if c == "\\":
        return _Malformed(pos, "a backslash must be followed by a character")
    if c == "^":
        return _Malformed(pos, "metadata (^) is not supported")
    if text.startswith("#:", pos):
        return _Malformed(pos, "#:ns must be followed by a map")
    if c == "#":
        return _Malformed(pos, f"unsupported dispatch {text[pos:pos + 2]!r}")
    return _Malformed(pos, f"unexpected character {c!r}")


def _read(text: str, keys_as_str: bool, keep_tags: bool) -> t.Any:  # noqa: C901
    # (one loop over the token kinds: split up, each token would cost a call more)
    """One value from ``text`` and nothing else but whitespace and comments.

    Iterative: the stack holds ``(kind, items, start position, extra)`` frames, so nesting
    costs no Python recursion and is bounded by MAX_DEPTH."""
    match = _TOKEN.match
    stack: list[tuple[int, t.Any, int, t.Any]] = []
    pos = 0
    while True:
        m = match(text, pos)
        if m is None:
            raise _unexpected(text, pos, stack)
        group: str = m.lastgroup  # type: ignore[assignment]  # (a match has a group)
        start, pos = m.span(group)  # a token ends its match
        tok = text[start:pos]
        value: t.Any
        if group == "t":
            c = tok[0]
            if c == ":":
                name = tok[1:]
                value = _KEYWORDS.get(name) or _keyword(name, start)
                if keys_as_str and stack:
                    top = stack[-1]
                    if top[0] == _MAP and not len(top[1]) % 2:
                        value = name  # a map key: a plain str
            elif c in _DIGITS or (c in "+-" and len(tok) > 1 and tok[1] in _DIGITS):
                value = _number(tok, start)
            elif tok in _CONSTANTS:
                value = _CONSTANTS[tok]
            else:
                reason = _name_error(tok, keyword=False)
                if reason is not None:
                    raise _Malformed(start, f"bad symbol {tok[:40]} ({reason})")
                value = str.__new__(Symbol, tok)
        elif group == "s":
            value = _string(tok, start)
        elif group == "c":
            if not stack or stack[-1][0] > _NSMAP:
                what = (f"{_KIND_TEXT[stack[-1][0]]} at position {stack[-1][2]} needs a "
                        f"value first" if stack else "nothing to close")
                raise _Malformed(start, f"unexpected {tok}: {what}")
            kind, items, opened, extra = stack.pop()
            if _KIND_CLOSER[kind] != tok:
                raise _Malformed(start, f"unexpected {tok}: {_KIND_TEXT[kind]} at position "
                                        f"{opened} is closed by {_KIND_CLOSER[kind]}")
            value = _collection(kind, items, opened, extra, keys_as_str)
        elif group == "ch":
            value = _char(tok, start)
        elif group == "sv":
            if tok not in _SYMBOLIC:
                raise _Malformed(start, f"unknown symbolic value {tok[:40]}")
            value = _SYMBOLIC[tok]
        else:  # something opens: a collection, a tag, a discard
            if len(stack) >= MAX_DEPTH:
                raise _Malformed(start, f"nested deeper than {MAX_DEPTH} levels")
            if group == "o":
                stack.append((_OPENERS[tok], [], start, None))
            elif group == "disc":
                stack.append((_DISCARD, None, start, None))
            elif group == "tag":
                stack.append((_TAG, None, start, tok[1:]))
            else:  # nsm: #:ns{
                ns = t.cast("re.Match[str]", _NAME_CHARS.match(tok, 2)).group()
                if "/" in ns or _name_error(ns, keyword=True) is not None:
                    raise _Malformed(start, f"bad namespace in {tok[:40]}")
                stack.append((_NSMAP, [], start, ns))
            continue
        # Give the value to the frame above it, applying tags and discards.
        while True:
            if not stack:
                if _SKIP_ONLY.match(text, pos).end() == len(text):  # type: ignore[union-attr]
                    return value
                raise _Malformed(pos, "extra data after the value")
            top = stack[-1]
            if top[0] <= _NSMAP:
                top[1].append(value)
                break
            kind, items, opened, extra = stack.pop()
            if kind == _DISCARD:
                break
            value = _apply_tag(extra, value, opened, keep_tags)


def _apply_tag(tag: str, value: t.Any, pos: int, keep_tags: bool) -> t.Any:
    if tag == "inst":
        return _inst(value, pos)
    if tag == "uuid":
        return _uuid(value, pos)
    reason = _name_error(tag, keyword=False)
    if reason is not None:
        raise _Malformed(pos, f"bad tag #{tag[:40]} ({reason})")
    if not keep_tags:
        raise _Malformed(pos, f"unknown tag #{tag[:40]} (no reader for it)")
    return Tagged(str.__new__(Symbol, tag), value)


def _load(data: str | bytes, keys_as_str: bool, keep_tags: bool) -> t.Any:
    if not isinstance(data, str):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(f"malformed EDN: not UTF-8 ({exc})") from None
    try:
        return _read(data, keys_as_str, keep_tags)
    except _Malformed as exc:
        raise RemoteProtocolError(f"malformed EDN at position {exc.pos}: {exc.what}") from None


def loads(data: str | bytes, *, keys: KeysOption = "strings",
          unknown_tags: TagsOption = "error") -> t.Any:
    """The value of the EDN text ``data`` (str, or UTF-8 bytes).

    :param keys: ``"strings"``: keyword map keys read as plain ``str``; ``"keywords"``:
        as :class:`Keyword`.
    :param unknown_tags: ``"error"``: a tag other than ``#inst``/``#uuid`` is an error;
        ``"keep"``: it reads as :class:`Tagged`.
    :raises RemoteProtocolError: malformed or unsupported input, with its position.
    """
    _check_options(keys, unknown_tags)
    return _load(data, keys == "strings", unknown_tags == "keep")


# ---------------------------------------------------------------------------------------
# Writing

_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\\ud800-\udfff]')
_ESCAPED = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
# A str map key written as a keyword (keys="strings"): letters first, the characters both
# Clojure's and ClojureScript's readers take in a keyword, one optional namespace.
_SEGMENT = r"(?:[^\W\d]|[*+!\-?$%&=<>.])[\w*+!\-?$%&=<>.'#:]*"
_KEYABLE = re.compile(f"{_SEGMENT}(?:/{_SEGMENT})?")
# str key -> its text as a map key (keys="strings"): keyword or string; bounded like _KEYWORDS.
_KEY_TEXT: dict[str, str] = {}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    return _ESCAPED.get(c) or f"\\u{ord(c):04x}"


def _write_str(s: str) -> str:
    if _NEEDS_ESCAPE.search(s) is None:
        return '"' + s + '"'
    return '"' + _NEEDS_ESCAPE.sub(_escape_one, s) + '"'


def _key_text(key: str) -> str:
    text = _KEY_TEXT.get(key)
    if text is None:
        keyable = (_KEYABLE.fullmatch(key) is not None and not key.endswith(":")
                   and "::" not in key
                   and not (key[0] in "+-." and len(key) > 1 and key[1] in _DIGITS))
        text = ":" + key if keyable else _write_str(key)
        if len(key) <= _CACHE_MAX_LEN and len(_KEY_TEXT) < _CACHE_MAX_ENTRIES:
            _KEY_TEXT[key] = text
    return text


def _write_float(f: float) -> str:
    if f != f:
        return "##NaN"
    if f in (math.inf, -math.inf):
        return "##Inf" if f > 0 else "##-Inf"
    return float.__repr__(f)


def _write_char(c: str) -> str:
    named = _CHAR_TEXT.get(c)
    if named is not None:
        return named
    if c.isprintable() and not c.isspace():
        return "\\" + c
    return f"\\u{ord(c):04x}"


def _write_inst(d: _dt.datetime) -> str:
    if d.tzinfo is None or d.utcoffset() is None:
        raise PackError(f"cannot write a naive datetime ({d.isoformat()}) as an EDN #inst: "
                        f"it names no instant; give it a tzinfo (timezone.utc)")
    try:
        u = d.astimezone(_dt.timezone.utc)
    except OverflowError as exc:
        raise PackError(f"cannot write {d.isoformat()} as an EDN #inst: {exc}") from None
    frac = (f"{u.microsecond // 1000:03d}" if u.microsecond % 1000 == 0
            else f"{u.microsecond:06d}")
    return (f'#inst "{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:'
            f'{u.second:02d}.{frac}-00:00"')


def _write_decimal(d: decimal.Decimal) -> str:
    if not d.is_finite():
        raise PackError(f"cannot write Decimal {d} as EDN: a BigDecimal is finite")
    return str(d) + "M"


def _write(v: t.Any, out: list[str], strkeys: bool, depth: int) -> None:  # noqa: C901
    # (one function for every kind of value: a nesting level costs one Python frame, so
    # whatever the reader takes, MAX_DEPTH levels, is written back within the default
    # recursion limit; the exact types come first, the common case)
    """Append ``v``'s EDN text to ``out``."""
    tv = type(v)
    if tv is str:
        out.append(_write_str(v))
    elif tv is Keyword:
        out.append(":" + v)
    elif tv is int:
        out.append(int.__repr__(v))
    elif v is None:
        out.append("nil")
    elif tv is bool:
        out.append("true" if v else "false")
    elif tv is float:
        out.append(_write_float(v))
    else:
        if tv is dict or (tv is not list and tv is not tuple and isinstance(v, dict)):
            opener, closer, items = "{", "}", None
        elif tv is list or tv is tuple or (isinstance(v, (list, tuple)) and tv is not List):
            opener, closer, items = "[", "]", v
        elif tv is List:
            opener, closer, items = "(", ")", v
        elif isinstance(v, (set, frozenset)):
            opener, closer, items = "#{", "}", v
        elif tv is Tagged:
            opener, closer, items = f"#{v.tag} ", "", (v.value,)
        else:
            out.append(_write_atom(v))
            return
        if depth >= MAX_DEPTH:
            raise PackError(f"cannot write as EDN: nested deeper than {MAX_DEPTH} levels "
                            f"(or circular)")
        out.append(opener)
        first = True
        if items is None:  # a map
            for key, value in v.items():
                if first:
                    first = False
                else:
                    out.append(", ")
                if type(key) is str or (isinstance(key, str)
                                        and not isinstance(key, (_Named, Char))):
                    key = str.__str__(key)
                    out.append(_key_text(key) if strkeys else _write_str(key))
                else:
                    _write(key, out, strkeys, depth + 1)
                out.append(" ")
                _write(value, out, strkeys, depth + 1)
        else:
            for item in items:
                if first:
                    first = False
                else:
                    out.append(" ")
                _write(item, out, strkeys, depth + 1)
        out.append(closer)


def _write_atom(v: t.Any) -> str:
    """The text of a value that holds no other values, other than the exact types
    ``_write`` takes itself: subclasses, and the rarer types."""
    if isinstance(v, _Named):
        return ":" + v if isinstance(v, Keyword) else str.__str__(v)
    if isinstance(v, Char):
        return _write_char(v)
    if isinstance(v, str):
        return _write_str(str.__str__(v))
    if isinstance(v, int):  # bool cannot be subclassed; IntEnum and the like
        return int.__repr__(v)
    if isinstance(v, float):
        return _write_float(v)
    if isinstance(v, decimal.Decimal):
        return _write_decimal(v)
    if isinstance(v, _dt.datetime):
        return _write_inst(v)
    if isinstance(v, uuid.UUID):
        return f'#uuid "{v}"'
    if isinstance(v, (bytes, bytearray, memoryview)):
        raise PackError("cannot write bytes as EDN (it has no byte type): send them as "
                        "base64 text, or use the msgpack packer")
    raise PackError(f"cannot write a {type(v).__name__} as EDN")


def _dump(value: t.Any, strkeys: bool) -> str:
    out: list[str] = []
    try:
        _write(value, out, strkeys, 0)
    except PackError:
        raise
    except RecursionError:
        raise PackError("cannot write as EDN: nested too deep (or circular)") from None
    except ValueError as exc:  # int.__repr__ of an int past 4300 digits
        raise PackError(f"cannot write as EDN: {exc}") from None
    return "".join(out)


def dumps(value: t.Any, *, keys: KeysOption = "strings") -> str:
    """The EDN text of ``value``, as Clojure prints it (``{:a 1, :b [1 2]}``).

    :param keys: ``"strings"``: a ``str`` map key is written as a keyword when it is
        keyword-shaped (``"text"`` -> ``:text``, ``"a/b"`` -> ``:a/b``), else as a string;
        ``"keywords"``: ``str`` keys stay strings (only :class:`Keyword` keys are keywords).
    :raises PackError: a value EDN cannot carry (see the module's table).
    """
    _check_options(keys, "error")
    return _dump(value, keys == "strings")


def _check_options(keys: str, unknown_tags: str) -> None:
    if keys not in ("strings", "keywords"):
        raise ConfigError(f"keys={keys!r}: use 'strings' or 'keywords'")
    if unknown_tags not in ("error", "keep"):
        raise ConfigError(f"unknown_tags={unknown_tags!r}: use 'error' or 'keep'")


# ---------------------------------------------------------------------------------------
# Events and the packer


def event_from_edn(vector: t.Any) -> tuple[str, t.Any]:
    """``[:ns/name data]`` (or ``[:ns/name]``) as read -> ``("ns/name", data)`` (data None
    for a one-element event), the event flask_sente's other layers use.

    :raises RemoteProtocolError: not an event, with Sente's reason (``wrong-type``,
        ``wrong-length``, ``wrong-id-type``: the id is no keyword, ``unnamespaced-id``).
    """
    reason = event_error(vector)
    if reason is None and not isinstance(vector[0], Keyword):
        reason = "wrong-id-type"
    if reason is not None:
        raise RemoteProtocolError(f"bad EDN event ({reason}): {vector!r:.100}; an event is "
                                  f"[:ns/name] or [:ns/name data]")
    return (str.__str__(vector[0]), vector[1] if len(vector) == 2 else None)


def event_to_edn(event: t.Sequence[t.Any]) -> list[t.Any]:
    """``("ns/name", data)`` -> ``[Keyword("ns/name"), data]``; ``("ns/name",)`` ->
    ``[Keyword("ns/name")]`` (Sente's ``[:chsk/ws-pong]``).

    :raises PackError: not an event, or an id that is no keyword name.
    """
    reason = event_error(event)
    if reason is not None:
        raise PackError(f"not an event ({reason}): {event!r:.100}")
    try:
        event_id = Keyword(event[0])
    except ValueError as exc:
        raise PackError(f"event id {event[0]!r} cannot be an EDN keyword: {exc}") from None
    return [event_id, *event[1:]]


class EdnPacker:
    """EDN text, as Sente's Clojure and ClojureScript clients send and read it.

    :param keys: the map-key mapping (module docstring): ``"strings"`` (default) reads
        keyword keys as ``str`` and writes keyword-shaped ``str`` keys as keywords, so
        ``data["text"]`` works here and ``(:text data)`` there; ``"keywords"`` keeps
        :class:`Keyword` keys both ways.
    :param unknown_tags: ``"error"`` (default, as Sente's server) or ``"keep"``
        (:class:`Tagged`).

    ``content_type`` is ``application/edn``, not the ``text/html`` Sente's server labels its
    Ajax answers with: Sente's Ajax client reads the body as text whatever the label, and an
    answer that echoes a client's text labelled ``text/html`` is HTML to a browser that
    opens it (a cross-site form POST of ``ppstr`` would make one).
    """

    name = "edn"
    binary = False
    content_type = "application/edn; charset=utf-8"

    def __init__(self, *, keys: KeysOption = "strings",
                 unknown_tags: TagsOption = "error") -> None:
        _check_options(keys, unknown_tags)
        self.keys = keys
        self.unknown_tags = unknown_tags
        self._strkeys = keys == "strings"
        self._keep_tags = unknown_tags == "keep"

    def pack(self, value: t.Any) -> str:
        return _dump(value, self._strkeys)

    def unpack(self, data: str | bytes) -> t.Any:
        return _load(data, self._strkeys, self._keep_tags)

    def __repr__(self) -> str:
        return f"EdnPacker(keys={self.keys!r}, unknown_tags={self.unknown_tags!r})"
