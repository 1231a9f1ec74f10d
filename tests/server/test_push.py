"""Push: per-user fan-out over both transports, client targeting, batching and order."""
import gevent
import pytest

from flask_sente import LocalProtocolError


def _batches(h, ws, count):
    """Collect pushed events from ``count`` push frames."""
    frames = []
    while len(frames) < count:
        msg = h.recv(ws)
        if msg[0] and isinstance(msg[0][0], list):
            frames.append(msg[0])
    return frames


def test_push_reaches_every_tab_of_a_user_over_both_transports(server):
    ws_tab = server.ws("tab-ws", uid="dana")
    other_user = server.ws("tab-other", uid="erin")
    try:
        server.get("tab-ajax", uid="dana", handshake=True)
        poll = gevent.spawn(server.get, "tab-ajax", uid="dana")
        gevent.sleep(0.1)
        server.sente.send("dana", ("t/hello", {"to": "dana"}))
        assert _batches(server, ws_tab, 1) == [[["t/hello", {"to": "dana"}]]]
        assert poll.get(timeout=5).json() == [[["t/hello", {"to": "dana"}]], None]
        # The other user got nothing: the next thing on its socket is our own probe.
        server.send(other_user, ["t/echo", "probe"], "p")
        assert server.recv(other_user) == [["chsk/reply", "probe"], "p"]
    finally:
        ws_tab.close()
        other_user.close()


def test_client_id_targets_one_tab(server):
    a = server.ws("tab-a", uid="finn")
    b = server.ws("tab-b", uid="finn")
    try:
        server.sente.send("finn", ("t/only-b", 1), client_id="tab-b")
        server.sente.send("finn", ("t/all", 2))
        assert _batches(server, b, 1) == [[["t/only-b", 1], ["t/all", 2]]]
        assert _batches(server, a, 1) == [[["t/all", 2]]]
    finally:
        a.close()
        b.close()


def test_batching_window_sends_one_frame_in_order(server):
    ws = server.ws("t1", uid="gia")
    try:
        for i in range(5):
            server.sente.send("gia", ("t/n", i))
        assert _batches(server, ws, 1) == [[["t/n", i] for i in range(5)]]
    finally:
        ws.close()


def test_flush_keeps_order_with_earlier_buffered_pushes(server):
    ws = server.ws("t1", uid="hal")
    try:
        server.sente.send("hal", ("t/n", 1))
        server.sente.send("hal", ("t/n", 2), flush=True)
        server.sente.send("hal", ("t/n", 3))
        events = [e for frame in _batches(server, ws, 2) for e in frame]
        assert events == [["t/n", 1], ["t/n", 2], ["t/n", 3]]
    finally:
        ws.close()


def test_broadcast_reaches_every_user(server):
    a = server.ws(uid="u1")
    b = server.ws(uid="u2")
    try:
        server.sente.broadcast(("t/all", "hi"))
        assert _batches(server, a, 1) == [[["t/all", "hi"]]]
        assert _batches(server, b, 1) == [[["t/all", "hi"]]]
    finally:
        a.close()
        b.close()


def test_broadcast_and_direct_sends_keep_their_order_per_client(server):
    ws = server.ws(uid="ivy")
    try:
        server.sente.send("ivy", ("t/n", 1))
        server.sente.broadcast(("t/n", 2))
        server.sente.send("ivy", ("t/n", 3))
        assert _batches(server, ws, 1) == [[["t/n", 1], ["t/n", 2], ["t/n", 3]]]
    finally:
        ws.close()


def test_send_refuses_none_uid_and_invalid_events(server):
    with pytest.raises(LocalProtocolError, match="uid None"):
        server.sente.send(None, ("t/x", 1))
    with pytest.raises(LocalProtocolError, match="namespaced"):
        server.sente.send("u", ("bad", 1))
    with pytest.raises(LocalProtocolError, match="reserved"):
        server.sente.send("u", ("chsk/handshake", 1))


def test_unpackable_push_is_dropped_with_an_error_and_the_rest_delivered(server, caplog):
    ws = server.ws(uid="jo")
    try:
        server.sente.send("jo", ("t/ok", 1))
        server.sente.send("jo", ("t/bad", object()))
        server.sente.send("jo", ("t/ok", 2))
        assert _batches(server, ws, 1) == [[["t/ok", 1], ["t/ok", 2]]]
        assert "dropped a push of 't/bad'" in caplog.text
    finally:
        ws.close()


def test_kick_closes_with_4001_and_answers_parked_polls(server):
    ws = server.ws("k-ws", uid="kim")
    try:
        server.get("k-ajax", uid="kim", handshake=True)
        poll = gevent.spawn(server.get, "k-ajax", uid="kim")
        gevent.sleep(0.1)
        server.sente.kick("kim")
        assert poll.get(timeout=5).json() == [["chsk/close", {"code": 4001, "reason": "kicked"}],
                                              None]
        import websocket
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 4001
        assert "kim" not in server.sente.connected_uids.any
    finally:
        ws.close()
