"""An app factory with blueprints: ``create_app()`` makes a fresh, independent app each
time — one per test, or several in one process — all served by the one ``sente`` object.

Serve it with ``gunicorn -k flask_sente.worker.SenteWorker 'chatapp:create_app()'``.
"""
from __future__ import annotations

import typing as t

from flask import Flask

from .extensions import sente
from .rooms import bp as rooms  # importing it registers its @sente.on handlers, once


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="change me", ROOM_NAME="lobby",
                            SENTE_SEND_BUFFER_WS=0.02)   # SENTE_* keys are Sente's options
    app.config.from_prefixed_env()                      # FLASK_SECRET_KEY=..., FLASK_SENTE_...
    app.config.update(config or {})

    sente.init_app(app)       # this app's hub, route and options; handlers are shared
    app.register_blueprint(rooms)
    return app
