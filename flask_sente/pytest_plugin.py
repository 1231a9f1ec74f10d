"""pytest fixtures for testing apps built on flask_sente over real sockets.

Why it exists: an app's own tests want what flask_sente's tests have — the app served on a
real ephemeral port with WebSocket support, Python clients connected to it as a user, and
all of it stopped after each test — without copying our test helpers. Installing
flask_sente registers this module as a pytest plugin (entry point ``pytest11``), so the
fixtures are there in every test of a project that has flask_sente installed:

``sente_app``
    The app under test. **Override it** in your ``conftest.py``::

        @pytest.fixture
        def sente_app():
            return create_app({"TESTING": True})

``sente_server``
    Runs ``sente_app`` with flask_sente's server (:func:`flask_sente.testing.serve`) on
    127.0.0.1 and an ephemeral port, in this process; yields a :class:`LiveServer`
    (``.url``, ``.chsk_url``, ``.app``); stops it after the test.

``sente_client_factory``
    ``make(session=None, **client_options)`` returns a :class:`flask_sente.client.Client`
    connected to ``sente_server`` (open when it returns). ``session`` is what the app's
    Flask session should hold (e.g. ``{"uid": "ada"}``): the factory signs a session cookie
    with the app's own session interface and hands the client the CSRF token that goes with
    it. Every client is closed after the test.

The server runs on gevent in the test process, so the process must be monkey-patched
before anything opens sockets or starts threads. Set ``sente_monkey_patch = true`` in the
pytest configuration and this plugin patches first thing, before any ``conftest.py`` is
imported; or call ``gevent.monkey.patch_all()`` yourself at the top of the root
``conftest.py``. The plugin imports nothing but pytest when it loads (gevent, Flask and
flask_sente's server only inside the fixtures), so a project that does not use it, or
patches on its own, is unaffected.
"""
from __future__ import annotations

import contextlib
import dataclasses
import http.cookies
import typing as t

import pytest

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from .client import Client

#: Longest wait for a client made by ``sente_client_factory`` to open.
OPEN_TIMEOUT = 10.0
PATCH_INI = "sente_monkey_patch"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(PATCH_INI, type="bool", default=False,
                  help="flask_sente: gevent.monkey.patch_all() before conftest.py files are "
                       "imported (the sente_server fixture runs the app on gevent)")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """The earliest point a plugin gets with the configuration read: before any
    ``conftest.py`` (and so the app) is imported."""
    if early_config.getini(PATCH_INI):
        from gevent import monkey

        monkey.patch_all()


@dataclasses.dataclass(frozen=True)
class LiveServer:
    """The app served on a real port."""

    #: Base URL, like ``http://127.0.0.1:54321``.
    url: str
    #: The channel socket's URL (the base URL plus the app's ``url`` option).
    chsk_url: str
    #: The app being served: ``with server.app.app_context(): sente.send(...)``.
    app: Flask

    def __str__(self) -> str:
        return self.url


@pytest.fixture
def sente_app() -> Flask:
    """The app under test: override this fixture in your conftest.py."""
    pytest.fail("flask_sente's fixtures need your app: define a fixture named sente_app in "
                "your conftest.py that returns it (e.g. `return create_app()`)", pytrace=False)


@pytest.fixture
def sente_server(sente_app: Flask) -> t.Iterator[LiveServer]:
    """``sente_app`` served on 127.0.0.1 and an ephemeral port for the test's duration."""
    _require_patched()
    state = sente_app.extensions.get("sente") if hasattr(sente_app, "extensions") else None
    if state is None:
        pytest.fail(f"sente_app returned {sente_app!r}, which is not a Flask app with Sente "
                    "initialised (Sente(app) or sente.init_app(app))", pytrace=False)
    from .testing import serve

    with serve(sente_app) as base:
        yield LiveServer(base, base + state.options.url, sente_app)


@pytest.fixture
def sente_client_factory(sente_server: LiveServer) -> t.Iterator[t.Callable[..., Client]]:
    """``make(session=None, *, open_timeout=10, **client_options)``: a connected client."""
    from .client import Client

    with contextlib.ExitStack() as opened:   # closes every client made, at teardown

        def make(session: t.Mapping[str, t.Any] | None = None, *,
                 open_timeout: float | None = OPEN_TIMEOUT, **options: t.Any) -> Client:
            """A client of ``sente_server``, open when this returns (``open_timeout=None``:
            only started). Options are :class:`~flask_sente.client.Client`'s; ``cookies``
            and ``csrf_token`` given there replace the session the factory would make."""
            if "cookies" in options:
                if session is not None:
                    raise TypeError("pass session= or cookies=, not both")
            else:
                cookies, token = session_cookie(sente_server.app, session or {})
                options["cookies"] = cookies
                options.setdefault("csrf_token", token)
            client = Client(sente_server.chsk_url, **options)
            opened.callback(client.close)
            client.connect()
            if open_timeout is not None and not client.wait_open(open_timeout):
                pytest.fail(f"the client did not open within {open_timeout:g} s: "
                            f"{client.state.last_close}", pytrace=False)
            return client

        yield make


def session_cookie(app: Flask, values: t.Mapping[str, t.Any]) -> tuple[dict[str, str], str | None]:
    """A session cookie holding ``values`` and the CSRF token that goes with it, made by the
    app's own session interface (as if a page had been served), as ``({name: value}, token)``.
    """
    state = app.extensions["sente"]
    with app.test_request_context(state.options.url) as ctx:
        ctx.session.update(values)
        token = None if state.options.csrf is False else state.sente.csrf_token()
        response = app.response_class()
        app.session_interface.save_session(app, ctx.session, response)
    name = app.config["SESSION_COOKIE_NAME"]
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        jar.load(header)
    return ({name: jar[name].value} if name in jar else {}), token


def _require_patched() -> None:
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        pytest.fail(
            "the sente_server fixture runs the app on gevent in the test process, which is "
            f"not monkey-patched: set `{PATCH_INI} = true` in your pytest configuration, or "
            "call gevent.monkey.patch_all() at the top of your root conftest.py",
            pytrace=False)
