"""What one Redis core costs and carries: ``python -m bench.capacity`` (issue 30, item 1).

flask_sente's Redis backplane against Flask-SocketIO's Redis ``message_queue`` (pub/sub), in
the same run, for each gunicorn worker count of ``--workers`` (default 1, 3 and 8): a fresh
``redis-server`` (127.0.0.1, ephemeral port, no persistence) for each system and worker
count, the bench app of that system under gunicorn pointed at it (``bench.cluster.server``:
flask_sente's ``SenteWorker``; Flask-SocketIO on gevent-websocket's worker, WebSocket
transport), ``--clients-per-worker`` (20) WebSocket clients spread over the workers by the
kernel (each its own user; the Node.js load clients of ``python -m bench``, mode ``listen``),
and a pusher in a process of its own (``bench/capacity_pusher.py``): flask_sente's
``Emitter``, or a write-only ``flask_socketio.SocketIO(message_queue=...)``, as a Celery
task would push. Each client is in a room of its own on Flask-SocketIO (a user's room) and
in one of ``--topics`` (10) topics (Flask-SocketIO: rooms), client i in topic i mod 10, so
the three workloads are the same for both:

- ``send``: pushes to one user each (``send(uid, event)``; ``emit(..., to=user_room)``),
  round-robin over the users, paced at ``--rate`` (1000/s);
- ``broadcast``: to every client (``broadcast``; ``emit`` without a room), ``--broadcast-rate``
  (100/s: each is a delivery to every client, and the servers share one core);
- ``publish``: to a topic (``publish(topic, ...)``; ``emit(..., to=topic_room)``),
  round-robin over the topics, ``--publish-rate`` (500/s);

each for ``--duration`` (10 s). Measured from Redis itself (``INFO cpu``, ``INFO stats``,
``INFO commandstats``) before the pushes and after every client got what was pushed to it
(or ``--settle`` s passed), each ÷ the pushes made: **Redis CPU µs per push** (used_cpu_user
+ used_cpu_sys: command execution and the network I/O to every subscriber), **bytes out and
in per push** (total_net_output_bytes / total_net_input_bytes: what Redis sends the workers
and the pusher, what it is sent), **commands per push** (total_commands_processed: the
commands a Lua script calls count too) and a per-command breakdown (commandstats: calls and
µs per push; a script's µs include those of the commands it calls). What Redis does when
nothing is pushed (the workers' heartbeats and presence, the INFO reads themselves) is
measured for ``--idle`` s before the first workload and taken out (the raw numbers are in the
JSON). Then pushes/s achieved, and deliveries counted at the clients against those expected
(a paced run that lost or duplicated one fails), and their push -> client latency.

``--saturate``: the same workloads with ``--pushers`` (4) pusher processes pushing as fast as
they can for the duration: sustained pushes/s and Redis's CPU utilisation (CPU s ÷ wall s
while pushing; about 1.0 means Redis's core is the bottleneck). On a 2-core machine the
pushers share a core with the servers, so expect the pushers, not Redis, to run out first
(utilisation well below 1.0): read the CPU per push then, not the pushes/s.

Pinning as in the other modules: gunicorn (master and workers) on core 0, Redis, the load
client (it only counts) and the paced pusher on core 1; under ``--saturate`` the pushers on
core 0, so that they do not take Redis's core. Ratios are flask_sente / Flask-SocketIO of
this same invocation; the per-push costs do not depend on how many cores there are (the
column "one Redis core: pushes/s" is 1 / CPU per push: what Redis's core would carry at that
cost).

    python -m bench.capacity                          # 1, 3, 8 workers, about 6 minutes
    python -m bench.capacity --workers 1,3 --duration 5
    python -m bench.capacity --saturate --pushers 4
    python -m bench.capacity --smoke                  # tiny, -w 1 (the smoke test)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import selectors
import shutil
import subprocess
import sys
import time
import typing as t
from pathlib import Path

from .common import (
    CLIENT_CORE,
    RESULTS,
    ROOT,
    SERVER_CORE,
    ensure_node_packages,
    pinned,
    raise_nofile,
    reap,
    run_client,
    versions,
)

WORKLOADS = ("send", "broadcast", "publish")
TITLES = {"send": "targeted pushes (send to one user)", "broadcast": "broadcasts",
          "publish": "topic publishes"}
#: system -> (bench.cluster.server's configuration, label, load client, its fixed params)
SYSTEMS: dict[str, tuple[str, str, str, dict[str, t.Any]]] = {
    "sente": ("sente-redis", "flask_sente", "ws_client.js",
              {"dialect": "sente", "protocol": 2}),
    "fsio": ("fsio-redis", "Flask-SocketIO", "sio_client.js",
             {"transport": "websocket", "userRoom": "bench/u"}),
}
TOPIC_PREFIX = "bench/t"
#: Redis counters read at each mark (from one ``INFO cpu stats commandstats``).
COUNTERS = ("cpu_s", "cpu_main_s", "net_out", "net_in", "commands")


@dataclasses.dataclass(frozen=True)
class Sizes:
    workers: tuple[int, ...] = (1, 3, 8)
    clients_per_worker: int = 20
    duration: float = 10.0
    rate: float = 1000.0
    broadcast_rate: float = 100.0
    publish_rate: float = 500.0
    topics: int = 10
    saturate: bool = False
    pushers: int = 4
    idle: float = 2.0
    settle: float = 15.0

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(workers=(1,), clients_per_worker=4, duration=0.5, rate=200,
                   broadcast_rate=40, publish_rate=100, topics=2, idle=0.3, settle=10)

    def rate_of(self, workload: str) -> float:
        if self.saturate:
            return 0.0
        return {"send": self.rate, "broadcast": self.broadcast_rate,
                "publish": self.publish_rate}[workload]


class RunFailed(RuntimeError):
    pass


def sample(admin: t.Any) -> dict[str, t.Any]:
    """Redis's counters now (one INFO command)."""
    info = admin.info("cpu", "stats", "commandstats")
    main = [info.get("used_cpu_user_main_thread"), info.get("used_cpu_sys_main_thread")]
    return {
        "t": time.monotonic(),
        "cpu_s": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "cpu_main_s": (sum(float(x) for x in main) if None not in main else None),
        "net_out": int(info["total_net_output_bytes"]),
        "net_in": int(info["total_net_input_bytes"]),
        "commands": int(info["total_commands_processed"]),
        "commandstats": {k[len("cmdstat_"):]: {"calls": int(v["calls"]), "usec": int(v["usec"])}
                         for k, v in info.items() if k.startswith("cmdstat_")},
    }


