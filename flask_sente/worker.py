"""The gunicorn worker class: ``gunicorn -k flask_sente.worker.SenteWorker 'app:create_app()'``.

gunicorn's gevent pywsgi worker with flask_sente's WebSocket handler (the only module that
imports gunicorn). Compared with gevent-websocket's ``GeventWebSocketWorker`` it keeps
gunicorn's access log and ``gunicorn.sock`` / ``RAW_URI`` environ keys (the handler mixes in
gunicorn's ``PyWSGIHandler``), lets the app refuse an upgrade with an HTTP status, and on
SIGTERM drains (below) and then sends close 1001 to every open WebSocket.

Limits, as a gunicorn user sets them:

- ``--worker-connections`` (default 1000) is the connection limit of each worker, lowered to
  the descriptor limit (``ulimit -n``, less a 10 % reserve) if that is smaller. Beyond it a
  new connection gets ``503`` with ``Retry-After: 1`` at once (stock gevent workers stop
  accepting instead, so clients wait in the listen backlog with no answer).
- The header timeout (10 s; a connection whose request head is not complete by then is
  closed) comes from the environment variable ``FLASK_SENTE_HEADER_TIMEOUT`` (seconds;
  ``0`` or ``none`` turns it off), e.g. ``gunicorn -e FLASK_SENTE_HEADER_TIMEOUT=5 ...``,
  or from the ``header_timeout`` attribute of a ``SenteWorker`` subclass. gunicorn has no
  setting of its own for it.
- gunicorn's ``--keep-alive`` does not apply (nor does it to gunicorn's own gevent pywsgi
  worker): a keep-alive connection idle for the header timeout is closed. The worker warns
  at start when ``--keep-alive`` was set. Keep a proxy's upstream idle timeout below the
  header timeout (docs/deployment/nginx.conf: ``keepalive_timeout 8s``).
- On SIGTERM the worker drains: it stops accepting, lets handlers in flight finish and
  their replies go out for ``--graceful-timeout`` less 3 s (the time the closing
  handshakes get), answers parked long-polls with ``chsk/close`` 1001 (clients reconnect),
  then closes every WebSocket with 1001.
"""
from __future__ import annotations

import os
import typing as t

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from .exceptions import ConfigError
from .server import freeze_startup_objects
from .transports.frames import CLOSE_TIMEOUT
from .transports.servers import SenteServerMixin
from .transports.websocket import (
    DEFAULT_HEADER_TIMEOUT,
    SenteHandler,
    redact_secrets,
    redacted_environ,
)

__all__ = ["SenteWorker", "SenteGunicornHandler", "SenteGunicornServer"]

#: Seconds a booting worker waits for its backplane subscription (the dashboard's).
SUBSCRIBE_WAIT = 2.0

HEADER_TIMEOUT_ENV = "FLASK_SENTE_HEADER_TIMEOUT"


class SenteGunicornHandler(PyWSGIHandler, SenteHandler):
    """gunicorn's ``log_request``/``get_environ`` first, then flask_sente's upgrade logic.

    The access log gets the request with secret query parameters (``csrf-token``,
    ``ws-ticket``) redacted."""

    def log_request(self) -> None:
        status = getattr(self, "status", None)
        if isinstance(status, bytes):  # gevent before 24 keeps it so: gunicorn logs b'200 OK'
            self.status = status.decode("latin-1")
        try:
            self._log_redacted()
        finally:
            if isinstance(status, bytes):
                self.status = status

    def _log_redacted(self) -> None:
        environ = getattr(self, "environ", None)
        if not environ:
            PyWSGIHandler.log_request(self)
            return
        self.environ = redacted_environ(environ)
        requestline = getattr(self, "requestline", None)
        if requestline:
            self.requestline = redact_secrets(requestline)
        try:
            PyWSGIHandler.log_request(self)
        finally:
            self.environ = environ
            if requestline:
                self.requestline = requestline


class SenteGunicornServer(SenteServerMixin, PyWSGIServer):
    """gunicorn's pywsgi server; its ``close()`` (called on SIGTERM) sends close 1001."""


def header_timeout_from_env(default: float | None) -> float | None:
    value = os.environ.get(HEADER_TIMEOUT_ENV)
    if value is None or not value.strip():
        return default
    if value.strip().lower() in ("0", "none", "off"):
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ConfigError(f"{HEADER_TIMEOUT_ENV} must be a number of seconds > 0, or 0/none "
                          f"to turn the header timeout off; got {value!r}")
    return seconds


class SenteWorker(GeventPyWSGIWorker):
    """Use with ``-k flask_sente.worker.SenteWorker``."""

    server_class: t.Any = SenteGunicornServer
    wsgi_handler = SenteGunicornHandler
    #: Seconds for a complete request head (overridden by ``FLASK_SENTE_HEADER_TIMEOUT``).
    header_timeout: float | None = DEFAULT_HEADER_TIMEOUT
    #: Freeze the objects alive once the app is loaded (``server.freeze_startup_objects``);
    #: a subclass may set False.
    freeze_gc: bool = True

    def init_process(self) -> None:
        # The server class carries this worker's settings: gunicorn builds the server with
        # fixed arguments.
        self.server_class = type(self.server_class.__name__, (self.server_class,), {
            "sente_header_timeout": header_timeout_from_env(self.header_timeout),
            # gunicorn kills the handlers at --graceful-timeout: leave time for the 1001s.
            "sente_graceful_timeout": max(0.0, float(self.cfg.graceful_timeout)
                                          - CLOSE_TIMEOUT - 1),
        })
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        warn_if_per_worker(self.wsgi, int(self.cfg.workers), self.log)
        warn_if_keep_alive_set(self.cfg, self.server_class.sente_header_timeout, self.log)
        join_the_dashboard(self.wsgi)
        if self.freeze_gc:
            freeze_startup_objects()


def join_the_dashboard(wsgi: t.Any) -> bool:
    """With the admin dashboard on and a shared backplane, this worker listens to the
    backplane from its start, not from its first client: the dashboard's question reaches
    only the processes that listen, and a worker nobody has connected to yet is a worker
    too. Returns True when it joined."""
    state = getattr(wsgi, "extensions", {}).get("sente")
    if state is None or not state.options.admin or not state.hub.backplane.shared:
        return False
    state.hub.backplane.await_answers(SUBSCRIBE_WAIT)
    return True


def warn_if_keep_alive_set(cfg: t.Any, header_timeout: float | None, log: t.Any) -> bool:
    """Say once per worker that ``--keep-alive`` was set and does not apply (as with
    gunicorn's own gevent pywsgi worker): idle keep-alive connections close after the
    header timeout instead. A proxy that reuses upstream connections must give up on them
    sooner than that, or a request it sends as the server closes one is lost."""
    setting = cfg.settings.get("keepalive")
    if setting is None or cfg.keepalive == setting.default:
        return False
    idle = f"{header_timeout:g} s" if header_timeout else "never (the header timeout is off)"
    log.warning("flask_sente: --keep-alive %s has no effect with SenteWorker: an idle "
                "keep-alive connection is closed after the header timeout: %s. Set "
                "FLASK_SENTE_HEADER_TIMEOUT to change it (it also bounds how long a request "
                "head may take), and keep a proxy's upstream idle timeout below it.",
                cfg.keepalive, idle)
    return True


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
