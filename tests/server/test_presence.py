"""Presence: connected_uids by transport, uidport events with grace windows, signals."""
import gevent

from .conftest import running, ws_connect

GRACE = dict(reconnect_grace_ws=0.3, reconnect_grace_ajax=0.3, lp_timeout=0.2)


def _opens(h, uid):
    return [m for m in h.events_named("chsk/uidport-open") if m.data == uid]


def _closes(h, uid):
    return [m for m in h.events_named("chsk/uidport-close") if m.data == uid]


def test_connected_uids_by_transport_and_open_close_events(signal_log):
    with running(**GRACE) as h:
        ws = h.ws("w1", uid="amy")
        h.get("a1", uid="ben", handshake=True)
        assert h.get("a1", uid="ben").json() == [["chsk/timeout"], None]  # a poll: present
        uids = h.sente.connected_uids
        assert uids.ws == {"amy"} and uids.ajax == {"ben"} and uids.any == {"amy", "ben"}
        h.wait_for(lambda: _opens(h, "amy") and _opens(h, "ben"))
        ws.close()
        gevent.sleep(0.1)
        assert "amy" in h.sente.connected_uids.ws      # still inside the grace window
        assert not _closes(h, "amy")
        h.wait_for(lambda: _closes(h, "amy"))
        assert "amy" not in h.sente.connected_uids.any
        h.wait_for(lambda: _closes(h, "ben"))           # ben never polled again
        assert h.sente.connected_uids.any == frozenset()
    names = [name for name, _ in signal_log]
    for expected in ("client_connected", "user_connected", "client_disconnected",
                     "user_disconnected"):
        assert expected in names
    assert ("user_connected", {"uid": "amy"}) in signal_log


def test_reconnect_within_grace_emits_nothing_and_stale_close_is_ignored():
    with running(**GRACE) as h:
        first = h.ws("tab", uid="cal")
        h.wait_for(lambda: _opens(h, "cal"))
        first.close()
        gevent.sleep(0.1)
        second = h.ws("tab", uid="cal")       # same client id, back within the grace window
        try:
            gevent.sleep(0.5)                   # the first connection's grace timer has fired
            assert not _closes(h, "cal")
            assert len(_opens(h, "cal")) == 1
            assert "cal" in h.sente.connected_uids.ws
        finally:
            second.close()
        h.wait_for(lambda: _closes(h, "cal"))


def test_user_stays_connected_while_any_tab_is():
    with running(**GRACE) as h:
        a = h.ws("a", uid="dee")
        b = h.ws("b", uid="dee")
        a.close()
        gevent.sleep(0.6)
        assert "dee" in h.sente.connected_uids.any and not _closes(h, "dee")
        b.close()
        h.wait_for(lambda: _closes(h, "dee"))


def test_an_ajax_handshake_alone_is_not_presence():
    """A WebSocket client probing whether HTTP works handshakes over Ajax and never polls:
    that must not make its user flap online and offline on every retry."""
    with running(**GRACE) as h:
        for attempt in range(3):
            assert h.get(f"probe{attempt}", uid="pat", handshake=True).ok
        gevent.sleep(0.5)                       # past the grace window
        assert "pat" not in h.sente.connected_uids.any
        assert not _opens(h, "pat") and not _closes(h, "pat")
        assert h.sente.clients_of("pat") == {"ws": [], "ajax": []}


def test_polling_client_stays_connected_across_polls():
    with running(**GRACE) as h:
        h.get("p", uid="eve", handshake=True)
        for _ in range(4):                      # 4 polls of 0.2 s > the 0.3 s grace
            assert h.get("p", uid="eve").json() == [["chsk/timeout"], None]
        assert "eve" in h.sente.connected_uids.ajax
        assert not _closes(h, "eve")


def test_connected_uids_is_an_immutable_snapshot(server):
    ws = server.ws(uid="fay")
    try:
        snap = server.sente.connected_uids
        assert isinstance(snap.any, frozenset)
        assert server.sente.clients_of("fay")["ws"]
    finally:
        ws.close()


def test_receive_gives_unhandled_events_to_a_loop():
    from flask_sente.testing import serve

    from .conftest import build_app

    app, sente = build_app()
    with serve(app) as base:
        assert sente.receive(timeout=0.01) is None     # switches on queue mode
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=r&u=zed",
                                         timeout=5)
        try:
            ws.recv()
            ws.send('[["app/hello",1],"cb"]')
            msg = None
            for _ in range(5):
                msg = sente.receive(timeout=5)
                if msg is not None and msg.id == "app/hello":
                    break
            assert msg is not None and msg.id == "app/hello" and msg.uid == "zed"
            msg.reply("hi")
            assert ws.recv() == '[["chsk/reply","hi"],"cb"]'
        finally:
            ws.close()
