"""What the admin dashboard costs the server: ``python -m bench.admin_cost`` (issue 29).

One flask_sente process (``python -m bench.serve sente``, pinned to core 0) holds ``conns``
WebSocket clients (the Node.js load client, core 1) and pushes each of them one event a
second, spread over the second (the P1 workload), for ``seconds``; the server's CPU is read
from /proc over that window. Three configurations, interleaved round by round so drift hits
them alike:

- ``off``: ``admin`` off (the default);
- ``on``: ``admin=True``, no dashboard open — what turning the option on costs by itself
  (the counters on the metrics call sites);
- ``dashboard``: ``admin=True`` and one dashboard open: a Python client asking
  ``sente.admin/overview`` (a page of 50 users and 50 topics) once a second, as the page
  does.

Reported per configuration: the median of the server's busy fraction (CPU seconds per
second), and for ``dashboard`` the overview's round trip p50/max as the dashboard sees it
and the server CPU per overview, measured directly: in the middle of the window the
dashboard asks ``BURST`` overviews back to back, and the server's CPU time over the burst
(from /proc), less what the pushes cost in that time (the ``on`` configuration's busy
fraction), is divided by them. (The difference of the busy fractions, one overview a
second, is within the run-to-run noise.) Every push must arrive (the load client counts
them) or the run fails.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import typing as t

from .common import RESULTS, Server, run_client, versions

CONFIGS = ("off", "on", "dashboard")
#: Overviews asked back to back for the direct measurement of one's server CPU.
BURST = 50
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
OVERVIEW = "sente.admin/overview"
QUERY = {"users": {"limit": 50}, "topics": {"limit": 50}}


class Dashboard:
    """A client asking for the overview once a second (never two in flight), in a thread."""

    def __init__(self, port: int, server_pid: int) -> None:
        from flask_sente.client import Client

        self.server_pid = server_pid
        #: The burst: (server CPU seconds, wall seconds) over BURST overviews.
        self.burst: tuple[float, float] | None = None

        self.client = Client(f"http://127.0.0.1:{port}/chsk", type="ws",
                             client_id="admin-dashboard", connect_timeout=10.0)
        self.times: list[tuple[float, float]] = []  # (when asked, round trip s)
        self.errors: list[str] = []
        self._stop = threading.Event()
        #: Which ask is the burst (set by the caller: the middle of the push window).
        self.burst_at = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.client.connect()
        if not self.client.wait_open(10.0):
            raise RuntimeError("the dashboard client did not connect")
        self._thread.start()

    def _server_cpu(self) -> float:
        fields = open(f"/proc/{self.server_pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def _burst(self) -> None:
        cpu, wall = self._server_cpu(), time.monotonic()
        for _ in range(BURST):
            self.client.call((OVERVIEW, QUERY), timeout=10.0)
        self.burst = (self._server_cpu() - cpu, time.monotonic() - wall)

    def _run(self) -> None:
        asked_n = 0
        while not self._stop.is_set():
            asked_n += 1
            if asked_n == self.burst_at:
                try:
                    self._burst()
                except Exception as exc:  # noqa: BLE001 - reported, and the run fails
                    self.errors.append(repr(exc)[:200])
            asked = time.monotonic()
            try:
                view = self.client.call((OVERVIEW, QUERY), timeout=10.0)
                if "totals" not in view:
                    self.errors.append(repr(view)[:200])
            except Exception as exc:  # noqa: BLE001 - reported, and the run fails
                self.errors.append(repr(exc)[:200])
            self.times.append((asked, time.monotonic() - asked))
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - asked)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15.0)
        self.client.close()


def run_one(config: str, conns: int, seconds: int) -> dict[str, t.Any]:
    env = {"BENCH_ADMIN": "1"} if config != "off" else None
    with Server("sente", env=env) as srv:
        dashboard = Dashboard(srv.port, srv.pid) if config == "dashboard" else None
        if dashboard is not None:
            # The clients take ~10 s to open; the burst lands in the push window's middle.
            dashboard.burst_at = 10 + seconds // 2
            dashboard.start()
        try:
            result = run_client("ws_client.js", {
                "mode": "push", "port": srv.port, "pid": srv.pid, "dialect": "sente",
                "conns": conns, "kind": "steady", "seconds": seconds}, timeout=seconds + 240)
            ended = time.monotonic()
        finally:
            if dashboard is not None:
                dashboard.stop()
    if result["errors"]:
        raise RuntimeError(f"{config}: {result['errors']} pushes missing or failed")
    row = {"config": config, "server_cpu": result["server_cpu"], "p99_ms": result["p99"],
           "pushes": result["count"]}
    if dashboard is not None:
        if dashboard.errors:
            raise RuntimeError(f"the dashboard's overview failed: {dashboard.errors[:3]}")
        # The load client's window is its last `seconds` (after opening the clients).
        window = [rtt for asked, rtt in dashboard.times if asked >= ended - seconds - 1]
        if dashboard.burst is None:
            raise RuntimeError("the dashboard's burst did not run: lengthen --seconds")
        row.update(burst_cpu_s=dashboard.burst[0], burst_wall_s=dashboard.burst[1])
        row.update(overviews=len(window), per_second=len(window) / (seconds + 1),
                   rtt_p50_ms=1000 * statistics.median(window),
                   rtt_max_ms=1000 * max(window))
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.admin_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows: list[dict[str, t.Any]] = []
    for n in range(args.rounds):
        for config in CONFIGS:
            row = run_one(config, args.conns, args.seconds)
            row["round"] = n + 1
            rows.append(row)
            print(json.dumps(row), flush=True)
    median = {c: statistics.median(r["server_cpu"] for r in rows if r["config"] == c)
              for c in CONFIGS}
    dash = [r for r in rows if r["config"] == "dashboard"]
    # The burst's CPU less what the pushes cost meanwhile (the "on" busy fraction).
    per_overview_ms = 1000 * statistics.median(
        (r["burst_cpu_s"] - median["on"] * r["burst_wall_s"]) / BURST for r in dash)
    summary = {
        "conns": args.conns, "seconds": args.seconds, "rounds": args.rounds,
        "server_cpu_median": median,
        "on_vs_off": median["on"] / median["off"],
        "dashboard_vs_on": median["dashboard"] / median["on"],
        "cpu_ms_per_overview": per_overview_ms,
        "overview_rtt_p50_ms": statistics.median(r["rtt_p50_ms"] for r in dash),
        "rows": rows, "versions": versions(),
    }
    print(f"\nserver CPU (busy fraction, median of {args.rounds}), {args.conns} clients, "
          f"{args.conns} pushes/s:")
    for config in CONFIGS:
        print(f"  {config:10s} {median[config]:.3f}")
    print(f"admin on / off: {summary['on_vs_off']:.3f}x; one dashboard open / on: "
          f"{summary['dashboard_vs_on']:.3f}x; server CPU per overview ({BURST} back to "
          f"back): {per_overview_ms:.2f} ms; overview round trip p50 "
          f"{summary['overview_rtt_p50_ms']:.1f} ms")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"admin_cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
