"""Where flask_sente's server spends its time under a workload: ``python -m bench.profile``.

Starts the flask_sente server pinned to core 0 as ``make bench`` does, attaches py-spy
(sampling, from outside the process: nothing in the server changes) while the workload's
load client runs on core 1, and prints the sampled time by area (our code, gevent, Flask /
Werkzeug, the JSON codec, socket calls), the top functions by self time and a few
inclusive totals. py-spy is not a project dependency: ``pip install py-spy`` first.

    python -m bench.profile W1            # also W2, W4, W5, P1, P2; --seconds, --rate, --top

For W5 the connect storm is repeated (a fresh batch of clients each time, the previous
batch closed) for as long as py-spy samples.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .common import Server, ensure_node_packages, raise_nofile, run_client
from .workloads import WORKLOADS, Sizes

#: Areas by file path fragment, first match wins; the rest is "other".
AREAS = (
    ("flask_sente/transports/", "flask_sente websocket transport"),
    ("flask_sente/protocol/frames.py", "flask_sente websocket transport"),
    ("flask_sente/", "flask_sente hub/router/views/protocol"),
    ("geventwebsocket/", "gevent-websocket"),
    ("gevent/", "gevent (hub, greenlets, sockets, pywsgi)"),
    ("flask/", "Flask / Werkzeug"),
    ("werkzeug/", "Flask / Werkzeug"),
    ("json/", "json codec"),
    ("bench/", "bench app handlers"),
)


def area(frame: str) -> str:
    for fragment, name in AREAS:
        if fragment in frame:
            return name
    return "other (stdlib, interpreter)"


def short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def summarize(raw: Path, top: int) -> list[str]:
    """Self time by area and function, and inclusive time by function, from py-spy's raw
    (collapsed stacks) output."""
    self_area: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    incl_fn: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        self_area[area(leaf)] += n
        self_fn[short(leaf)] += n
        for fn in {short(f) for f in frames}:
            incl_fn[fn] += n
    if not total:
        return ["no samples"]
    out = [f"{total} samples", "", "self time by area:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in self_area.most_common()]
    out += ["", f"top {top} functions by self time:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in self_fn.most_common(top)]
    out += ["", f"top {top} functions by inclusive time:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in incl_fn.most_common(top)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["W1", "W2", "W4", "W5", "P1", "P2"])
    parser.add_argument("--seconds", type=float, default=8.0, help="sampling window")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--idle", action="store_true", help="also count idle samples")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    raise_nofile()
    ensure_node_packages()
    w = next(w for w in WORKLOADS if w.key == args.workload)
    sizes = dataclasses.replace(Sizes.full(), seconds=args.seconds + 2, warmup=0.5,
                                w2_rounds=40, push_seconds=int(args.seconds) + 8)
    script, fixed = w.clients["sente"]
    raw = args.raw or Path(tempfile.mkstemp(suffix=".txt", prefix="pyspy-")[1])
    with Server("sente") as srv:
        params = {"mode": w.mode, "port": srv.port, "pid": srv.pid, **fixed,
                  **w.params(sizes)}
        result: dict = {}
        sampling = threading.Event()

        def load() -> None:
            result.update(run_client(script, params, timeout=w.timeout(sizes) + 120))
            while w.mode == "connect" and not sampling.is_set():
                rates = result.setdefault("rates", [])
                rates.append(run_client(script, params, timeout=w.timeout(sizes))["rate"])
                result["rate"] = sum(rates) / len(rates)

        client = threading.Thread(target=load)
        client.start()
        time.sleep(6 if w.mode == "push" else 1.5)  # connected and warm
        cmd = [pyspy, "record", "--pid", str(srv.pid), "--duration", str(int(args.seconds)),
               "--rate", str(args.rate), "--format", "raw", "--output", str(raw),
               "--nonblocking"] + (["--idle"] if args.idle else [])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=args.seconds + 60)
        sampling.set()
        client.join(timeout=w.timeout(sizes) + 180)
    metric = result.get("p99" if w.mode == "push" else "rate")
    unit = "connections/s" if w.mode == "connect" else w.unit
    print(f"{w.key} on flask_sente under py-spy ({args.rate} Hz): "
          f"{metric:,.0f} {unit}" if metric else f"{w.key}: {result}")
    print("\n".join(summarize(raw, args.top)))
    if args.raw is None:
        raw.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
