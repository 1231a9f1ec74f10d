"""The demo app factory: ``demo.app:create_app``.

Everything realtime goes through one ``Sente`` object: handlers reply to the author and push
the change — to every user for the shared list, to the list's topic (``list/<name>``) for a
named list, so only the users who joined it get it. Each user's own list is the topic
``list/@<uid>``, which only that user may join. The "who is online" panel is rebuilt from
``connected_uids`` and pushed whenever a client comes or goes; who views a named list comes
from the topic's members (``SENTE_TOPIC_PRESENCE`` pushes the changes into the topic).

Sharing a todo is the server asking a user (server -> client calls): ``todo/share`` offers
the todo to every open page of the other user with ``sente.call`` and replies to the sharer
with what happened; the first page to accept or decline decides, and the todo is added to
that user's own list on an accept.
"""
from __future__ import annotations

import logging
import os
import secrets
import typing as t

import gevent
import gevent.queue
from flask import Flask, abort, current_app, redirect, render_template, request, session, url_for

from flask_sente import EventMsg, JoinMsg, JoinRefused, Sente, signals
from flask_sente.exceptions import BackplaneError, CallError, CallTimeout, ClientGone

from .store import MAIN, OWN, StoreError, TodoLists, memory_lists, own_list, redis_lists

sente = Sente()
log = logging.getLogger(__name__)
MAX_NAME = 24
#: Named lists are the topics ``list/<name>``; a user's own list is ``list/@<uid>``.
LIST_TOPIC = "list/"
#: Seconds the other user's pages have to answer a share offer (``DEMO_SHARE_TIMEOUT``,
#: ``FLASK_DEMO_SHARE_TIMEOUT=5`` in the environment). The sharer's reply waits for it, so
#: keep it under the reply timeout (``SENTE_REPLY_TIMEOUT``, 20 s).
SHARE_TIMEOUT = 15


def create_app(instance_path: str | None = None, **config: t.Any) -> Flask:
    """The demo app. ``instance_path`` is Flask's instance folder (default ``instance/`` next
    to the ``demo`` package), where the secret key is kept unless one is configured."""
    app = Flask(__name__, instance_path=instance_path)
    # The admin dashboard (/chsk/admin) is on, for the user "admin" (sign in with that name;
    # FLASK_SENTE_ADMIN_UIDS='["ann", "bo"]' names others).
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SENTE_TOPIC_PRESENCE=True,
                      SENTE_ADMIN=True, SENTE_ADMIN_UIDS=["admin"])
    # FLASK_SECRET_KEY, FLASK_SENTE_LP_TIMEOUT=10, ... from the environment (Flask's idiom).
    app.config.from_prefixed_env()
    app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        # Sessions and CSRF tokens are signed with it: a key per process would make every
        # open page's reconnect a 403 after a restart, and every gunicorn worker refuse the
        # sessions of the others.
        app.config["SECRET_KEY"] = stable_secret_key(app.instance_path)
    # With a Redis backplane (FLASK_SENTE_BACKPLANE=redis://...) the list lives in Redis
    # too, so every gunicorn worker shows the same one.
    backplane = app.config.get("SENTE_BACKPLANE")
    app.extensions["todo_lists"] = redis_lists(backplane) if backplane else memory_lists()
    sente.init_app(app)
    app.register_blueprint(_pages())
    for signal in (signals.client_connected, signals.client_disconnected):
        signal.connect(_push_presence, app)
    return app


def stable_secret_key(instance_path: str) -> str:
    """The key in ``<instance_path>/secret_key``, made on first use and kept (mode 0600).

    Several processes may start at once (``gunicorn -w 3``): the key is written to a file of
    its own and linked into place, which fails if another process got there first, so all of
    them end up reading the same complete key.
    """
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        os.makedirs(instance_path, exist_ok=True)
        draft = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    with open(path, encoding="utf-8") as f:
        key = f.read().strip()
    if not key:
        raise RuntimeError(f"{path} is empty: delete it to make a new key")
    return key


def _lists() -> TodoLists:
    return t.cast("TodoLists", current_app.extensions["todo_lists"])


# --- pages ---------------------------------------------------------------------------------

def _pages() -> t.Any:
    from flask import Blueprint

    bp = Blueprint("pages", __name__)

    @bp.get("/")
    def index() -> t.Any:
        if "uid" not in session:
            return render_template("login.html")
        admin = session["uid"] in current_app.config["SENTE_ADMIN_UIDS"]
        return render_template("index.html", uid=session["uid"], admin=admin)

    @bp.post("/login")
    def login() -> t.Any:
        if request.form.get("csrf-token") != sente.csrf_token():
            abort(403)
        name = " ".join(request.form.get("name", "").split())[:MAX_NAME]
        if not name:
            return render_template("login.html", error="Please enter a name."), 400
        session["uid"] = name
        return redirect(url_for("pages.index", **request.args))

    @bp.post("/logout")
    def logout() -> t.Any:
        if request.form.get("csrf-token") != sente.csrf_token():
            abort(403)
        uid = session.pop("uid", None)
        if uid is not None:
            sente.kick(uid, "signed out")   # every tab of this user, not only this one
        return redirect(url_for("pages.index"))

    return bp


