"""Membership changes that waited for Redis are made once each, in order, even when two
greenlets send them at once (the housekeeping loop and a resubscription both do).

Found by the 10-minute chaos drill (seed 425882): ``IndexError: pop from empty list`` in the
housekeeping loop after a Redis restart — two senders each made the oldest change, and each
popped one: a change made twice, the next one never. A user whose "offline" is skipped stays
online for good. Real redis-server, reached through a proxy that holds every chunk a little
(so that a sender waits on Redis between two changes, as on a busy host).
"""
from __future__ import annotations

import signal
import time
import typing as t

import gevent
import websocket
from flask import Flask, request

from flask_sente import Sente
from flask_sente.testing import serve

from .test_ajax_faults import SlowLink

TIMEOUT = 5
USERS = ("ua", "ub", "uc", "ud")


def test_two_senders_of_the_unsent_changes_make_each_once(redis_server: t.Any) -> None:
    """Shown to fail (an IndexError in a sender, a user online for good) without the
    sender's lock in ``RedisPresence.send_unsent``."""
    slow = SlowLink(redis_server.port, 0.02)
    app = Flask(__name__)
    sente = Sente(app, csrf=False, backplane=f"redis://127.0.0.1:{slow.port}/0",
                  reconnect_grace_ws=0.2, user_id=lambda client_id: request.args.get("u"))
    sockets = []
    try:
        with serve(app) as base:
            for uid in USERS:
                ws = websocket.create_connection(
                    f"{base.replace('http', 'ws')}/chsk?client-id=c-{uid}&u={uid}",
                    timeout=TIMEOUT)
                ws.recv()
                sockets.append(ws)
            deadline = time.monotonic() + TIMEOUT
            while set(USERS) - sente.connected_uids.ws:
                assert time.monotonic() < deadline
                gevent.sleep(0.05)
            presence = app.extensions["sente"].hub.backplane._cluster
            redis_server.proc.send_signal(signal.SIGSTOP)
            try:
                for ws in sockets:
                    ws.close()
                gevent.sleep(3.0)  # the grace windows end while Redis is away: queued
                assert len(presence._unsent) >= len(USERS)
            finally:
                redis_server.proc.send_signal(signal.SIGCONT)
            senders = [gevent.spawn(presence.send_unsent) for _ in range(2)]
            gevent.joinall(senders, timeout=15)
            assert [s.exception for s in senders] == [None, None]
            deadline = time.monotonic() + 15
            while sente.connected_uids.any & set(USERS):
                assert time.monotonic() < deadline, sente.connected_uids
                gevent.sleep(0.1)
    finally:
        slow.close()
