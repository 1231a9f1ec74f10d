"""The app the admin dashboard tests drive (issue 29), in a process of its own.

``python tests/browser/admin_server.py [--port N] [--no-admin]`` serves it with the in-memory
backplane and prints ``PORT <n>`` once it listens; gunicorn serves ``create_app()`` (Redis
from ``SENTE_TEST_REDIS``) for the cluster tests. The dashboard is on (``admin=True``) unless
``--no-admin``, and the admin is the user ``root`` (``admin_uids``).

* ``GET /login?uid=`` — signs in (the Flask session's uid is the channel's uid) and answers
  ``{"csrf": token}``: browsers and Python clients both use it;
* ``POST /test/join`` ``{topic, uid}`` — ``sente.join`` on the server (every client of the uid);
* ``t/pid`` — replies with the process id (which worker holds a WebSocket);
* ``t/fail`` — raises ZeroDivisionError (a handler error for the "recent" list).
"""
if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import typing as t  # noqa: E402

from flask import Flask, jsonify, request, session  # noqa: E402

from flask_sente import Sente  # noqa: E402

ADMIN = "root"


def create_app(admin: bool = True) -> Flask:
    app = Flask(__name__)
    app.secret_key = "admin-dashboard-tests"
    redis_url = os.environ.get("SENTE_TEST_REDIS")
    # Short grace windows: a kicked or closed client leaves the overview within a second.
    sente = Sente(app, admin=admin, admin_uids=[ADMIN], backplane=redis_url,
                  reconnect_grace_ws=0.5, reconnect_grace_ajax=1.0, lp_timeout=5)

    @app.get("/login")
    def login() -> t.Any:
        session["uid"] = request.args["uid"]
        return jsonify(csrf=sente.csrf_token())

    @app.post("/test/join")
    def join() -> t.Any:
        body = request.get_json()
        sente.join(body["topic"], body["uid"])
        return jsonify(ok=True)

    @sente.on("t/pid")
    def pid(msg: t.Any) -> None:
        msg.reply(os.getpid())

    @sente.on("t/fail")
    def fail(msg: t.Any) -> None:
        msg.reply(1 / 0)

    return app


def main() -> None:
    import gevent

    from flask_sente.server import make_server

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-admin", action="store_true")
    args = parser.parse_args()
    server = make_server(create_app(admin=not args.no_admin), "127.0.0.1", args.port, log=None)
    server.start()
    print(f"PORT {server.server_port}", flush=True)
    gevent.signal_handler(signal.SIGTERM, server.close)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
