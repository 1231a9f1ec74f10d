"""What causal order costs a request (issue 25): a Flask route that pushes, with the Redis
backplane, now answers only once its push is in Redis.

Two flask_sente servers take turns, each in its own process pinned to core 0 with a Redis
of their own (a redis-server started here, on core 0 too): the code under test, and the
tree of ``--baseline`` (a git revision from before causal order) exported by ``git
archive``. Each serves ``/push`` (``sente.send`` to a user with a connected WebSocket, then
``"ok"``) and ``/nopush`` (``"ok"``). This process, on core 1, makes ``--requests``
sequential keep-alive requests to each route and reports the mean and p50/p99 latency per
request; the difference between the trees on ``/push`` is what a pushing request pays,
``/nopush`` shows what a request that pushes nothing pays (nothing, within noise).

    python -m bench.causal --baseline a4d3932 [--requests 3000] [--runs 3]
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import websocket

from .common import CLIENT_CORE, ROOT, SERVER_CORE, export_revision, pinned

#: The app both trees serve: inline, since the baseline tree has no module of it.
APP = r"""
from gevent import monkey; monkey.patch_all()
import os, sys
from flask import Flask, request
from flask_sente import Sente
from flask_sente.server import make_server

app = Flask("causal")
app.secret_key = "bench"
sente = Sente(app, csrf=False, backplane=os.environ["BENCH_BACKPLANE"],
              user_id=lambda client_id: request.args.get("u"))

@app.route("/push")
def push():
    sente.send("reader", ("b/n", 1))
    return "ok"

@app.route("/nopush")
def nopush():
    return "ok"

server = make_server(app, "127.0.0.1", 0, log=None)
server.start()
print(f"PORT {server.server_port}", flush=True)
server.serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(pinned(SERVER_CORE, [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--loglevel", "warning"]), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class App:
    """One tree's server process, pinned to the server core."""

    def __init__(self, tree: Path, redis_url: str) -> None:
        env = dict(os.environ, BENCH_BACKPLANE=redis_url, PYTHONPATH=str(tree))
        self.proc = subprocess.Popen(pinned(SERVER_CORE, [sys.executable, "-c", APP]),
                                     cwd=tree, env=env, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the server in {tree} did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def measure(port: int, path: str, requests: int) -> list[float]:
    """Seconds per request, sequential, one keep-alive connection (after a warm-up)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for i in range(requests + 200):
        t0 = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if i >= 200:
            times.append(time.perf_counter() - t0)
    conn.close()
    return times


def one_run(tree: Path, requests: int) -> dict[str, list[float]]:
    redis = Redis()
    app = None
    try:
        app = App(tree, f"redis://127.0.0.1:{redis.port}/0")
        reader = websocket.create_connection(
            f"ws://127.0.0.1:{app.port}/chsk?client-id=r&u=reader&protocol=2", timeout=10)
        reader.recv()
        try:
            return {path: measure(app.port, path, requests) for path in ("/nopush", "/push")}
        finally:
            reader.close()
    finally:
        if app is not None:
            app.stop()
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.causal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision before causal order")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is needed (make test installs it)", file=sys.stderr)
        return 2
    if shutil.which("taskset") is not None:  # this process is the load client
        os.sched_setaffinity(0, {CLIENT_CORE})
    trees = {"flask_sente": ROOT, f"baseline {args.baseline}": export_revision(args.baseline)}
    samples: dict[tuple[str, str], list[float]] = {}
    for run in range(args.runs):
        for name, tree in trees.items():  # alternating: drift hits both alike
            for path, times in one_run(tree, args.requests).items():
                samples.setdefault((name, path), []).extend(times)
                print(f"run {run + 1} {name:24} {path:8} mean "
                      f"{statistics.mean(times) * 1e6:8.1f} µs", flush=True)
    print("\n| tree | route | mean µs | p50 µs | p99 µs |\n|---|---|---|---|---|")
    for (name, path), times in samples.items():
        times.sort()
        print(f"| {name} | `{path}` | {statistics.mean(times) * 1e6:.1f} | "
              f"{times[len(times) // 2] * 1e6:.1f} | {times[int(len(times) * 0.99)] * 1e6:.1f} |")
    names = list(trees)
    for path in ("/nopush", "/push"):
        ours = statistics.mean(samples[(names[0], path)])
        base = statistics.mean(samples[(names[1], path)])
        print(f"\n`{path}`: {ours * 1e6:.1f} µs against {base * 1e6:.1f} µs "
              f"({ours / base:.2f}x, {(ours - base) * 1e6:+.1f} µs per request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
