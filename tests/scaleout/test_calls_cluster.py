"""Server -> client calls across processes (issue 28): the caller on one process, the
client held by another, the answer routed back through Redis.

- Two hosts (two gunicorn masters sharing one Redis, like two machines): the client talks
  only to B, the call is made by a route on A — the answer must travel B -> Redis -> A.
- ``gunicorn -w 3``: an Ajax client whose polls and POSTs each open a new connection (the
  kernel spreads them over the workers) answers calls made by routes on any worker.
- Old clients (protocol 2, over WebSocket and Ajax) held by B are refused at once with
  CallsUnsupported, by B, for a caller on A.

Broken on purpose once: with ``RedisBackplane.route_call`` dropping other nodes' outcomes
(the in-memory rule), every two-host call timed out and the old clients were not refused
(the refusal travels the same way); with the
long-polls not calling ``refuse_legacy``, the protocol-2 Ajax call waited out its timeout.
"""
from __future__ import annotations

import json
import threading
import time
import typing as t
import urllib.parse

import gevent
import pytest
import requests
import websocket

from flask_sente.client import Client
from tests.helpers import wait_for
from tests.scaleout.conftest import cluster_app_hosts as _gunicorn

TIMEOUT = 10


@pytest.fixture
def two_hosts(redis_server: t.Any, tmp_path: t.Any) -> t.Iterator[tuple[str, str]]:
    a = _gunicorn(redis_server.url, tmp_path, 1, "a")
    b = _gunicorn(redis_server.url, tmp_path, 1, "b")
    try:
        yield next(a), next(b)
    finally:
        a.close()
        b.close()


@pytest.fixture
def three_workers(redis_server: t.Any, tmp_path: t.Any) -> t.Iterator[str]:
    yield from _gunicorn(redis_server.url, tmp_path, 3, "w3")


def ask(host: str, uid: str, cid: str, n: int, timeout: float = 5.0) -> dict[str, t.Any]:
    r = requests.get(f"http://{host}/call/{uid}/{cid}/{n}?timeout={timeout}",
                     headers={"Connection": "close"}, timeout=timeout + TIMEOUT)
    r.raise_for_status()
    return t.cast(dict[str, t.Any], r.json())


def answering_client(host: str, uid: str, transport: str) -> Client:
    chsk = Client(f"http://{host}/chsk", type=transport, params={"u": uid},
                  backoff=lambda attempt: 0.05, connect_timeout=5.0)
    chsk.answer("t/triple", lambda n: 3 * n)
    chsk.connect()
    assert chsk.wait_open(TIMEOUT)
    return chsk


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_a_call_from_host_a_reaches_a_client_on_host_b(two_hosts: tuple[str, str],
                                                       transport: str) -> None:
    a, b = two_hosts
    chsk = answering_client(b, "alice", transport)
    try:
        wait_for(lambda: "value" in ask(a, "alice", chsk.client_id, 0, timeout=1.0))
        pids = set()
        for n in range(1, 11):
            outcome = ask(a, "alice", chsk.client_id, n)
            assert outcome.get("value") == 3 * n, outcome
            pids.add(outcome["pid"])
        assert len(pids) == 1  # host A's one worker asked every time
    finally:
        chsk.close()


def test_calls_under_gunicorn_w3_over_ajax(three_workers: str) -> None:
    host = three_workers
    chsk = answering_client(host, "bob", "ajax")
    try:
        wait_for(lambda: "value" in ask(host, "bob", chsk.client_id, 0, timeout=1.0))
        pids = set()
        for n in range(1, 31):
            outcome = ask(host, "bob", chsk.client_id, n)
            assert outcome.get("value") == 3 * n, outcome
            pids.add(outcome["pid"])
        assert len(pids) >= 2, pids  # calls were made by more than one worker
        gone = ask(host, "bob", "not-a-client", 1)
        assert gone["error"] == "ClientGone", gone
    finally:
        chsk.close()


def test_a_client_that_leaves_fails_a_call_made_on_another_host(two_hosts: tuple[str, str]
                                                                 ) -> None:
    """The client's own close reaches the caller's process through Redis."""
    a, b = two_hosts
    chsk = Client(f"http://{b}/chsk", type="ws", params={"u": "carol"},
                  backoff=lambda attempt: 0.05, connect_timeout=5.0)
    answering, release = threading.Event(), threading.Event()

    def triple(n: int) -> t.Any:
        if n == 0:
            return 0
        answering.set()
        return release.wait(TIMEOUT)

    chsk.answer("t/triple", triple)
    chsk.connect()
    try:
        assert chsk.wait_open(TIMEOUT)
        wait_for(lambda: "value" in ask(a, "carol", chsk.client_id, 0, timeout=1.0))
        result: list[dict[str, t.Any]] = []
        asker = threading.Thread(target=lambda: result.append(
            ask(a, "carol", chsk.client_id, 1, timeout=20.0)))
        asker.start()
        assert answering.wait(TIMEOUT)
        left = time.monotonic()
        chsk.disconnect()
        asker.join(TIMEOUT)
        took = time.monotonic() - left
        assert result and result[0]["error"] == "ClientGone", result
        assert took < 2.0, took
    finally:
        release.set()
        chsk.close()


def _raw_ajax_v2(host: str, uid: str, cid: str, http: requests.Session
                 ) -> t.Callable[[], t.Any]:
    """A protocol-2 Ajax client made of plain requests: its handshake, then one poll per
    call of the returned function (what an older flask_sente client does)."""
    base = f"http://{host}/chsk?client-id={cid}&u={uid}&protocol=2&packer=json"
    r = http.get(base + "&handshake=1", timeout=TIMEOUT)
    r.raise_for_status()
    positions = r.json()[0][1]["positions"]

    def poll() -> t.Any:
        nonlocal positions
        pos = urllib.parse.quote(json.dumps(positions))
        answer = http.get(f"{base}&pos={pos}", timeout=TIMEOUT).json()
        payload = answer[0]
        if payload and isinstance(payload[0], list) and payload[-1][0] == "chsk/pos":
            positions = {**positions, **payload[-1][1]}
        return answer

    return poll


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_an_old_client_on_another_host_is_refused(two_hosts: tuple[str, str],
                                                  transport: str) -> None:
    a, b = two_hosts
    cid = f"old-{transport}"
    stop = threading.Event()
    http = requests.Session()
    if transport == "ws":
        ws = websocket.create_connection(
            f"ws://{b}/chsk?client-id={cid}&u=dave&protocol=2", timeout=TIMEOUT)
        ws.recv()  # the handshake

        def read() -> None:
            while not stop.is_set():
                try:
                    ws.recv()
                except (websocket.WebSocketException, OSError):
                    return
    else:
        poll = _raw_ajax_v2(b, "dave", cid, http)
        poll()  # the first poll makes it present

        def read() -> None:
            while not stop.is_set():
                poll()  # each within the server's lp_timeout (2 s)

    keep_reading = gevent.spawn(read)
    try:
        outcome = ask(a, "dave", cid, 1, timeout=8.0)
        assert outcome.get("error") == "CallsUnsupported", outcome
        assert "protocol 2" in outcome["message"]
    finally:
        stop.set()
        if transport == "ws":
            ws.close()
        keep_reading.join(TIMEOUT)  # a poll in flight ends within lp_timeout
        http.close()
