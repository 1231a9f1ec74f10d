"""The hub's event loop, its greenlets, and calls from other OS threads.

Every greenlet the hub starts is spawned here, into one group that :meth:`HubLoop.kill`
ends. Public methods that push may be called from any OS thread (a Celery task in a thread
pool, a worker thread of the app): :func:`from_any_thread` hands such a call to the loop,
where it runs in a greenlet of its own — calls from one thread keep their order, since the
loop runs callbacks, and greenlets start, first in first out. One decorator, instead of the
same three lines in every method.
"""
from __future__ import annotations

import functools
import typing as t

import gevent
import gevent.pool

from ..connections import thread_ident

P = t.ParamSpec("P")


class HubLoop:
    """The hub's share of gevent: its greenlets, timers, and the thread it runs on."""

    def __init__(self) -> None:
        self.group = gevent.pool.Group()
        self.loop: t.Any = gevent.get_hub().loop
        #: The OS thread serving the hub's connections (set again by each connection:
        #: the hub may be built in one thread and serve in another).
        self.thread = thread_ident()
        #: Set by the hub's ``close()``: nothing new starts.
        self.closed = False

    def spawn(self, fn: t.Callable[..., t.Any], *args: t.Any) -> gevent.Greenlet:
        return self.group.spawn(fn, *args)

    def serving_here(self) -> None:
        """The calling thread is the one serving connections from now on."""
        self.thread = thread_ident()

    def on_hub_thread(self) -> bool:
        return thread_ident() == self.thread

    def call_from_thread(self, fn: t.Callable[..., t.Any], *args: t.Any) -> None:
        """Run ``fn(*args)`` in a greenlet of the hub's loop (from another OS thread)."""
        self.loop.run_callback_threadsafe(self.spawn, fn, *args)

    def timer(self, seconds: float, repeat: float = 0.0, *, ref: bool = True) -> t.Any:
        """A libev timer of the hub's loop (start it with a callback; close it to cancel).
        Its callback runs in the loop itself: it must never block."""
        return self.loop.timer(max(0.0, seconds), repeat, ref=ref)

    def kill(self, timeout: float) -> None:
        self.group.kill(block=True, timeout=timeout)


def from_any_thread(method: t.Callable[t.Concatenate[t.Any, P], None]
                    ) -> t.Callable[t.Concatenate[t.Any, P], None]:
    """A method (returning None) of an object with the hub's ``loop`` that may be called
    from any OS thread: off the hub's own thread the call is handed to the hub's loop and
    returns at once."""

    @functools.wraps(method)
    def marshalled(self: t.Any, *args: P.args, **kwargs: P.kwargs) -> None:
        loop: HubLoop = self.loop
        if loop.on_hub_thread():
            method(self, *args, **kwargs)
        else:
            loop.call_from_thread(functools.partial(method, self, *args, **kwargs))

    return t.cast("t.Callable[t.Concatenate[t.Any, P], None]", marshalled)
