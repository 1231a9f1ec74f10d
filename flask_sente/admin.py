"""The admin dashboard, served by the extension: its page, its actions, and the overview
the page asks for over the channel.

Off unless the ``admin`` option is on. Every part is refused (403) to a user the
``admin_auth`` hook (or the ``admin_uids`` option) does not name an admin:

* ``GET <admin_url>`` — the page (``static/admin/``), which connects with sente.js like any
  client of the app and asks for :data:`OVERVIEW` once a second;
* ``sente.admin/overview`` — answered here (the router runs it like the app's handlers)
  from every process's report (``core/overview.py``, ``hub/inspect.py``);
* ``POST <admin_url>/act`` — kick a user, close one client, take a user out of a topic, send
  a test push: with the CSRF token in ``X-CSRF-Token``, from the app's own origin, each
  written to the ``flask_sente.admin`` log with the admin's uid.

Users are named by :func:`~flask_sente.core.overview.uid_key` in actions, so that a uid of
any type survives the page's JSON; the user must be connected somewhere (404 otherwise).
"""
from __future__ import annotations

import json
import logging
import os
import time
import typing as t

from flask import Blueprint, Response, current_app, request, send_file, session

from .admission import (
    CSRF_SESSION_KEY,
    check_csrf,
    check_origin,
    refuse,
    supplied_csrf_token,
    user_id,
)
from .core.overview import Query, QueryError, ask, label, merge, uid_key
from .exceptions import BackplaneError
from .protocol.security import csrf_token_valid
from .views import script_version

if t.TYPE_CHECKING:  # pragma: no cover
    from .messages import EventMsg
    from .state import AppState

#: The event the page asks for the overview with (not ``chsk/``: clients may not send those).
OVERVIEW = "sente.admin/overview"
#: What the "Push" action sends.
TEST_PUSH = "sente.admin/test-push"
#: How long the overview waits for the other processes' reports (they answer in
#: milliseconds; one that does not is counted missing rather than delaying the page).
GATHER_TIMEOUT = 1.0
ADMIN_DIR = os.path.join(os.path.dirname(__file__), "static", "admin")
#: The page may load its own files and talk to its own origin, nothing else; it is never
#: framed (clickjacking an admin's "Kick" button).
PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
ACTIONS = ("kick", "close-client", "leave-topic", "push")

audit = logging.getLogger("flask_sente.admin")


def make_blueprint(path: str) -> Blueprint:
    bp = Blueprint("sente_admin", __name__)
    bp.add_url_rule(path, "page", _page)
    bp.add_url_rule(path + "/admin.js", "script", _static, defaults={"name": "admin.js"})
    bp.add_url_rule(path + "/admin.css", "styles", _static, defaults={"name": "admin.css"})
    bp.add_url_rule(path + "/act", "act", _act, methods=["POST"])
    return bp


def is_admin(state: AppState, uid: t.Any) -> bool:
    """What the ``admin_auth`` hook says of ``uid``; without one, whether ``uid`` is in
    ``admin_uids``. Called in the request context for the page and the actions, in the
    app context for the overview (handlers run there): decide from the uid."""
    hook = state.hook("admin_auth")
    if hook is not None:
        return bool(hook(uid))
    try:
        return uid in state.options.admin_uids
    except TypeError:  # an unhashable uid and a set
        return False


# --- the overview, over the channel -------------------------------------------------------

def answer_overview(msg: EventMsg) -> None:
    """``sente.admin/overview``: the picture of the deployment, one page of users and of
    topics; ``{"error": "forbidden"}`` for a client whose user is no admin."""
    state = t.cast("AppState", current_app.extensions["sente"])
    if not msg.expects_reply:
        return
    if not is_admin(state, msg.uid):
        state.metrics.rejected("unauthorized")
        msg.reply({"error": "forbidden"})
        return
    try:
        query = Query.parse(msg.data)
    except QueryError as exc:
        msg.reply({"error": "bad-query", "message": str(exc)})
        return
    msg.reply(overview(state, query))


def overview(state: AppState, query: Query) -> dict[str, t.Any]:
    """Pick the pages from what this process knows cluster-wide, then ask every process
    for its part of them. With the shared store away, this process's part alone
    (``missing`` is then -1: unknown)."""
    hub = state.hub
    uids = hub.connected_uids.any
    topics = hub.backplane.topics()
    users_page = query.users.select(uids, label)
    topics_page = query.topics.select(topics)
    asked = ask(users_page[1], topics_page[1])
    try:
        reports, missing = hub.backplane.gather(asked, GATHER_TIMEOUT)
    except BackplaneError:
        reports, missing = [hub.admin_report(asked)], -1
    return merge(now=time.time(), query=query, uids=uids, topics=topics, reports=reports,
                 missing=missing, users_page=users_page, topics_page=topics_page)


# --- HTTP: the page and the actions ------------------------------------------------------

def _state() -> AppState:
    return t.cast("AppState", current_app.extensions["sente"])


