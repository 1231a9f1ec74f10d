"""Publishing to a topic: ``python -m bench.topics``.

``--conns`` clients (1,000 by default) each join one topic — flask_sente's ``on_join`` and
``publish``, Flask-SocketIO's ``join_room`` and ``emit(..., to=room)`` — then one client
asks the server to publish ``--m`` time-stamped events to it, ``--rounds`` times after a
warm-up round. Reported per server: deliveries per second until every member has every
event (as W2, which broadcasts), and the push -> client latency of each event, p50 and p99
(server and load client share this machine's clock). Both servers run on the gevent
servers of ``make bench`` (flask_sente's own, Flask-SocketIO on gevent-websocket), pinned
to one core with the Node.js client on the other; runs alternate between them.

    python -m bench.topics [--conns 1000] [--m 20] [--rounds 3] [--runs 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import typing as t

from .common import Server, ensure_node_packages, raise_nofile, run_client

SERVERS: tuple[tuple[str, str, str, dict[str, t.Any]], ...] = (
    ("sente", "flask_sente topic", "ws_client.js", {"dialect": "sente", "protocol": 2}),
    ("fsio", "Flask-SocketIO room", "sio_client.js", {"transport": "websocket"}),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.topics")
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    raise_nofile()
    ensure_node_packages()
    results: dict[str, list[dict[str, t.Any]]] = {kind: [] for kind, *_ in SERVERS}
    for run in range(args.runs):
        for kind, label, script, fixed in SERVERS:
            with Server(kind) as srv:
                try:
                    r = run_client(script, {"mode": "topic", "port": srv.port, "pid": srv.pid,
                                            "conns": args.conns, "m": args.m,
                                            "rounds": args.rounds, **fixed}, timeout=600)
                except RuntimeError as exc:
                    print(f"run {run + 1} {label}: FAILED {exc}", flush=True)
                    continue
            ok = (r.get("clients") == args.conns and not r.get("mismatched")
                  and not r.get("errors"))
            print(f"run {run + 1} {label:22} {r['rate']:>12,.0f} deliveries/s  "
                  f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
                  f"{'' if ok else '  (INCOMPLETE: ' + str(r) + ')'}", flush=True)
            if ok:
                results[kind].append(r)
    print(f"\n{args.conns} members, {args.m} publishes x {args.rounds} rounds, {args.runs} "
          "runs; medians:\n")
    print("| server | deliveries/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    medians: dict[str, dict[str, float]] = {}
    for kind, label, *_ in SERVERS:
        rs = results[kind]
        if not rs:
            print(f"| {label} | failed | | |")
            continue
        medians[kind] = {key: statistics.median(r[key] for r in rs)
                         for key in ("rate", "p50_ms", "p99_ms")}
        m = medians[kind]
        print(f"| {label} | {m['rate']:,.0f} | {m['p50_ms']:.0f} | {m['p99_ms']:.0f} |")
    if len(medians) == 2:
        ours, theirs = medians["sente"], medians["fsio"]
        print(f"\nflask_sente / Flask-SocketIO: deliveries/s {ours['rate'] / theirs['rate']:.2f}x,"
              f" p99 {ours['p99_ms'] / max(theirs['p99_ms'], 1):.2f}x (lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
