"""Stopping the embedded server ends idle keep-alive connections instead of waiting for them."""
import socket

import gevent
from flask import Flask

from flask_sente.server import make_server


def test_stop_closes_connections_waiting_between_requests():
    app = Flask(__name__)
    app.add_url_rule("/", "index", lambda: "hi")
    server = make_server(app, port=0, log=None)
    server.start()
    sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(4096)
        stopper = gevent.spawn(server.stop, timeout=60)   # a long grace for busy handlers
        assert sock.recv(4096) == b""                     # ...but an idle connection is ended
        stopper.join(timeout=10)
        assert stopper.dead, "stop() still waiting on an idle keep-alive connection"
    finally:
        sock.close()
        server.stop(timeout=1)
