"""One Ajax pipeline: a request to the channel URL parsed once, answered as ``(status,
headers, body)``.

An Ajax request arrives through one of two fronts: Flask's route (``views``: a request
context, the app's hooks, admission) or the fast path in front of Flask (``fastpath``: a
request carrying the key of a client Flask admitted earlier). Once a front knows who the
client is, the rest is the same for both, and it lives here, once:

* what the protocol reads of a request — the method, its query parameters, the headers it
  needs (:func:`parse`, :class:`AjaxRequest`);
* the body of a posted event within ``max_message_size``, raw or in Sente's ``ppstr`` form
  (:func:`read_body`: 413 when too big, 400 when cut short);
* the hub's answer — ``hub.ajax_get`` for a handshake or a poll, ``hub.ajax_post`` for an
  event (:func:`answer_get`, :func:`answer_post`) — and its headers: the packer's content
  type, ``Cache-Control: no-store``, ``X-Sente-After`` on a reply whose handler pushed,
  ``X-Sente-Key`` for a client Flask admitted; 503 with ``Retry-After`` while the backplane
  is down (:func:`unavailable`), 400 for a bad package.

A new query parameter or header of the protocol is a change here (and in ``admission``
only if Flask must refuse bad values of it); each front just renders an :data:`Answer` (a
Flask ``Response``; a WSGI ``start_response``). What stays with the fronts is what only
they can do: admission, the WebSocket upgrade and the ``new-ws-ticket`` answer need
Flask's request and session (``views``); which requests may be answered without Flask is
the fast path's rule (``fastpath``, docs/protocol.md §6).

This module imports neither Flask nor Werkzeug (``tests/test_import_rules.py``): it reads
the WSGI environ, a front gives it the body's ``read`` (and the parsed form fields, when it
parsed them), and the hub is the small :class:`AjaxHub` seam — so its parsing and its
answers have unit tests that need no server (``tests/test_ajax.py``).
"""
from __future__ import annotations

import json
import re
import typing as t
import urllib.parse

from .exceptions import BackplaneError, LocalProtocolError, RemoteProtocolError
from .protocol import wire
from .protocol.packers import Packer, content_type_of

if t.TYPE_CHECKING:  # pragma: no cover
    from .messages import RequestInfo

#: Query parameters of the protocol itself (docs/protocol.md §1); any other one is the app's
#: (``params`` of the clients), which a ``user_id`` hook may read the user from.
PROTOCOL_PARAMS = frozenset({"client-id", "protocol", "packer", "pos", "csrf-token",
                             "handshake", "handshake?", "ws-ticket", "new-ws-ticket", "udt"})
#: A form body: Sente's own clients post the envelope as its ``ppstr`` field.
FORM = "application/x-www-form-urlencoded"
#: The body of a 503 while the backplane is down (with ``Retry-After: 2``).
UNAVAILABLE = "Backplane unavailable: the server cannot reach Redis; retry"
#: The content type of the pipeline's refusals.
TEXT = "text/plain; charset=utf-8"

Headers = list[tuple[str, str]]
#: What a ``user_id`` hook may read the user from (:attr:`AjaxRequest.credentials`).
Credentials = tuple[str | None, str | None, tuple[tuple[str, str], ...]]

_NO_STORE = ("Cache-Control", "no-store")
_RETRY = ("Retry-After", "2")
_PLAIN_INT = re.compile(r"-?[0-9]+", re.ASCII)


#: An answer to an Ajax request for a front to render: ``(status, headers, body)``, the
#: headers all but ``Content-Length`` (a front's framing: WSGI adds it, Flask's ``Response``
#: computes it). A plain tuple: it is made for every request of the fast path.
Answer = tuple[int, Headers, bytes]


class AjaxHub(t.Protocol):
    """What the pipeline asks of the hub (``Hub`` has this shape)."""

    def ajax_get(self, uid: t.Any, client_id: str, request: RequestInfo, *,
                 handshake: bool, handshake_data: t.Callable[[], t.Any], version: int = 1,
                 positions: wire.Positions | None = None,
                 dialect: str | None = None) -> str | bytes: ...

    def ajax_post(self, uid: t.Any, client_id: str, request: RequestInfo,
                  body: str | bytes, dialect: str | None = None
                  ) -> tuple[str | bytes, dict[str, list[t.Any]] | None]: ...

    def wire_of(self, version: int = 1, dialect: str | None = None) -> wire.Wire: ...

    def ajax_key(self, uid: t.Any, client_id: str, credentials: t.Any) -> str | None: ...


class Rejections(t.Protocol):
    """Where a refusal is counted (``metrics``)."""

    def rejected(self, reason: str) -> None: ...


