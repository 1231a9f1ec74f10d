"""The Ajax pipeline (``flask_sente/ajax.py``) without a server: how a request is read,
how a posted body is taken or refused, and the answers' statuses, headers and bodies.

The hub is :class:`MemoryHub`, which implements the pipeline's ``AjaxHub`` seam in memory
(it answers what it was told to, and keeps what it was asked); the real hub behind both
fronts is tested through real sockets in tests/server/test_ajax.py and
test_ajax_fast_path.py.
"""
from __future__ import annotations

import dataclasses
import io
import json
import typing as t

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from flask_sente import ajax
from flask_sente.exceptions import BackplaneError, LocalProtocolError, RemoteProtocolError
from flask_sente.messages import RequestInfo
from flask_sente.protocol.packers import JsonPacker, MsgpackPacker, Packer

LIMIT = 100
INFO = RequestInfo("GET", "/chsk", "http://localhost/chsk", "127.0.0.1", {}, {}, {}, {})


def environ(method: str = "GET", query: str = "client-id=c1", body: bytes | None = None,
            **headers: str) -> dict[str, t.Any]:
    """A WSGI environ as a server gives it (Werkzeug's builder: CONTENT_LENGTH from the
    body, ``HTTP_*`` from the headers)."""
    return EnvironBuilder(method=method, query_string=query, data=body,
                          headers={k.replace("_", "-"): v for k, v in headers.items()}
                          ).get_environ()


def post(body: bytes, content_type: str = "application/json", **headers: str) -> ajax.AjaxRequest:
    return ajax.parse(environ("POST", body=body, Content_Type=content_type, **headers))


# --- reading a request ---

def test_a_request_is_read_from_its_environ() -> None:
    """Shown to fail by not lower-casing the mimetype (the form is not seen)."""
    request = ajax.parse(environ(
        "POST", "client-id=c1&protocol=2&u=ana&u=bo", b"ppstr=1", Cookie="session=s",
        Authorization="Bearer t", Upgrade="websocket",
        Content_Type="Application/X-WWW-Form-Urlencoded; charset=utf-8"))
    assert request == ("POST", {"client-id": "c1", "protocol": "2", "u": "ana"}, "c1", False,
                       "session=s", "Bearer t", "websocket", 7, True)
    json_post = ajax.parse(environ("POST", body=b"[1]", Content_Type="application/json"))
    assert (json_post.content_length, json_post.form_encoded) == (3, False)


def test_only_a_posts_body_is_read() -> None:
    """A GET's body is none of the pipeline's business (Flask's path never read it). Shown
    to fail by reading the Content-Length of every request."""
    request = ajax.parse(environ("GET", body=b"ppstr=1", Content_Type=ajax.FORM))
    assert (request.content_length, request.form_encoded) == (None, False)


@pytest.mark.parametrize("query, handshake", [
    ("client-id=c1&handshake=1", True), ("client-id=c1&handshake%3F=true", True),
    ("client-id=c1&handshake", True), ("client-id=c1&handshakes=1", False), ("", False)])
def test_a_handshake_is_asked_with_either_spelling(query: str, handshake: bool) -> None:
    """Shown to fail by dropping ``handshake?`` from ``AjaxRequest.handshake``."""
    assert ajax.parse(environ(query=query)).handshake is handshake


def test_a_missing_client_id_is_none() -> None:
    """(Admission refuses both; the fast path sends both to Flask.)"""
    assert ajax.parse(environ(query="protocol=2")).client_id is None
    assert ajax.parse(environ(query="client-id=")).client_id == ""


def test_the_credentials_are_the_cookie_authorization_and_the_apps_own_parameters() -> None:
    """The protocol's parameters are not credentials (a new ``pos`` on every poll must not
    cost the key), the app's are, in a stable order; shown to fail by adding ``pos`` to the
    app's (the first assertion) and by dropping the sort (the second). ``udt``, Sente's
    cache-buster (docs/protocol.md §1), is the protocol's too: a new one on every request
    must not send each through Flask."""
    query = ("client-id=c1&protocol=2&packer=json&pos=x&csrf-token=t&handshake=1&"
             "handshake%3F=1&ws-ticket=w&new-ws-ticket=1&udt=1733061234567&z=26&a=1")
    request = ajax.parse(environ(query=query, Cookie="c", Authorization="a"))
    assert request.credentials == ("c", "a", (("a", "1"), ("z", "26")))
    reordered = ajax.parse(environ(query="a=1&client-id=c2&z=26&pos=y", Cookie="c",
                                   Authorization="a"))
    assert reordered.credentials == request.credentials
    assert ajax.parse(environ(query="client-id=c1")).credentials == (None, None, ())


