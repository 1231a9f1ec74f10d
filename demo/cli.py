"""A terminal client for the demo, on ``flask_sente.client``.

::

    python -m demo.cli --name bob list            # print the todos
    python -m demo.cli --name bob add "buy milk"  # add one (the browsers show it at once)
    python -m demo.cli --name bob watch           # print changes as they happen (Ctrl-C)
    python -m demo.cli --list groceries add milk  # a named list: joins its topic first

It signs in like a browser would (a session cookie and the page's CSRF token), then talks
over the channel socket. Plain Python: no gevent, no monkey-patching.
"""
from __future__ import annotations

import argparse
import http.cookiejar
import re
import sys
import typing as t
import urllib.parse
import urllib.request

from flask_sente.client import Client
from flask_sente.exceptions import JoinRefused


def sign_in(base: str, name: str) -> tuple[http.cookiejar.CookieJar, str]:
    """Sign in as ``name``; returns the session cookies and the channel socket's CSRF token."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/", timeout=10).read().decode()
    form_token = _find(r'name="csrf-token" value="([^"]+)"', page)
    body = urllib.parse.urlencode({"name": name, "csrf-token": form_token}).encode()
    page = opener.open(base + "/login", data=body, timeout=10).read().decode()
    return jar, _find(r'name="sente-csrf-token" content="([^"]+)"', page)


def _find(pattern: str, page: str) -> str:
    match = re.search(pattern, page)
    if match is None:
        raise SystemExit("the page did not look like the demo's; is --url right?")
    return match.group(1)


def _show(todo: dict[str, t.Any]) -> str:
    return f"[{'x' if todo['done'] else ' '}] #{todo['id']} {todo['text']}  ({todo['author']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.cli", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="the demo's address")
    parser.add_argument("--name", default="cli", help="who to sign in as")
    parser.add_argument("--type", default="auto", choices=["auto", "ws", "ajax"])
    parser.add_argument("--list", default="", help="a named list (default: the shared one)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the todos")
    add = sub.add_parser("add", help="add a todo")
    add.add_argument("text")
    watch = sub.add_parser("watch", help="print changes as they happen")
    watch.add_argument("--for", dest="seconds", type=float, default=None,
                       help="stop after this many seconds (default: until Ctrl-C)")
    args = parser.parse_args(argv)

    base = args.url.rstrip("/")
    jar, token = sign_in(base, args.name)
    with Client(base + "/chsk", type=args.type, cookies=jar, csrf_token=token) as chsk:
        if not chsk.wait_open(timeout=10):
            print(f"could not connect: {chsk.state.last_close}", file=sys.stderr)
            return 1
        where: dict[str, t.Any] = {}
        if args.list:
            # A named list is the topic list/<name>: joining is what lets this client read
            # and change it, and get its pushes (with no on_topic handler: from receive()).
            try:
                chsk.join("list/" + args.list, timeout=10)
            except JoinRefused as exc:
                print(f"cannot open {args.list}: {exc.reason}", file=sys.stderr)
                return 1
            where = {"list": args.list}
        if args.command == "list":
            for todo in chsk.call(("todo/list", where or None), timeout=10)["todos"]:
                print(_show(todo))
        elif args.command == "add":
            reply = chsk.call(("todo/add", {**where, "text": args.text}), timeout=10)
            if not reply["ok"]:
                print(reply["error"], file=sys.stderr)
                return 1
            print("added", _show(reply["todo"]))
        else:
            labels = {"todo/added": "added", "todo/changed": "changed", "todo/deleted": "deleted"}
            print(f"watching as {args.name} over {chsk.state.type}; Ctrl-C to stop", flush=True)
            try:
                while True:
                    event = chsk.receive(timeout=args.seconds)
                    if event is None:
                        break
                    if event[0] in labels:
                        print(f"{labels[event[0]]:>7} {_show(event[1])}", flush=True)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
