"""The web side of the Celery recipe: a flask_sente app on the Redis backplane whose
handler queues a report; the task pushes ``report/ready`` to the user when it is done. Its
rooms: clients join ``room/<name>``, and a message posted to a room goes through a task that
publishes it to the room's members.

Serve it with ``REDIS_URL=redis://... SECRET_KEY=... gunicorn -k
flask_sente.worker.SenteWorker -w 4 'reports_web:create_app()'``.
"""
from __future__ import annotations

import os
import typing as t
import uuid

from flask import Flask, render_template_string, session
from reports_tasks import build_report, post_to_room

from flask_sente import EventMsg, JoinMsg, Sente

PAGE = """<!doctype html>
<head>{{ sente_script() }}</head>
<script>
  const chsk = Sente.connect();
  chsk.on("report/ready", (report) => console.log("report", report.id, "is ready"));
  chsk.call(["reports/build", 7]).then((reply) => console.log("queued as", reply.queued));
</script>
"""


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = os.environ.get("SECRET_KEY", "change me")   # the same on every worker
    sente = Sente(app, backplane=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))

    @sente.on("reports/build")
    def queue_report(msg: EventMsg) -> None:
        result = build_report.delay(msg.uid, msg.data)   # returns at once
        msg.reply({"queued": result.id})

    @sente.on_join("room/*")
    def join_room(msg: JoinMsg) -> bool:
        return True                                      # who may join: decide here

    @sente.on("room/post")
    def post(msg: EventMsg) -> None:
        result = post_to_room.delay(msg.data["room"], msg.data["text"], msg.client_id)
        msg.reply({"queued": result.id})

    @app.get("/")
    def index() -> t.Any:
        session.setdefault("uid", uuid.uuid4().hex)   # a stand-in for your login
        return render_template_string(PAGE)

    return app
