"""The chat room: its HTTP views on a blueprint and its channel-socket handlers on ``sente``.

Handlers registered with ``@sente.on`` belong to the Sente object, so every app made by the
factory has them; each runs in the context of the app whose client sent the event, and
``sente.broadcast`` / ``sente.send`` inside it reach that app's clients only.
"""
from __future__ import annotations

import typing as t
import uuid

from flask import Blueprint, current_app, render_template_string, request, session

from flask_sente import EventMsg

from .extensions import sente

bp = Blueprint("rooms", __name__)

PAGE = """<!doctype html>
<head>{{ sente_script() }}</head>
<h1>{{ config.ROOM_NAME }}</h1>
<script>
  const chsk = Sente.connect();
  chsk.on("rooms/said", (m) => console.log(m.room, m.who, m.text));
  chsk.send(["rooms/say", "hello"]);
</script>
"""


@bp.get("/")
def room_page() -> t.Any:
    session.setdefault("uid", uuid.uuid4().hex)   # the default user_id hook reads it
    return render_template_string(PAGE)


@bp.post("/announce")
def announce() -> t.Any:
    """An ordinary view pushing to this app's clients (an admin tool, a webhook ...)."""
    sente.broadcast(("rooms/said", {"room": current_app.config["ROOM_NAME"],
                                    "who": "admin", "text": request.form["text"]}))
    return {"ok": True}


@sente.on("rooms/say")
def say(msg: EventMsg) -> None:
    sente.broadcast(("rooms/said", {"room": current_app.config["ROOM_NAME"],
                                    "who": msg.uid, "text": msg.data}))