def test_flasks_parsed_query_is_taken_as_is() -> None:
    """Flask's path hands over ``request.args`` (admission read it): not parsed again."""
    args = {"client-id": "from-flask"}
    assert ajax.parse(environ(query="client-id=c1"), args).args is args


@pytest.mark.parametrize("length, encoding", [
    (None, None), ("12", None), (" 12\t", None), ("0", None), ("-3", None), ("+12", None),
    ("1_2", None), ("12abc", None), ("", None), ("\u0661\u0662", None), ("12", "chunked"),
    ("12", "gzip, Chunked"), ("12", "gzip"), (None, "chunked")])
def test_the_content_length_is_read_as_werkzeug_reads_it(length: str | None,
                                                         encoding: str | None) -> None:
    """Both fronts read the length alike, so the fast path takes no body Flask would read
    otherwise (a chunked one, a signed or non-ASCII number: Flask's path). Shown to fail by
    reading it with ``int()`` (``+12``, ``1_2``, Arabic digits) and without the
    Transfer-Encoding (``chunked``)."""
    env = environ()
    env.pop("CONTENT_LENGTH", None)
    if length is not None:
        env["CONTENT_LENGTH"] = length
    if encoding is not None:
        env["HTTP_TRANSFER_ENCODING"] = encoding
    assert ajax.content_length(env) == Request(env).content_length


@pytest.mark.parametrize("content_type", [
    None, "", "application/json", "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
    " text/plain ;q=1", "application/x-www-form-urlencodedX", "a/b;", ";x=1"])
def test_the_mimetype_is_read_as_werkzeug_reads_it(content_type: str | None) -> None:
    """Shown to fail without the lower-casing and without the stripping."""
    env = environ()
    if content_type is not None:
        env["CONTENT_TYPE"] = content_type
    assert ajax.mimetype(env.get("CONTENT_TYPE")) == Request(env).mimetype


# --- the body of a posted event ---

def read_of(data: bytes, asked: list[int] | None = None) -> t.Callable[[int], bytes]:
    stream = io.BytesIO(data)

    def read(size: int) -> bytes:
        if asked is not None:
            asked.append(size)
        return stream.read(size)
    return read


def test_a_body_is_read_to_its_length_and_given_as_the_packer_reads_it() -> None:
    """Exactly Content-Length is asked of the stream (a WSGI input may block past it);
    shown to fail by asking ``limit + 1`` whatever the length."""
    asked: list[int] = []
    body = b'[["t/x","\xc3\xa9"],null]'
    assert ajax.read_body(post(body), read_of(body + b"next", asked), limit=LIMIT,
                          binary=False) == '[["t/x","é"],null]'
    assert asked == [len(body)]
    assert ajax.read_body(post(body), read_of(body), limit=LIMIT, binary=True) == body


def test_a_body_without_a_length_is_read_within_the_limit() -> None:
    """One byte more than the limit, to tell a body at the limit from a longer one; shown
    to fail by asking for ``limit`` bytes."""
    asked: list[int] = []
    request = post(b"[1]")._replace(content_length=None)
    assert ajax.read_body(request, read_of(b"[1]", asked), limit=LIMIT, binary=False) == "[1]"
    assert asked == [LIMIT + 1]


def test_bytes_that_are_not_utf8_fail_a_text_packer_clearly() -> None:
    """Shown to fail by decoding with ``errors="replace"`` (the packer got text)."""
    body = ajax.read_body(post(b"\xe9t\xe9"), read_of(b"\xe9t\xe9"), limit=LIMIT, binary=False)
    assert body == b"\xff"
    with pytest.raises(RemoteProtocolError, match="malformed JSON"):
        JsonPacker().unpack(body)


def test_sentes_form_gives_its_ppstr_field() -> None:
    """Shown to fail by taking another field."""
    request = post(b"ignored", ajax.FORM)
    assert request.form_encoded
    assert ajax.read_body(request, read_of(b""), limit=LIMIT, binary=False,
                          form=lambda: {"ppstr": "[1]", "client-id": "c1"}) == "[1]"
    assert ajax.read_body(request, read_of(b""), limit=LIMIT, binary=False,
                          form=lambda: {}) == ""


def test_a_form_without_its_fields_is_the_callers_mistake() -> None:
    """Shown to fail without the guard (the form was read as a raw envelope)."""
    with pytest.raises(LocalProtocolError, match="form="):
        ajax.read_body(post(b"ppstr=1", ajax.FORM), read_of(b"ppstr=1"), limit=LIMIT,
                       binary=False)


