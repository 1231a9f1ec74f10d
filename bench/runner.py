"""Runs workloads: for each run, each server in turn gets a fresh process and one load
client run; the per-run metrics (or the failure) are collected per server.

Servers alternate within a run, so slow drifts of the machine (other load, thermal) hit
every server alike.
"""
from __future__ import annotations

import time
import typing as t
from pathlib import Path

from .common import ROOT, Server, run_client
from .workloads import BASELINE, SERVERS, Sizes, Workload

#: Where the baseline server's tree is (set by ``python -m bench --baseline REV``).
BASELINE_TREES: dict[str, Path] = {}

Log = t.Callable[[str], None]


class RunFailed(RuntimeError):
    pass


def check(result: dict[str, t.Any], expected_clients: int) -> None:
    """A run counts only if every client connected and nothing was lost or wrong."""
    problems = []
    if result.get("errors"):
        problems.append(f"{result['errors']} client errors")
    if result.get("mismatched"):
        problems.append(f"{result['mismatched']} clients with a wrong event count")
    if result.get("clients") != expected_clients:
        problems.append(f"{result.get('clients')} of {expected_clients} clients")
    if problems:
        raise RunFailed(", ".join(problems))


def run_once(w: Workload, server: str, sizes: Sizes) -> dict[str, t.Any]:
    kind, extra, _label = SERVERS[server]
    script, fixed = w.clients["sente" if server == BASELINE else server]
    params = w.params(sizes)
    with Server(kind, *extra, cwd=BASELINE_TREES.get(server, ROOT)) as srv:
        result = run_client(script, {"mode": w.mode, "port": srv.port, "pid": srv.pid,
                                     **fixed, **params}, timeout=w.timeout(sizes))
    check(result, params["conns"])
    result["metric"] = w.metric(result)
    return result


def run_workload(w: Workload, sizes: Sizes, servers: t.Iterable[str],
                 log: Log) -> dict[str, list[dict[str, t.Any]]]:
    """``{server: [result per run]}``; a failed run is ``{"error": "..."}``."""
    chosen = [s for s in w.servers if s in set(servers)]
    if BASELINE in servers and "sente" in chosen:  # the baseline runs where we do
        chosen.insert(chosen.index("sente") + 1, BASELINE)
    results: dict[str, list[dict[str, t.Any]]] = {s: [] for s in chosen}
    for run in range(sizes.runs):
        for server in chosen:
            t0 = time.monotonic()
            try:
                result = run_once(w, server, sizes)
            except (RunFailed, RuntimeError, OSError) as exc:
                result = {"error": str(exc)}
                log(f"{w.key} run {run + 1} {SERVERS[server][2]}: FAILED: {exc}")
            else:
                cpu = ""
                if result.get("server_cpu") is not None:
                    cpu = (f"  (server CPU {result['server_cpu']:.0%}, "
                           f"client CPU {result['client_cpu']:.0%})")
                log(f"{w.key} run {run + 1} {SERVERS[server][2]:30} "
                    f"{result['metric']:>12,.{w.digits}f} {w.unit}{cpu}"
                    f"  [{time.monotonic() - t0:.1f} s]")
            results[server].append(result)
            time.sleep(0.3)
    return results
