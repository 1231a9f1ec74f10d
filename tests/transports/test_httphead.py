"""The request-head reader that replaces pywsgi's email parser (``transports/httphead.py``):
the same fields as ``http.client.parse_headers`` for the heads below, and over a real
socket the same environ and the same refusals."""
from __future__ import annotations

import io
import socket
from http import client

import pytest

from flask_sente.server import make_server
from flask_sente.transports.httphead import MAX_HEADERS, read_header_fields

from .wsutil import read_http_head, read_to_eof

HEADS = [
    b"Host: x\r\n\r\n",
    b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\nbody",
    b"host: a\r\nHOST: b\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",              # repeated fields
    b"X-Folded: one\r\n  two\r\n\tthree\r\nHost: x\r\n\r\n",          # obs-fold
    b"X-Spaces:   padded value  \r\nX-Empty:\r\n\r\n",
    b"Host: x\nX-Bare-LF: yes\n\n",                                      # LF line ends
    b"Host: x\r\nnot a field line\r\nX-After: lost\r\n\r\n",            # parsing stops
    b"Host: x\r\nX-Under_Score: 1\r\n\r\n",
    b"",                                                                 # EOF at once
]


@pytest.mark.parametrize("head", HEADS)
def test_same_fields_as_the_stdlib_parser(head):
    ours = read_header_fields(io.BufferedReader(io.BytesIO(head)))
    stdlib = client.parse_headers(io.BufferedReader(io.BytesIO(head)))
    assert ours.items() == [(k, v.replace("\n", "\r\n") if "\r" not in v else v)
                            for k, v in stdlib.items()]
    for name in ("host", "HOST", "x-dup", "Content-Type", "content-length", "x-missing"):
        assert ours.get(name) == stdlib.get(name), name
        assert (name in ours) == (name in stdlib)
    assert ours.typeheader == stdlib.get("content-type")
    assert ours.status == ""


def test_delete_removes_every_field_of_a_name():
    headers = read_header_fields(io.BufferedReader(io.BytesIO(
        b"Content-Length: 5\r\nX: 1\r\ncontent-length: 6\r\n\r\n")))
    del headers["Content-Length"]
    del headers["not-there"]
    assert headers.items() == [("X", "1")] and headers.get("content-length") is None


def test_limits():
    long_line = b"X-Long: " + b"a" * 70000 + b"\r\n\r\n"
    assert read_header_fields(io.BufferedReader(io.BytesIO(long_line))).status == \
        "Line too long"
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    with pytest.raises(ValueError):
        read_header_fields(io.BufferedReader(io.BytesIO(many)))
    exactly = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n"
    assert len(read_header_fields(io.BufferedReader(io.BytesIO(exactly)))) == MAX_HEADERS


def _environ_app(environ, start_response):  # type: ignore[no-untyped-def]
    body = "|".join(f"{k}={v}" for k, v in sorted(environ.items())
                     if k.startswith(("HTTP_", "CONTENT_"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _exchange(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        status, _headers, rest = read_http_head(s)
        return status, read_to_eof(s, rest)


def test_environ_and_refusals_over_a_socket(capfd):
    server = make_server(_environ_app, port=0, log=None)
    server.start()
    try:
        port = server.server_port
        status, body = _exchange(port, (
            b"POST /p HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\ncookie: b=2\r\nX-Dup: 1\r\n"
            b"X-Dup: 2\r\nX_Sneaky: no\r\nX-Fold: one\r\n two\r\nContent-Type: text/x\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\nhi"))
        assert status == 200
        assert body.decode().split("|") == [
            "CONTENT_LENGTH=2", "CONTENT_TYPE=text/x", "HTTP_CONNECTION=close",
            "HTTP_COOKIE=a=1; b=2", "HTTP_HOST=h", "HTTP_X_DUP=1,2",
            "HTTP_X_FOLD=one\r\n two"]
        many = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
        assert _exchange(port, b"GET / HTTP/1.1\r\n" + many + b"\r\n")[0] == 400
        long_line = b"X-Long: " + b"a" * 70000 + b"\r\n"
        assert _exchange(port, b"GET / HTTP/1.1\r\n" + long_line + b"\r\n")[0] == 400
    finally:
        server.stop(timeout=1)
    assert "Traceback" not in capfd.readouterr().err


def test_the_access_log_is_formatted_only_when_there_is_one(monkeypatch):
    import io

    from flask_sente.transports.websocket import SenteHandler
    formatted: list[str] = []
    original = SenteHandler.format_request

    def counting(self):  # type: ignore[no-untyped-def]
        formatted.append(self.requestline)
        return original(self)

    monkeypatch.setattr(SenteHandler, "format_request", counting)
    stream = io.StringIO()
    for log in (None, stream):
        server = make_server(_environ_app, port=0, log=log)
        server.start()
        try:
            assert _exchange(server.server_port, b"GET /x HTTP/1.1\r\nHost: h\r\n"
                             b"Connection: close\r\n\r\n")[0] == 200
        finally:
            server.stop(timeout=1)
    assert formatted == ["GET /x HTTP/1.1"]          # the logged server's request only
    assert '"GET /x HTTP/1.1" 200' in stream.getvalue()