@pytest.mark.parametrize("request_, data, form, status, message", [
    (post(b"x" * (LIMIT + 1)), b"x" * (LIMIT + 1), None, 413,
     f"Message too big: {LIMIT + 1} bytes, the limit is {LIMIT} bytes\n"),
    (post(b"x" * (LIMIT + 1), ajax.FORM), b"", {"ppstr": "x"}, 413,
     f"Message too big: {LIMIT + 1} bytes, the limit is {LIMIT} bytes\n"),
    (post(b"")._replace(content_length=None), b"x" * (LIMIT + 5), None, 413,
     f"Message too big: the limit is {LIMIT} bytes\n"),
    (post(b"ppstr=...", ajax.FORM), b"", {"ppstr": "x" * (LIMIT + 1)}, 413,
     f"Message too big: the limit is {LIMIT} bytes\n"),
    (post(b"[1, 2, 3]"), b"[1, 2", None, 400,
     "Bad package: the body ended before its Content-Length\n"),
], ids=["length", "form-length", "chunked", "ppstr", "cut-short"])
def test_each_bad_body_is_refused_with_its_status_and_message(
        request_: ajax.AjaxRequest, data: bytes, form: dict[str, str] | None, status: int,
        message: str) -> None:
    """Shown to fail by dropping each check in turn (the Content-Length one lets the
    length cases through to the later check or a parse; without the cut-short check the
    body goes on to the packer)."""
    answer = ajax.read_body(request_, read_of(data), limit=LIMIT, binary=False,
                            form=None if form is None else lambda: form)
    assert answer == (status, [("Content-Type", "text/plain; charset=utf-8"),
                               ("Cache-Control", "no-store")], message.encode())


# --- the answers ---

@dataclasses.dataclass
class MemoryHub:
    """The ``AjaxHub`` seam in memory: answers with ``body`` (or raises ``error``),
    ``after`` for a post, ``key`` for a client; keeps what it was asked."""

    body: str | bytes = '[["chsk/timeout"],null]'
    after: dict[str, list[t.Any]] | None = None
    key: str | None = "k3y"
    error: Exception | None = None
    asked: list[tuple[t.Any, ...]] = dataclasses.field(default_factory=list)

    def ajax_get(self, uid: t.Any, client_id: str, request: RequestInfo, *,
                 handshake: bool, handshake_data: t.Callable[[], t.Any], version: int = 1,
                 positions: t.Any = None, dialect: str | None = None) -> str | bytes:
        self.asked.append(("get", uid, client_id, request, handshake, version, positions))
        if self.error is not None:
            raise self.error
        return self.body

    def ajax_post(self, uid: t.Any, client_id: str, request: RequestInfo,
                  body: str | bytes, dialect: str | None = None
                  ) -> tuple[str | bytes, dict[str, list[t.Any]] | None]:
        self.asked.append(("post", uid, client_id, request, body))
        if self.error is not None:
            raise self.error
        return self.body, self.after

    def ajax_key(self, uid: t.Any, client_id: str, credentials: t.Any) -> str | None:
        self.asked.append(("key", uid, client_id, credentials))
        return self.key


@dataclasses.dataclass
class Parts:
    hub: MemoryHub
    packer: Packer = dataclasses.field(default_factory=JsonPacker)
    refused: list[str] = dataclasses.field(default_factory=list)

    @property
    def metrics(self) -> Parts:
        return self

    def rejected(self, reason: str) -> None:
        self.refused.append(reason)


def get(parts: Parts, query: str = "client-id=c1&u=ana", *, with_key: bool = False,
        version: int = 1, positions: t.Any = None) -> ajax.Answer:
    return ajax.answer_get(parts, ajax.parse(environ(query=query, Cookie="c")), "ana", "c1",
                           INFO, version=version, positions=positions,
                           handshake_data=lambda: None, with_key=with_key)


def test_a_poll_is_the_hubs_answer_labelled_with_the_packers_content_type() -> None:
    """Shown to fail by labelling every answer JSON (the msgpack one)."""
    parts = Parts(MemoryHub())
    assert get(parts, version=2, positions={"u": ("e", 1)}) == (
        200, [("Content-Type", "application/json; charset=utf-8"),
              ("Cache-Control", "no-store")], b'[["chsk/timeout"],null]')
    assert parts.hub.asked == [("get", "ana", "c1", INFO, False, 2, {"u": ("e", 1)})]
    binary = Parts(MemoryHub(body=b"\x92\x91\xadchsk/timeout\xc0"), MsgpackPacker())
    assert get(binary) == (200, [("Content-Type", "application/msgpack"),
                                 ("Cache-Control", "no-store")], b"\x92\x91\xadchsk/timeout\xc0")


