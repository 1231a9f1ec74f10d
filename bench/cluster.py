"""Fan-out across workers through Redis: ``python -m bench.cluster``.

One client asks the server for ``m`` broadcasts; every client (spread over the workers by
the kernel: each connection lands on any of them) counts them; deliveries per second until
every client has all of them, as W2 measures on one process. With 3 workers each broadcast
goes from the worker that got the request through Redis to the other two. Configurations,
each in the same run, servers (gunicorn master and workers) pinned to core 0, Redis and the
Node.js load client on core 1:

- flask_sente, one process, in-memory backplane (the W2 server: no Redis at all);
- flask_sente under ``gunicorn -k flask_sente.worker.SenteWorker`` with the Redis
  backplane, ``-w 1`` and ``-w 3``;
- Flask-SocketIO (gevent) with its Redis ``message_queue`` under gunicorn with
  gevent-websocket's worker, ``-w 1`` and ``-w 3`` (WebSocket transport only: Socket.IO's
  polling would need sticky sessions);
- flask_sente with Redis, ``-w 3``, with ``send_buffer_ws=0`` (no 30 ms batching window).

Each run measures, per configuration:

- throughput: ``--rounds`` rounds of ``--m`` broadcasts (after one warm-up round);
  deliveries/s, and broadcasts/s (= deliveries/s ÷ clients: pushes through Redis per second);
- latency: then ``--paced`` broadcasts, one every ``--interval`` ms, each stamped by the
  server with ``time.time()`` (ms), twice (a warm-up round, then the measured one); every
  client takes its wall clock on arrival (same clock, one machine): push→client p50 and p99
  over every delivery of the measured round;
- Redis's cost per push, from ``INFO`` when the clients are connected and when the pushes
  are over (the client prints marks): the microseconds of the commands that carry pushes
  (``PUSH_COMMANDS``) and Redis's whole CPU time (command execution plus the network I/O to
  every subscriber; the workers' housekeeping too), each ÷ the broadcasts made.

Then: flask_sente ÷ Flask-SocketIO for each worker count and the scaling efficiency from 1
to 3 workers, throughput(3) / (3 × throughput(1)) — with all workers pinned to one core,
1.0 would mean three workers on one core do three times the work of one, so expect ≤ 1/3
plus what one worker leaves idle.

Needs ``redis-server`` (``make test`` installs it) and ``make bench``'s peers and npm
clients.

    python -m bench.cluster [--conns 300] [--m 100] [--rounds 3] [--runs 3]
                            [--paced 150] [--interval 20]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t

from .common import (
    CLIENT_CORE,
    ROOT,
    SERVER_CORE,
    ensure_node_packages,
    pinned,
    raise_nofile,
    reap,
    run_client,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


@contextlib.contextmanager
def redis_server() -> t.Iterator[str]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (make test installs it)")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(pinned(CLIENT_CORE, [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", workdir]), stdout=subprocess.DEVNULL)
    try:
        _wait_port(port, t.cast("subprocess.Popen[bytes]", proc))
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def server(config: str, workers: int, redis_url: str) -> t.Iterator[tuple[int, int]]:
    """(port, pid) of a server configuration, pinned to the server core."""
    port = _free_port()
    env = dict(os.environ)
    if config == "sente-local":
        argv = [sys.executable, "-m", "bench.serve", "sente"]
        port = 0
    else:
        sente = config.startswith("sente")
        if sente:
            env["BENCH_BACKPLANE"] = redis_url
        if config == "sente-redis-unbuffered":
            env["BENCH_SEND_BUFFER_WS"] = "0"
        else:
            env["BENCH_MESSAGE_QUEUE"] = redis_url
        argv = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b",
                f"127.0.0.1:{port}", "--backlog", "2048", "--log-level", "warning",
                "--no-control-socket", "--worker-connections", "4000",
                "-k", "flask_sente.worker.SenteWorker" if sente
                else "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
                "bench.servers.sente:create_app()" if sente
                else "bench.servers.fsio:create_app()"]
    proc = subprocess.Popen(pinned(SERVER_CORE, argv), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        if port == 0:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            port = int(line.split()[1])
        _wait_port(port, proc)
        time.sleep(1.0 * workers)  # every worker booted and listening
        yield port, proc.pid
    finally:
        proc.terminate()
        reap(proc, wait=15)


CONFIGS: tuple[tuple[str, str, int], ...] = (
    ("sente-local", "flask_sente, 1 process, in memory", 1),
    ("sente-redis", "flask_sente + Redis backplane, -w 1", 1),
    ("fsio-redis", "Flask-SocketIO + Redis message_queue, -w 1", 1),
    ("sente-redis", "flask_sente + Redis backplane, -w 3", 3),
    ("fsio-redis", "Flask-SocketIO + Redis message_queue, -w 3", 3),
    # The default send_buffer_ws (30 ms) batches pushes, and so adds up to 30 ms to each:
    # the same without it, to show what the batching costs and buys.
    ("sente-redis-unbuffered", "flask_sente + Redis backplane, -w 3, send_buffer_ws=0", 3),
)


#: The Redis commands that carry a push, per configuration: flask_sente appends with one
#: script per push (EVALSHA; redis-py's pipeline also asks SCRIPT EXISTS once per batch);
#: Flask-SocketIO PUBLISHes each emit. Commands a script calls count inside it.
PUSH_COMMANDS = {"sente-redis": ("cmdstat_evalsha", "cmdstat_script|exists"),
                 "sente-redis-unbuffered": ("cmdstat_evalsha", "cmdstat_script|exists"),
                 "fsio-redis": ("cmdstat_publish",)}


def redis_counters(client: t.Any) -> dict[str, float]:
    """Redis's CPU seconds (user + system: command execution and the network I/O of every
    client, subscribers included) and each command's total microseconds so far."""
    cpu = client.info("cpu")
    found = {"cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}
    for name, stats in client.info("commandstats").items():
        found[name] = float(stats["usec"])
    return found


def read_counters(client: t.Any, into: dict[str, dict[str, float]], mark: str) -> None:
    into[mark] = redis_counters(client)


def median_text(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    import redis

    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--conns", type=int, default=300)
    parser.add_argument("--m", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paced", type=int, default=150,
                        help="stamped broadcasts for the latency phase (0: none)")
    parser.add_argument("--interval", type=float, default=20.0,
                        help="milliseconds between two stamped broadcasts")
    args = parser.parse_args(argv)
    raise_nofile()
    ensure_node_packages()
    labels = [label for _, label, _ in CONFIGS]
    rates: dict[str, list[float]] = {label: [] for label in labels}
    p50: dict[str, list[float]] = {label: [] for label in labels}
    p99: dict[str, list[float]] = {label: [] for label in labels}
    command_us: dict[str, list[float]] = {label: [] for label in labels}
    cpu_us: dict[str, list[float]] = {label: [] for label in labels}
    pushes = args.m * (args.rounds + 1) + 2 * args.paced  # a warm-up round of each
    load_before = os.getloadavg()[0]
    with redis_server() as redis_url:
        admin = redis.Redis.from_url(redis_url, socket_timeout=10)
        for run in range(args.runs):
            for config, label, workers in CONFIGS:
                script, fixed = (("ws_client.js", {"dialect": "sente"})
                                 if config.startswith("sente")
                                 else ("sio_client.js", {"transport": "websocket"}))
                # Redis's counters around the pushes only (after the clients connected,
                # before they close: their presence scripts are not a push's cost).
                marks: dict[str, dict[str, float]] = {}
                with server(config, workers, redis_url) as (port, pid):
                    try:
                        r = run_client(script, {"mode": "fanout", "port": port, "pid": pid,
                                                "conns": args.conns, "m": args.m,
                                                "rounds": args.rounds, "paced": args.paced,
                                                "interval": args.interval, **fixed},
                                       timeout=300, on_mark=functools.partial(
                                           read_counters, admin, marks))
                    except RuntimeError as exc:
                        print(f"run {run + 1} {label}: FAILED {exc}", flush=True)
                        continue
                before, after = marks.get("pushes", {}), marks.get("end", {})
                latency = r.get("latency") or {}
                ok = (r.get("clients") == args.conns and not r.get("mismatched")
                      and not latency.get("mismatched", 0))
                line = f"run {run + 1} {label:48} {r['rate']:>12,.0f} deliveries/s"
                if latency:
                    line += f"  p50 {latency['p50_ms']:.1f} ms  p99 {latency['p99_ms']:.1f} ms"
                if config in PUSH_COMMANDS and before and after:
                    used = sum(after.get(k, 0) - before.get(k, 0)
                               for k in PUSH_COMMANDS[config]) / pushes
                    cpu = (after["cpu_s"] - before["cpu_s"]) * 1e6 / pushes
                    line += f"  Redis {used:.1f} us/push in commands, {cpu:.1f} us/push CPU"
                print(line + ("" if ok else "  (INCOMPLETE: " + str(r) + ")"), flush=True)
                if not ok:
                    continue
                rates[label].append(r["rate"])
                if latency:
                    p50[label].append(latency["p50_ms"])
                    p99[label].append(latency["p99_ms"])
                if config in PUSH_COMMANDS and before and after:
                    command_us[label].append(used)
                    cpu_us[label].append(cpu)
        admin.close()
    print(f"\n{args.conns} clients, {args.m} broadcasts x {args.rounds} rounds (throughput), "
          f"then {args.paced} stamped broadcasts every {args.interval:g} ms (latency); "
          f"{args.runs} runs; medians (min-max); 1-minute load average {load_before:.1f} "
          f"at the start, {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores):\n")
    print("| configuration | deliveries/s | min-max | broadcasts/s | latency p50 ms "
          "| p99 ms | Redis µs/push (commands) | Redis CPU µs/push |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    medians: dict[str, float] = {}
    for label in labels:
        values = rates[label]
        if not values:
            print(f"| {label} | failed | | | | | | |")
            continue
        medians[label] = statistics.median(values)
        print(f"| {label} | {medians[label]:,.0f} | {min(values):,.0f}-{max(values):,.0f} "
              f"| {medians[label] / args.conns:,.0f} | {median_text(p50[label])} "
              f"| {median_text(p99[label])} | {median_text(command_us[label])} "
              f"| {median_text(cpu_us[label])} |")
    print()
    for workers in (1, 3):
        ours = f"flask_sente + Redis backplane, -w {workers}"
        theirs = f"Flask-SocketIO + Redis message_queue, -w {workers}"
        if ours in medians and theirs in medians:
            print(f"-w {workers}: flask_sente / Flask-SocketIO = "
                  f"{medians[ours] / medians[theirs]:.2f}x deliveries/s, p99 "
                  f"{median_text(p99[ours])} ms vs {median_text(p99[theirs])} ms")
    for name in ("flask_sente + Redis backplane", "Flask-SocketIO + Redis message_queue"):
        one, three = medians.get(f"{name}, -w 1"), medians.get(f"{name}, -w 3")
        if one and three:
            print(f"scaling efficiency 1 -> 3 workers, {name}: "
                  f"throughput(3) / (3 x throughput(1)) = {three / (3 * one):.2f} "
                  f"(throughput(3) / throughput(1) = {three / one:.2f})")
    local = medians.get("flask_sente, 1 process, in memory")
    redis1 = medians.get("flask_sente + Redis backplane, -w 1")
    if local and redis1:
        print(f"Redis backplane / in memory, one process: {redis1 / local:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