# --- realtime --------------------------------------------------------------------------------

@sente.authorize
def signed_in_only(uid: t.Any, client_id: str) -> bool:
    return "uid" in session


@sente.on_join(LIST_TOPIC + "*")
def join_list(msg: JoinMsg) -> dict[str, t.Any]:
    """Anyone signed in may open a named list (a bad name is refused with the reason the
    page shows), and their own list (nobody else's); the join data is the list and who
    views it, so the page needs no other call to show it."""
    name = msg.topic[len(LIST_TOPIC):]
    try:
        store = _lists().get(_own_only(name, msg.uid)) if name.startswith(OWN) \
            else _lists().named(name)
    except StoreError as exc:
        raise JoinRefused(str(exc)) from None
    return {"todos": [item.as_dict() for item in store.all()],
            "viewers": _viewers(msg.topic, msg.uid)}


def _own_only(name: str, uid: t.Any) -> str:
    """``name`` if it is not another user's own list; else StoreError."""
    if name.startswith(OWN) and name != own_list(uid):
        raise StoreError("a user's own list is theirs only")
    return name


def _viewers(topic: str, uid: t.Any) -> list[t.Any]:
    """Who is in the topic, cluster-wide, with ``uid`` (whose join is being decided)."""
    return sorted(set(sente.members(topic)) | {uid}, key=str)


def _list_of(msg: EventMsg) -> tuple[str, t.Any]:
    """The list a todo event names (``{"list": name}``; none: the shared list) and its store;
    raises StoreError for a named list the user has not joined (its changes would reach the
    list's viewers, not the user: joining is how a page sees a list)."""
    data = msg.data if isinstance(msg.data, dict) else {}
    name = data.get("list", MAIN)
    if not isinstance(name, str):
        raise StoreError("a list name is a string")
    store = _lists().get(_own_only(name, msg.uid))
    if name != MAIN and msg.uid not in sente.members(LIST_TOPIC + name):
        raise StoreError(f"open the list {name} first")
    return name, store


@sente.on("todo/list")
def list_todos(msg: EventMsg) -> None:
    try:
        name, store = _list_of(msg)
    except StoreError as exc:
        msg.reply({"ok": False, "error": str(exc)})
        return
    reply: dict[str, t.Any] = {"ok": True, "todos": [item.as_dict() for item in store.all()]}
    if name != MAIN:
        reply["viewers"] = _viewers(LIST_TOPIC + name, msg.uid)
    msg.reply(reply)


def _change(msg: EventMsg, apply: t.Callable[[t.Any, dict[str, t.Any]], t.Any],
            event_id: str) -> None:
    data = msg.data if isinstance(msg.data, dict) else {}
    try:
        name, store = _list_of(msg)
        item = apply(store, data)
    except StoreError as exc:
        msg.reply({"ok": False, "error": str(exc)})
        return
    if name == MAIN:
        sente.broadcast((event_id, item.as_dict()))
    else:
        sente.publish(LIST_TOPIC + name, (event_id, item.as_dict()))
    msg.reply({"ok": True, "todo": item.as_dict()})


@sente.on("todo/add")
def add(msg: EventMsg) -> None:
    _change(msg, lambda store, d: store.add(d.get("text"), str(msg.uid)), "todo/added")


@sente.on("todo/toggle")
def toggle(msg: EventMsg) -> None:
    _change(msg, lambda store, d: store.toggle(d.get("id")), "todo/changed")


@sente.on("todo/edit")
def edit(msg: EventMsg) -> None:
    _change(msg, lambda store, d: store.edit(d.get("id"), d.get("text")), "todo/changed")


@sente.on("todo/delete")
def delete(msg: EventMsg) -> None:
    _change(msg, lambda store, d: store.delete(d.get("id")), "todo/deleted")


# --- sharing a todo: the server asks the other user ----------------------------------------

