"""The gunicorn worker class: ``gunicorn -k flask_sente.worker.SenteWorker 'app:create_app()'``.

gunicorn's gevent pywsgi worker with flask_sente's WebSocket handler (the only module that
imports gunicorn). Compared with gevent-websocket's ``GeventWebSocketWorker`` it keeps
gunicorn's access log and ``gunicorn.sock`` / ``RAW_URI`` environ keys (the handler mixes in
gunicorn's ``PyWSGIHandler``), lets the app refuse an upgrade with an HTTP status, and on
SIGTERM sends close 1001 to every open WebSocket as soon as it stops accepting.
"""
from __future__ import annotations

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from .transports.websocket import SenteHandler, SenteServerMixin

__all__ = ["SenteWorker", "SenteGunicornHandler", "SenteGunicornServer"]


class SenteGunicornHandler(PyWSGIHandler, SenteHandler):
    """gunicorn's ``log_request``/``get_environ`` first, then flask_sente's upgrade logic."""


class SenteGunicornServer(SenteServerMixin, PyWSGIServer):
    """gunicorn's pywsgi server; its ``close()`` (called on SIGTERM) sends close 1001."""


class SenteWorker(GeventPyWSGIWorker):
    """Use with ``-k flask_sente.worker.SenteWorker``."""

    server_class = SenteGunicornServer
    wsgi_handler = SenteGunicornHandler
