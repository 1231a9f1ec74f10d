"""Issue 16 item 1: Prometheus metrics, scraped over HTTP from a real server.

Each test gets a registry of its own (``metrics=<CollectorRegistry>``) so the counts it
reads are its own; the clients are plain websocket-client and requests.
"""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import typing as t

import gevent
import pytest
import requests
import websocket
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from flask_sente.testing import serve
from tests.scaleout.conftest import RedisServer, redis_server  # noqa: F401 (a fixture)

from .conftest import TIMEOUT, build_app, ws_connect
from .test_outbound_limits import _frames_until_close

TOKEN = "the-csrf-token"
ALICE, BOB = "alice-uid-31337", "bob-uid-27182"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> tuple[str, Samples]:
    resp = requests.get(base + "/metrics", timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return resp.text, samples


class MissingSample(AssertionError):
    """A sample the test reads is not in the scrape: a check of its value would prove
    nothing (``value`` used to read a missing sample as 0.0, so ``== 0`` passed for a
    metric that was not there at all)."""


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; a missing sample fails the test. (Shown by renaming the
    ``sente_redis_gap_repairs`` counter in ``metrics.py``: the publishes test, whose
    ``gap_repairs == 0`` passed on the missing sample before, failed with MissingSample.)"""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        raise MissingSample(f"no sample {name}{labels} in the scrape; it has "
                            f"{sorted({n for n, _ in samples})}")
    return samples[key]


def never_counted(text: str, samples: Samples, name: str, **labels: str) -> None:
    """A labelled counter that nothing incremented has no sample for those labels (its
    series is made at the first increment): check the family is declared in the scrape
    and that sample is absent — not that a missing sample "is 0"."""
    assert f"# TYPE {name} counter" in text, f"{name} is not in the scrape at all"
    key = (name, tuple(sorted(labels.items())))
    assert key not in samples, f"{name}{labels} was counted: {samples[key]}"


@contextlib.contextmanager
def metered(**options: t.Any) -> t.Iterator[tuple[str, t.Any]]:
    """A served app recording into a fresh registry, with ``/metrics`` mounted."""
    options.setdefault("metrics", CollectorRegistry())
    app, sente = build_app(**options)
    app.add_url_rule("/metrics", view_func=sente.metrics_view)

    @sente.on("t/echo")
    def echo(msg: t.Any) -> None:
        msg.reply(msg.data)

    @sente.on("t/silent")
    def silent(msg: t.Any) -> None:
        pass  # never replies: the reply timeout answers

    with serve(app) as base:
        yield base, sente


def wait_scrape(base: str, done: t.Callable[[Samples], bool]) -> tuple[str, Samples]:
    """Scrape until ``done`` holds (a handler's time is recorded just after its reply)."""
    with gevent.Timeout(TIMEOUT, AssertionError("metrics did not reach the expected values")):
        while True:
            text, samples = scrape(base)
            if done(samples):
                return text, samples
            gevent.sleep(0.02)


def test_counters_move_by_the_exact_amounts_and_no_uid_is_a_label():
    with metered(csrf=lambda: TOKEN) as (base, sente):
        url = base + "/chsk"
        ws = ws_connect(url.replace("http", "ws") + f"?client-id=ws-1&u={ALICE}"
                        f"&csrf-token={TOKEN}")
        ajax = requests.Session()
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
            params = {"client-id": "ajax-1", "u": BOB, "csrf-token": TOKEN}
            hs = ajax.get(url, params={**params, "handshake": 1}, timeout=TIMEOUT)
            assert hs.json()[0][0] == "chsk/handshake"
            poll = gevent.spawn(ajax.get, url, params=params, timeout=TIMEOUT)

            sent_ws = [json.dumps([["t/echo", {"n": n}], f"cb{n}"]) for n in range(3)]
            for frame in sent_ws:
                ws.send(frame)
            replies = [json.loads(ws.recv()) for _ in sent_ws]
            assert [r[1] for r in replies] == ["cb0", "cb1", "cb2"]
            sent_ajax = [json.dumps([["t/echo", n], "x"]) for n in range(2)]
            for body in sent_ajax:
                resp = requests.post(url, params={**params, "client-id": "ajax-2"},
                                     data=body, timeout=TIMEOUT,
                                     headers={"Content-Type": "application/json"})
                assert resp.json()[0][0] == "chsk/reply"

            sente.send(ALICE, ("t/pushed", {"to": "alice"}), flush=True)
            pushed_ws = ws.recv()
            assert json.loads(pushed_ws)[0] == [["t/pushed", {"to": "alice"}]]
            sente.send(BOB, ("t/pushed", {"to": "bob"}), flush=True)
            pushed_ajax = poll.get(timeout=TIMEOUT)
            assert pushed_ajax.json()[0] == [["t/pushed", {"to": "bob"}]]

            bad = requests.get(url, params={"client-id": "c", "csrf-token": "wrong"},
                               timeout=TIMEOUT)
            assert bad.status_code == 403
            with pytest.raises(websocket.WebSocketBadStatusException):
                ws_connect(url.replace("http", "ws") + "?client-id=c&csrf-token=wrong")
            assert requests.get(url, timeout=TIMEOUT).status_code == 400  # no client-id

            text, m = wait_scrape(base, lambda m: value(m, "sente_handler_seconds_count") == 5)
        finally:
            ws.close()
            ajax.close()

    assert value(m, "sente_handshakes_total", transport="ws") == 1
    assert value(m, "sente_handshakes_total", transport="ajax") == 1
    assert value(m, "sente_rejections_total", reason="csrf") == 2
    assert value(m, "sente_rejections_total", reason="client-id") == 1
    assert value(m, "sente_events_received_total", transport="ws") == 3
    assert value(m, "sente_received_bytes_total", transport="ws") == sum(map(len, sent_ws))
    assert value(m, "sente_events_received_total", transport="ajax") == 2
    assert value(m, "sente_received_bytes_total", transport="ajax") == sum(map(len, sent_ajax))
    assert value(m, "sente_events_pushed_total", transport="ws") == 1
    assert value(m, "sente_pushed_bytes_total", transport="ws") == len(pushed_ws)
    assert value(m, "sente_events_pushed_total", transport="ajax") == 1
    assert value(m, "sente_pushed_bytes_total", transport="ajax") == len(pushed_ajax.content)
    assert value(m, "sente_batch_events_count", transport="ws") == 1
    assert value(m, "sente_batch_events_bucket", transport="ws", le="1.0") == 1
    # ajax-1 polls; ajax-2 only posted (a POST does not make a client present)
    assert value(m, "sente_connections", transport="ws") == 1
    assert value(m, "sente_connections", transport="ajax") == 1
    assert value(m, "sente_users_online", transport="ws") == 1
    assert value(m, "sente_users_online", transport="ajax") == 1
    assert value(m, "sente_users_online", transport="any") == 2
    never_counted(text, m, "sente_reply_timeouts_total", transport="ws")
    for secret in (ALICE, BOB, "ws-1", "ajax-1", "ajax-2", TOKEN):
        assert secret not in text


def test_reply_timeouts_and_keepalive_closes_are_counted():
    with metered(reply_timeout=0.2, ws_keepalive=0.2, ws_ping_timeout=0.2) as (base, _):
        url = base + "/chsk"
        ws = ws_connect(url.replace("http", "ws") + "?client-id=w&u=ann")
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
            ws.send(json.dumps([["t/silent", None], "cb"]))
            resp = requests.post(url, params={"client-id": "a", "u": "bob"}, timeout=TIMEOUT,
                                 data=json.dumps([["t/silent", None], "x"]),
                                 headers={"Content-Type": "application/json"})
            assert resp.json()[0][0] == "chsk/timeout"
            while True:  # the timeout reply, pings left unanswered, then the 4002 close
                opcode, data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    assert int.from_bytes(data[:2], "big") == 4002
                    break
        finally:
            ws.close()
        _, m = scrape(base)
    assert value(m, "sente_reply_timeouts_total", transport="ws") == 1
    assert value(m, "sente_reply_timeouts_total", transport="ajax") == 1
    assert value(m, "sente_keepalive_closes_total") == 1


def test_the_redis_backplane_reports_its_publishes(redis_server: RedisServer):  # noqa: F811
    with metered(backplane=redis_server.url) as (base, sente):
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=w&u=ann")
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
            for n in range(3):
                sente.send("ann", ("t/n", n))
            got: list[t.Any] = []
            while len(got) < 3:
                got += [e for e in json.loads(ws.recv())[0] if e[0] == "t/n"]
            _, m = scrape(base)
        finally:
            ws.close()
    assert value(m, "sente_redis_published_pushes_total") == 3
    assert 1 <= value(m, "sente_redis_publish_seconds_count") <= 3
    assert value(m, "sente_redis_outbox_pushes") == 0
    assert value(m, "sente_redis_gap_repairs_total") == 0
    assert value(m, "sente_users_online", transport="ws") == 1


def test_a_missed_redis_notification_is_repaired_and_counted(redis_server: RedisServer):  # noqa: F811
    """An entry appended to the user's stream without its notification (as if the
    subscription dropped it): the next notification's seq shows the gap, and the entry is
    read from the stream before the one notified."""
    import redis

    from flask_sente.backplanes import redis_scripts as rs

    with metered(backplane=redis_server.url) as (base, sente):
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=w&u=ann")
        r = redis.Redis.from_url(redis_server.url, socket_timeout=TIMEOUT)
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
            meta, log, _ = rs.log_keys("sente", rs.user_key("ann"))
            seq = r.hincrby(meta, "seq", 1)
            r.xadd(log, {"e": rs.pack_event(["t/n", "unannounced"]), "t": "", "k": ""},
                   id=f"{seq}-0")
            sente.send("ann", ("t/n", "announced"))
            got: list[t.Any] = []
            while len(got) < 2:
                got += [e[1] for e in json.loads(ws.recv())[0] if e[0] == "t/n"]
            _, m = scrape(base)
        finally:
            r.close()
            ws.close()
    assert got == ["unannounced", "announced"]
    assert value(m, "sente_redis_gap_repairs_total") == 1


def test_the_default_registry_is_used_with_metrics_true():
    from prometheus_client import REGISTRY

    with metered(metrics=True) as (base, _):
        before = REGISTRY.get_sample_value("sente_handshakes_total", {"transport": "ajax"})
        requests.get(base + "/chsk", params={"client-id": "a", "handshake": 1},
                     timeout=TIMEOUT)
        _, m = scrape(base)
    assert value(m, "sente_handshakes_total", transport="ajax") == (before or 0) + 1


def test_the_view_says_when_metrics_are_off():
    app, sente = build_app()
    app.add_url_rule("/metrics", view_func=sente.metrics_view)
    with serve(app) as base:
        resp = requests.get(base + "/metrics", timeout=TIMEOUT)
    assert resp.status_code == 404
    assert "metrics=True" in resp.text


def test_a_bad_metrics_option_is_a_clear_error():
    from flask_sente.exceptions import ConfigError

    with pytest.raises(ConfigError, match="metrics must be"):
        build_app(metrics="yes")


def test_prometheus_client_is_never_imported_with_metrics_off():
    """A whole WebSocket and Ajax exchange in a fresh interpreter, then a look at
    ``sys.modules``."""
    code = """
from gevent import monkey; monkey.patch_all()
import json, sys, requests, websocket
from flask import Flask
from flask_sente import Sente
from flask_sente.testing import serve
app = Flask(__name__); app.secret_key = "k"
sente = Sente(app, csrf=False)
@sente.on("t/echo")
def echo(msg): msg.reply(msg.data)
with serve(app) as base:
    ws = websocket.create_connection(base.replace("http", "ws") + "/chsk?client-id=w",
                                     timeout=5)
    ws.recv(); ws.send(json.dumps([["t/echo", 1], "c"])); assert json.loads(ws.recv())[1] == "c"
    requests.get(base + "/chsk", params={"client-id": "a", "handshake": 1}, timeout=5)
    sente.send("sente/nil-uid", ("t/p", 1), flush=True); ws.recv(); ws.close()
print("prometheus_client" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_slow_client_closed_with_1013_is_counted_with_what_it_dropped():
    with metered(send_queue_bytes=1 << 20, write_timeout=10) as (base, sente):
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=slow&u=slow",
                        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        try:
            ws.recv()  # the handshake
            chunk = "y" * 100_000
            conn = sente._state().hub.connections("ws")[0]
            offered = 0
            while conn.open and offered < 100:  # each push is one message (flush)
                sente.send("slow", ("t/n", {"pad": chunk}), flush=True)
                offered += 1
                gevent.sleep(0)
            frames, code = _frames_until_close(ws)
            assert code == 1013
            _, m = scrape(base)
        finally:
            ws.close()
    assert value(m, "sente_closes_1013_total", cause="send-queue") == 1
    # The push that did not fit was refused; those queued behind the frame being written
    # were dropped; the rest reached the client.
    assert value(m, "sente_send_queue_dropped_messages_total") == offered - 1 - len(frames)
    assert value(m, "sente_events_pushed_total", transport="ws") == offered


def test_the_config_key_turns_metrics_on():
    from flask import Flask

    from flask_sente import Sente

    registry = CollectorRegistry()
    app = Flask(__name__)
    app.config["SENTE_METRICS"] = registry
    sente = Sente(app, csrf=False)
    app.add_url_rule("/metrics", view_func=sente.metrics_view)
    with serve(app) as base:
        requests.get(base + "/chsk", params={"client-id": "a", "handshake": 1},
                     timeout=TIMEOUT)
        _, m = scrape(base)
    assert value(m, "sente_handshakes_total", transport="ajax") == 1
    assert registry.get_sample_value("sente_handshakes_total", {"transport": "ajax"}) == 1


def test_the_send_queue_gauge_rises_while_a_peer_stops_reading_and_falls_after():
    """A WebSocket client that stops reading while 100 KB pushes keep coming: once the
    kernel's buffers are full the rest wait in the connection's queue, and the scrape's
    ``sente_send_queue_messages`` says so; when the client reads them all, it is 0 again.

    Shown to fail by sampling the gauge as 0 always (``PrometheusMetrics.sample``): the
    scrape made while the pushes waited read 0."""
    with metered(send_queue_bytes=16 << 20, write_timeout=30) as (base, sente):
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=lazy&u=lazy",
                        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        try:
            ws.recv()                                     # the handshake
            conn = sente._state().hub.connections("ws")[0]
            pushes = 40
            for n in range(pushes):                       # 4 MB: far over the buffers
                sente.send("lazy", ("t/n", {"n": n, "pad": "z" * 100_000}), flush=True)
                gevent.sleep(0)
            assert conn.open
            _, m = wait_scrape(base, lambda m: value(m, "sente_send_queue_messages") > 0)
            queued = value(m, "sente_send_queue_messages")
            assert 0 < queued < pushes
            got: list[int] = []
            while len(got) < pushes:                      # now the client reads
                got += [e[1]["n"] for e in json.loads(ws.recv())[0] if e[0] == "t/n"]
            assert got == list(range(pushes))
            _, m = wait_scrape(base, lambda m: value(m, "sente_send_queue_messages") == 0)
            assert conn.open
        finally:
            ws.close()


def test_the_outbox_gauge_counts_pushes_waiting_for_a_frozen_redis(
        redis_server: RedisServer):  # noqa: F811
    """Redis frozen (SIGSTOP): the publisher's round trip for the first push hangs, and the
    five pushes made after it wait in the outbox — the scrape says exactly 5. After SIGCONT
    the outbox drains to 0 and every push arrives.

    Shown to fail by not sampling the outbox depth (``PrometheusMetrics.sample`` leaving
    the gauge alone): the scrape read 0 while five pushes waited."""
    import signal

    with metered(backplane=redis_server.url) as (base, sente):
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=w&u=ann")
        frozen = False
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
            redis_server.proc.send_signal(signal.SIGSTOP)
            frozen = True
            sente.send("ann", ("t/n", 0))
            gevent.sleep(0.2)                             # the publisher takes it, and hangs
            for n in range(1, 6):
                sente.send("ann", ("t/n", n))
            _, m = scrape(base)
            assert value(m, "sente_redis_outbox_pushes") == 5
            redis_server.proc.send_signal(signal.SIGCONT)
            frozen = False
            got: list[t.Any] = []
            with gevent.Timeout(4 * TIMEOUT, AssertionError(f"got {got}")):
                while len(got) < 6:
                    got += [e[1] for e in json.loads(ws.recv())[0] if e[0] == "t/n"]
            assert got == list(range(6))
            _, m = wait_scrape(base, lambda m: value(m, "sente_redis_outbox_pushes") == 0)
        finally:
            if frozen:
                redis_server.proc.send_signal(signal.SIGCONT)
            ws.close()
