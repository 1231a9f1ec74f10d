"""Test setup shared by every test.

gevent's monkey-patching comes first, before anything imports ``socket``: the servers under
test run in-process on gevent, and the plain clients the tests drive them with (requests,
websocket-client, our own Python client) must yield to them instead of blocking the hub.
"""
from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402

import gevent  # noqa: E402
import pytest  # noqa: E402
import websocket  # noqa: E402

_websocket_close = websocket.WebSocket.close


def _close_and_release(self: websocket.WebSocket, *args: object, **kwargs: object) -> None:
    """websocket-client's close() returns early, leaving its socket open, once the server
    has closed first; the tests often let the server close, so always release the socket."""
    try:
        _websocket_close(self, *args, **kwargs)
    finally:
        self.shutdown()


websocket.WebSocket.close = _close_and_release  # type: ignore[method-assign]


def _live_greenlets() -> set[int]:
    return {
        id(o) for o in gc.get_objects()
        if isinstance(o, gevent.Greenlet) and not o.dead
    }


@pytest.fixture(autouse=True)
def no_leaked_greenlets():
    """Fail a test that leaves a greenlet running (servers, writers, timers, handlers)."""
    before = _live_greenlets()
    yield
    deadline = 50
    leaked: set[int] = set()
    for _ in range(deadline):
        leaked = _live_greenlets() - before
        if not leaked:
            return
        gevent.sleep(0.02)
    details = [
        repr(o) for o in gc.get_objects()
        if isinstance(o, gevent.Greenlet) and id(o) in leaked and not o.dead
    ]
    pytest.fail(f"greenlets left running after the test: {details}")
