"""The workloads W1-W5 of issue 7: which servers run them, with which load client, what
the client is asked to do, and which number of its result is the metric.

A workload's ``ratio`` column is always ``flask_sente / peer`` in the workload's own unit,
so for W3 (KiB per connection) and W5 (seconds) lower is better and the targets are ``<=``.
"""
from __future__ import annotations

import dataclasses
import typing as t

#: Servers under test: key -> (``bench.serve`` kind, extra arguments, label).
SERVERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sente": ("sente", (), "flask_sente"),
    "raw": ("raw", (), "raw gevent-websocket"),
    "fsock": ("fsock", (), "Flask-Sock (gevent)"),
    "fsio": ("fsio", (), "Flask-SocketIO (gevent)"),
    "fsio_nd": ("fsio", ("--nodelay",), "Flask-SocketIO + TCP_NODELAY"),
    "asgi": ("asgi", (), "python-socketio (uvicorn)"),
}
#: Key of flask_sente at an earlier commit (``--baseline REV``), run like "sente".
BASELINE = "base"
#: The columns of the summary matrix, in order.
COLUMNS = ("sente", "raw", "fsock", "fsio", "asgi")

#: The load client of each server per transport: (script, fixed parameters).
WS_CLIENTS: dict[str, tuple[str, dict[str, t.Any]]] = {
    "sente": ("ws_client.js", {"dialect": "sente"}),
    "raw": ("ws_client.js", {"dialect": "raw"}),
    "fsock": ("ws_client.js", {"dialect": "raw"}),
    "fsio": ("sio_client.js", {"transport": "websocket"}),
    "fsio_nd": ("sio_client.js", {"transport": "websocket"}),
    "asgi": ("sio_client.js", {"transport": "websocket"}),
}
AJAX_CLIENTS: dict[str, tuple[str, dict[str, t.Any]]] = {
    "sente": ("ajax_client.js", {}),
    "fsio": ("sio_client.js", {"transport": "polling"}),
    "fsio_nd": ("sio_client.js", {"transport": "polling"}),
    "asgi": ("sio_client.js", {"transport": "polling"}),
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Counts and durations; ``full()`` is what ``make bench`` runs, ``smoke()`` a check."""

    runs: int = 3
    seconds: float = 5.0       # W1/W4 measuring window
    warmup: float = 1.0        # W1/W4 warm-up before the window
    size: int = 100            # W1/W4 message size in characters
    w1_conns: int = 100
    w2_conns: int = 1000
    w2_msgs: int = 100
    w2_rounds: int = 3         # measured rounds (after one warm-up round)
    w3_conns: int = 5000
    w3_warm: int = 20          # connections open before the baseline RSS is read
    w3_settle: float = 2.0
    w3_idle: float = 5.0       # seconds the server's CPU is measured with them all idle
    w3a_conns: int = 1000      # W3A: idle Ajax clients (a parked poll + a keep-alive each)
    w4_conns: int = 10
    w5_conns: int = 2000
    push_conns: int = 1000     # P1/P2 clients (one user each)
    push_seconds: int = 5      # P1: seconds of 1 push/s per user; P2: bursts, one a second

    @classmethod
    def full(cls) -> Sizes:
        return cls()

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(runs=1, seconds=0.5, warmup=0.2, w1_conns=10, w2_conns=20, w2_msgs=10,
                   w2_rounds=1, w3_conns=50, w3_warm=2, w3_settle=0.3, w3_idle=0.3, w3a_conns=10,
                   w4_conns=2, push_conns=20, push_seconds=1,
                   w5_conns=20)


@dataclasses.dataclass(frozen=True)
class Target:
    peer: str
    op: str          # ">=" or "<="
    value: float

    def met(self, ratio: float) -> bool:
        return ratio >= self.value if self.op == ">=" else ratio <= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}x"


@dataclasses.dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    mode: str
    clients: dict[str, tuple[str, dict[str, t.Any]]]
    servers: tuple[str, ...]
    params: t.Callable[[Sizes], dict[str, t.Any]]
    metric: t.Callable[[dict[str, t.Any]], float]
    timeout: t.Callable[[Sizes], float]
    targets: tuple[Target, ...] = ()
    digits: int = 0


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "W1", "echo with reply, closed loop", "round trips/s", True, "rtt", WS_CLIENTS,
        ("sente", "raw", "fsock", "fsio", "asgi"),
        lambda s: {"conns": s.w1_conns, "warmup": s.warmup, "seconds": s.seconds,
                   "size": s.size},
        lambda r: r["rate"],
        lambda s: s.warmup + s.seconds + 90,
        (Target("raw", ">=", 2), Target("fsock", ">=", 1.5), Target("fsio", ">=", 4)),
    ),
    Workload(
        "W1-10", "echo with reply, closed loop, 10 connections", "round trips/s", True, "rtt",
        WS_CLIENTS, ("sente", "raw", "fsock", "fsio", "asgi"),
        lambda s: {"conns": min(10, s.w1_conns), "warmup": s.warmup, "seconds": s.seconds,
                   "size": s.size},
        lambda r: r["rate"],
        lambda s: s.warmup + s.seconds + 90,
    ),
    Workload(
        "W1-1", "echo with reply, closed loop, 1 connection (latency-bound)", "round trips/s",
        True, "rtt", WS_CLIENTS, ("sente", "raw", "fsock", "fsio", "asgi"),
        lambda s: {"conns": 1, "warmup": s.warmup, "seconds": s.seconds, "size": s.size},
        lambda r: r["rate"],
        lambda s: s.warmup + s.seconds + 90,
    ),
    Workload(
        "W2", "fan-out (broadcast)", "deliveries/s", True, "fanout", WS_CLIENTS,
        ("sente", "raw", "fsock", "fsio", "asgi"),
        lambda s: {"conns": s.w2_conns, "m": s.w2_msgs, "rounds": s.w2_rounds},
        lambda r: r["rate"],
        lambda s: 300,
        (Target("raw", ">=", 2), Target("fsio", ">=", 2)),
    ),
    Workload(
        "W3", "idle WebSocket memory", "KiB RSS per connection", False, "idle", WS_CLIENTS,
        ("sente", "raw", "fsock", "fsio", "asgi"),
        lambda s: {"conns": s.w3_conns, "warm": s.w3_warm, "settle": s.w3_settle,
                   "idleSeconds": s.w3_idle},
        lambda r: r["kib_per_client"],
        lambda s: 300,
        (Target("raw", "<=", 1.0),),
        digits=1,
    ),
    Workload(
        "W3A", "idle Ajax client memory (parked long-poll)", "KiB RSS per client", False,
        "idle", AJAX_CLIENTS, ("sente", "fsio", "asgi"),
        lambda s: {"conns": s.w3a_conns, "warm": s.w3_warm, "settle": s.w3_settle,
                   "idleSeconds": s.w3_idle},
        lambda r: r["kib_per_client"],
        lambda s: 300,
        digits=1,
    ),
    Workload(
        "W4", "Ajax / long-polling echo with reply", "round trips/s", True, "rtt",
        AJAX_CLIENTS, ("sente", "fsio", "fsio_nd", "asgi"),
        lambda s: {"conns": s.w4_conns, "warmup": s.warmup, "seconds": s.seconds,
                   "size": s.size},
        lambda r: r["rate"],
        lambda s: s.warmup + s.seconds + 90,
        (Target("fsio", ">=", 5), Target("asgi", ">=", 2)),
    ),
    Workload(
        "P1", "push latency, steady 1 push/s per user", "ms p99 push->client", False,
        "push", WS_CLIENTS, ("sente", "raw", "fsock", "fsio", "asgi"),
        lambda s: {"conns": s.push_conns, "kind": "steady", "seconds": s.push_seconds},
        lambda r: r["p99"],
        lambda s: s.push_seconds + 200,
        digits=1,
    ),
    Workload(
        "P2", "push latency, bursts (every user at once, once a second)",
        "ms p99 push->client", False, "push", WS_CLIENTS,
        ("sente", "raw", "fsock", "fsio", "asgi"),
        lambda s: {"conns": s.push_conns, "kind": "burst", "seconds": s.push_seconds},
        lambda r: r["p99"],
        lambda s: s.push_seconds + 200,
        digits=1,
    ),
    Workload(
        "W5", "connect storm, time to all handshakes", "s", False, "connect", WS_CLIENTS,
        ("sente", "raw", "fsock", "fsio", "asgi"),
        lambda s: {"conns": s.w5_conns},
        lambda r: r["seconds"],
        lambda s: 200,
        (Target("fsio", "<=", 0.5),),
        digits=3,
    ),
)


def describe(w: Workload, sizes: Sizes) -> str:
    """The workload's row label, with its counts."""
    counts = {
        "W1": f"{sizes.w1_conns} conns, {sizes.size} B",
        "W1-10": f"{min(10, sizes.w1_conns)} conns, {sizes.size} B",
        "W1-1": f"1 conn, {sizes.size} B",
        "W2": f"{sizes.w2_conns} clients x {sizes.w2_msgs} msgs",
        "W3": f"{sizes.w3_conns} conns",
        "W3A": f"{sizes.w3a_conns} clients",
        "W4": f"{sizes.w4_conns} clients, {sizes.size} B",
        "W5": f"{sizes.w5_conns} clients",
        "P1": f"{sizes.push_conns} users",
        "P2": f"{sizes.push_conns} users",
    }[w.key]
    return f"{w.key} {w.unit} ({counts})"
