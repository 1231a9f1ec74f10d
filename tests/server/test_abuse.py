"""Issue 14, on real sockets: bad input is answered, the handler pool is shared fairly,
handler errors are logged at a bounded rate."""
from __future__ import annotations

import json
import logging

import gevent
import gevent.event

from .conftest import running


def test_bad_event_without_cb_id_gets_a_notice():
    """A malformed event sent without a cb_id used to vanish without a word: now the sender
    gets a one-event ``chsk/bad-event`` push (a batch, so old clients ignore it), and the
    socket stays usable."""
    with running() as h:
        ws = h.ws()
        try:
            h.send(ws, [1, 2])                          # id not a string
            assert h.recv(ws) == [[["chsk/bad-event", {"reason": "wrong-id-type"}]], None]
            h.send(ws, ["no-namespace", 1])             # id without "ns/"
            notice = h.recv(ws)
            assert notice[0][0][0] == "chsk/bad-event"
            assert notice[0][0][1]["id"] == "no-namespace"
            h.send(ws, ["chsk/uidport-open", "spoof"])  # reserved id
            assert h.recv(ws)[0][0][1] == {"reason": "reserved-id", "id": "chsk/uidport-open"}
            h.send(ws, ["t/echo", 1], "ok")
            assert h.recv(ws) == [["chsk/reply", 1], "ok"]
        finally:
            ws.close()