class AppParts(t.Protocol):
    """What the pipeline needs of an app (``state.AppState`` has this shape)."""

    @property
    def hub(self) -> AjaxHub: ...

    @property
    def packer(self) -> Packer: ...

    @property
    def metrics(self) -> Rejections: ...


class AjaxRequest(t.NamedTuple):
    """An Ajax request as the protocol reads it (:func:`parse`). Nothing in it is checked
    yet: admission (Flask's path) or the fast path's rules decide what it may do."""

    method: str
    #: The query's parameters, the first value of each (as ``request.args`` reads them).
    args: t.Mapping[str, str]
    #: The ``client-id`` parameter, or None.
    client_id: str | None
    #: A GET asking for a handshake (``handshake``, or Sente's ``handshake?``).
    handshake: bool
    cookie: str | None
    authorization: str | None
    #: The ``Upgrade`` header, or None.
    upgrade: str | None
    #: A POST's ``Content-Length`` as Werkzeug reads it (:func:`content_length`): None when
    #: absent or the body is chunked, 0 when it is not a plain number. None for other
    #: methods: the pipeline reads no other body.
    content_length: int | None
    #: A POST whose body is a form (:func:`mimetype` ``application/x-www-form-urlencoded``),
    #: its ``ppstr`` field the envelope: Sente's own clients post so.
    form_encoded: bool

    @property
    def credentials(self) -> Credentials:
        """What a ``user_id`` hook may read the user from — the Cookie and Authorization
        headers and the app's own query parameters: a fast-path key holds only while these
        stay exactly as they were when Flask admitted the client."""
        return (self.cookie, self.authorization,
                tuple(sorted((k, v) for k, v in self.args.items() if k not in PROTOCOL_PARAMS)))


def parse(environ: t.Mapping[str, t.Any],
          args: t.Mapping[str, str] | None = None) -> AjaxRequest:
    """Read an Ajax request from its WSGI environ.

    :param args: the query already parsed (Flask's ``request.args``, which admission read),
        instead of parsing ``QUERY_STRING`` again.
    """
    method = environ.get("REQUEST_METHOD", "GET")
    post = method == "POST"
    if args is None:
        args = query_args(environ.get("QUERY_STRING", ""))
    return _new_request(AjaxRequest, (
        method,
        args,
        args["client-id"] if "client-id" in args else None,
        "handshake" in args or "handshake?" in args,
        environ.get("HTTP_COOKIE"),
        environ.get("HTTP_AUTHORIZATION"),
        environ.get("HTTP_UPGRADE"),
        content_length(environ) if post else None,
        post and mimetype(environ.get("CONTENT_TYPE")) == FORM))


#: Builds an :class:`AjaxRequest` from its fields without the named tuple's Python-level
#: ``__new__`` (one per request of the fast path).
_new_request = tuple.__new__


def query_args(query: str) -> dict[str, str]:
    """The query's parameters, the first value of each (as ``request.args.get`` reads).

    Our clients' queries are plain ASCII names and values, decoded here without
    ``parse_qsl``'s per-pair work; one with escapes gets the full decoding."""
    if "%" in query or "+" in query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    else:
        pairs = [(name, value) for name, _, value in
                 (part.partition("=") for part in query.split("&") if part)]
    args: dict[str, str] = {}
    for name, value in pairs:
        args.setdefault(name, value)
    return args


def content_length(environ: t.Mapping[str, t.Any]) -> int | None:
    """``Content-Length`` as Werkzeug reads it (``request.content_length``), so that both
    fronts agree on it: None when absent or ``Transfer-Encoding: chunked``; a value that is
    not a plain (ASCII digits) number, or a negative one, counts as 0."""
    value = environ.get("CONTENT_LENGTH")
    if value is None:
        return None
    encoding = environ.get("HTTP_TRANSFER_ENCODING")
    if encoding is not None and "chunked" in (
            part.strip(" \t").lower() for part in encoding.split(",")):
        return None
    if value.isdigit() and value.isascii():  # what clients send
        return int(value)
    value = value.strip(" \t")
    return max(0, int(value)) if _PLAIN_INT.fullmatch(value) else 0


