"""What a replay costs: reconnect time with 0 and with 100 missed pushes (protocol 2).

The flask_sente bench server runs in its own process on core 0; this process (the client,
plain websocket-client speaking docs/protocol.md) runs on core 1. One sample: a reader
client disconnects, a second client makes the server broadcast ``missed`` events, the reader
reconnects with its positions and the clock runs from the upgrade request until the last
replayed event has arrived. Medians of ``--samples`` reconnects for 0 and 100 missed events;
the difference is the replay's own cost.

    python -m bench.replay [--samples 200]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.parse

import websocket

from .common import CLIENT_CORE, Server


def _connect(port: int, client_id: str, pos: dict[str, list[object]] | None) -> tuple[
        websocket.WebSocket, dict[str, object]]:
    query = f"client-id={client_id}&protocol=2"
    if pos is not None:
        query += "&pos=" + urllib.parse.quote(json.dumps(pos))
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/chsk?{query}", timeout=10)
    return ws, json.loads(ws.recv())[0][1]


def _read(ws: websocket.WebSocket, pos: dict[str, list[object]], count: int) -> None:
    """Read batches until ``count`` bench events came; keep the positions current."""
    got = 0
    while got < count:
        payload = json.loads(ws.recv())[0]
        if isinstance(payload[0], list):
            *events, mark = payload
            got += len(events)
            pos.update(mark[1])


def sample(port: int, trigger: websocket.WebSocket, missed: int, n: int) -> float:
    ws, info = _connect(port, f"reader{n}", None)
    pos = dict(info["positions"])  # type: ignore[arg-type]
    ws.close()
    if missed:
        trigger.send(json.dumps([["bench/start", missed], None]))
        time.sleep(0.05)  # the broadcasts are in the log (one batching window)
    t0 = time.perf_counter()
    ws, info = _connect(port, f"reader{n}", pos)
    assert info["recovered"] is True, info
    _read(ws, pos, missed)
    elapsed = time.perf_counter() - t0
    ws.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {CLIENT_CORE})
    results: dict[int, float] = {}
    with Server("sente") as srv:
        trigger, _ = _connect(srv.port, "trigger", None)
        n = 0
        for missed in (0, 100):
            times = []
            for _ in range(args.samples):
                n += 1
                times.append(sample(srv.port, trigger, missed, n))
            results[missed] = statistics.median(times)
        trigger.close()
    base, with_replay = results[0] * 1000, results[100] * 1000
    print(f"reconnect, nothing missed:        {base:.2f} ms (median of {args.samples})")
    print(f"reconnect, 100 pushes replayed:   {with_replay:.2f} ms")
    print(f"replaying 100 entries costs:      {with_replay - base:.2f} ms "
          f"({(with_replay - base) * 10:.1f} µs per entry, server and client together)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
