"""The server the topic browser tests drive: rooms behind a join handler, in its own process.

Run as ``python tests/browser/topics_server.py [--port N] [--packer P] [--history-size N]``;
prints ``PORT <n>`` once it listens, serves until SIGTERM. The page is app_server.py's
(``{{ sente_script() }}`` and its harness, ``window.start(options)``); ``?uid=`` signs in.

Join handler for ``room/*`` (topic presence on):

* ``room/secret`` — refused with ``JoinRefused("members only")``;
* ``room/closed`` — the handler returns False (reason ``forbidden``);
* ``room/slow`` — allowed after half a second (a handler that takes its time);
* any other room — allowed; the join data is ``{"hello": uid, "members": [...]}``.

No handler matches other topics (refused, ``forbidden``). Test controls under ``/test/``:
``publish`` ``{topic, event, data}``, ``push`` ``{uid, event, data}``, and the server-side
``join`` / ``leave`` ``{topic, uid}``; ``GET /test/members?topic=`` the topic's members.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import typing as t  # noqa: E402

import gevent  # noqa: E402
from app_server import PAGE  # noqa: E402
from flask import Flask, jsonify, render_template_string, request, session  # noqa: E402

from flask_sente import JoinMsg, JoinRefused, Sente  # noqa: E402
from flask_sente.server import make_server  # noqa: E402


def create_app(packer: str, history_size: int) -> Flask:
    app = Flask(__name__)
    app.secret_key = "topic-browser-tests"
    # Short windows, as app_server.py: reconnects and presence changes show up quickly.
    sente = Sente(app, packer=packer, ws_keepalive=1.0, ws_ping_timeout=1.0,
                  reconnect_grace_ws=0.5, reconnect_grace_ajax=1.0, reply_timeout=5.0,
                  history_size=history_size, topic_presence=True)

    @sente.on_join("room/*")
    def join_room(msg: JoinMsg) -> t.Any:
        if msg.topic == "room/secret":
            raise JoinRefused("members only")
        if msg.topic == "room/closed":
            return False
        if msg.topic == "room/slow":
            gevent.sleep(0.5)
        return {"hello": msg.uid, "members": sorted(sente.members(msg.topic), key=str)}

    @app.get("/page")
    def page() -> str:
        session["uid"] = request.args["uid"]
        return render_template_string(PAGE, msgpack=False)

    @app.post("/test/publish")
    def publish() -> t.Any:
        body = request.get_json()
        sente.publish(body["topic"], (body["event"], body.get("data")))
        return jsonify(ok=True)

    @app.post("/test/push")
    def push() -> t.Any:
        body = request.get_json()
        sente.send(body["uid"], (body["event"], body.get("data")), flush=True)
        return jsonify(ok=True)

    @app.post("/test/join")
    def join() -> t.Any:
        body = request.get_json()
        sente.join(body["topic"], body["uid"])
        return jsonify(ok=True)

    @app.get("/test/members")
    def members() -> t.Any:
        return jsonify(sorted(sente.members(request.args["topic"]), key=str))

    @app.post("/test/leave")
    def leave() -> t.Any:
        body = request.get_json()
        sente.leave(body["topic"], body["uid"])
        return jsonify(ok=True)

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--packer", default="json")
    parser.add_argument("--history-size", type=int, default=1000)
    args = parser.parse_args()
    server = make_server(create_app(args.packer, args.history_size), "127.0.0.1", args.port,
                         log=None)
    server.start()
    print(f"PORT {server.server_port}", flush=True)
    gevent.signal_handler(signal.SIGTERM, server.close)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