def delta(a: dict[str, t.Any], b: dict[str, t.Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"seconds": b["t"] - a["t"]}
    for key in COUNTERS:
        out[key] = None if a[key] is None or b[key] is None else b[key] - a[key]
    return out


def background(a: dict[str, t.Any], b: dict[str, t.Any],
               c: dict[str, t.Any]) -> dict[str, t.Any]:
    """From three samples, a and b back to back, then c ``idle`` s later: what one INFO read
    costs Redis (b - a) and what Redis does per second with nothing pushed."""
    per_info = delta(a, b)
    idle = delta(b, c)
    seconds = t.cast(float, idle["seconds"])
    rate: dict[str, float | None] = {}
    for key in COUNTERS:
        x, y = idle[key], per_info[key]
        rate[key] = None if x is None or y is None else max(0.0, (x - y) / seconds)
    return {"per_info": per_info, "per_second": rate, "seconds": idle["seconds"]}


def per_push(raw: dict[str, float | None], bg: dict[str, t.Any], infos: int,
             pushes: int) -> dict[str, float | None]:
    """The window's counters per push, less ``infos`` INFO reads and the idle background."""
    out: dict[str, float | None] = {}
    for key in COUNTERS:
        x, info, rate = raw[key], bg["per_info"][key], bg["per_second"][key]
        if x is None or info is None or rate is None or not pushes:
            out[key] = None
            continue
        out[key] = (x - infos * info - rate * t.cast(float, raw["seconds"])) / pushes
    return out


def command_breakdown(a: dict[str, t.Any], b: dict[str, t.Any],
                      pushes: int) -> dict[str, dict[str, float]]:
    """Calls and µs per push of each command that ran in the window (INFO left out)."""
    out = {}
    for name, after in b["commandstats"].items():
        before = a["commandstats"].get(name, {"calls": 0, "usec": 0})
        calls = after["calls"] - before["calls"]
        if calls and name != "info" and pushes:
            out[name] = {"calls": calls / pushes, "usec": (after["usec"] - before["usec"]) / pushes}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["usec"]))


