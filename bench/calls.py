"""Server -> client calls: ``python -m bench.calls`` (issue 28).

The server asks a client and waits for its answer: flask_sente's ``sente.call(uid, event,
client_id=..., timeout=...)`` (protocol 3) against Flask-SocketIO's ``socketio.call(event,
data, to=sid, timeout=...)`` (an emit with an ack). ``callers`` greenlets in the server
(started by one HTTP request, ``bench/servers/calls.py``, the same code for both) each run
a closed loop — call the next of ``clients`` connected clients (round-robin) with a
``size``-character string, check the answer is that string, repeat — for ``warmup`` +
``seconds`` (defaults: N = 100 clients, K = 50 callers, 100 characters, 1 s + 5 s, 3
runs); the round trips that end in the measured window give round trips/s and the p50/p99
of one call's latency, as the caller sees it. The clients answer with the call's data: the
Node.js load clients of ``python -m bench`` (npm ``ws`` speaking flask_sente's wire
protocol 3, npm ``socket.io-client`` acking the event), so the client side costs the same
for both. Configurations, each in the same run, servers (gunicorn master and workers)
pinned to core 0, the load client and Redis to core 1:

- one process: flask_sente (in-memory backplane) and Flask-SocketIO (no message queue),
  ``python -m bench.serve`` as for W1;
- across workers: ``gunicorn -w 2`` with Redis — flask_sente with its Redis backplane
  (``SenteWorker``), Flask-SocketIO with its Redis ``message_queue`` (gevent-websocket's
  worker, WebSocket transport). The load client keeps the trigger request on one worker
  (a keep-alive connection) and only clients connected to the *other* worker are called,
  so every request and every answer crosses Redis; the clients that land on the caller's
  worker stay open, idle, and there is at least one. python-socketio's Redis manager
  carries an emit's ack back to the emitting host, so Flask-SocketIO's ``call()`` works
  across processes, with two limits (docs/benchmarks.md): a process listens to the queue
  only from its first Socket.IO connection on (before it, every call from it times out —
  hence the idle client), and from about 100 calls in flight in one worker its publishes
  exhaust redis-py's pool of 100 connections, the manager reconnects, its listener misses
  the acks of about a second and those calls time out — hence K = 50 by default
  (``--callers 100 --only fsio-w`` fails every run).
- flask_sente with ``send_buffer_ws=0``, one process and ``-w 2`` (for information): a call
  request is a push, so it waits in the WebSocket batching window like any push; these rows
  show what the default 10 ms window costs a closed loop of calls.

A run counts only if every client connected and no call failed, timed out, came back
wrong or was left waiting; ratios are flask_sente / Flask-SocketIO of the medians of this
same invocation. The server CPU per call (all the processes involved, from /proc over the
measured window) is the number to compare on a machine shared with other work.

    python -m bench.calls                 # 6 configurations x 3 runs, about 3 minutes
    python -m bench.calls --runs 1 --seconds 2 --only sente,fsio    # a quick look
    python -m bench.calls --smoke         # tiny counts, one run (the smoke test)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time
import typing as t
from pathlib import Path

from .common import RESULTS, Server, ensure_node_packages, raise_nofile, run_client, versions


@dataclasses.dataclass(frozen=True)
class Config:
    key: str
    label: str
    #: 0: one process (``python -m bench.serve``); else gunicorn workers sharing Redis.
    workers: int
    #: ``bench.cluster.server``'s configuration name, or ``bench.serve``'s kind.
    kind: str
    peer: str  # "sente" or "fsio": the load client and the ratio's side
    informational: bool = False

    @property
    def client(self) -> tuple[str, dict[str, t.Any]]:
        return (("ws_client.js", {"dialect": "sente", "protocol": 3}) if self.peer == "sente"
                else ("sio_client.js", {"transport": "websocket"}))


def configs(workers: int) -> tuple[Config, ...]:
    w = f"-w {workers}"
    return (
        Config("sente", "flask_sente, 1 process", 0, "sente", "sente"),
        Config("fsio", "Flask-SocketIO, 1 process", 0, "fsio", "fsio"),
        Config("sente-w", f"flask_sente + Redis backplane, {w}", workers, "sente-redis",
               "sente"),
        Config("fsio-w", f"Flask-SocketIO + Redis message_queue, {w}", workers, "fsio-redis",
               "fsio"),
        Config("sente-nobuf", "flask_sente, 1 process, send_buffer_ws=0", 0, "sente",
               "sente", informational=True),
        Config("sente-w-nobuf", f"flask_sente + Redis backplane, {w}, send_buffer_ws=0",
               workers, "sente-redis-unbuffered", "sente", informational=True),
    )


@dataclasses.dataclass(frozen=True)
class Sizes:
    clients: int = 100
    callers: int = 50
    seconds: float = 5.0
    warmup: float = 1.0
    size: int = 100
    timeout: float = 10.0
    runs: int = 3
    workers: int = 2

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(clients=4, callers=4, seconds=0.5, warmup=0.2, runs=1)


@contextlib.contextmanager
def started(config: Config, redis_url: str | None) -> t.Iterator[tuple[int, int]]:
    """(port, pid) of the configuration's server, pinned to the server core."""
    if config.workers == 0:
        env = {"BENCH_SEND_BUFFER_WS": "0"} if config.key.endswith("-nobuf") else None
        with Server(config.kind, env=env) as srv:
            yield srv.port, srv.pid
        return
    from .cluster import server

    assert redis_url is not None
    with server(config.kind, config.workers, redis_url) as (port, pid):
        yield port, pid


