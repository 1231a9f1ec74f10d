"""The servers under test, one module each; every module has ``serve(backlog, nodelay)``.

* ``sente`` — flask_sente (WebSocket and Ajax on ``/chsk``), the code under test;
* ``raw`` — a plain WSGI echo / fan-out app on stock gevent-websocket (no Flask);
* ``fsio`` — Flask-SocketIO, ``async_mode="gevent"`` with gevent-websocket's handler;
* ``asgi`` — python-socketio's ``AsyncServer`` as an ASGI app on uvicorn.

Each answers the same workloads: an echo with a reply (W1/W4), a fan-out of M events to every
connected client triggered by one client (W2), idle connections (W3) and connects (W5).
"""
