"""The pusher of ``python -m bench.capacity``: a process outside the app that pushes through
Redis, as a Celery task or a cron job would — flask_sente's
:class:`~flask_sente.emitter.Emitter`, or Flask-SocketIO's write-only
``SocketIO(message_queue=...)``.

    python -m bench.capacity_pusher SYSTEM REDIS_URL      # SYSTEM: sente or fsio

It connects, makes one push that reaches nobody (so the connection and the script are
warm), prints ``READY`` and then takes commands on stdin, one JSON object a line:

    {"workload": "send" | "broadcast" | "publish", "targets": [...], "rate": pushes/s
     (0: as fast as it can), "duration": s, "offset": first target}

and answers each with one JSON line ``{"pushes", "seconds", "counts" (pushes per target),
"errors", "first_error"}``. Push i goes to ``targets[(offset + i) % len(targets)]``: a uid
(send; Flask-SocketIO: that user's room), a topic (publish; Flask-SocketIO: a room) or
nothing (broadcast: every client). Each event is ``("bench/ev", [i, wall clock ms])``
(Flask-SocketIO: ``emit("ev", [i, ms])``), the form the load clients count and time. A paced
command pushes on a fixed schedule (a late push does not delay the ones after it: they
catch up). The process exits when stdin closes.
"""
from __future__ import annotations

import json
import sys
import time
import typing as t

Push = t.Callable[[str, t.Any, list[t.Any]], None]


def sente_pusher(redis_url: str) -> Push:
    from flask_sente.emitter import Emitter

    emitter = Emitter(redis_url, socket_timeout=10.0)

    def push(workload: str, target: t.Any, data: list[t.Any]) -> None:
        event = ("bench/ev", data)
        if workload == "send":
            emitter.send(target, event)
        elif workload == "broadcast":
            emitter.broadcast(event)
        else:
            emitter.publish(target, event)

    push("send", "bench/nobody", [0, 0])  # no such user: no log, nothing appended
    return push


def fsio_pusher(redis_url: str) -> Push:
    from flask_socketio import SocketIO

    socketio = SocketIO(message_queue=redis_url)  # no app: write-only

    def push(workload: str, target: t.Any, data: list[t.Any]) -> None:
        if workload == "broadcast":
            socketio.emit("ev", data)
        else:  # a user's room or a topic's room
            socketio.emit("ev", data, to=target)

    push("send", "bench/nobody", [0, 0])  # a room nobody is in
    return push


def run(push: Push, command: dict[str, t.Any]) -> dict[str, t.Any]:
    workload = command["workload"]
    targets = list(command["targets"]) or [None]
    rate = float(command.get("rate") or 0)
    duration = float(command["duration"])
    offset = int(command.get("offset", 0))
    counts = [0] * len(targets)
    errors = 0
    first_error = ""
    start = time.monotonic()
    end = start + duration
    i = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if rate:
            due = start + i / rate
            if due >= end:
                break
            if due > now:
                time.sleep(due - now)
        k = (offset + i) % len(targets)
        try:
            push(workload, targets[k], [i, time.time() * 1000])
        except Exception as exc:  # counted and reported; the push is not retried
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
        else:
            counts[k] += 1
        i += 1
    seconds = time.monotonic() - start
    return {"pushes": sum(counts), "seconds": seconds, "counts": counts, "errors": errors,
            "first_error": first_error}


def main(argv: list[str] | None = None) -> int:
    system, redis_url = (argv if argv is not None else sys.argv[1:])[:2]
    push = sente_pusher(redis_url) if system == "sente" else fsio_pusher(redis_url)
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run(push, json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C, or the harness gone
        sys.exit(130)
