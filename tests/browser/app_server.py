"""The server the browser tests drive: a tiny Flask + Sente app in its own process.

Run as ``python tests/browser/app_server.py [--port N] [--packer json|msgpack]``; prints
``PORT <n>`` on stdout once it listens and serves until SIGTERM (which closes WebSockets
with 1001, as a real restart does). A separate process keeps the server's gevent loop apart
from Playwright's and lets a test stop and start "the server" on the same port.

Pages (each sets ``session["uid"]`` from ``?uid=`` first):

* ``/page`` — ``{{ sente_script() }}`` (the documented setup) plus a small harness,
  ``window.start(options)``, that connects and records states, pushes and page errors;
* ``/module-page`` — the same client loaded from a ``<script type="module">``;
* test controls under ``/test/``: push, a numbered push stream, kick, refuse WebSocket
  upgrades, refuse Ajax with 403, send malformed positions (the server answers 400),
  request counts,
  and the npm msgpack codec (from ``tests/js/node_modules``, installed by ``make``).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from flask import Flask, jsonify, render_template_string, request, send_file, session  # noqa: E402

from flask_sente import Sente  # noqa: E402
from flask_sente.server import make_server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MSGPACK_UMD = os.path.join(HERE, "..", "js", "node_modules", "@msgpack", "msgpack", "dist.umd",
                           "msgpack.min.js")

# Shared by the pages: connect with JSON-friendly options and record what happens.
HARNESS = """
<script>
window.log = { states: [], events: [], handshakes: [], errors: [], attempts: [] };
window.addEventListener("error", (e) => log.errors.push(String(e.message || e.error)));
window.start = (opts = {}) => {
  const o = { ...opts };
  if (o.msgpack) { delete o.msgpack; o.packer = Sente.msgpackPacker(MessagePack); }
  // Functions cannot cross page.evaluate: `retryMs` is a fixed backoff after the first retry.
  // The attempt numbers the client asks about are kept in log.attempts.
  if (o.retryMs !== undefined) {
    const ms = o.retryMs;
    delete o.retryMs;
    o.backoffMs = (n) => { log.attempts.push(n); return n <= 1 ? 0 : ms; };
  }
  const chsk = Sente.connect(o);
  window.chsk = chsk;
  chsk.onState((s) => log.states.push(JSON.parse(JSON.stringify(s))));
  chsk.on("*", (data, event) => log.events.push(event));
  chsk.on("chsk/handshake", (info) => log.handshakes.push(info));
  return chsk.clientId;
};
// A call's outcome as plain data: ["ok", reply] or ["error", name, kind, message].
window.outcome = (promise) => promise.then(
  (reply) => ["ok", reply], (e) => ["error", e.name, e.kind, e.message]);
