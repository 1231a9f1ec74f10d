"""``python -m bench`` (``make bench``): flask_sente against its peers, issue 7.

Runs W1-W5 (see ``bench/workloads.py`` and ``docs/benchmarks.md``) on flask_sente, raw
gevent-websocket, Flask-SocketIO (gevent) and python-socketio on uvicorn. Each server is a
fresh process pinned to core 0 for every run; the load clients are Node.js scripts
(``bench/clients/``, npm ``ws`` / ``socket.io-client``) pinned to core 1. Prints per-run
lines, then a table of medians and a table with min-max and the ratio flask_sente / peer
for every workload, measured in this same invocation.

    python -m bench                       # everything, 3 runs (about 10 minutes)
    python -m bench --only W1,W4 --runs 5
    python -m bench --baseline cf54d1b    # also flask_sente as of that commit, same run
    python -m bench --smoke               # tiny counts, one run, flask_sente + raw only
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

from .common import RESULTS, ensure_node_packages, export_revision, raise_nofile, versions
from .report import details, limits, matrix
from .runner import BASELINE_TREES, run_workload
from .workloads import BASELINE, SERVERS, WORKLOADS, Sizes

#: Servers that need packages from bench/requirements.txt.
NEEDS = {"fsock": "flask_sock", "fsio": "flask_socketio", "fsio_nd": "flask_socketio",
         "asgi": "uvicorn"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny counts, one run, flask_sente and raw gevent-websocket")
    parser.add_argument("--only", default="", help="workloads, e.g. W1,W3 (default: all)")
    parser.add_argument("--servers", default="",
                        help=f"servers, from {','.join(SERVERS)} (default: all)")
    parser.add_argument("--runs", type=int, help="runs per server (default 3)")
    parser.add_argument("--seconds", type=float, help="W1/W4 window (default 5)")
    parser.add_argument("--w3-conns", type=int,
                        help="W3 idle connections (default 5000; e.g. 10000, within ulimit -n)")
    parser.add_argument("--baseline", default="", metavar="REV",
                        help="also run flask_sente as of this git revision (a before/after "
                             "ratio from one run)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write raw results here (default bench/results/bench.json; "
                             "'-' for none)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = Sizes.smoke() if args.smoke else Sizes.full()
    if args.runs:
        sizes = dataclasses.replace(sizes, runs=args.runs)
    if args.seconds:
        sizes = dataclasses.replace(sizes, seconds=args.seconds)
    if args.w3_conns:
        sizes = dataclasses.replace(sizes, w3_conns=args.w3_conns)
    only = {k.strip().upper() for k in args.only.split(",") if k.strip()}
    workloads = [w for w in WORKLOADS if not only or w.key in only]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()] or (
        ["sente", "raw"] if args.smoke else list(SERVERS))
    unknown = set(servers) - set(SERVERS)
    if unknown:
        print(f"unknown servers: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    missing = sorted({s for s in servers if s in NEEDS
                      and importlib.util.find_spec(NEEDS[s]) is None})
    if missing:
        print(f"skipping {', '.join(missing)}: install bench/requirements.txt",
              file=sys.stderr)
        servers = [s for s in servers if s not in missing]

    if args.baseline:
        servers.insert(servers.index("sente") + 1 if "sente" in servers else 0, BASELINE)
        tree = export_revision(args.baseline)
        BASELINE_TREES[BASELINE] = tree
        SERVERS[BASELINE] = ("sente", (), f"flask_sente @ {args.baseline}")

    nofile = raise_nofile()
    ensure_node_packages()
    info = versions(["flask-sock", "simple-websocket", "flask-socketio", "python-socketio",
                     "python-engineio", "uvicorn", "uvloop", "httptools", "websockets"])
    print("; ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    print(f"open files limit {nofile}; server on core 0, load clients on core 1; "
          f"{sizes.runs} run(s) per server", flush=True)

    t0 = time.monotonic()
    results = {}
    for w in workloads:
        results[w.key] = run_workload(w, sizes, servers,
                                      lambda line: print(line, flush=True))
    elapsed = time.monotonic() - t0

    print()
    print(f"Medians of {sizes.runs} run(s) per server ({elapsed:.0f} s in all):")
    print()
    print("\n".join(matrix(workloads, results, sizes)))
    print()
    print("\n".join(details(workloads, results, sizes)))
    print()
    print("\n".join(limits(workloads, results)))

    path = args.json if args.json is not None else (
        None if args.smoke else RESULTS / "bench.json")
    if path is not None and str(path) != "-":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"versions": info, "sizes": dataclasses.asdict(sizes),
                                    "elapsed": elapsed, "results": results}, indent=1))
        print(f"\nraw results: {path}")
    failed = any("error" in r for res in results.values() for runs in res.values()
                 for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
