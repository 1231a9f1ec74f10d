"""The app the cluster tests run under ``gunicorn -w 3``: users named by ``?u=``, handlers
that push, broadcast and kick from whichever worker serves the request, and presence
events recorded in Redis (so a test can count them across workers)."""
from __future__ import annotations

import json
import os
import typing as t

import redis
from flask import Flask, request, session

from flask_sente import CallError, Sente, signals


def create_app() -> Flask:
    url = os.environ["SENTE_TEST_REDIS"]
    app = Flask(__name__)
    app.secret_key = "cluster-test"
    # history_size: a client the cutting proxy keeps away under load may fall far behind;
    # the replay tests need its whole gap kept (past it the answer is recovered: false).
    # Short grace windows keep the presence tests quick; SENTE_TEST_DEFAULT_GRACE=1 keeps
    # the defaults, for the drills that check a bound documented with them.
    graces = {} if os.environ.get("SENTE_TEST_DEFAULT_GRACE") == "1" else {
        "reconnect_grace_ws": 0.5, "reconnect_grace_ajax": 1.0}
    # The admin dashboard (issue 29) when asked for: "root" is the admin; the page and its
    # actions read the uid from the session (``/login?u=``), clients still from ``?u=``.
    admin: dict[str, t.Any] = {"admin": True, "admin_uids": {"root"}} if os.environ.get(
        "SENTE_TEST_ADMIN") == "1" else {}
    sente = Sente(app, csrf=False, backplane=url, history_size=1000, lp_timeout=2,
                  user_id=lambda client_id: request.args.get("u") or session.get("uid"),
                  **graces, **admin)
    log = redis.Redis.from_url(url, socket_timeout=2)

    @app.route("/login")
    def login() -> str:
        """Log in as ``?u=`` (the admin dashboard's page and actions use the session)."""
        session["uid"] = request.args["u"]
        return sente.csrf_token()

    @app.route("/send/<uid>/<int:n>")
    def send_route(uid: str, n: int) -> str:
        """A plain Flask route that pushes (the causal-order test: issue 25)."""
        sente.send(uid, ("x/n", n))
        return str(os.getpid())

    @app.route("/call/<uid>/<cid>/<int:n>")
    def call_route(uid: str, cid: str, n: int) -> dict[str, t.Any]:
        """A plain Flask route that asks one client (server -> client calls: issue 28)."""
        try:
            value = sente.call(uid, ("t/triple", n), client_id=cid,
                               timeout=float(request.args.get("timeout", "5")))
        except CallError as exc:
            return {"pid": os.getpid(), "error": type(exc).__name__, "message": str(exc)}
        return {"pid": os.getpid(), "value": value}

    @sente.on("t/push")
    def push(msg: t.Any) -> None:
        sente.send(msg.data["to"], ("t/n", msg.data["n"]))
        msg.reply(os.getpid())

    @sente.on("t/broadcast")
    def broadcast(msg: t.Any) -> None:
        sente.broadcast(("t/b", msg.data))
        msg.reply(os.getpid())

    @sente.on("t/kick")
    def kick(msg: t.Any) -> None:
        sente.kick(msg.data)
        msg.reply(os.getpid())

    @sente.on("t/pid")
    def pid(msg: t.Any) -> None:
        msg.reply(os.getpid())

    @sente.on("t/online")
    def online(msg: t.Any) -> None:
        uids = sente.connected_uids
        msg.reply({"pid": os.getpid(), "any": sorted(uids.any), "ws": sorted(uids.ws),
                   "ajax": sorted(uids.ajax)})

    @sente.on_join("room/*")
    def join_room(msg: t.Any) -> t.Any:
        return {"pid": os.getpid()}

    @sente.on_join("vip")
    def join_vip(msg: t.Any) -> bool:
        return False

    @sente.on("t/publish")
    def publish(msg: t.Any) -> None:
        sente.publish(msg.data["topic"], ("t/p", msg.data["n"]))
        msg.reply(os.getpid())

    @sente.on("t/members")
    def members(msg: t.Any) -> None:
        msg.reply({"pid": os.getpid(), "members": sorted(sente.members(msg.data))})

    def topic_joined(sender: t.Any, topic: str, uid: t.Any) -> None:
        log.rpush("test:topics", json.dumps(["joined", topic, uid, os.getpid()]))

    def topic_left(sender: t.Any, topic: str, uid: t.Any) -> None:
        log.rpush("test:topics", json.dumps(["left", topic, uid, os.getpid()]))

    signals.topic_joined.connect(topic_joined, app, weak=False)
    signals.topic_left.connect(topic_left, app, weak=False)

    @sente.on("chsk/uidport-open")
    def opened(msg: t.Any) -> None:
        log.rpush("test:events", json.dumps(["open", msg.data, os.getpid()]))

    @sente.on("chsk/uidport-close")
    def closed(msg: t.Any) -> None:
        log.rpush("test:events", json.dumps(["close", msg.data, os.getpid()]))

    return app
