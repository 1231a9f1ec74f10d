"""The admin dashboard across processes (issue 29): two hosts (two gunicorn masters of
one worker each, sharing one Redis, like two machines). The overview asked on host A shows
both processes and the clients each holds; a "close" or a "kick" posted to host A reaches a
client held by host B. The page itself, under ``gunicorn -w 3``, is in
tests/browser/test_admin_browser.py.

Broken on purpose once each: with ``AdminChannel.on_message`` not answering other processes'
questions, the overview on A counted host B ``missing`` and the close of B's client got a
404.
"""
from __future__ import annotations

import typing as t

import pytest
import requests

from flask_sente.client import Client
from tests.helpers import wait_for
from tests.scaleout.conftest import cluster_app_hosts

TIMEOUT = 10
OVERVIEW = "sente.admin/overview"


@pytest.fixture
def two_hosts(redis_server: t.Any, tmp_path: t.Any) -> t.Iterator[tuple[str, str]]:
    a = cluster_app_hosts(redis_server.url, tmp_path, 1, "a", SENTE_TEST_ADMIN="1")
    b = cluster_app_hosts(redis_server.url, tmp_path, 1, "b", SENTE_TEST_ADMIN="1")
    try:
        yield next(a), next(b)
    finally:
        a.close()
        b.close()


def client(host: str, uid: str, transport: str, clients: list[Client]) -> Client:
    chsk = Client(f"http://{host}/chsk", type=transport, params={"u": uid},
                  backoff=lambda attempt: 0.05, connect_timeout=5.0)
    clients.append(chsk)
    chsk.connect()
    assert chsk.wait_open(TIMEOUT)
    return chsk


def test_the_overview_and_the_actions_span_both_hosts(two_hosts: tuple[str, str]) -> None:
    a, b = two_hosts
    clients: list[Client] = []
    try:
        alice = client(b, "alice", "ws", clients)
        bob = client(a, "bob", "ajax", clients)
        root = client(a, "root", "ws", clients)

        def view() -> dict[str, t.Any]:
            return t.cast(dict[str, t.Any], root.call((OVERVIEW, {}), timeout=TIMEOUT))

        wait_for(lambda: view()["totals"]["clients"] == 3, timeout=TIMEOUT)
        seen = view()
        assert seen["missing"] == 0 and len(seen["processes"]) == 2
        assert {p["backplane"] for p in seen["processes"]} == {"up"}
        held = {p["pid"]: (p["ws"], p["ajax"]) for p in seen["processes"]}
        rows = {row["uid"]: row["clients"] for row in seen["users"]["rows"]}
        (alice_row,), (bob_row,) = rows["alice"], rows["bob"]
        assert (alice_row["client_id"], alice_row["transport"]) == (alice.client_id, "ws")
        assert (bob_row["client_id"], bob_row["transport"]) == (bob.client_id, "ajax")
        assert alice_row["pid"] != bob_row["pid"]
        assert held[alice_row["pid"]] == (1, 0) and held[bob_row["pid"]] == (1, 1)

        http = requests.Session()
        token = http.get(f"http://{a}/login", params={"u": "root"}, timeout=TIMEOUT).text
        resp = http.post(f"http://{a}/chsk/admin/act", timeout=TIMEOUT,
                         headers={"X-CSRF-Token": token},
                         json={"action": "close-client", "uid": repr("alice"),
                               "client_id": alice.client_id})
        assert (resp.status_code, resp.json()) == (200, {"ok": True})
        wait_for(lambda: alice.state.last_close is not None, timeout=TIMEOUT)
        assert alice.state.last_close is not None and alice.state.last_close.code == 4001

        other = requests.Session()
        token_b = other.get(f"http://{b}/login", params={"u": "root"}, timeout=TIMEOUT).text
        resp = other.post(f"http://{b}/chsk/admin/act", timeout=TIMEOUT,
                          headers={"X-CSRF-Token": token_b},
                          json={"action": "kick", "uid": repr("bob")})
        assert resp.status_code == 200
        wait_for(lambda: bob.state.last_close is not None, timeout=TIMEOUT)
        assert bob.state.last_close is not None and bob.state.last_close.code == 4001
        wait_for(lambda: set(r["uid"] for r in view()["users"]["rows"]) == {"root"},
                 timeout=TIMEOUT)
    finally:
        for chsk in clients:
            chsk.close()


def test_a_worker_no_client_has_reached_yet_is_in_the_overview(redis_server: t.Any,
                                                                tmp_path: t.Any) -> None:
    """``gunicorn -w 3`` and one client: all three workers answer the dashboard. Before
    ``worker.join_the_dashboard``, a worker listened to the backplane only from its first
    client, so the overview showed the one or two workers that had one (seen failing in the
    cluster demo's dashboard test: 2 rows of 3)."""
    hosts = cluster_app_hosts(redis_server.url, tmp_path, 3, "w3", SENTE_TEST_ADMIN="1")
    clients: list[Client] = []
    try:
        root = client(next(hosts), "root", "ws", clients)
        # A worker joins as it boots; the last may still be subscribing.
        wait_for(lambda: len(root.call((OVERVIEW, {}), timeout=TIMEOUT)["processes"]) == 3,
                 timeout=TIMEOUT)
        view = root.call((OVERVIEW, {}), timeout=TIMEOUT)
        assert (len(view["processes"]), view["missing"]) == (3, 0), view["processes"]
        assert sorted(p["ws"] for p in view["processes"]) == [0, 0, 1]
    finally:
        for chsk in clients:
            chsk.close()
        hosts.close()
