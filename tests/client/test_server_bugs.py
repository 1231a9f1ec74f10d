"""Server-side defects found while testing the client, kept as regression tests.

Each was first written as a failing test (``xfail(strict=True)`` while the bug existed).
"""
from __future__ import annotations

import gc
import socket
import time

import gevent
from flask import Flask

from flask_sente import Sente
from flask_sente.testing import serve


class _WaitForHubSwap:
    """Middleware: hold each request until the extension's hub was replaced (what
    ``sente.close(app)`` does), then let it through — a request that was sent before
    ``serve()`` exited but read after the extension closed."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.hub = app.extensions["sente"].hub
        self.wsgi = app.wsgi_app

    def __call__(self, environ, start_response):
        deadline = time.monotonic() + 5
        while self.app.extensions["sente"].hub is self.hub and time.monotonic() < deadline:
            gevent.sleep(0.005)
        return self.wsgi(environ, start_response)


def test_serve_leaves_no_hub_greenlets_for_requests_read_during_shutdown():
    """serve() closes the extension before stopping the server, and close() installs a
    fresh hub: a request read in between reached that hub, whose grace-timer greenlet
    (Hub._remove_if_current) then outlived serve(). Fixed in testing.serve by closing the
    extension again once the server stopped."""
    app = Flask(__name__)
    Sente(app, csrf=False)
    app.wsgi_app = _WaitForHubSwap(app)  # type: ignore[method-assign]
    sock = None
    try:
        with serve(app) as base:
            port = int(base.rsplit(":", 1)[1])
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /chsk?client-id=late&handshake=1 HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
            gevent.sleep(0.05)  # let the server read it and start waiting in the middleware
        leftovers = [g for g in gc.get_objects()
                     if isinstance(g, gevent.Greenlet) and not g.dead
                     and "_remove_if_current" in repr(g)]
        assert leftovers == []
    finally:
        if sock is not None:
            sock.close()
        app.extensions["sente"].sente.close(app)  # do not leak into the next test
