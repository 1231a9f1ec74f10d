"""Issue 16 item 1: prometheus_client's multiprocess mode under real ``gunicorn -w 2`` with
docs/deployment/gunicorn.conf.py — a scrape of any worker adds up every worker's counters,
and a dead worker's live gauges leave the sums (its ``child_exit`` hook)."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import time
import typing as t

import gevent
import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

from .conftest import TIMEOUT, gunicorn

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    resp = requests.get(base + "/metrics", timeout=TIMEOUT, headers={"Connection": "close"})
    assert resp.status_code == 200, resp.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def call(base: str, event: t.Any) -> t.Any:
    """One Ajax call on a fresh TCP connection (the kernel picks the worker)."""
    resp = requests.post(base + "/chsk", params={"client-id": "drv", "u": "driver"},
                         data=json.dumps([event, "c"]), timeout=TIMEOUT,
                         headers={"Content-Type": "application/json", "Connection": "close"})
    return resp.json()[0][1]


def wait_for(base: str, name: str, labels: dict[str, str], expected: float) -> None:
    """Scrape until the sample has the expected value (gauges are sampled every 2 s). A
    missing sample is not 0: it is waited for, and named if it never comes."""
    key = (name, tuple(sorted(labels.items())))
    deadline = time.monotonic() + 3 * TIMEOUT
    while True:
        last = scrape(base).get(key)
        if last == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} never {expected}: last scrape "
                                 f"{'had no such sample' if last is None else last}")
        gevent.sleep(0.2)


def test_multiprocess_metrics_add_up_across_workers(tmp_path: pathlib.Path):
    metrics_dir = tmp_path / "prometheus"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # the config's on_starting wipes it
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    env.pop("SENTE_TEST_REDIS", None)
    with gunicorn(tmp_path, env, 2) as (_, port):
        base = f"http://127.0.0.1:{port}"
        ajax_calls, pids = 0, set()
        with gevent.Timeout(3 * TIMEOUT, AssertionError("the calls never reached 2 workers")):
            while len(pids) < 2 or ajax_calls < 20:
                pids.add(call(base, ("t/pid", None)))
                ajax_calls += 1
        sockets: dict[int, list[websocket.WebSocket]] = {pid: [] for pid in pids}
        try:
            with gevent.Timeout(3 * TIMEOUT, AssertionError("no WebSocket on each worker")):
                while min(len(s) for s in sockets.values()) < 1 or sum(
                        len(s) for s in sockets.values()) < 3:
                    n = sum(len(s) for s in sockets.values())
                    ws = websocket.create_connection(
                        f"ws://127.0.0.1:{port}/chsk?client-id=w{n}&u=w{n}", timeout=TIMEOUT)
                    ws.recv()
                    ws.send(json.dumps([["t/pid", None], "c"]))
                    sockets[json.loads(ws.recv())[0][1]].append(ws)
            open_ws = sum(len(s) for s in sockets.values())
            # Every call above was one event received by one worker or the other: summed.
            samples = scrape(base)
            received_ajax = samples[("sente_events_received_total", (("transport", "ajax"),))]
            assert received_ajax == ajax_calls
            assert samples[("sente_events_received_total", (("transport", "ws"),))] == open_ws
            assert samples[("sente_handshakes_total", (("transport", "ws"),))] == open_ws
            wait_for(base, "sente_connections", {"transport": "ws"}, open_ws)

            victim = next(iter(sockets))
            os.kill(victim, signal.SIGKILL)  # gunicorn's child_exit marks it dead
            wait_for(base, "sente_connections", {"transport": "ws"},
                     open_ws - len(sockets[victim]))
            # Its counters stay in the sums.
            after = scrape(base)[("sente_events_received_total", (("transport", "ajax"),))]
            assert after == received_ajax
        finally:
            for group in sockets.values():
                for ws in group:
                    ws.close()
