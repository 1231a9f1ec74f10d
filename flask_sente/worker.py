"""The gunicorn worker class: ``gunicorn -k flask_sente.worker.SenteWorker 'app:create_app()'``.

gunicorn's gevent pywsgi worker with flask_sente's WebSocket handler (the only module that
imports gunicorn). Compared with gevent-websocket's ``GeventWebSocketWorker`` it keeps
gunicorn's access log and ``gunicorn.sock`` / ``RAW_URI`` environ keys (the handler mixes in
gunicorn's ``PyWSGIHandler``), lets the app refuse an upgrade with an HTTP status, and on
SIGTERM sends close 1001 to every open WebSocket as soon as it stops accepting.
"""
from __future__ import annotations

import typing as t

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

    def load_wsgi(self) -> None:
        super().load_wsgi()
        warn_if_per_worker(self.wsgi, int(self.cfg.workers), self.log)


def warn_if_per_worker(wsgi: t.Any, workers: int, log: t.Any) -> bool:
    """Say loudly, once per worker, when several workers run without a shared backplane:
    each then sees only its own clients (pushes, presence and kicks reach a fraction of the
    users, silently). Returns True when it warned."""
    state = getattr(wsgi, "extensions", {}).get("sente")
    if state is None or workers <= 1 or state.options.backplane is not None:
        return False
    log.warning("flask_sente: %d gunicorn workers without a backplane: pushes, presence "
                "and kick reach only the clients of the worker they run in. Set "
                "SENTE_BACKPLANE='redis://...' (see the README's Deploying section) or run "
                "-w 1.", workers)
    return True
