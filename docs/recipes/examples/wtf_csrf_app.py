"""Flask-WTF's CSRF token guards the channel socket too: one token per session for the
app's forms and for flask_sente's WebSocket handshakes, Ajax polls and Ajax posts.

With ``CSRFProtect`` active and flask_sente's ``csrf`` option left at ``True`` (the default),
flask_sente checks requests with Flask-WTF's ``validate_csrf`` and puts Flask-WTF's
``generate_csrf()`` token in ``{{ sente_script() }}``: nothing else to wire.
"""
from __future__ import annotations

import typing as t
import uuid

from flask import Flask, render_template_string, session
from flask_wtf.csrf import CSRFProtect

from flask_sente import EventMsg, Sente

PAGE = """<!doctype html>
<head>{{ sente_script() }}</head>
<form method="post" action="/rename">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <input name="name"><button>Rename</button>
</form>
<script>
  const chsk = Sente.connect();      // the token comes from the meta tag sente_script() wrote
  chsk.call(["notes/add", "hello"]).then((reply) => console.log(reply));
</script>
"""


def create_app(secret_key: str = "change me") -> Flask:
    app = Flask(__name__)
    app.secret_key = secret_key
    # A page may keep its channel socket open for days and reconnect with the token it was
    # rendered with: let the token live as long as the session, not Flask-WTF's 1 hour.
    app.config["WTF_CSRF_TIME_LIMIT"] = None
    CSRFProtect(app)
    sente = Sente(app)   # csrf=True (the default): Flask-WTF's token, checked by Flask-WTF

    @sente.on("notes/add")
    def add_note(msg: EventMsg) -> None:
        msg.reply({"saved": msg.data, "by": msg.uid})

    @app.get("/")
    def index() -> t.Any:
        session.setdefault("uid", uuid.uuid4().hex)   # the default user_id hook reads it
        return render_template_string(PAGE)

    @app.post("/rename")
    def rename() -> t.Any:   # an ordinary form post: CSRFProtect checks it as usual
        return "renamed"

    return app
