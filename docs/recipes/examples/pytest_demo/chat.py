"""The app under test in the pytest recipe: signed-in users chat, anonymous visitors are
refused (the session's ``uid`` stands in for a real login)."""
from __future__ import annotations

from flask import Flask

from flask_sente import ANONYMOUS_UID, EventMsg, Sente

sente = Sente()


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "change me"
    sente.init_app(app)
    return app


@sente.authorize
def signed_in_only(uid: str, client_id: str) -> bool:
    return uid != ANONYMOUS_UID


@sente.on("chat/say")
def say(msg: EventMsg) -> None:
    sente.broadcast(("chat/said", {"who": msg.uid, "text": msg.data}))
    msg.reply({"ok": True})