def _readline(proc: subprocess.Popen[str], deadline: float, what: str) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            raise RunFailed(f"{what}: no answer in time")
    line = proc.stdout.readline()
    if not line:
        raise RunFailed(f"{what}: exited ({proc.wait(timeout=10)})")
    return line.strip()


class Pushers:
    """``count`` pusher processes (``bench.capacity_pusher``) of one system, pinned to
    ``core``; stopped (stdin closed, then killed if need be) on exit."""

    def __init__(self, system: str, redis_url: str, count: int, core: int) -> None:
        self.argv = pinned(core, [sys.executable, "-m", "bench.capacity_pusher", system,
                                  redis_url])
        self.count = count
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Pushers:
        try:
            for _ in range(self.count):
                self.procs.append(subprocess.Popen(self.argv, cwd=ROOT, text=True,
                                                   stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE))
            deadline = time.monotonic() + 30
            for proc in self.procs:
                line = _readline(proc, deadline, "pusher start")
                if line != "READY":
                    raise RunFailed(f"pusher start: {line!r}")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, commands: list[dict[str, t.Any]], timeout: float) -> list[dict[str, t.Any]]:
        for proc, command in zip(self.procs, commands, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        deadline = time.monotonic() + timeout
        return [json.loads(_readline(proc, deadline, "pusher")) for proc in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self.procs:
            reap(proc)
        self.procs = []


class Session:
    """Steers the load client (its ``MARK`` lines in, commands out) through the idle
    baseline and the workloads; ``result`` fills in as it goes."""

    def __init__(self, system: str, sizes: Sizes, admin: t.Any, pushers: Pushers,
                 log: t.Callable[[str], None]) -> None:
        self.system, self.sizes, self.admin, self.pushers, self.log = (
            system, sizes, admin, pushers, log)
        self.result: dict[str, t.Any] = {"workloads": {}}
        self._steps = self.steps()
        next(self._steps)

    def on_mark(self, mark: str) -> str | None:
        return self._steps.send(mark)

    def targets(self, workload: str, clients: list[dict[str, t.Any]]) -> tuple[list[t.Any],
                                                                                list[int]]:
        """The pushes' targets and how many clients each reaches."""
        if workload == "send":
            if self.system == "sente":
                return [c["target"] for c in clients], [1] * len(clients)
            userroom = SYSTEMS["fsio"][3]["userRoom"]
            return [f"{userroom}{i}" for i in range(len(clients))], [1] * len(clients)
        if workload == "broadcast":
            return [None], [len(clients)]
        topics = [f"{TOPIC_PREFIX}{j}" for j in range(self.sizes.topics)]
        return topics, [sum(1 for c in clients if c["topic"] == name) for name in topics]

    def steps(self) -> t.Generator[str | None, str, None]:
        sizes, admin = self.sizes, self.admin
        name, _, body = (yield None).partition(" ")
        if name != "ready":
            raise RunFailed(f"unexpected mark {name!r}")
        clients = json.loads(body)["clients"]
        pids = sorted({c["pid"] for c in clients})
        self.result.update(clients=len(clients), pids=pids, per_pid={
            str(p): sum(1 for c in clients if c["pid"] == p) for p in pids})
        a, b = sample(admin), sample(admin)
        time.sleep(sizes.idle)
        bg = background(a, b, sample(admin))
        self.result["background"] = bg
        for workload in WORKLOADS:
            targets, members = self.targets(workload, clients)
            n = self.pushers.count
            commands = [{"workload": workload, "targets": targets,
                         "rate": sizes.rate_of(workload) / n, "duration": sizes.duration,
                         "offset": j * len(targets) // n} for j in range(n)]
            before = sample(admin)
            ran = self.pushers.run(commands, sizes.duration + 60)
            mid = sample(admin)
            pushes = sum(r["pushes"] for r in ran)
            counts = [sum(col) for col in zip(*(r["counts"] for r in ran), strict=True)]
            expected = sum(c * m for c, m in zip(counts, members, strict=True))
            name, _, body = (yield f"count {expected} {sizes.settle}").partition(" ")
            after = sample(admin)
            if name != "count":
                raise RunFailed(f"unexpected mark {name!r}")
            got = json.loads(body)
            raw = delta(before, after)
            push_seconds = max(r["seconds"] for r in ran)
            pushing = delta(before, mid)
            cpu_pushing = pushing["cpu_s"]
            r = {
                "pushes": pushes, "seconds": push_seconds,
                "pushes_per_s": pushes / push_seconds if push_seconds else 0.0,
                "push_errors": sum(r["errors"] for r in ran),
                "first_push_error": next((r["first_error"] for r in ran if r["first_error"]),
                                         ""),
                "expected": expected, "delivered": got["delivered"],
                "delivered_pct": 100.0 * got["delivered"] / expected if expected else None,
                "delivery_wait_s": got["waited"], "client_errors": got["errors"],
                "latency_p50_ms": got["p50_ms"], "latency_p99_ms": got["p99_ms"],
                "redis_raw": raw,
                # INFO reads inside the window: the one before it (its reply) and mid.
                "per_push": per_push(raw, bg, 2, pushes),
                "redis_cpu_utilisation": (cpu_pushing / t.cast(float, pushing["seconds"])
                                          if cpu_pushing is not None else None),
                "commands": command_breakdown(before, after, pushes),
            }
            self.result["workloads"][workload] = r
            pp = r["per_push"]
            self.log(f"  {workload:9} {r['pushes_per_s']:>8,.0f} pushes/s  Redis "
                     f"{fmt(pp['cpu_s'], ',.1f', 1e6)} µs/push, "
                     f"{fmt(pp['net_out'], ',.0f')} B out/push, "
                     f"{fmt(pp['commands'], '.1f')} commands/push, "
                     f"CPU {r['redis_cpu_utilisation']:.0%} while pushing; delivered "
                     f"{r['delivered']:,}/{expected:,}"
                     + (f"; {r['push_errors']} push errors: {r['first_push_error']}"
                        if r["push_errors"] else ""))
            time.sleep(0.5)
        yield "quit"


def fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def ceiling(cpu_s: float | None) -> str:
    """The pushes/s that would keep one Redis core busy, at this CPU per push."""
    return "-" if not cpu_s or cpu_s <= 0 else f"{1 / cpu_s:,.0f}"


def run_config(system: str, workers: int, sizes: Sizes,
               log: t.Callable[[str], None]) -> dict[str, t.Any]:
    import redis

    from .cluster import redis_server, server

    config, _label, script, fixed = SYSTEMS[system]
    conns = workers * sizes.clients_per_worker
    with redis_server() as redis_url:
        admin = redis.Redis.from_url(redis_url, socket_timeout=10)
        try:
            version = admin.info("server")["redis_version"]
            with server(config, workers, redis_url) as (port, pid), \
                    Pushers(system, redis_url, sizes.pushers if sizes.saturate else 1,
                            SERVER_CORE if sizes.saturate else CLIENT_CORE) as pushers:
                session = Session(system, sizes, admin, pushers, log)
                timeout = 120 + sizes.idle + len(WORKLOADS) * (sizes.duration + sizes.settle + 70)
                client = run_client(script, {"mode": "listen", "port": port, "pid": pid,
                                             "workers": workers,
                                             "perWorker": sizes.clients_per_worker,
                                             "maxOpen": 4 * conns, "topics": sizes.topics,
                                             "topicPrefix": TOPIC_PREFIX, **fixed},
                                    timeout=timeout, on_mark=session.on_mark)
        finally:
            admin.close()
    result = session.result
    result.update(system=system, workers=workers, redis_version=version,
                  client_errors=client.get("errors", 0), opened=client.get("opened"))
    if len(result["workloads"]) != len(WORKLOADS):
        raise RunFailed(f"{len(result['workloads'])} of {len(WORKLOADS)} workloads")
    return result


def key(system: str, workers: int) -> str:
    return f"{system}-w{workers}"


def report(results: dict[str, dict[str, t.Any]], systems: list[str],
           sizes: Sizes) -> list[str]:
    lines: list[str] = []
    for workload in WORKLOADS:
        rate = "as fast as possible" if sizes.saturate else f"{sizes.rate_of(workload):g}/s"
        lines.append(f"### {TITLES[workload]} ({rate}, {sizes.duration:g} s)")
        lines.append("")
        lines.append("| system | workers | pushes/s | Redis CPU µs/push | one Redis core: "
                     "pushes/s | bytes out/push | bytes in/push | commands/push "
                     "| Redis CPU while pushing | delivered | latency p50 / p99 ms |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for workers in sizes.workers:
            for system in systems:
                res = results.get(key(system, workers), {})
                r = res.get("workloads", {}).get(workload)
                label = SYSTEMS[system][1]
                if r is None:
                    lines.append(f"| {label} | {workers} | failed: "
                                 f"{res.get('error', '?')[:80]} | | | | | | | | |")
                    continue
                pp = r["per_push"]
                lines.append(
                    f"| {label} | {workers} | {r['pushes_per_s']:,.0f} "
                    f"| {fmt(pp['cpu_s'], ',.1f', 1e6)} | {ceiling(pp['cpu_s'])} "
                    f"| {fmt(pp['net_out'], ',.0f')} "
                    f"| {fmt(pp['net_in'], ',.0f')} | {fmt(pp['commands'], '.1f')} "
                    f"| {r['redis_cpu_utilisation']:.2f} "
                    f"| {fmt(r['delivered_pct'], '.1f')}% "
                    f"({r['delivered']:,}/{r['expected']:,}) "
                    f"| {fmt(r['latency_p50_ms'], '.1f')} / {fmt(r['latency_p99_ms'], '.1f')} |")
        lines.append("")
        if {"sente", "fsio"} <= set(systems):
            for workers in sizes.workers:
                a = results.get(key("sente", workers), {}).get("workloads", {}).get(workload)
                b = results.get(key("fsio", workers), {}).get("workloads", {}).get(workload)
                if a is None or b is None:
                    continue

                def ratio(name: str, x: t.Any = a, y: t.Any = b) -> str:
                    p, q = x["per_push"][name], y["per_push"][name]
                    return f"{p / q:.2f}x" if p is not None and q else "-"

                rate_ratio = (a["pushes_per_s"] / b["pushes_per_s"]
                              if b["pushes_per_s"] else float("nan"))
                lines.append(f"- -w {workers}: flask_sente / Flask-SocketIO = Redis CPU/push "
                             f"{ratio('cpu_s')}, bytes out/push {ratio('net_out')}, "
                             f"bytes in/push {ratio('net_in')}, commands/push "
                             f"{ratio('commands')}"
                             + (f", pushes/s {rate_ratio:.2f}x" if sizes.saturate else ""))
            lines.append("")
    lines.append("### Redis commands per push (INFO commandstats: calls x µs each; a "
                 "script's µs include the commands it calls)")
    lines.append("")
    for workload in WORKLOADS:
        for workers in sizes.workers:
            for system in systems:
                r = results.get(key(system, workers), {}).get("workloads", {}).get(workload)
                if r is None:
                    continue
                top = list(r["commands"].items())[:8]
                text = ", ".join(f"{name} {c['calls']:.2f} x {c['usec'] / c['calls']:.1f}"
                                 for name, c in top if c["calls"])
                lines.append(f"- {workload}, {SYSTEMS[system][1]} -w {workers}: {text}")
    return lines


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Sizes()
    parser.add_argument("--smoke", action="store_true", help="tiny counts, -w 1")
    parser.add_argument("--systems", default="",
                        help="sente, fsio (default: both)")
    parser.add_argument("--workers", help="gunicorn worker counts (default "
                        + ",".join(map(str, d.workers)) + ")")
    parser.add_argument("--clients-per-worker", type=int,
                        help=f"WebSocket clients per worker ({d.clients_per_worker})")
    parser.add_argument("--duration", type=float, help=f"seconds of each workload "
                        f"({d.duration:g})")
    parser.add_argument("--rate", type=float, help=f"targeted pushes/s ({d.rate:g})")
    parser.add_argument("--broadcast-rate", type=float,
                        help=f"broadcasts/s ({d.broadcast_rate:g})")
    parser.add_argument("--publish-rate", type=float,
                        help=f"topic publishes/s ({d.publish_rate:g})")
    parser.add_argument("--topics", type=int, help=f"topics (rooms) ({d.topics})")
    parser.add_argument("--saturate", action="store_true",
                        help="push as fast as possible with --pushers processes")
    parser.add_argument("--pushers", type=int,
                        help=f"concurrent pusher processes with --saturate ({d.pushers})")
    parser.add_argument("--idle", type=float,
                        help=f"seconds of the idle baseline ({d.idle:g})")
    parser.add_argument("--settle", type=float,
                        help=f"longest wait for the deliveries after a workload "
                             f"({d.settle:g} s)")
    parser.add_argument("--json", type=Path, default=None,
                        help="raw results (default bench/results/capacity-<timestamp>.json; "
                             "'-' for none)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = Sizes.smoke() if args.smoke else Sizes()
    if args.workers:
        sizes = dataclasses.replace(sizes, workers=tuple(
            int(w) for w in args.workers.split(",") if w.strip()))
    for name in ("clients_per_worker", "duration", "rate", "broadcast_rate", "publish_rate",
                 "topics", "pushers", "idle", "settle"):
        if getattr(args, name) is not None:
            sizes = dataclasses.replace(sizes, **{name: getattr(args, name)})
    if args.saturate:
        sizes = dataclasses.replace(sizes, saturate=True)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] or list(SYSTEMS)
    unknown = set(systems) - set(SYSTEMS)
    if unknown or not sizes.workers or min(sizes.workers) < 1 or sizes.topics < 1:
        print(f"bad arguments: systems {systems}, workers {sizes.workers}, topics "
              f"{sizes.topics}", file=sys.stderr)
        return 2
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (make redis-deps)", file=sys.stderr)
        return 2
    notes = []
    if "fsio" in systems and importlib.util.find_spec("flask_socketio") is None:
        notes.append("Flask-SocketIO skipped: install bench/requirements.txt (make bench)")
        systems.remove("fsio")
    for note in notes:
        print(note, file=sys.stderr, flush=True)

    nofile = raise_nofile()
    ensure_node_packages(quiet=args.smoke)
    info = versions(["flask-socketio", "python-socketio", "python-engineio", "gunicorn",
                     "redis"])
    print("; ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    load_before = os.getloadavg()[0]
    mode = (f"saturation, {sizes.pushers} pushers" if sizes.saturate else
            f"paced: send {sizes.rate:g}/s, broadcast {sizes.broadcast_rate:g}/s, "
            f"publish {sizes.publish_rate:g}/s")
    where = ("the pushers on core 0 with gunicorn" if sizes.saturate
             else "the pusher on core 1 with Redis and the load client")
    print(f"open files limit {nofile}; gunicorn on core 0, Redis and the load client on "
          f"core 1, {where}; workers {','.join(map(str, sizes.workers))}, "
          f"{sizes.clients_per_worker} clients per worker, {sizes.topics} topics; {mode}; "
          f"{sizes.duration:g} s each; 1-minute load average {load_before:.1f}", flush=True)

    t0 = time.monotonic()
    results: dict[str, dict[str, t.Any]] = {}
    for workers in sizes.workers:
        for system in systems:
            began = time.monotonic()
            print(f"{SYSTEMS[system][1]}, -w {workers}:", flush=True)
            try:
                results[key(system, workers)] = run_config(
                    system, workers, sizes, lambda line: print(line, flush=True))
            except (RunFailed, RuntimeError, OSError, ValueError) as exc:
                results[key(system, workers)] = {"system": system, "workers": workers,
                                                 "error": str(exc)}
                print(f"  FAILED: {exc}", flush=True)
                continue
            r = results[key(system, workers)]
            print(f"  ({r['clients']} clients over {len(r['pids'])} worker(s): "
                  f"{sorted(r['per_pid'].values())}, {r['opened']} opened to get there; "
                  f"{time.monotonic() - began:.0f} s)", flush=True)
    elapsed = time.monotonic() - t0

    print(f"\nRedis's cost per push, net of its idle background ({elapsed:.0f} s in all; "
          f"1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} "
          f"at the end, {os.cpu_count()} cores):\n")
    print("\n".join(report(results, systems, sizes)))
    for note in notes:
        print(f"- {note}")

    path = args.json if args.json is not None else (
        RESULTS / f"capacity-{time.strftime('%Y%m%d-%H%M%S')}.json")
    if str(path) != "-":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "versions": info, "sizes": dataclasses.asdict(sizes), "elapsed": elapsed,
            "load_average": [load_before, os.getloadavg()[0]], "notes": notes,
            "systems": systems, "results": results}, indent=1))
        print(f"\nraw results: {path}")
    failed = any("error" in r for r in results.values())
    lost = not sizes.saturate and any(
        w["delivered"] != w["expected"] or w["push_errors"]
        for r in results.values() for w in r.get("workloads", {}).values())
    if lost:
        print("a paced workload lost, duplicated or failed pushes (see 'delivered')",
              file=sys.stderr)
    return 1 if failed or lost else 0


if __name__ == "__main__":
    sys.exit(main())