@sente.on("todo/share")
def share(msg: EventMsg) -> None:
    """Offer a todo (``{id, to}``, ``list`` as for the other todo events) to another user.
    Each of their open pages is asked (``todo/share-offer``) and shows Accept / Decline;
    the first to decide wins, and an accepted todo is added to that user's own list and
    pushed to it. The reply's ``outcome`` says what happened: ``accepted``, ``declined``,
    ``offline`` (no page open, or all closed while asked), ``timeout`` (nobody decided in
    time) or ``unavailable`` (their clients cannot take offers, e.g. the terminal client)."""
    data = msg.data if isinstance(msg.data, dict) else {}
    to = data.get("to")
    to = " ".join(to.split())[:MAX_NAME] if isinstance(to, str) else ""
    try:
        if not to:
            raise StoreError("share with whom?")
        if to == msg.uid:
            raise StoreError("that is you: share with someone else")
        _, store = _list_of(msg)
        item = next((item for item in store.all() if item.id == data.get("id")), None)
        if item is None:
            raise StoreError(f"no todo with id {data.get('id')!r}")
    except StoreError as exc:
        msg.reply({"ok": False, "error": str(exc)})
        return
    timeout = current_app.config.get("DEMO_SHARE_TIMEOUT", SHARE_TIMEOUT)
    offer = {"offer": secrets.token_hex(6), "from": msg.uid, "text": item.text,
             "expires_in": timeout}
    outcome = _ask_pages(to, offer, timeout)
    if outcome == "accepted":
        theirs = own_list(to)
        added = _lists().get(theirs).add(item.text, str(msg.uid))
        sente.publish(LIST_TOPIC + theirs, ("todo/added", added.as_dict()))
    msg.reply({"ok": True, "outcome": outcome, "to": to})


#: What a page answers a share offer with, and the outcome it decides.
DECISIONS = {"accept": "accepted", "decline": "declined"}


def _ask_pages(to: str, offer: dict[str, t.Any], timeout: float) -> str:
    """Ask every page of ``to`` about ``offer`` at once; the first ``"accept"`` or
    ``"decline"`` decides and the other pages are told to drop the offer. Each page is
    asked on a greenlet of its own with ``sente.call``, so a decision needs no wait for the
    other pages (``sente.call_all`` returns once every page has answered or timed out)."""
    pages = sorted({cid for ids in sente.clients_of(to).values() for cid in ids})
    if not pages:
        return "offline"    # at once: nobody to ask
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    answers: gevent.queue.Queue = gevent.queue.Queue()

    def ask(client_id: str) -> None:
        with app.app_context():
            try:
                answers.put(sente.call(to, ("todo/share-offer", offer), client_id=client_id,
                                       timeout=timeout))
            except (CallError, BackplaneError) as exc:
                answers.put(exc)

    for client_id in pages:
        gevent.spawn(ask, client_id)
    undecided: list[t.Any] = []
    for _ in pages:
        try:
            answer = answers.get(timeout=timeout + 10)  # each call ends by its timeout
        except gevent.queue.Empty:
            answer = CallTimeout("no answer")
        if isinstance(answer, str) and answer in DECISIONS:
            if len(pages) > 1:
                sente.send(to, ("todo/share-closed", {"offer": offer["offer"]}))
            return DECISIONS[answer]
        undecided.append(answer)
    return _undecided(to, undecided)


def _undecided(to: str, answers: list[t.Any]) -> str:
    """The outcome when no page decided: every page gone (closed, signed out, its grace
    window over) is ``offline``; a page that let the offer expire (it answers None) or did
    not answer in time is ``timeout``; the rest cannot take offers at all (no answer
    handler, a client too old for calls, a page whose handler failed)."""
    if all(isinstance(answer, ClientGone) for answer in answers):
        return "offline"
    if any(answer is None or isinstance(answer, CallTimeout) for answer in answers):
        return "timeout"
    for answer in answers:
        if isinstance(answer, (CallError, BackplaneError)) and not isinstance(answer,
                                                                              ClientGone):
            log.info("a page of %s could not take a share offer: %s: %s", to,
                     type(answer).__name__, answer)
    return "unavailable"


@sente.on("presence/list")
def presence_list(msg: EventMsg) -> None:
    msg.reply(_presence())


@sente.on("dm/send")
def direct_message(msg: EventMsg) -> None:
    data = msg.data if isinstance(msg.data, dict) else {}
    to, text = data.get("to"), data.get("text")
    if not isinstance(text, str) or not text.strip() or not isinstance(to, str):
        msg.reply({"ok": False, "error": "a message needs a recipient and some text"})
        return
    if to not in sente.connected_uids.any:
        msg.reply({"ok": False, "error": f"{to} is not online"})
        return
    sente.send(to, ("dm/received", {"from": msg.uid, "text": text.strip()[:500]}))
    msg.reply({"ok": True})


def _presence() -> dict[str, t.Any]:
    uids = sente.connected_uids
    users = []
    for uid in sorted(uids.any, key=str):
        clients = sente.clients_of(uid)
        users.append({"uid": uid, "ws": len(clients["ws"]), "ajax": len(clients["ajax"])})
    return {"users": users}


def _push_presence(app: Flask, **_: t.Any) -> None:
    with app.app_context():
        sente.broadcast(("presence/changed", _presence()))
