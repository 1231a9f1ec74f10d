"""Testing tools: a real server on an ephemeral port.

``serve(app)`` runs the app on 127.0.0.1 with flask_sente's WebSocket handler (the same as
``flask_sente.run`` and the gunicorn worker use) and yields its base URL; on exit it closes
every channel socket, stops the server and joins its greenlets.
"""
from __future__ import annotations

import contextlib
import typing as t

from flask import Flask


@contextlib.contextmanager
def serve(app: Flask, host: str = "127.0.0.1", port: int = 0) -> t.Iterator[str]:
    """Run ``app`` in this process (gevent) for the duration of the ``with`` block.

    ::

        with serve(app) as base_url:
            requests.get(base_url + "/chsk?client-id=x&handshake=1")
    """
    from .server import make_server

    server = make_server(app, host=host, port=port)
    server.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        state = app.extensions.get("sente")
        if state is not None:
            state.sente.close(app)
        server.stop(timeout=5)