def mimetype(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` value, as Werkzeug's ``request.mimetype``."""
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip(" \t").lower()


#: The answer to a body that ends before its ``Content-Length`` (the sender stopped or
#: was cut while sending): a 400 like any bad package, not an error of the server.
SHORT_BODY = "Bad package: the body ended before its Content-Length"


def read_body(request: AjaxRequest, read: t.Callable[[int], bytes], *, limit: int,
              binary: bool,
              form: t.Callable[[], t.Mapping[str, str]] | None = None) -> str | bytes | Answer:
    """The packed envelope a POST carries, or the answer refusing it.

    :param read: the body stream's ``read``: at most ``limit + 1`` bytes are asked of it,
        exactly ``Content-Length`` when the request gives one.
    :param limit: ``max_message_size``: a longer body is answered 413.
    :param binary: the packer's ``binary`` flag: a text packer gets the body as text.
    :param form: the form fields of a form-encoded body (Sente's ``ppstr`` form), parsed by
        the front: Flask's, whose form parser the app's hooks or admission may have run
        already. The fast path takes no forms (they go to Flask).
    :raises LocalProtocolError: a form body came without ``form``.
    """
    length = request.content_length
    if length is not None and length > limit:
        return text(413, f"Message too big: {length} bytes, the limit is {limit} bytes")
    body: str | bytes
    if request.form_encoded:
        if form is None:
            raise LocalProtocolError("a form-encoded body needs its parsed fields (form=)")
        fields = form()
        body = fields["ppstr"] if "ppstr" in fields else ""
    else:
        try:
            raw = read(limit + 1 if length is None else length)
        except OSError:  # the sender was cut mid-body (gevent says so with an OSError)
            return text(400, SHORT_BODY)
        if length is not None and len(raw) < length:
            return text(400, SHORT_BODY)
        body = as_packed(raw, binary)
    if len(body) > limit:
        return text(413, f"Message too big: the limit is {limit} bytes")
    return body


def as_packed(raw: bytes, binary: bool) -> str | bytes:
    """A POST body as the packer reads it: text for a text packer (bytes that are not
    UTF-8 become one that fails unpacking with a clear message), bytes for a binary one."""
    if binary:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return b"\xff"


def answer_get(app: AppParts, request: AjaxRequest, uid: t.Any, client_id: str,
               info: RequestInfo, *, version: int, positions: wire.Positions | None,
               handshake_data: t.Callable[[], t.Any], with_key: bool,
               dialect: str | None = None) -> Answer:
    """A handshake or a long-poll (``hub.ajax_get``), or 503 when the backplane failed.

    :param with_key: give the client its fast-path key (Flask admitted this request).
    """
    try:
        body = app.hub.ajax_get(uid, client_id, info, handshake=request.handshake,
                                handshake_data=handshake_data, version=version,
                                positions=positions, dialect=dialect)
    except BackplaneError:
        return unavailable(app.metrics)
    answer = packed(_packer(app, dialect), body)
    if with_key:
        _add_key(app.hub, answer, request, uid, client_id)
    return answer


def answer_post(app: AppParts, request: AjaxRequest, uid: t.Any, client_id: str,
                info: RequestInfo, body: str | bytes, *, with_key: bool,
                dialect: str | None = None) -> Answer:
    """An event's answer (``hub.ajax_post``): its reply or ack, with ``X-Sente-After``
    when the handler pushed first; 400 (or the error's status) for a bad package.

    :param body: the packed envelope (:func:`read_body`).
    :param with_key: give the client its fast-path key (Flask admitted this request).
    """
    try:
        reply, after = app.hub.ajax_post(uid, client_id, info, body, dialect=dialect)
    except RemoteProtocolError as exc:
        return text(exc.status, f"Bad package: {exc}")
    answer = packed(_packer(app, dialect), reply)
    if after is not None:
        answer[1].append((wire.AFTER_HEADER, after_header(after)))
    if with_key:
        _add_key(app.hub, answer, request, uid, client_id)
    return answer


def _packer(app: AppParts, dialect: str | None) -> Packer:
    """What the answers of a channel are packed with: the app's packer, or a dialect's."""
    return app.packer if dialect is None else (
        app.hub.wire_of(dialect=dialect).packer or app.packer)


def _add_key(hub: AjaxHub, answer: Answer, request: AjaxRequest, uid: t.Any,
             client_id: str) -> None:
    """The client's fast-path key (``fastpath``), when this process holds the client: asked
    after the hub's answer, which may be what made the client known here."""
    key = hub.ajax_key(uid, client_id, request.credentials)
    if key is not None:
        answer[1].append((wire.FAST_KEY_HEADER, key))


def after_header(after: dict[str, list[t.Any]]) -> str:
    """The ``X-Sente-After`` value: the positions as compact JSON (ASCII: epochs are
    URL-safe base64)."""
    return json.dumps(after, separators=(",", ":"))


def packed(packer: Packer, body: str | bytes) -> Answer:
    """A 200 carrying what the hub packed, labelled with the packer's content type."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    return 200, [("Content-Type", content_type_of(packer)), _NO_STORE], data


def text(status: int, message: str) -> Answer:
    """A plain-text answer: a refusal, or a ``new-ws-ticket``."""
    return status, [("Content-Type", TEXT), _NO_STORE], (message + "\n").encode("utf-8")


def unavailable(metrics: Rejections) -> Answer:
    """The 503 while the backplane is down: the client retries (counted as a refusal)."""
    metrics.rejected("backplane")
    answer = text(503, UNAVAILABLE)
    answer[1].append(_RETRY)
    return answer
