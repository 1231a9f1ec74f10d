"""The hub's event loop, its greenlets, and calls from other OS threads.

Every greenlet the hub starts is spawned here, into one group that :meth:`HubLoop.kill`
ends. Public methods that push may be called from any OS thread (a Celery task in a thread
pool, a worker thread of the app): :func:`from_any_thread` hands such a call to the loop,
where it runs in a greenlet of its own, after the calls that thread made before it have
finished (a *lane* per thread) — starting in order is not enough: ``join`` and ``leave``
wait for Redis before they append their command, and a later call of the same thread
would append first. Calls from different threads still run side by side. One decorator,
instead of the same three lines in every method.
"""
from __future__ import annotations

import collections
import functools
import typing as t

import gevent
import gevent.pool

from ..connections import thread_ident

P = t.ParamSpec("P")
#: A call waiting in a lane: the function and its arguments.
_Call = tuple[t.Callable[..., t.Any], tuple[t.Any, ...]]


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
        #: Calls waiting for the ones before them in the same lane (see :meth:`in_lane`).
        self._lanes: dict[t.Hashable, collections.deque[_Call]] = {}

    def spawn(self, fn: t.Callable[..., t.Any], *args: t.Any) -> gevent.Greenlet:
        return self.group.spawn(fn, *args)

    def serving_here(self) -> None:
        """The calling thread is the one serving connections from now on."""
        self.thread = thread_ident()

    def on_hub_thread(self) -> bool:
        return thread_ident() == self.thread

    def call_from_thread(self, fn: t.Callable[..., t.Any], *args: t.Any) -> None:
        """Run ``fn(*args)`` in a greenlet of the hub's loop (from another OS thread), after
        the calls this thread handed over before it have finished."""
        self.loop.run_callback_threadsafe(self.in_lane, ("thread", thread_ident()), fn, *args)

    def in_lane(self, lane: t.Hashable, fn: t.Callable[..., t.Any], *args: t.Any) -> None:
        """Run ``fn(*args)`` in a greenlet of its own once the calls put in ``lane`` before
        it have finished (one lane's calls one at a time, in order; lanes side by side).
        On the hub's thread only (a call from another thread comes through
        :meth:`call_from_thread`). A call that raises is reported as a greenlet's error,
        and the lane goes on."""
        waiting = self._lanes.get(lane)
        if waiting is None:
            waiting = self._lanes[lane] = collections.deque()
            self.spawn(self._run_lane, lane, waiting)
        waiting.append((fn, args))

    def _run_lane(self, lane: t.Hashable, waiting: collections.deque[_Call]) -> None:
        try:
            while waiting:
                fn, args = waiting.popleft()
                self.spawn(fn, *args).join()
        finally:
            if self._lanes.get(lane) is waiting:
                del self._lanes[lane]

    def timer(self, seconds: float, repeat: float = 0.0, *, ref: bool = True) -> t.Any:
        """A libev timer of the hub's loop (start it with a callback; close it to cancel).
        Its callback runs in the loop itself: it must never block."""
        return self.loop.timer(max(0.0, seconds), repeat, ref=ref)

    def kill(self, timeout: float) -> None:
        self.group.kill(block=True, timeout=timeout)
        self._lanes.clear()


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
