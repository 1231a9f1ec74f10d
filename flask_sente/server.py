"""The embedded server: gevent's pywsgi with flask_sente's WebSocket handler.

For development, the demo and tests; production runs gunicorn with
``-k flask_sente.worker.SenteWorker`` (same handler). Neither function monkey-patches:
call ``gevent.monkey.patch_all()`` first thing in your program, before importing anything
that uses sockets or threads, or blocking calls in views will stall every connection.
Forgetting it is easy and shows only under load (one ``time.sleep(3)`` in a handler holds
every connection for 3 s), so :func:`make_server` (and so :func:`run`) logs an error at
once when the process is not patched.
"""
from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import typing as t

import gevent
import gevent.monkey
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from .transports.servers import DEFAULT_GRACEFUL_TIMEOUT, SenteWSGIServer
from .transports.websocket import DEFAULT_HEADER_TIMEOUT, SenteHandler

__all__ = ["check_monkey_patched", "freeze_startup_objects", "make_server", "run",
           "unpatched_modules"]

logger = logging.getLogger("flask_sente")

#: What ``patch_all()`` makes cooperative that a handler or view commonly blocks on:
#: ``time.sleep``, sockets (database drivers, HTTP clients), ``select``, locks and threads.
PATCHED_MODULES = ("socket", "time", "select", "threading")


def unpatched_modules() -> list[str]:
    """The modules of :data:`PATCHED_MODULES` gevent has not monkey-patched in this process."""
    return [name for name in PATCHED_MODULES if not gevent.monkey.is_module_patched(name)]


def check_monkey_patched() -> bool:
    """Log an error with the fix if this process is not monkey-patched; True if it is.

    An error in the log, not an exception: an unpatched server works until something
    blocks, and a developer may run one on purpose; but it must never be silent (issue 26:
    one handler's ``time.sleep(3)`` took a health check from 1.4 ms to 1 s). Python's
    last-resort handler prints it to stderr when the app has set up no logging.
    """
    missing = unpatched_modules()
    if missing:
        logger.error(
            "flask_sente: this process is not monkey-patched by gevent (%s not patched): "
            "one handler or view that blocks (time.sleep, a database or HTTP call, a lock) "
            "stops every connection of the server until it returns. Put "
            "`from gevent import monkey; monkey.patch_all()` first in your program, before "
            "anything else is imported (or run gunicorn -k flask_sente.worker.SenteWorker, "
            "which patches).", ", ".join(missing))
    return not missing


def freeze_startup_objects() -> None:
    """Take what exists now (modules, the app, its config) out of the cyclic garbage
    collector's reach, once the app is loaded and before serving.

    A realtime server keeps thousands of connections in memory, and CPython's full
    collections scan every live object each time: with the startup objects included,
    about a sixth of a connect storm's CPU went to collecting, and a full collection in a
    push burst to 1,000 users held every socket for 20-50 ms (``bench``, P2). Frozen
    objects are still freed by reference counting; only a cycle among them would stay,
    and startup objects are never garbage. ``gc.freeze()`` is the standard library's tool
    for this (Python 3.7+).
    """
    gc.collect()
    gc.freeze()


def make_server(
    app: t.Callable[..., t.Any],
    host: str = "127.0.0.1",
    port: int = 0,
    log: t.Any = "default",
    *,
    header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
    max_connections: int | None | str = "default",
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
    **kw: t.Any,
) -> WSGIServer:
    """A WSGI server for ``app`` on ``host:port``, not started yet.

    Call ``.start()`` (then ``server.server_port`` is the bound port, useful with the
    default ``port=0``) and ``.stop()``. Stopping drains gracefully: the server stops
    accepting, parked long-polls are answered ``chsk/close`` 1001 (clients reconnect),
    handlers in flight get ``graceful_timeout`` seconds (default 10) to finish and reply,
    then every WebSocket is closed with 1001. ``log`` is the access log as for
    :class:`gevent.pywsgi.WSGIServer` (``"default"`` = stderr, ``None`` = off, or a
    :class:`logging.Logger`). Other keywords go to the server (``error_log``, ``spawn``,
    ``handler_class``, SSL arguments, ...). Handlers run in a pool, so ``stop()`` waits for
    them and then kills what is left.

    The process should be monkey-patched (``gevent.monkey.patch_all()`` first thing): if
    it is not, an error saying so is logged here (see :func:`check_monkey_patched`).

    Protection against abuse and running out of descriptors:

    - ``header_timeout`` (seconds, default 10): a connection whose request line and
      headers are not complete by then is closed (slowloris, abandoned handshakes; also an
      idle keep-alive connection waiting for its next request). None: no limit.
    - ``max_connections``: connections served at once; beyond it a new connection gets a
      ``503`` with ``Retry-After: 1`` at once, instead of the server running out of file
      descriptors. The default is the descriptor limit (``ulimit -n``) less a reserve of
      10 % (at least 32) for the app's own files. None: no limit. Should descriptors run
      out anyway (the app opens many files), waiting clients get a 503 and one warning per
      10 s is logged, never a traceback; the server keeps accepting.
    """
    check_monkey_patched()
    kw.setdefault("handler_class", SenteHandler)
    kw.setdefault("spawn", Pool())
    return SenteWSGIServer((host, port), app, log=log, header_timeout=header_timeout,
                           max_connections=max_connections,
                           graceful_timeout=graceful_timeout, **kw)


def run(app: t.Callable[..., t.Any], host: str = "127.0.0.1", port: int = 5000, *,
        freeze_gc: bool = True, **kw: t.Any) -> None:
    """Serve ``app`` until Ctrl-C or SIGTERM, then drain and stop (see :func:`make_server`).

    Blocks. Keywords are those of :func:`make_server`; ``freeze_gc=False`` leaves the
    garbage collector as it is (see :func:`freeze_startup_objects`).
    """
    server = make_server(app, host, port, **kw)
    if freeze_gc:
        freeze_startup_objects()
    server.start()
    print(f"flask_sente: serving on http://{host}:{server.server_port} (Ctrl-C to quit)",
          file=sys.stderr, flush=True)
    watchers = []
    if threading.current_thread() is threading.main_thread():
        # gevent runs these in a new greenlet: close() may block briefly on close frames.
        for signum in (signal.SIGINT, signal.SIGTERM):
            watchers.append(gevent.signal_handler(signum, server.close))
    try:
        server.serve_forever()  # returns once close() ran; it then stop()s the server
    except KeyboardInterrupt:
        server.stop()
    finally:
        for watcher in watchers:
            watcher.cancel()
