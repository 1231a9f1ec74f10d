"""Flask-Login with flask_sente: the logged-in user is the channel socket's uid, anonymous
visitors are refused before the WebSocket upgrade, and logging out closes every tab.

Run it with ``gunicorn -k flask_sente.worker.SenteWorker 'flask_login_app:create_app()'``.
"""
from __future__ import annotations

import typing as t

from flask import Flask, redirect, render_template_string, request
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
    user_logged_out,
)
from werkzeug.security import check_password_hash, generate_password_hash

from flask_sente import EventMsg, Sente

# A stand-in for your user table (hashed passwords, never plain ones).
PASSWORDS = {"ada": generate_password_hash("lovelace"), "bob": generate_password_hash("builder")}

PAGE = """<!doctype html>
<head>{{ sente_script() }}</head>
<p>Signed in as {{ current_user.id }}.</p>
<form method="post" action="/logout"><button>Sign out</button></form>
<script>
  const chsk = Sente.connect();
  chsk.onState((s) => { if (s.lastClose && s.lastClose.reason === "kicked") location = "/"; });
</script>
"""


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def create_app(secret_key: str = "change me") -> Flask:
    app = Flask(__name__)
    app.secret_key = secret_key
    login_manager = LoginManager(app)
    sente = Sente(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        return User(user_id) if user_id in PASSWORDS else None

    # The uid of a connection is the logged-in user's id. Flask-Login's anonymous user
    # answers get_id() with None, which flask_sente turns into its shared anonymous uid ...
    @sente.user_id
    def uid_of_logged_in_user(client_id: str) -> str | None:
        return t.cast("str | None", current_user.get_id())

    # ... and this hook refuses those anonymous connections: HTTP 401 before any upgrade,
    # which makes both clients stop instead of retrying. (Leave it out to let anonymous
    # visitors in; they all share the uid flask_sente.ANONYMOUS_UID.)
    @sente.authorize
    def logged_in_only(uid: str, client_id: str) -> bool:
        return bool(current_user.is_authenticated)

    # Logging out closes every channel socket of that user, in every tab and on both
    # transports (close code 4001: the clients do not reconnect on their own).
    @user_logged_out.connect_via(app)
    def kick_on_logout(sender: Flask, user: User, **extra: t.Any) -> None:
        sente.kick(user.get_id())

    @sente.on("chat/whoami")
    def whoami(msg: EventMsg) -> None:
        msg.reply(msg.uid)

    @app.get("/")
    def index() -> t.Any:
        if not current_user.is_authenticated:
            return redirect("/login")
        return render_template_string(PAGE)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> t.Any:
        if request.method == "POST":
            name = request.form.get("username", "")
            if name in PASSWORDS and check_password_hash(PASSWORDS[name],
                                                         request.form.get("password", "")):
                login_user(User(name))
                return redirect("/")
            return "Wrong user name or password", 401
        return ('<form method="post"><input name="username"><input name="password" '
                'type="password"><button>Sign in</button></form>')

    @app.post("/logout")
    @login_required
    def logout() -> t.Any:
        logout_user()  # sends user_logged_out: kick_on_logout runs here
        return redirect("/login")

    return app