def test_a_handshake_request_asks_the_hub_for_one() -> None:
    parts = Parts(MemoryHub())
    get(parts, "client-id=c1&handshake%3F=1")
    assert parts.hub.asked[0][4] is True


def test_a_client_flask_admitted_gets_its_key() -> None:
    """Asked after the hub's answer (which may be what made the client known here), with
    the request's credentials; not asked on the fast path; no header when the hub holds no
    such client. Shown to fail by asking before ``ajax_get`` (the order) and by ignoring
    ``with_key``."""
    parts = Parts(MemoryHub())
    assert ("X-Sente-Key", "k3y") in get(parts, with_key=True)[1]
    assert [asked[0] for asked in parts.hub.asked] == ["get", "key"]
    assert parts.hub.asked[1] == ("key", "ana", "c1", ("c", None, (("u", "ana"),)))
    quiet = Parts(MemoryHub())
    assert all(name != "X-Sente-Key" for name, _ in get(quiet)[1])
    assert [asked[0] for asked in quiet.hub.asked] == ["get"]
    unknown = Parts(MemoryHub(key=None))
    assert all(name != "X-Sente-Key" for name, _ in get(unknown, with_key=True)[1])


def test_a_backplane_failure_is_a_counted_503_to_retry() -> None:
    """Shown to fail by dropping the ``Retry-After`` header and the count."""
    parts = Parts(MemoryHub(error=BackplaneError("Redis is down")))
    assert get(parts, with_key=True) == (
        503, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
              ("Retry-After", "2")], (ajax.UNAVAILABLE + "\n").encode())
    assert parts.refused == ["backplane"]
    assert [asked[0] for asked in parts.hub.asked] == ["get"]  # no key for a 503
    assert ajax.unavailable(parts) == get(parts)


def answer_post(parts: Parts, body: str | bytes = '[["t/x"],"ajax"]', *,
                with_key: bool = False) -> ajax.Answer:
    return ajax.answer_post(parts, post(b"[]"), "ana", "c1", INFO, body, with_key=with_key)


def test_an_events_reply_carries_the_positions_of_its_handlers_pushes() -> None:
    """Compact JSON (the clients parse it; docs/protocol.md §6); shown to fail by dumping
    it with the default separators."""
    after = {"*": ["k3J9xQ2a", 42], "u": ["Qm3kP0aZ", 7]}
    parts = Parts(MemoryHub(body='[["chsk/reply",1],null]', after=after))
    status, headers, body = answer_post(parts, with_key=True)
    assert (status, body) == (200, b'[["chsk/reply",1],null]')
    assert headers == [("Content-Type", "application/json; charset=utf-8"),
                       ("Cache-Control", "no-store"),
                       ("X-Sente-After", '{"*":["k3J9xQ2a",42],"u":["Qm3kP0aZ",7]}'),
                       ("X-Sente-Key", "k3y")]
    assert json.loads(dict(headers)["X-Sente-After"]) == after
    assert parts.hub.asked[0] == ("post", "ana", "c1", INFO, '[["t/x"],"ajax"]')
    ack = Parts(MemoryHub(body='[["chsk/ack"],null]'))
    assert [name for name, _ in answer_post(ack)[1]] == ["Content-Type", "Cache-Control"]


@pytest.mark.parametrize("error, status, message", [
    (RemoteProtocolError("malformed JSON: Expecting value"), 400,
     "Bad package: malformed JSON: Expecting value\n"),
    (RemoteProtocolError("message too big", status=413), 413,
     "Bad package: message too big\n"),
])
def test_a_bad_package_is_refused_with_the_errors_status(error: RemoteProtocolError,
                                                         status: int, message: str) -> None:
    """Shown to fail by answering every bad package 400."""
    parts = Parts(MemoryHub(error=error))
    assert answer_post(parts, with_key=True) == (
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
        message.encode())
    assert [asked[0] for asked in parts.hub.asked] == ["post"]  # no key for a refusal


def test_a_text_answer_ends_its_line() -> None:
    """As every plain-text answer of the server does; shown to fail without the newline."""
    assert ajax.text(200, "t1cket") == (200, [("Content-Type", "text/plain; charset=utf-8"),
                                              ("Cache-Control", "no-store")], b"t1cket\n")
