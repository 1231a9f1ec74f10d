"""Smoke test of the benchmark harness (``python -m bench --smoke``, ``python -m bench.calls
--smoke``, ``python -m bench.capacity --smoke``).

Checks only that the harness runs end to end and produces numbers: flask_sente and raw
gevent-websocket servers in their own processes, the Node.js load clients, the table. No
timing is asserted. Skipped where Node.js / npm are missing (the load clients need them).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="the benchmark's load clients need node and npm",
)


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ...`` in its own process group; on timeout end that group."""
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the harness, its servers and clients
            proc.communicate(timeout=10)


def test_bench_smoke_produces_numbers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # The first run may install the npm clients into bench/node_modules.
    done = _run(["-m", "bench", "--smoke", "--json", str(out)], timeout=180)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "| workload |" in done.stdout and "flask_sente" in done.stdout
    results: dict[str, dict[str, list[dict[str, t.Any]]]] = json.loads(
        out.read_text())["results"]
    assert set(results) == {"W1", "W1-10", "W1-1", "W2", "W3", "W3A", "W4", "P1", "P2",
                            "W5"}
    for key, servers in results.items():
        expected = {"sente"} if key in ("W3A", "W4") else {"sente", "raw"}
        assert set(servers) == expected, key
        for server, runs in servers.items():
            assert runs and all(isinstance(r.get("metric"), (int, float)) for r in runs), \
                (key, server, runs)


def test_calls_benchmark_smoke_produces_numbers(tmp_path: Path) -> None:
    """``python -m bench.calls --smoke``: server -> client calls, 4 callers over 4 clients,
    one process and (with redis-server) across two gunicorn workers; every configuration
    that ran has a round-trip rate and latencies (no value is asserted)."""
    out = tmp_path / "calls.json"
    done = _run(["-m", "bench.calls", "--smoke", "--json", str(out)], timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "| configuration |" in done.stdout and "flask_sente, 1 process" in done.stdout
    data = json.loads(out.read_text())
    results: dict[str, list[dict[str, t.Any]]] = data["results"]
    expected = {"sente", "sente-nobuf"}
    if shutil.which("redis-server") is not None:
        expected |= {"sente-w", "sente-w-nobuf"}
    assert expected <= set(results) == set(data["configs"]), (sorted(results), data["notes"])
    for key, runs in results.items():
        assert runs and all(isinstance(r.get("rate"), (int, float)) and r["count"] > 0
                            and r["p99_ms"] is not None for r in runs), (key, runs)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_capacity_benchmark_smoke_produces_numbers(tmp_path: Path) -> None:
    """``python -m bench.capacity --smoke``: gunicorn -w 1 with a Redis of its own, every
    workload paced for half a second; Redis's per-push costs are there and every push
    arrived exactly once (no value is asserted)."""
    out = tmp_path / "capacity.json"
    done = _run(["-m", "bench.capacity", "--smoke", "--json", str(out)], timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "| system | workers | pushes/s |" in done.stdout
    data = json.loads(out.read_text())
    expected = {"sente-w1"} | ({"fsio-w1"} if "fsio" in data["systems"] else set())
    assert set(data["results"]) == expected, data["notes"]
    for key, result in data["results"].items():
        assert "error" not in result, result
        assert set(result["workloads"]) == {"send", "broadcast", "publish"}, key
        for name, w in result["workloads"].items():
            assert w["pushes"] > 0 and w["pushes_per_s"] > 0, (key, name, w)
            assert w["expected"] > 0 and w["delivered"] == w["expected"], (key, name, w)
            per_push = w["per_push"]
            for field in ("cpu_s", "net_out", "net_in", "commands"):
                assert isinstance(per_push[field], (int, float)), (key, name, field)
            assert per_push["commands"] > 0 and per_push["net_out"] > 0, (key, name)
            assert w["commands"], (key, name)  # the INFO commandstats breakdown


def test_echo_benchmark_command_still_loads() -> None:
    done = _run(["-m", "bench.echo", "--help"], timeout=30)
    assert done.returncode == 0, done.stdout
    assert "--connections" in done.stdout
