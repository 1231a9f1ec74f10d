"""The chaos drill's pusher from outside the app: a process of its own that pushes through
:class:`flask_sente.emitter.Emitter`, as a Celery task or a cron job would.

    python -m bench.chaos_emitter --redis-url redis://127.0.0.1:PORT/0 --uids u0,u1 --rate 10

It sends ``("chaos/ev", {"s": stream, "n": counter, "t": wall time})`` to a random user
(stream ``emit:u:<uid>``) or as a broadcast (stream ``emit:*``), ``--rate`` pushes a second,
each counter once per stream. When Redis cannot be reached the Emitter raises
``BackplaneError`` and the push is retried — the same event, same counter — until it goes
through, as a task that retries would; so a push Redis ran although the Emitter saw a timeout
shows up in the drill as a duplicate. Every push that went through is reported on stdout as
a line of JSON ``{"s", "n", "ti" (first try), "ta" (success), "tries"}``.

Commands on stdin: ``final`` stops the traffic, pushes the next counter of every stream
marked ``"f": 1`` (the end-of-run marker), prints ``{"done": true}`` and exits. The
process also exits when stdin closes, so it never outlives the drill.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import typing as t

from flask_sente.emitter import Emitter
from flask_sente.exceptions import BackplaneError

EVENT = "chaos/ev"
#: Pause between two tries of a push Redis refused.
RETRY_PAUSE = 0.2
#: The final markers are retried this long at most.
FINAL_BOUND = 30.0


class Pusher:
    def __init__(self, emitter: Emitter, out: t.TextIO) -> None:
        self.emitter = emitter
        self.out = out
        self.counters: dict[str, int] = {}
        self.stop = threading.Event()
        self.final = threading.Event()
        self.errors: dict[str, int] = {}

    def push(self, uid: str | None, final: bool = False, deadline: float | None = None) -> bool:
        """Push the next counter of the stream to ``uid`` (None: the broadcast), retrying
        until Redis takes it; False if stopped (or past ``deadline``) first."""
        stream = "emit:*" if uid is None else f"emit:u:{uid}"
        n = self.counters.get(stream, 0) + 1
        first = time.time()
        data: dict[str, t.Any] = {"s": stream, "n": n, "t": first}
        if final:
            data["f"] = 1
        tries = 0
        while True:
            tries += 1
            try:
                if uid is None:
                    self.emitter.broadcast((EVENT, data))
                else:
                    self.emitter.send(uid, (EVENT, data))
                break
            except BackplaneError as exc:
                kind = str(exc).split(":")[1].strip()[:60] if ":" in str(exc) else str(exc)
                self.errors[kind] = self.errors.get(kind, 0) + 1
                if self.stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                    return False
                time.sleep(RETRY_PAUSE)
        self.counters[stream] = n
        self.emit({"s": stream, "n": n, "ti": first, "ta": time.time(), "tries": tries,
                   "f": 1 if final else 0})
        return True

    def emit(self, record: dict[str, t.Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--uids", required=True, help="comma-separated user ids")
    parser.add_argument("--rate", type=float, default=10.0, help="pushes a second")
    parser.add_argument("--broadcast-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history-size", type=int, default=2000)
    args = parser.parse_args(argv)
    uids = [u for u in args.uids.split(",") if u]
    rng = random.Random(args.seed)
    emitter = Emitter(args.redis_url, history_size=args.history_size)
    pusher = Pusher(emitter, sys.stdout)

    def commands() -> None:
        for line in sys.stdin:
            if line.strip() == "final":
                pusher.final.set()
        pusher.stop.set()  # stdin closed: the drill is gone

    threading.Thread(target=commands, name="commands", daemon=True).start()
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    while not (pusher.stop.is_set() or pusher.final.is_set()):
        uid = None if rng.random() < args.broadcast_share else rng.choice(uids)
        pusher.push(uid)
        next_at = max(next_at + interval, time.monotonic() - 1.0)
        pusher.final.wait(max(0.0, next_at - time.monotonic()))
    if pusher.final.is_set() and not pusher.stop.is_set():
        deadline = time.monotonic() + FINAL_BOUND
        for stream in list(pusher.counters):
            pusher.push(None if stream == "emit:*" else stream[len("emit:u:"):], final=True,
                        deadline=deadline)
    pusher.emit({"done": True, "errors": pusher.errors})
    emitter.close()


if __name__ == "__main__":
    main()
