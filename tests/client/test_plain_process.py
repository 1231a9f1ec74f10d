"""The client needs no monkey-patching: run it in a plain Python process (real threads)
against a server in this (gevent) process."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = r'''
import sys, threading
import flask_sente.client as client_module
from flask_sente.client import Client

monkey = sys.modules.get("gevent.monkey")
assert monkey is None or not monkey.is_anything_patched(), "this process must not be patched"
assert "flask" not in sys.modules and "gevent" not in sys.modules, sorted(
    m for m in sys.modules if m.split(".")[0] in ("flask", "gevent"))

url = sys.argv[1]
for transport in ("ws", "ajax", "auto"):
    with Client(url, type=transport, keepalive=0.2, ping_timeout=2) as chsk:
        got = threading.Event()
        chsk.on("t/handled", lambda data: got.set())
        assert chsk.call(("t/echo", {"n": transport}), timeout=10) == {"n": transport}
        chsk.send(("t/log", transport), timeout=10)
        assert chsk.call(("t/push", transport), timeout=10) is True
        assert chsk.receive(timeout=10) == ("t/ev", transport), transport
        chsk.call(("t/push-many", {"id": "t/handled", "items": [1]}), timeout=10)
        assert got.wait(10)
        assert chsk.state.type == ("ajax" if transport == "ajax" else "ws")
        chsk.reconnect()
        assert chsk.call(("t/echo", 2), timeout=10) == 2
left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
assert left == [], left
print("OK")
'''


def test_client_in_a_plain_process(server):
    result = subprocess.run([sys.executable, "-c", SCRIPT, server.url], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "OK"
    assert server.logged == ["ws", "ajax", "auto"]
