"""Server -> client calls, the side ``python -m bench.calls`` runs in the server: the same
two routes and the same caller loop for flask_sente (``sente.call``) and Flask-SocketIO
(``socketio.call``), so only the library's call differs.

- ``GET /bench/where``: this process's pid (across gunicorn workers the load client keeps
  one keep-alive connection to the worker that will call, and answers on the others);
- ``POST /bench/calls`` ``{targets, callers, warmup, seconds, size, timeout, pid}``:
  ``callers`` greenlets, each in a closed loop — take the next target (round-robin over
  ``targets``, shared by the callers), call it with a ``size``-character string unique to
  the call, check the answer is that string, repeat — for ``warmup`` + ``seconds``. Answers
  with the round trips that ended inside the ``seconds`` window after the warm-up, their
  latency percentiles, and every failure by exception class. A ``pid`` other than this
  process's is refused (409): the request reached another worker than the one measured.

Nothing here hides a failure: an exception, a wrong answer or a caller still waiting after
its timeout is counted, and ``python -m bench.calls`` fails the run for it.
"""
from __future__ import annotations

import collections
import itertools
import os
import time
import typing as t

#: ``call(target, data, timeout)`` -> the client's answer.
Call = t.Callable[[t.Any, str, float], t.Any]


def install(app: t.Any, call: Call) -> None:
    """Add the two routes to a Flask app."""
    from flask import jsonify, request

    @app.get("/bench/where")
    def bench_where() -> t.Any:
        return jsonify(pid=os.getpid())

    @app.post("/bench/calls")
    def bench_calls() -> t.Any:
        p = request.get_json(force=True)
        if p.get("pid") is not None and int(p["pid"]) != os.getpid():
            return jsonify(error=f"this is pid {os.getpid()}, not {p['pid']}"), 409
        return jsonify(run(call, list(p["targets"]), int(p["callers"]), float(p["warmup"]),
                           float(p["seconds"]), int(p["size"]), float(p["timeout"])))


def payload(size: int, caller: int, i: int) -> str:
    head = f"{caller}:{i}:"
    return head + "x" * max(0, size - len(head))


def quantile(values: list[float], q: float) -> float | None:
    """The same rank as the Node clients' percentiles (``bench/clients/lib.js``)."""
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def run(call: Call, targets: list[t.Any], callers: int, warmup: float, seconds: float,
        size: int, timeout: float) -> dict[str, t.Any]:
    import gevent

    if not targets:
        raise ValueError("no targets")
    start = time.perf_counter()
    t0, t1 = start + warmup, start + warmup + seconds
    samples: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    first_error: dict[str, str] = {}
    wrong = [0]
    turn = itertools.count()

    def caller(j: int) -> None:
        for i in itertools.count():
            began = time.perf_counter()
            if began >= t1:
                return
            target = targets[next(turn) % len(targets)]
            data = payload(size, j, i)
            try:
                answer = call(target, data, timeout)
            except Exception as exc:  # counted and reported, never retried quietly
                name = type(exc).__name__
                errors[name] += 1
                first_error.setdefault(name, f"{exc} (target {target!r}, call {j}:{i})")
                gevent.sleep(0.01)
                continue
            ended = time.perf_counter()
            if answer != data:
                wrong[0] += 1
                first_error.setdefault("wrong", f"{answer!r:.200} for {data!r:.40}")
            elif t0 <= ended < t1:
                samples.append(ended - began)

    greenlets = [gevent.spawn(caller, j) for j in range(callers)]
    gevent.joinall(greenlets, timeout=warmup + seconds + timeout + 5)
    stuck = sum(1 for g in greenlets if not g.dead)
    gevent.killall(greenlets, block=False)
    ms = sorted(s * 1000 for s in samples)
    return {"count": len(ms), "seconds": seconds, "rate": len(ms) / seconds,
            "p50_ms": quantile(ms, 0.5), "p99_ms": quantile(ms, 0.99),
            "max_ms": ms[-1] if ms else None, "errors": dict(errors), "wrong": wrong[0],
            "stuck": stuck, "first_error": first_error, "pid": os.getpid(),
            "targets": len(targets), "callers": callers}
