"""Blinker signals sent by flask_sente.

The sender is the Flask app (``current_app._get_current_object()`` style, i.e. the real
app object), so ``signal.connect(fn, app)`` listens to one app only. Receivers run in the
greenlet that noticed the change; keep them short or spawn.

Presence signals come in one order, with every backplane, and a receiver reads the state
after the change (``connected_uids``, ``clients_of``, ``members``): ``user_connected``
before the client's ``client_connected``, ``client_disconnected`` before the user's
``user_disconnected``. The table is in docs/concepts.md ("Presence signals").
"""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A client connected to this worker (not again when it reconnects within its grace
#: window). Keyword arguments: ``uid``, ``client_id``, ``transport`` (``"ws"`` or
#: ``"ajax"``).
client_connected = _signals.signal("sente-client-connected")
#: A client's connection ended and its grace window passed without it coming back (sent by
#: the worker that held it). Same keyword arguments.
client_disconnected = _signals.signal("sente-client-disconnected")
#: A user's first client connected (``chsk/uidport-open``). Keyword argument: ``uid``.
user_connected = _signals.signal("sente-user-connected")
#: A user's last client went away and stayed away for the grace window
#: (``chsk/uidport-close``). Keyword argument: ``uid``.
user_disconnected = _signals.signal("sente-user-disconnected")
#: The shared backplane (Redis) stopped answering: new handshakes and polls get 503 until
#: it is back; open WebSockets stay open. No keyword arguments.
backplane_down = _signals.signal("sente-backplane-down")
#: The shared backplane answers again.
backplane_up = _signals.signal("sente-backplane-up")
#: A user's first client joined a topic (once in the cluster). Keyword arguments:
#: ``topic``, ``uid``.
topic_joined = _signals.signal("sente-topic-joined")
#: A user's last client left a topic (after the grace window when its connection ended).
#: Keyword arguments: ``topic``, ``uid``.
topic_left = _signals.signal("sente-topic-left")