class RunFailed(RuntimeError):
    pass


def check(r: dict[str, t.Any], sizes: Sizes) -> None:
    """Every client connected; no call failed, came back wrong or was left waiting; no
    client saw a call twice or lost its connection."""
    problems = []
    if r.get("clients") != sizes.clients:
        problems.append(f"{r.get('clients')} of {sizes.clients} clients")
    if r.get("call_errors"):
        problems.append(f"call errors {r['call_errors']}")
    if r.get("wrong"):
        problems.append(f"{r['wrong']} wrong answers")
    if r.get("stuck"):
        problems.append(f"{r['stuck']} callers still waiting after the timeout")
    if r.get("errors"):
        problems.append(f"{r['errors']} client errors")
    if not r.get("count"):
        problems.append("no round trip in the window")
    if problems:
        first = r.get("first_error") or {}
        raise RunFailed(", ".join(problems) + (f"; first: {first}" if first else ""))


def run_once(config: Config, sizes: Sizes, redis_url: str | None) -> dict[str, t.Any]:
    script, fixed = config.client
    with started(config, redis_url) as (port, pid):
        r = run_client(script, {"mode": "calls", "port": port, "pid": pid,
                                "conns": sizes.clients, "callers": sizes.callers,
                                "warmup": sizes.warmup, "seconds": sizes.seconds,
                                "size": sizes.size, "timeout": sizes.timeout,
                                "apart": config.workers > 0, **fixed},
                       timeout=sizes.warmup + sizes.seconds + sizes.timeout + 120)
    check(r, sizes)
    r["cpu_us_per_call"] = r["server_cpu"] * r["seconds"] / r["count"] * 1e6
    return r


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(chosen: t.Sequence[Config], results: dict[str, list[dict[str, t.Any]]],
           sizes: Sizes) -> list[str]:
    lines = ["| configuration | round trips/s | min-max | p50 ms | p99 ms "
             "| server CPU µs/call | server CPU (cores) | runs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in chosen:
        runs = [r for r in results.get(c.key, []) if "rate" in r]
        failed = len(results.get(c.key, [])) - len(runs)
        rates = [r["rate"] for r in runs]
        span = f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else "-"
        lines.append(
            f"| {c.label} | {fmt(med(rates), ',.0f')} | {span} "
            f"| {fmt(med([r['p50_ms'] for r in runs]), '.1f')} "
            f"| {fmt(med([r['p99_ms'] for r in runs]), '.1f')} "
            f"| {fmt(med([r['cpu_us_per_call'] for r in runs]), ',.0f')} "
            f"| {fmt(med([r['server_cpu'] for r in runs]), '.2f')} "
            f"| {len(runs)}{f' ({failed} failed)' if failed else ''} |")
    lines.append("")
    keys = {c.key for c in chosen}
    for ours, theirs, what in (("sente", "fsio", "one process"),
                               ("sente-w", "fsio-w", f"across workers (-w {sizes.workers})")):
        if ours not in keys or theirs not in keys:
            continue
        a = [r for r in results[ours] if "rate" in r]
        b = [r for r in results[theirs] if "rate" in r]
        if not a or not b:
            lines.append(f"- {what}: no ratio (a configuration failed every run)")
            continue

        def of(runs: list[dict[str, t.Any]], name: str) -> float:
            return t.cast(float, med([r[name] for r in runs]))

        lines.append(
            f"- {what}: flask_sente / Flask-SocketIO = "
            f"{of(a, 'rate') / of(b, 'rate'):.2f}x round trips/s, "
            f"p50 {of(a, 'p50_ms'):.1f} vs {of(b, 'p50_ms'):.1f} ms, "
            f"p99 {of(a, 'p99_ms'):.1f} vs {of(b, 'p99_ms'):.1f} ms, "
            f"server CPU per call {of(a, 'cpu_us_per_call') / of(b, 'cpu_us_per_call'):.2f}x")
    return lines


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Sizes()
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one run")
    parser.add_argument("--only", default="",
                        help="configurations: sente, fsio, sente-w, fsio-w, sente-nobuf, "
                             "sente-w-nobuf (default: all)")
    parser.add_argument("--clients", type=int, help=f"connected clients called (N, {d.clients})")
    parser.add_argument("--callers", type=int,
                        help=f"concurrent callers in the server (K, {d.callers})")
    parser.add_argument("--seconds", type=float, help=f"measured window ({d.seconds:g} s)")
    parser.add_argument("--warmup", type=float, help=f"warm-up before it ({d.warmup:g} s)")
    parser.add_argument("--size", type=int, help=f"characters per call's data ({d.size})")
    parser.add_argument("--timeout", type=float, help=f"each call's timeout ({d.timeout:g} s)")
    parser.add_argument("--runs", type=int, help=f"runs per configuration ({d.runs})")
    parser.add_argument("--workers", type=int, help=f"gunicorn workers ({d.workers})")
    parser.add_argument("--json", type=Path, default=None,
                        help="raw results (default bench/results/calls.json; '-' for none)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = Sizes.smoke() if args.smoke else Sizes()
    for name in ("clients", "callers", "seconds", "warmup", "size", "timeout", "runs",
                 "workers"):
        if getattr(args, name) is not None:
            sizes = dataclasses.replace(sizes, **{name: getattr(args, name)})
    every = configs(sizes.workers)
    only = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(only) - {c.key for c in every}
    if unknown:
        print(f"unknown configurations: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    chosen = [c for c in every if not only or c.key in only]
    notes = []
    if importlib.util.find_spec("flask_socketio") is None:
        notes.append("Flask-SocketIO skipped: install bench/requirements.txt (make bench)")
        chosen = [c for c in chosen if c.peer != "fsio"]
    if any(c.workers for c in chosen) and shutil.which("redis-server") is None:
        notes.append("across workers skipped: redis-server is not installed (make redis-deps)")
        chosen = [c for c in chosen if not c.workers]
    for note in notes:
        print(note, file=sys.stderr, flush=True)

    nofile = raise_nofile()
    ensure_node_packages()
    info = versions(["flask-socketio", "python-socketio", "python-engineio", "gunicorn",
                     "redis"])
    print("; ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    load_before = os.getloadavg()[0]
    print(f"open files limit {nofile}; servers on core 0, load client and Redis on core 1; "
          f"{sizes.clients} clients, {sizes.callers} callers, {sizes.size}-character data, "
          f"{sizes.warmup:g} s warm-up + {sizes.seconds:g} s, {sizes.runs} run(s); "
          f"1-minute load average {load_before:.1f}", flush=True)

    t0 = time.monotonic()
    results: dict[str, list[dict[str, t.Any]]] = {c.key: [] for c in chosen}
    with contextlib.ExitStack() as stack:
        redis_url = None
        if any(c.workers for c in chosen):
            from .cluster import redis_server

            redis_url = stack.enter_context(redis_server())
        for run in range(sizes.runs):
            for c in chosen:  # configurations alternate within a run, as in python -m bench
                began = time.monotonic()
                try:
                    r = run_once(c, sizes, redis_url)
                except (RunFailed, RuntimeError, OSError) as exc:
                    results[c.key].append({"error": str(exc)})
                    print(f"run {run + 1} {c.label:56} FAILED: {exc}", flush=True)
                    continue
                results[c.key].append(r)
                print(f"run {run + 1} {c.label:56} {r['rate']:>9,.0f} round trips/s  "
                      f"p50 {r['p50_ms']:5.1f} ms  p99 {r['p99_ms']:5.1f} ms  "
                      f"server CPU {r['server_cpu']:.0%} ({r['cpu_us_per_call']:,.0f} µs/call), "
                      f"client CPU {r['client_cpu']:.0%}"
                      + (f"  [{r['idle']} idle on the caller's worker]" if r.get("idle")
                         else "")
                      + f"  [{time.monotonic() - began:.1f} s]", flush=True)
                time.sleep(0.3)
    elapsed = time.monotonic() - t0

    print(f"\nMedians of {sizes.runs} run(s) ({elapsed:.0f} s in all; 1-minute load average "
          f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
          f"{os.cpu_count()} cores):\n")
    print("\n".join(report(chosen, results, sizes)))
    for note in notes:
        print(f"- {note}")

    path = args.json if args.json is not None else (
        None if args.smoke else RESULTS / "calls.json")
    if path is not None and str(path) != "-":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "versions": info, "sizes": dataclasses.asdict(sizes), "elapsed": elapsed,
            "load_average": [load_before, os.getloadavg()[0]], "notes": notes,
            "configs": {c.key: c.label for c in chosen}, "results": results}, indent=1))
        print(f"\nraw results: {path}")
    failed = any("error" in r for runs in results.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
