"""What one Ajax event costs the server in Python, sockets aside: ``python -m bench.ajax_cost``.

W4 (``python -m bench``) measures a whole Ajax round trip over real sockets; most of its
~100 µs of server CPU is the socket and pywsgi's HTTP parsing, and its run-to-run swing on
a shared VM is larger than a change to the Ajax code. This isolates that code: a keyed POST
of ``bench/echo`` with a reply (what a W4 client sends) is called straight through the
app's WSGI callable — the fast-path middleware, the Ajax pipeline, the hub, the router, the
handler and its reply — in one process, no socket. Reported: CPU µs per event (best of 3
batches), for the code under test and for the tree of ``--baseline`` (exported by ``git
archive``), each in its own process pinned to one core, taking turns ``--runs`` times.

    python -m bench.ajax_cost --baseline 98ad042 [--events 20000] [--runs 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from .common import ROOT, SERVER_CORE, export_revision, pinned

#: Runs in the child process, with the tree to measure first on ``sys.path``.
CHILD = r"""
import sys
tree, events = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, tree)
from gevent import monkey; monkey.patch_all()
import io, time
import gevent
from bench.servers.sente import create_app
import flask_sente
assert flask_sente.__file__.startswith(tree), flask_sente.__file__
app = create_app()

def call(method, query, body=b"", headers=()):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/chsk", "QUERY_STRING": query,
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "5000", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/json", "HTTP_HOST": "127.0.0.1:5000",
               "wsgi.errors": sys.stderr, "SERVER_PROTOCOL": "HTTP/1.1"}
    for name, value in headers:
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen = {}
    def start_response(status, response_headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(response_headers)
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body

def main():
    query = "client-id=c1&protocol=2"
    call("GET", query + "&handshake=1")
    status, headers, _ = call("POST", query, b'[["bench/echo","x"],"ajax"]')
    key = headers.get("X-Sente-Key")
    assert key, (status, headers)
    event = b'[["bench/echo","' + b"x" * 100 + b'"],"ajax"]'
    keyed = (("X-Sente-Key", key),)
    for _ in range(2000):
        call("POST", query, event, keyed)
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(events):
            status, headers, body = call("POST", query, event, keyed)
        best = min(best, (time.process_time() - start) / events * 1e6)
    assert status.startswith("200") and "X-Sente-Key" not in headers, (status, headers, body)
    print(f"{best:.2f}")

gevent.spawn(main).join()
"""


def measure(tree: Path, events: int) -> float:
    out = subprocess.run(pinned(SERVER_CORE, [sys.executable, "-c", CHILD, str(tree),
                                              str(events)]),
                         cwd=tree, check=True, capture_output=True, text=True, timeout=600)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ajax_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    trees = {"flask_sente": ROOT, f"flask_sente @ {args.baseline}":
             export_revision(args.baseline)}
    results: dict[str, list[float]] = {name: [] for name in trees}
    for run in range(1, args.runs + 1):
        for name, tree in trees.items():
            results[name].append(measure(tree, args.events))
            print(f"run {run} {name:<28} {results[name][-1]:6.2f} µs per keyed POST",
                  flush=True)
    now, before = (statistics.median(values) for values in results.values())
    print(f"\nmedian of {args.runs}: {now:.2f} µs now, {before:.2f} µs at {args.baseline}: "
          f"{now - before:+.2f} µs ({now / before:.2f}x)")


if __name__ == "__main__":
    main()
