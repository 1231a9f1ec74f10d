"""Issue 14 item 4, the Python client's side: a long-polling client whose parked poll is
answered ``chsk/close`` 1001 by a stopping server (the Ajax equivalent of close 1001)
counts it as a clean close and reconnects to the server that comes back."""
from __future__ import annotations

from .conftest import TIMEOUT, Recorder, Server, wait_until


def test_ajax_client_reconnects_after_going_away(make_client):
    server = Server(lp_timeout=30)   # the poll stays parked until the server stops
    with server.running():
        chsk = make_client(server.url, type="ajax")
        recorder = Recorder(chsk)
        assert chsk.call(("t/echo", 1), timeout=TIMEOUT) == 1
        port = server.port
    wait_until(lambda: recorder.closes(), message="the client to see the close")
    first = recorder.closes()[0]
    assert (first.reason, first.code) == ("clean", 1001)
    assert chsk.state.active
    with server.running(port=port):
        assert chsk.call(("t/echo", 2), timeout=TIMEOUT) == 2
        chsk.close()