def _forbidden(state: AppState, reason: str, body: str) -> Response:
    state.metrics.rejected(reason)
    resp = Response(body + "\n", status=403, mimetype="text/plain")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _admin_or_refusal(state: AppState) -> tuple[t.Any, Response | None]:
    uid = user_id(state, "")
    if not is_admin(state, uid):
        return uid, _forbidden(state, "unauthorized", "Forbidden: the admin dashboard is for "
                               "admins (the admin_auth hook or the admin_uids option)")
    return uid, None


def _page() -> Response:
    state = _state()
    uid, refusal = _admin_or_refusal(state)
    if refusal is not None:
        return refusal
    options = state.options
    path = options.admin_path
    version = script_version()
    config = {"url": options.url, "adminUrl": path, "uid": label(uid),
              "csrfToken": state.sente.csrf_token(), "interval": 1000, "version": version}
    with open(os.path.join(ADMIN_DIR, "admin.html"), encoding="utf-8") as f:
        page = f.read()
    # Inside <script type="application/json">: nothing in the JSON may close the element.
    config_json = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e")
    for placeholder, value in (("__SENTE_ADMIN_CONFIG__", config_json),
                               ("__SENTE_JS__", f"{options.url.rstrip('/')}/sente.js?v={version}"),
                               ("__ADMIN_JS__", f"{path}/admin.js?v={version}"),
                               ("__ADMIN_CSS__", f"{path}/admin.css?v={version}")):
        page = page.replace(placeholder, value)
    resp = Response(page, mimetype="text/html")
    resp.headers.update(PAGE_HEADERS)
    return resp


def _static(name: str) -> Response:
    state = _state()
    _, refusal = _admin_or_refusal(state)
    if refusal is not None:
        return refusal
    resp = send_file(os.path.join(ADMIN_DIR, name), max_age=0, conditional=True, etag=True,
                     mimetype="text/javascript" if name.endswith(".js") else "text/css")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _json(status: int, body: dict[str, t.Any]) -> Response:
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _csrf_refusal(state: AppState) -> Response | None:
    """The channel's CSRF check; with ``csrf=False`` (the channel's own choice) the
    actions still want the session's token: they change what other users see."""
    if state.options.csrf is not False:
        return check_csrf(state, "", upgrade=False)
    if csrf_token_valid(session.get(CSRF_SESSION_KEY), supplied_csrf_token()):
        return None
    return refuse("csrf", 403, "Bad CSRF token")


def _act() -> Response:
    state = _state()
    refusal = _csrf_refusal(state) or check_origin(state)
    if refusal is not None:
        state.metrics.rejected(getattr(refusal, "reason", "csrf"))
        return refusal
    admin, refusal = _admin_or_refusal(state)
    if refusal is not None:
        return refusal
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("action") not in ACTIONS:
        return _json(400, {"error": "the body must be JSON: {\"action\": one of "
                           + ", ".join(ACTIONS) + ", \"uid\": a user's key, ...}"})
    action, key = body["action"], body.get("uid")
    client_id, topic = body.get("client_id"), body.get("topic")
    if not isinstance(key, str):
        return _json(400, {"error": "uid must be the user's key from the overview"})
    if (action == "close-client" or client_id is not None) and not isinstance(client_id, str):
        return _json(400, {"error": "client_id must be a string"})
    if action == "leave-topic" and not (isinstance(topic, str) and topic):
        return _json(400, {"error": "topic must be a non-empty string"})
    uid = _connected(state, key)
    if uid is _NOBODY:
        return _json(404, {"error": "not connected"})
    try:
        done = _perform(state, admin, action, uid, client_id, topic)
    except BackplaneError as exc:
        return _json(503, {"error": f"the backplane is unreachable: {exc}"})
    if not done:
        return _json(404, {"error": "client not connected"})
    audit.info("admin %r: %s %r%s%s", admin, action, uid,
               f" client {client_id}" if client_id else "", f" topic {topic!r}" if topic else "")
    return _json(200, {"ok": True})


_NOBODY = object()


def _connected(state: AppState, key: str) -> t.Any:
    """The connected uid whose key is ``key`` (anywhere in the deployment)."""
    for uid in state.hub.connected_uids.any:
        if uid_key(uid) == key:
            return uid
    return _NOBODY


def _perform(state: AppState, admin: t.Any, action: str, uid: t.Any, client_id: str | None,
             topic: str | None) -> bool:
    hub = state.hub
    if action == "kick":
        hub.kick(uid, "kicked by an admin")
    elif action == "close-client":
        reports, _ = hub.backplane.gather({"users": [], "topics": [],
                                   "close": [uid, client_id, "closed by an admin"]},
                                  GATHER_TIMEOUT)
        return any(report.get("closed") for report in reports)
    elif action == "leave-topic":
        hub.leave(t.cast(str, topic), uid)
    else:
        hub.send(uid, [TEST_PUSH, {"from": label(admin), "at": time.time()}],
                 client_id=client_id)
    return True
