"""Handlers: unknown ids, isolation of slow handlers, custom packers, Flask-WTF's token."""
import json

import gevent.event
from flask import Flask

from flask_sente import JsonPacker, Sente, router, signals
from flask_sente.testing import serve

from .conftest import ws_connect


def _app(**options):
    app = Flask(__name__)
    app.secret_key = "t"
    options.setdefault("csrf", False)
    return app, Sente(app, **options)


def test_unknown_event_gets_an_error_reply_and_one_log_line_per_id(caplog):
    app, sente = _app()
    with serve(app) as base:
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=c")
        try:
            ws.recv()
            for cb in ("a", "b"):
                ws.send(json.dumps([["no/handler", 1], cb]))
                assert json.loads(ws.recv()) == [
                    ["chsk/error", {"message": "no handler for event 'no/handler'"}], cb]
        finally:
            ws.close()
    assert caplog.text.count("no handler for event 'no/handler'") == 1


def test_a_slow_handler_does_not_hold_up_other_connections():
    app, sente = _app()
    release = gevent.event.Event()

    @sente.on("t/slow")
    def slow(msg):
        release.wait(timeout=10)
        msg.reply("slow done")

    @sente.on("t/fast")
    def fast(msg):
        msg.reply("fast done")

    with serve(app) as base:
        url = base.replace("http", "ws") + "/chsk?client-id="
        a, b = ws_connect(url + "a"), ws_connect(url + "b")
        try:
            a.recv(), b.recv()
            a.send(json.dumps([["t/slow"], "s"]))
            b.send(json.dumps([["t/fast"], "f"]))
            # b's reply arrives while a's handler is still blocked...
            assert json.loads(b.recv()) == [["chsk/reply", "fast done"], "f"]
            assert not release.is_set()
            # ...and so does another event of a's own connection.
            a.send(json.dumps([["t/fast"], "f2"]))
            assert json.loads(a.recv()) == [["chsk/reply", "fast done"], "f2"]
            release.set()
            assert json.loads(a.recv()) == [["chsk/reply", "slow done"], "s"]
        finally:
            a.close()
            b.close()


def test_events_after_a_handler_that_blocks_on_the_reader_start_in_order():
    """A handler that replies and returns runs on the reader's own greenlet; one that
    blocks there moves the reading to another greenlet. The events read meanwhile still
    start in the order they were sent, and each gets its reply."""
    app, sente = _app()
    release = gevent.event.Event()
    started = []

    @sente.on("t/step")
    def step(msg):
        started.append(msg.data)
        if msg.data == 0:
            release.wait(timeout=10)
        msg.reply(msg.data)

    with serve(app) as base:
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=c")
        try:
            ws.recv()
            for i in range(6):
                ws.send(json.dumps([["t/step", i], f"k{i}"]))
            assert [json.loads(ws.recv()) for _ in range(5)] == [
                [["chsk/reply", i], f"k{i}"] for i in range(1, 6)]
            assert started == list(range(6)) and not release.is_set()
            release.set()
            assert json.loads(ws.recv()) == [["chsk/reply", 0], "k0"]
            # Later events (a while on workers, then on the reader again) are answered.
            for i in range(6, 6 + 2 * router.INLINE_COOL_DOWN):
                ws.send(json.dumps([["t/step", i], f"k{i}"]))
                assert json.loads(ws.recv()) == [["chsk/reply", i], f"k{i}"]
        finally:
            ws.close()


