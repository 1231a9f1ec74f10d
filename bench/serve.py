"""Launch one server under test: ``python -m bench.serve KIND [--nodelay]``.

Raises the file-descriptor limit, builds the server of ``bench.servers.<KIND>`` on
127.0.0.1 with an ephemeral port and a listen backlog of 2048 (the same for every server,
so that 2000 clients connecting at once are not throttled by SYN drops), prints
``PORT <n>`` and serves until terminated. gevent servers monkey-patch first thing, inside
their own module; the ASGI server must not, so nothing is imported here before the choice.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .common import raise_nofile

KINDS = ("sente", "raw", "fsock", "fsio", "asgi")
BACKLOG = 2048


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--nodelay", action="store_true",
                        help="set TCP_NODELAY on accepted sockets (Flask-SocketIO variant)")
    args = parser.parse_args(argv)
    raise_nofile()
    module = importlib.import_module(f"bench.servers.{args.kind}")
    module.serve(backlog=BACKLOG, nodelay=args.nodelay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
