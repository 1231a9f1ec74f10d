"""WebSocket echo benchmark (issue 2): flask_sente's handler vs stock gevent-websocket.

Each server is a plain Flask echo view in its own process pinned to core 0; the load is an
independent Node.js client (``bench/clients/echo_client.js`` on npm ``ws``, installed at run
time into the ignored ``bench/node_modules``) pinned to core 1: N connections in a closed
loop (each sends one ~100-byte text message, waits for the echo, sends the next), counted
over a fixed window after a warm-up. Each server runs ``--runs`` times, interleaved; we
report the median round trips per second, the min-max, and the ratio ours / stock.

    python -m bench.echo [--connections 100] [--seconds 10] [--warmup 3] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import CLIENTS, NODE_MODULES, ROOT, ensure_node_packages, pinned

CLIENT_JS = CLIENTS / "echo_client.js"

# --- the servers (run in the child process) --------------------------------------------

def serve(impl: str) -> None:
    from gevent import monkey

    monkey.patch_all()
    from flask import Flask, request

    app = Flask("bench_echo")
    if impl == "stock":
        from gevent.pywsgi import WSGIServer
        from geventwebsocket.handler import WebSocketHandler

        @app.route("/echo", websocket=True)
        def echo_stock() -> str:
            ws = request.environ["wsgi.websocket"]
            while True:
                msg = ws.receive()
                if msg is None:
                    break
                ws.send(msg)
            return ""

        server = WSGIServer(("127.0.0.1", 0), app, handler_class=WebSocketHandler, log=None)
    else:
        from flask_sente.exceptions import ConnectionClosed
        from flask_sente.server import make_server
        from flask_sente.transports.base import UPGRADE_ENVIRON_KEY

        @app.route("/echo")
        def echo_sente() -> str:
            ws = request.environ[UPGRADE_ENVIRON_KEY].accept()
            try:
                while True:
                    ws.send(ws.receive())
            except ConnectionClosed:
                pass
            return ""

        server = make_server(app, log=None)
    server.start()
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


# --- the runner -----------------------------------------------------------------------

def one_run(impl: str, args: argparse.Namespace) -> dict:
    server = subprocess.Popen(
        pinned(0, [sys.executable, "-m", "bench.echo", "--serve", impl]),
        cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            raise RuntimeError(f"{impl} server did not start: {line!r}")
        port = int(line.split()[1])
        out = subprocess.run(
            pinned(1, ["node", str(CLIENT_JS), f"ws://127.0.0.1:{port}/echo",
                       str(args.connections), str(args.warmup), str(args.seconds),
                       str(args.size)]),
            capture_output=True, text=True, check=True,
            timeout=args.warmup + args.seconds + 60)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["rate"] = result["roundtrips"] / result["seconds"]
        return result
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def versions() -> dict[str, str]:
    from importlib.metadata import version

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    ws = json.loads((NODE_MODULES / "ws" / "package.json").read_text())["version"]
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "gevent": version("gevent"),
        "gevent-websocket": version("gevent-websocket"),
        "flask": version("flask"),
        "node": node,
        "ws (npm)": ws,
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=["sente", "stock"], help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=100, help="message size in bytes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0

    ensure_node_packages()
    info = versions()
    print("; ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    rates: dict[str, list[float]] = {"stock": [], "sente": []}
    for run in range(args.runs):
        for impl in ("stock", "sente"):
            result = one_run(impl, args)
            if result["errors"] or result["opened"] != args.connections:
                raise RuntimeError(f"{impl} run had errors: {result}")
            rates[impl].append(result["rate"])
            print(f"run {run + 1} {impl:5}: {result['rate']:9.0f} round trips/s", flush=True)
            time.sleep(1)

    rows = {}
    for impl, label in (("stock", "stock gevent-websocket 0.10.1"),
                        ("sente", "flask_sente handler")):
        r = rates[impl]
        rows[impl] = {"label": label, "median": statistics.median(r), "min": min(r),
                      "max": max(r), "runs": r}
    ratio = rows["sente"]["median"] / rows["stock"]["median"]
    print()
    print(f"WebSocket echo: {args.connections} connections, closed loop, {args.size}-byte "
          f"text messages, {args.seconds:g} s after {args.warmup:g} s warm-up, "
          f"{args.runs} runs each")
    print()
    print("| server | median round trips/s | min-max |")
    print("|---|---:|---:|")
    for row in rows.values():
        print(f"| {row['label']} | {row['median']:,.0f} | "
              f"{row['min']:,.0f}-{row['max']:,.0f} |")
    print()
    print(f"ratio flask_sente / stock (medians): {ratio:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"versions": info, "args": vars(args) | {"json": None},
                                         "results": rows, "ratio": ratio}, indent=2,
                                        default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
