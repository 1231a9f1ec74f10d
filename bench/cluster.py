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
  polling would need sticky sessions).

Needs ``redis-server`` (``make test`` installs it) and ``make bench``'s peers and npm
clients. Prints the medians, min-max and flask_sente ÷ Flask-SocketIO for each worker
count.

    python -m bench.cluster [--conns 300] [--m 100] [--rounds 3] [--runs 3]
"""
from __future__ import annotations

import argparse
import contextlib
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
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


CONFIGS: tuple[tuple[str, str, int], ...] = (
    ("sente-local", "flask_sente, 1 process, in memory", 1),
    ("sente-redis", "flask_sente + Redis backplane, -w 1", 1),
    ("fsio-redis", "Flask-SocketIO + Redis message_queue, -w 1", 1),
    ("sente-redis", "flask_sente + Redis backplane, -w 3", 3),
    ("fsio-redis", "Flask-SocketIO + Redis message_queue, -w 3", 3),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--conns", type=int, default=300)
    parser.add_argument("--m", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    raise_nofile()
    ensure_node_packages()
    results: dict[str, list[float]] = {label: [] for _, label, _ in CONFIGS}
    with redis_server() as redis_url:
        for run in range(args.runs):
            for config, label, workers in CONFIGS:
                script, fixed = (("ws_client.js", {"dialect": "sente"})
                                 if config.startswith("sente")
                                 else ("sio_client.js", {"transport": "websocket"}))
                with server(config, workers, redis_url) as (port, pid):
                    try:
                        r = run_client(script, {"mode": "fanout", "port": port, "pid": pid,
                                                "conns": args.conns, "m": args.m,
                                                "rounds": args.rounds, **fixed}, timeout=300)
                    except RuntimeError as exc:
                        print(f"run {run + 1} {label}: FAILED {exc}", flush=True)
                        continue
                ok = r.get("clients") == args.conns and not r.get("mismatched")
                print(f"run {run + 1} {label:48} {r['rate']:>12,.0f} deliveries/s"
                      f"{'' if ok else '  (INCOMPLETE: ' + str(r) + ')'}", flush=True)
                if ok:
                    results[label].append(r["rate"])
    print(f"\n{args.conns} clients, {args.m} broadcasts x {args.rounds} rounds, "
          f"{args.runs} runs; medians (min-max):\n")
    print("| configuration | deliveries/s | min-max |")
    print("|---|---:|---:|")
    medians: dict[str, float] = {}
    for _, label, _ in CONFIGS:
        values = results[label]
        if values:
            medians[label] = statistics.median(values)
            print(f"| {label} | {medians[label]:,.0f} | {min(values):,.0f}-{max(values):,.0f} |")
        else:
            print(f"| {label} | failed | |")
    for workers in (1, 3):
        ours = medians.get(f"flask_sente + Redis backplane, -w {workers}")
        theirs = medians.get(f"Flask-SocketIO + Redis message_queue, -w {workers}")
        if ours and theirs:
            print(f"\n-w {workers}: flask_sente / Flask-SocketIO = {ours / theirs:.2f}x")
    local = medians.get("flask_sente, 1 process, in memory")
    redis1 = medians.get("flask_sente + Redis backplane, -w 1")
    if local and redis1:
        print(f"Redis backplane / in memory, one process: {redis1 / local:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
