"""The servers: gevent's pywsgi server with flask_sente's handler, and what every server
running it adds — connection limits, a fast 503 instead of EMFILE, the graceful drain.

:class:`SenteServerMixin` is shared by the embedded server (:class:`SenteWSGIServer`) and
gunicorn's (``flask_sente.worker``); the per-connection work (the request head, the
upgrade, the socket) is :class:`~flask_sente.transports.websocket.SenteHandler`'s.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import time
import typing as t

import gevent
from gevent import pywsgi
from gevent.monkey import get_original
from gevent.pool import Group
from gevent.pywsgi import WSGIServer

from ..exceptions import ConfigError
from .frames import CLOSE_TIMEOUT, ServerWebSocket
from .websocket import DEFAULT_HEADER_TIMEOUT, SenteHandler

log = logging.getLogger("flask_sente.transports.websocket")

#: The real ``os.close``: gevent's patched one defers closing a descriptor that is not a
#: regular file to the event loop, too late for the reserve-descriptor trick below.
_close_fd: t.Callable[[int], None] = get_original("os", "close")
#: Seconds handlers in flight get to finish when the embedded server stops (gunicorn's
#: worker uses its own ``--graceful-timeout``, less 3 s for the closing handshakes).
DEFAULT_GRACEFUL_TIMEOUT = 10.0
#: Accept errors that mean "out of descriptors or kernel memory", not "the listener broke".
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BUSY_BODY = b"Server busy: too many connections, retry later\n"
_RESPONSE_503 = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(_BUSY_BODY)) + _BUSY_BODY
#: Connections being refused with a 503 at once (each holds its descriptor up to a second
#: while it reads what the client sent, so the 503 is read rather than reset); beyond this
#: they are closed without a word.
MAX_REFUSING = 64


def default_max_connections() -> int | None:
    """Concurrent connections per server when none is given: the descriptor limit
    (RLIMIT_NOFILE) less a reserve for the app's own files, log and the listener, so the
    limit's 503 comes before the kernel's EMFILE. None where the limit cannot be read."""
    try:
        import resource
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - max(32, soft // 10))


class SenteServerMixin:
    """Keeps the open WebSockets of one server; closing the server sends each close 1001.

    ``close()`` is what both ``WSGIServer.stop()`` and gunicorn's gevent worker call when
    they stop accepting, so the 1001 goes out before they wait for handlers to finish.
    """

    sente_stopping = False
    #: The server's greenlet pool (gevent's ``BaseServer`` sets it; declared for the mixin).
    pool: t.Any
    #: Seconds a client has to send a request head; None: no limit.
    sente_header_timeout: float | None = DEFAULT_HEADER_TIMEOUT
    #: Connections handled at once; beyond it new ones get a 503 at once. None: no limit.
    sente_max_connections: int | None = None
    #: Seconds handlers in flight get to finish (and reply) once the server stops.
    sente_graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT
    _sente_drainer: t.Any = None

    def __init__(self, *args: t.Any, max_connections: int | None | str = "default",
                 header_timeout: float | None | str = "default",
                 graceful_timeout: float | None = None, **kwargs: t.Any) -> None:
        self.sente_websockets: set[ServerWebSocket] = set()
        #: Handlers waiting for the next request of a keep-alive connection.
        self.sente_idle: set[SenteHandler] = set()
        #: Callables the apps registered to run when the server stops (see
        #: :data:`.base.STOP_CALLBACKS_ENVIRON_KEY`).
        self.sente_stop_callbacks: set[t.Callable[[], t.Any]] = set()
        self._sente_refusing = 0
        #: Greenlets answering 503 (each lives a second at most; killed by ``stop``).
        self._sente_refusers = Group()
        self._sente_reserve_fd: int | None = None
        self._sente_warned_at = -1e9
        self._sente_resume_timer: t.Any = None
        super().__init__(*args, **kwargs)
        #: False when built with ``log=None``: pywsgi would still format each access-log
        #: line (a clock read and a string format per request) for a sink that drops it.
        noop = getattr(pywsgi, "_NoopLog", None)
        self.sente_access_log = not (noop is not None
                                     and isinstance(getattr(self, "log", None), noop))
        if header_timeout != "default":
            if header_timeout is not None and (
                    not isinstance(header_timeout, (int, float)) or header_timeout <= 0):
                raise ConfigError(f"header_timeout must be > 0 or None, got {header_timeout!r}")
            self.sente_header_timeout = header_timeout
        if graceful_timeout is not None:
            if not isinstance(graceful_timeout, (int, float)) or graceful_timeout < 0:
                raise ConfigError(f"graceful_timeout must be >= 0, got {graceful_timeout!r}")
            self.sente_graceful_timeout = float(graceful_timeout)
        # stop() waits this long for handlers: the drain, then the closing handshakes.
        self.stop_timeout = self.sente_graceful_timeout + CLOSE_TIMEOUT + 2
        pool_size = getattr(self.pool, "size", None)
        if max_connections == "default":
            # gunicorn's worker_connections (the pool's size) or the descriptor limit,
            # whichever is lower.
            limits = [n for n in (pool_size, self.sente_max_connections,
                                  default_max_connections()) if n]
            max_connections = min(limits) if limits else None
        if max_connections is not None and (
                not isinstance(max_connections, int) or max_connections <= 0):
            raise ConfigError(f"max_connections must be a positive integer or None, "
                             f"got {max_connections!r}")
        if max_connections is not None and self.pool is None:
            raise ConfigError("max_connections needs a pool (spawn=Pool())")
        if max_connections is not None and pool_size is not None and pool_size < max_connections:
            max_connections = pool_size
        self.sente_max_connections = t.cast("int | None", max_connections)
        if max_connections is not None:
            # Keep accepting when the pool is full (gevent would stop, leaving clients in
            # the backlog with no answer): over the limit they get a 503 at once.
            self.full = _never_full

    # --- admission: connection limit, out of descriptors ---------------------------------

    def do_handle(self, *args: t.Any) -> None:
        limit = self.sente_max_connections
        if limit is not None and len(self.pool) >= limit:
            self._refuse(args[0], f"the connection limit ({limit})")
            return
        super().do_handle(*args)  # type: ignore[misc]

    def do_read(self) -> t.Any:
        try:
            return super().do_read()  # type: ignore[misc]
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise
            self._out_of_descriptors(exc)
            return None

    def start_accepting(self) -> None:
        if self._sente_reserve_fd is None:
            try:
                # One descriptor held back, to accept-and-refuse when the others run out.
                self._sente_reserve_fd = os.open(os.devnull, os.O_RDONLY)
            except OSError:
                pass
        super().start_accepting()  # type: ignore[misc]

    def _out_of_descriptors(self, exc: OSError) -> None:
        """accept() failed for want of descriptors: refuse the waiting client with a 503
        using the reserved descriptor, or, without one, pause accepting for a moment. Never
        a traceback, and the accept loop survives."""
        reserve, self._sente_reserve_fd = self._sente_reserve_fd, None
        refused = False
        if reserve is not None:
            _close_fd(reserve)
            try:
                fd, _address = self.socket._accept()  # type: ignore[attr-defined]
            except OSError:
                pass
            else:
                try:
                    os.write(fd, _RESPONSE_503)
                except OSError:
                    pass
                _close_fd(fd)
                refused = True
            try:
                self._sente_reserve_fd = os.open(os.devnull, os.O_RDONLY)
            except OSError:
                pass
        self._warn(f"out of file descriptors ({exc.strerror}): "
                   + ("refusing new connections with 503" if refused
                      else "pausing accept for 0.1 s"))
        if not refused or self._sente_reserve_fd is None:
            self.stop_accepting()  # type: ignore[attr-defined]
            timer = self._sente_resume_timer
            if timer is not None:
                timer.close()
            timer = self._sente_resume_timer = gevent.get_hub().loop.timer(0.1)
            timer.start(self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._sente_resume_timer = None
        if not self.sente_stopping and not getattr(self, "closed", True):
            try:
                self.start_accepting()
            except Exception:  # runs in the event loop: never let it raise there
                log.exception("could not resume accepting")

    def _warn(self, message: str) -> None:
        """One warning per 10 s at most: the condition lasts, the log must not grow with it."""
        now = time.monotonic()
        if now - self._sente_warned_at >= 10:
            self._sente_warned_at = now
            log.warning("%s", message)

    def _refuse(self, sock: t.Any, why: str) -> None:
        self._warn(f"refusing new connections with 503: {why} is reached")
        if self._sente_refusing >= MAX_REFUSING:
            sock.close()
            return
        self._sente_refusing += 1
        self._sente_refusers.spawn(self._send_503, sock)

    def _send_503(self, sock: t.Any) -> None:
        try:
            sock.settimeout(1.0)
            sock.sendall(_RESPONSE_503)
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 1.0
            # Read what the client sends, so that closing does not reset the connection
            # (and with it the 503) before the client has read it.
            while time.monotonic() < deadline and sock.recv(4096):
                pass
        except (OSError, gevent.Timeout):
            pass
        finally:
            sock.close()
            self._sente_refusing -= 1

    def close(self) -> None:
        """Stop accepting, end idle keep-alive connections, and start the graceful drain
        (in a greenlet of its own: gunicorn calls this from its main loop, which must keep
        sending heartbeats while handlers finish)."""
        first = not self.sente_stopping
        self.sente_stopping = True
        if self._sente_resume_timer is not None:
            self._sente_resume_timer.close()
            self._sente_resume_timer = None
        if self._sente_reserve_fd is not None:
            _close_fd(self._sente_reserve_fd)
            self._sente_reserve_fd = None
        try:
            super().close()  # type: ignore[misc]
        finally:
            self.close_idle_connections()
            if first:
                self._sente_drainer = gevent.spawn(self._drain)

    def stop(self, timeout: float | None = None) -> None:
        """``close()``, then wait for the drain and the handlers (``stop_timeout`` by
        default: the graceful timeout plus time for the closing handshakes)."""
        try:
            super().stop(timeout)  # type: ignore[misc]
        finally:
            drainer = self._sente_drainer
            if drainer is not None:
                drainer.join(timeout=1)
                drainer.kill(block=True, timeout=1)
            self._sente_refusers.kill(block=True, timeout=1)

    def _drain(self) -> None:
        """The graceful stop: the apps finish their handlers in flight and send the replies
        (each app's stop callback; see :data:`.base.STOP_CALLBACKS_ENVIRON_KEY`), then every
        WebSocket still open gets close 1001."""
        self.run_stop_callbacks(self.sente_graceful_timeout)
        self.close_websockets()

    def run_stop_callbacks(self, timeout: float = 0.0) -> None:
        """Call every stop callback with ``timeout`` (the seconds its app has to finish its
        handlers), concurrently, and wait for them a bounded time."""
        callbacks = list(self.sente_stop_callbacks)
        self.sente_stop_callbacks.clear()
        if not callbacks:
            return
        group = Group()
        for callback in callbacks:
            group.spawn(self._run_stop_callback, callback, timeout)
        group.join(timeout=timeout + CLOSE_TIMEOUT + 1)
        group.kill(block=True, timeout=1)

    @staticmethod
    def _run_stop_callback(callback: t.Callable[[float], t.Any], timeout: float) -> None:
        try:
            callback(timeout)
        except Exception:
            log.exception("a stop callback failed")

    def close_idle_connections(self) -> None:
        """End keep-alive connections that are between requests (no request is cut short)."""
        for handler in list(self.sente_idle):
            sock = getattr(handler, "socket", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close_websockets(self, reason: str = "server shutting down") -> None:
        """Send close 1001 to every open socket, concurrently, waiting a bounded time."""
        sockets = [ws for ws in getattr(self, "sente_websockets", ()) if not ws.closed]
        if not sockets:
            return
        log.info("closing %d WebSocket(s) with 1001", len(sockets))
        group = Group()
        for ws in sockets:
            group.spawn(ws._going_away, reason)
        group.join(timeout=CLOSE_TIMEOUT + 1)
        group.kill(block=True, timeout=1)


def _never_full() -> bool:
    return False


class SenteWSGIServer(SenteServerMixin, WSGIServer):
    """gevent's WSGI server with :class:`SenteHandler` and the socket registry."""

    handler_class = SenteHandler
