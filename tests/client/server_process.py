"""A flask_sente server in a process of its own, for tests that freeze it with SIGSTOP.

Prints its base URL on the first line of stdout, then serves until killed (at most
``--lifetime`` seconds, so a forgotten process cannot outlive the test run for long).
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from flask import Flask  # noqa: E402

from flask_sente import Sente  # noqa: E402
from flask_sente.testing import serve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args()

    app = Flask(__name__)
    app.secret_key = "test"
    sente = Sente(app, csrf=False)

    @sente.on("t/echo")
    def echo(msg):  # type: ignore[no-untyped-def]
        msg.reply(msg.data)

    with serve(app, port=args.port) as base:
        sys.stdout.write(base + "\n")
        sys.stdout.flush()
        gevent.sleep(args.lifetime)


if __name__ == "__main__":
    main()