</script>
"""

PAGE = """<!doctype html>
<html><head><title>sente test</title>
{% if msgpack %}<script src="/test/msgpack.js"></script>{% endif %}
{{ sente_script() }}
</head><body>""" + HARNESS + "</body></html>"

MODULE_PAGE = """<!doctype html>
<html><head><title>sente module test</title>
<meta name="sente-csrf-token" content="{{ sente_csrf_token() }}">
<meta name="sente-url" content="/chsk">
</head><body>""" + HARNESS + """
<script type="module">
import "/chsk/sente.js";
const { connect } = globalThis.Sente;
window.moduleConnect = connect;
window.moduleReady = true;
</script>
</body></html>"""


def create_app(packer: str) -> Flask:
    app = Flask(__name__)
    app.secret_key = "browser-tests"  # fixed: sessions and CSRF tokens survive a restart
    # history_size: room for a stream of 200 pushes/s to be replayed after a slow reconnect
    # on a busy test machine (the default 100 is half a second of it).
    sente = Sente(app, packer=packer, ws_keepalive=1.0, ws_ping_timeout=1.0,
                  reconnect_grace_ws=0.5, reconnect_grace_ajax=1.0, reply_timeout=5.0,
                  history_size=2000)
    app.config["refuse_ws"] = False
    app.config["refuse_http"] = False
    app.config["bad_positions"] = False
    hits: collections.Counter[tuple[str, str]] = collections.Counter()

    @sente.authorize
    def authorize(uid, client_id):
        if uid == "mallory":
            return "Forbidden", 403
        return uid != "eve"  # False -> 401

    @sente.handshake_data
    def handshake_data(uid, client_id):
        return {"hello": uid}

    @sente.on("t/echo")
    def echo(msg):
        msg.reply(msg.data)

    @sente.on("t/whoami")
    def whoami(msg):
        msg.reply({"uid": msg.uid, "transport": msg.transport, "client_id": msg.client_id})

    @sente.on("t/slow")
    def slow(msg):
        gevent.sleep(msg.data or 3)

    @sente.on("t/boom")
    def boom(msg):
        raise RuntimeError("boom")

    @sente.on("t/header")
    def header(msg):
        msg.reply(msg.request.headers.get("X-Test"))

    @sente.on("t/push-me")
    def push_me(msg):
        sente.send(msg.uid, ("t/pushed", msg.data), client_id=msg.client_id)

    def page(template: str):
        uid = request.args.get("uid")
        if uid is not None:
            session["uid"] = uid
        return render_template_string(template, msgpack=packer == "msgpack")

    app.add_url_rule("/page", "page", lambda: page(PAGE))
    app.add_url_rule("/module-page", "module_page", lambda: page(MODULE_PAGE))

    @app.post("/test/push")
    def push():
        body = request.get_json()
        sente.send(body["uid"], (body["event"], body.get("data")), flush=True)
        return jsonify(ok=True)

    @app.post("/test/stream")
    def stream():
        """Push ``["t/n", i]`` for i in range(n) at ``rate`` per second, then ``["t/end", n]``;
        answers at once (the stream runs on)."""
        body = request.get_json()
        uid, n, rate = body["uid"], int(body["n"]), float(body["rate"])

        def run() -> None:
            for i in range(n):
                sente.send(uid, ("t/n", i))
                gevent.sleep(1 / rate)
            sente.send(uid, ("t/end", n), flush=True)

        gevent.spawn(run)
        return jsonify(ok=True)

    @app.post("/test/kick")
    def kick():
        sente.kick(request.get_json()["uid"])
        return jsonify(ok=True)

    @app.post("/test/refuse-ws")
    def refuse_ws():
        app.config["refuse_ws"] = bool(request.get_json()["on"])
        return jsonify(ok=True)

    @app.post("/test/refuse-http")
    def refuse_http():
        app.config["refuse_http"] = bool(request.get_json()["on"])
        return jsonify(ok=True)

    @app.post("/test/bad-positions")
    def bad_positions():
        app.config["bad_positions"] = bool(request.get_json()["on"])
        return jsonify(ok=True)

    @app.before_request
    def count_flask() -> None:
        """Channel-socket requests Flask itself handled (the fast path skips this hook)."""
        if (request.path == "/chsk" and request.headers.get("Upgrade") is None
                and "new-ws-ticket" not in request.args):
            hits[(request.args.get("client-id", ""), "flask-" + request.method.lower())] += 1

    @app.get("/test/hits")
    def get_hits():
        cid = request.args["client-id"]
        return jsonify({kind: n for (c, kind), n in hits.items()
                        if c == cid and kind != "ticket"})

    @app.get("/test/msgpack.js")
    def msgpack_js():
        return send_file(MSGPACK_UMD, mimetype="text/javascript")

    inner = app.wsgi_app

    def middleware(environ, start_response):
        """Counts channel-socket requests per client and, when asked, refuses upgrades the
        way a proxy without WebSocket support does (a plain 400), or Ajax with a 403."""
        if environ.get("PATH_INFO") == "/chsk":
            is_ws = environ.get("HTTP_UPGRADE", "").lower() == "websocket"
            cid = ""
            for part in environ.get("QUERY_STRING", "").split("&"):
                if part.startswith("client-id="):
                    cid = part[len("client-id="):]
            kind = "ws" if is_ws else environ["REQUEST_METHOD"].lower()
            if "new-ws-ticket=" in environ.get("QUERY_STRING", ""):
                kind = "ticket"  # part of a WebSocket attempt (the CSRF ticket), not Ajax
            hits[(cid, kind)] += 1
            if environ.get("HTTP_X_SENTE_KEY"):
                hits[(cid, "keyed")] += 1  # sente.js sent the fast-path key
            if is_ws and app.config["refuse_ws"]:
                start_response("400 Bad Request", [("Content-Type", "text/plain")])
                return [b"no WebSocket here\n"]
            if not is_ws and app.config["refuse_http"]:
                start_response("403 Forbidden", [("Content-Type", "text/plain")])
                return [b"refused by the test\n"]
            query = environ.get("QUERY_STRING", "")
            if app.config["bad_positions"] and "pos=" in query:
                # The seq -1 of issue 24 #2: the server itself answers 400 Bad positions.
                environ["QUERY_STRING"] = "&".join(
                    "pos=%7B%22u%22%3A%5B%22x%22%2C-1%5D%7D" if part.startswith("pos=")
                    else part for part in query.split("&"))
        return inner(environ, start_response)

    app.wsgi_app = middleware  # type: ignore[method-assign]
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--packer", default="json")
    args = parser.parse_args()
    server = make_server(create_app(args.packer), "127.0.0.1", args.port, log=None)
    server.start()
    print(f"PORT {server.server_port}", flush=True)
    gevent.signal_handler(signal.SIGTERM, server.close)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