def test_a_handler_blocked_on_the_reader_past_the_reply_timeout_gets_chsk_timeout():
    """The reply's timer starts when the handler blocks, and fires while it still does;
    the late reply is dropped."""
    app, sente = _app(reply_timeout=0.2)
    release, done, replied = gevent.event.Event(), gevent.event.Event(), []

    @sente.on("t/slow")
    def slow(msg):
        release.wait(timeout=10)
        replied.append(msg.reply("late"))
        done.set()

    with serve(app) as base:
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=c")
        try:
            ws.recv()
            ws.send(json.dumps([["t/slow"], "s"]))
            assert json.loads(ws.recv()) == [["chsk/timeout"], "s"]
            assert not release.is_set()
            release.set()
            assert done.wait(timeout=10) and replied == [False]
            ws.send(json.dumps([["t/none"], "n"]))  # nothing else came on the socket
            assert json.loads(ws.recv())[1] == "n"
        finally:
            ws.close()


def test_a_connection_closed_while_its_handler_blocks_on_the_reader_ends_at_once():
    """The socket's end is noticed (presence, signals) by the greenlet reading it then,
    not when the handler that blocked on the request's greenlet returns."""
    app, sente = _app(reconnect_grace_ws=0)
    release, started, gone = (gevent.event.Event() for _ in range(3))

    @sente.on("t/slow")
    def slow(msg):
        started.set()
        release.wait(timeout=10)

    def on_disconnect(sender, **kwargs):
        gone.set()

    signals.client_disconnected.connect(on_disconnect, app)
    try:
        with serve(app) as base:
            ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=c")
            try:
                ws.recv()
                ws.send(json.dumps([["t/slow"], None]))
                assert started.wait(timeout=10)
            finally:
                ws.close()
            assert gone.wait(timeout=10)
            assert not release.is_set()
            assert sente.connected_uids.ws == set()
            release.set()
    finally:
        signals.client_disconnected.disconnect(on_disconnect, app)


class PrefixedJson(JsonPacker):
    """A custom packer: JSON behind a "v1:" prefix (say, a versioned framing)."""

    name = "prefixed"

    def pack(self, value):
        return "v1:" + super().pack(value)

    def unpack(self, data):
        if not data.startswith("v1:"):
            from flask_sente import RemoteProtocolError
            raise RemoteProtocolError("missing v1: prefix")
        return super().unpack(data[3:])


def test_custom_packer_is_used_both_ways():
    app, sente = _app(packer=PrefixedJson())

    @sente.on("t/echo")
    def echo(msg):
        msg.reply(msg.data)

    with serve(app) as base:
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=c&packer=prefixed")
        try:
            first = ws.recv()
            assert first.startswith("v1:") and json.loads(first[3:])[0][0] == "chsk/handshake"
            ws.send("v1:" + json.dumps([["t/echo", "hi"], "x"]))
            assert ws.recv() == 'v1:[["chsk/reply","hi"],"x"]'
            ws.send(json.dumps([["t/echo", "hi"], "y"]))        # no prefix: a bad package
            opcode, data = ws.recv_data(control_frame=True)
            assert int.from_bytes(data[:2], "big") == 1007
        finally:
            ws.close()


def test_flask_wtf_token_is_used_when_csrfprotect_is_active():
    import flask_wtf  # a test dependency (setup.cfg extras "test")
    import requests

    app = Flask(__name__)
    app.secret_key = "t"
    flask_wtf.CSRFProtect(app)
    sente = Sente(app)
    seen = {}

    @app.route("/page")
    def page():
        seen["token"] = sente.csrf_token()
        return "ok"

    with serve(app) as base:
        s = requests.Session()
        try:
            s.get(base + "/page", timeout=5)
            url = base + "/chsk"
            params = {"client-id": "c", "handshake": 1}
            assert s.get(url, params=params, timeout=5).status_code == 403
            r = s.get(url, params=params, headers={"X-CSRF-Token": seen["token"]}, timeout=5)
            assert r.status_code == 200
            r = s.post(url, params={"client-id": "c"}, data=json.dumps([["t/x"], None]),
                       headers={"X-CSRF-Token": seen["token"],
                                "Content-Type": "application/json"}, timeout=5)
            assert r.status_code == 200 and r.json() == [["chsk/ack"], None]
        finally:
            s.close()
