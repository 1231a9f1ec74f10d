"""The header fields of a request head, read for gevent's pywsgi without the email parser.

pywsgi reads request headers with ``http.client.parse_headers``, which hands the lines to
the standard library's ``email`` feed parser: about a tenth of the server's time for an Ajax
request or a WebSocket handshake (``python -m bench.profile W4``). :func:`read_header_fields`
reads the same lines and keeps the same meaning — names compared case-insensitively, the
first of repeated fields for ``get``, folded lines joined to their field, parsing stopped
at the first line that is not a field (as the email parser does), at most
:data:`MAX_HEADERS` fields of :data:`MAX_LINE` bytes each — and :class:`RequestHeaders`
offers what pywsgi, gevent-websocket and gunicorn's access log use of the stdlib object.
"""
from __future__ import annotations

import re
import typing as t

#: Longest header line, and most header fields, accepted (``http.client``'s limits).
MAX_LINE = 65536
MAX_HEADERS = 100
#: A field line, as the email parser recognises one: a name of printable characters other
#: than ":" (possibly empty), then ":".
_FIELD = re.compile(r"[\041-\071\073-\176]*:")


class TooManyHeaders(ValueError):
    """More than :data:`MAX_HEADERS` header lines (pywsgi answers a ValueError with 400)."""


class RequestHeaders:
    """The header fields of one request, in the order sent.

    ``status`` is ``""``, or ``"Line too long"`` for a head pywsgi must refuse (its own
    convention: the caller answers 400).
    """

    __slots__ = ("_fields", "_first", "status")

    def __init__(self, fields: list[tuple[str, str]], status: str = "") -> None:
        self._fields = fields
        first: dict[str, str] = {}
        for name, value in fields:
            first.setdefault(name.lower(), value)
        self._first = first
        self.status = status

    def get(self, name: str, default: t.Any = None) -> t.Any:
        return self._first.get(name.lower(), default)

    getheader = get

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __delitem__(self, name: str) -> None:
        """Remove every field of this name (none: no error, like the email object)."""
        key = name.lower()
        if self._first.pop(key, None) is not None:
            self._fields = [(n, v) for n, v in self._fields if n.lower() != key]

    def __len__(self) -> int:
        return len(self._fields)

    def __iter__(self) -> t.Iterator[str]:
        return (name for name, _value in self._fields)

    def keys(self) -> list[str]:
        return [name for name, _value in self._fields]

    def values(self) -> list[str]:
        return [value for _name, value in self._fields]

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def get_all(self, name: str, failobj: t.Any = None) -> t.Any:
        key = name.lower()
        found = [value for n, value in self._fields if n.lower() == key]
        return found or failobj

    @property
    def typeheader(self) -> str | None:
        return self._first.get("content-type")

    @property
    def headers(self) -> t.Iterator[str]:
        """The fields as ``"Name: value\\r\\n"`` lines (pywsgi builds its environ from these)."""
        for name, value in self._fields:
            yield f"{name}: {value}\r\n"

    def environ_items(self) -> t.Iterator[tuple[str, str]]:
        """``(HTTP_NAME, value)`` pairs for a WSGI environ, as pywsgi derives them: names
        with ``_`` dropped (they could pose as others), Content-Type and Content-Length
        left to their own keys, values stripped."""
        for name, value in self._fields:
            if "_" in name:
                continue
            key = name.replace("-", "_").upper()
            if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
                yield "HTTP_" + key, value.strip()


def read_header_fields(rfile: t.Any) -> RequestHeaders:
    """Read header lines from ``rfile`` (a buffered binary reader) up to the empty line.

    Raises :class:`TooManyHeaders` past :data:`MAX_HEADERS` lines; a line longer than
    :data:`MAX_LINE` gives headers with ``status == "Line too long"``.
    """
    lines: list[bytes] = []
    readline = rfile.readline
    while True:
        line = readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            return RequestHeaders([], "Line too long")
        if line == b"\r\n" or line == b"\n" or not line:
            break
        if len(lines) >= MAX_HEADERS:
            raise TooManyHeaders(f"got more than {MAX_HEADERS} headers")
        lines.append(line)
    fields: list[tuple[str, str]] = []
    for raw in lines:
        text = raw.decode("latin-1")
        if text[:1] in (" ", "\t"):
            if not fields:
                break  # the email parser ends the head at a leading continuation line
            name, value = fields[-1]
            fields[-1] = (name, value + "\r\n" + text.rstrip("\r\n"))
            continue
        match = _FIELD.match(text)
        if match is None:
            break  # not a field: the email parser stops reading fields here
        end = match.end()
        fields.append((text[:end - 1], text[end:].lstrip(" \t").rstrip("\r\n")))
    return RequestHeaders(fields)
