"""The push-latency schedule every server runs on request (workloads P1 and P2): each
push carries the server's wall clock in ms at the moment it is handed to the library, and
the clients record how long after that it arrived.

- ``steady``: every connected user gets one push per second, spread evenly over the
  second (100 ticks, a hundredth of the users each), for ``seconds`` seconds;
- ``burst``: every user at once, once a second, ``seconds`` times.

No gevent or asyncio import here: the gevent servers call :func:`run` (their ``time.sleep``
is patched), the ASGI server :func:`run_async`.
"""
from __future__ import annotations

import asyncio
import time
import typing as t

TICKS_PER_SECOND = 100


def plan(users: int, kind: str, seconds: int) -> t.Iterator[tuple[float, int, int]]:
    """``(offset in s from the start, first user, end user)`` of each step."""
    if kind == "burst":
        for r in range(seconds):
            yield float(r), 0, users
        return
    for step in range(seconds * TICKS_PER_SECOND):
        tick = step % TICKS_PER_SECOND
        yield (step / TICKS_PER_SECOND, tick * users // TICKS_PER_SECOND,
               (tick + 1) * users // TICKS_PER_SECOND)


def now_ms() -> float:
    return time.time() * 1000.0


def run(targets: list[t.Any], send: t.Callable[[t.Any, float], t.Any], kind: str,
        seconds: int) -> None:
    start = time.monotonic()
    for offset, lo, hi in plan(len(targets), kind, seconds):
        delay = start + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for target in targets[lo:hi]:
            send(target, now_ms())


async def run_async(targets: list[t.Any],
                    send: t.Callable[[t.Any, float], t.Awaitable[t.Any]], kind: str,
                    seconds: int) -> None:
    start = time.monotonic()
    for offset, lo, hi in plan(len(targets), kind, seconds):
        delay = start + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for target in targets[lo:hi]:
            await send(target, now_ms())
