"""Pushes made by successive requests reach every client in request order, whichever
workers served the requests (issue 25 #1), under ``gunicorn -w 3`` with Redis, at the wire.

A route that pushes returns only once its push is in the shared log; before, the push was
queued for Redis and the response left at once, so a later request served by another worker
could append first (seen: 8 before 7, 37 before 35, the same for every client).

Broken on purpose once (the middleware skipping ``request_scope``): failed 3 runs of 3.
"""
from __future__ import annotations

import gevent
import requests

from .test_gunicorn_cluster import TIMEOUT, AjaxClient, WsClient, cluster  # noqa: F401

REQUESTS = 80
ROUNDS = 10  # the acceptance: 80 sequential requests, 10 runs


def test_pushes_of_successive_requests_arrive_in_request_order(cluster):  # noqa: F811
    host, _ = cluster
    ws = WsClient(host, "ordw")
    ajax = AjaxClient(host, "orda")
    ajax.polling()
    try:
        with gevent.Timeout(120):
            for round_ in range(ROUNDS):
                pids = set()
                first = round_ * REQUESTS
                for n in range(first, first + REQUESTS):
                    for uid in ("ordw", "orda"):   # each answered before the next is sent
                        r = requests.get(f"http://{host}/send/{uid}/{n}", timeout=TIMEOUT,
                                         headers={"Connection": "close"})
                        assert r.status_code == 200, r.text
                        pids.add(r.text)
                assert len(pids) == 3, f"requests reached {len(pids)} workers"
                last = first + REQUESTS
                ws.read_until(lambda last=last: len(ws.events) >= last)
                while len(ajax.events) < last:
                    gevent.sleep(0.05)
                for got in (ws.events, ajax.events):
                    assert [e[1] for e in got] == list(range(last)), [e[1] for e in got]
                assert ajax.handshakes == 0
    finally:
        ajax.stop()
        ws.ws.close()
