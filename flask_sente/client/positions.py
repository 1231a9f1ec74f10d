"""Where the client stands in the server's logs (protocol 2), without I/O.

The server tells the client its positions in every handshake and in the mark that ends every
push batch (docs/protocol.md §10); the client sends them back on every reconnect (the
WebSocket upgrade, every Ajax GET) and the server replays what it missed, or says
``recovered: false``. A batch whose mark does not move the client forward was seen already
(an answer sent again after it was cut in flight) and is dropped, so the app never sees a
push twice. Mirrors the positions section of sente.js.
"""
from __future__ import annotations

import json
import typing as t

from ..protocol import events as ev
from ..protocol.session import is_topic_log, topic_log_name

_NO_UID = object()

#: One position: ``(epoch, seq)``.
Position = tuple[str, int]


def _is_position(pos: t.Any) -> bool:
    """Whether ``pos`` is ``[epoch, seq]``: a string and an integer at least 0."""
    return (isinstance(pos, list) and len(pos) == 2 and isinstance(pos[0], str)
            and isinstance(pos[1], int) and not isinstance(pos[1], bool) and pos[1] >= 0)


def read_after(text: str | None) -> dict[str, Position] | None:
    """The ``X-Sente-After`` header of an Ajax reply (docs/protocol.md §6, "Replies after
    their pushes") as ``{log: (epoch, seq)}``, or None when absent or malformed (the reply
    is then delivered at once: a header this client cannot read is as good as none).
    sente.js: ``readAfter``."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not value:
        return None
    if not all(_is_position(pos) for pos in value.values()):
        return None
    return {name: (pos[0], pos[1]) for name, pos in value.items()}


class Positions:
    """One client's positions; the caller serializes access (the client's lock), except
    :meth:`param`, which only copies."""

    def __init__(self) -> None:
        self._current: dict[str, tuple[str, int]] = {}
        self._uid: t.Any = _NO_UID
        #: Names of the topic logs followed (joined, or being joined): marks for other
        #: topics (one just left) are ignored.
        self._topics: set[str] = set()

    @property
    def current(self) -> dict[str, tuple[str, int]]:
        return dict(self._current)

    def param(self) -> str | None:
        """The ``pos`` query parameter, or None before the first handshake."""
        current = dict(self._current)
        if not current:
            return None
        return json.dumps({name: [epoch, seq] for name, (epoch, seq) in current.items()},
                          separators=(",", ":"))

    def handshake(self, info: t.Mapping[str, t.Any]) -> tuple[bool | None, bool]:
        """Adopt a handshake's positions; returns ``(recovered, user_changed)``.

        ``recovered`` is what to report: the server's verdict, or None on a first connection
        or when the user changed (the old positions belonged to someone else: nothing was
        missed). ``user_changed``: this handshake names another user than the last one did
        (never on the first handshake, nor on the first after :meth:`forget`).

        The topics followed stay followed, with their positions: which of them a handshake
        drops is the topics' rule (:func:`flask_sente.client.topics.topics_at_handshake`),
        and a topic whose join went out before the first handshake is not one of them.
        Topic logs a handshake names are ignored (docs/protocol.md §10: a handshake never
        carries them now; older servers did, even at seq -1 after a Redis restart, which
        made every later request of the client a ``400 Bad positions``): a topic's position
        is the client's own until its rejoin answers for it.
        """
        first = self._uid is _NO_UID
        same_user = not first and info.get("uid") == self._uid
        self._uid = info.get("uid")
        given = info.get("positions")
        if isinstance(given, dict):
            kept = {name: pos for name, pos in self._current.items() if name in self._topics}
            self._current = {name: (pos[0], pos[1]) for name, pos in given.items()
                             if not is_topic_log(name) and _is_position(pos)}
            self._current.update(kept)
        recovered = info.get("recovered")
        return (recovered if same_user and isinstance(recovered, bool) else None,
                not first and not same_user)

    def batch(self, events: list[tuple[str, t.Any]]) -> list[tuple[str, t.Any]]:
        """The events of a pushed batch the app should get: the mark taken off and applied,
        nothing at all for a batch already seen. A batch without a mark (protocol 1) is
        passed on whole."""
        if not events or events[-1][0] != ev.POSITION or not isinstance(events[-1][1], dict):
            return events
        *body, (_, mark) = events
        # A topic the batch's chsk/joined puts the client in counts from the notice on
        # (sente.js: takeTopicBatch): the mark's position in it is newer than the notice's,
        # and a rejoin from the notice's would replay what this batch delivers.
        joining = {topic_log_name(data["topic"]) for event_id, data in body
                   if event_id == ev.JOINED and isinstance(data, dict)
                   and isinstance(data.get("topic"), str)}
        moved = False
        for name, pos in mark.items():
            if not _is_position(pos) or (is_topic_log(name) and name not in self._topics
                                         and name not in joining):
                continue
            epoch, seq = pos[0], int(pos[1])
            old = self._current.get(name)
            if old is None or old[0] != epoch or seq > old[1]:
                self._current[name] = (epoch, seq)
                moved = True
        return body if moved else []

    def reached(self, after: t.Mapping[str, Position]) -> bool:
        """Whether the client stands where an Ajax reply's ``X-Sente-After`` says the
        handler's pushes went (docs/protocol.md §6): in every log named that it reads, at
        that seq or past it in the same epoch, or in another epoch (a handshake moved it on:
        nothing left to wait for). Logs it does not read (a topic it is not in) and logs it
        has no position in yet (a topic whose join is unanswered) are skipped: there is
        nothing it could wait for there. sente.js: ``afterReached``."""
        for name, (epoch, seq) in after.items():
            if is_topic_log(name) and name not in self._topics:
                continue
            ours = self._current.get(name)
            if ours is not None and ours[0] == epoch and ours[1] < seq:
                return False
        return True

    def forget(self) -> None:
        """After a kick: the next connection starts afresh (nothing to recover)."""
        self._current = {}
        self._uid = _NO_UID
        self._topics = set()

    # --- topics --------------------------------------------------------------------------

    def follow(self, topic: str) -> tuple[str, int] | None:
        """Start (or keep) following a topic's marks; returns the position to join with
        (None: never joined, or its history is another user's)."""
        self._topics.add(topic_log_name(topic))
        return self._current.get(topic_log_name(topic))

    def joined(self, topic: str, position: t.Any, sent: tuple[str, int] | None) -> None:
        """A join's reply: adopt its position unless a mark moved the topic since the
        join was sent (over Ajax a batch may come before the reply)."""
        name = topic_log_name(topic)
        if (name in self._topics and self._current.get(name) == sent
                and isinstance(position, list) and len(position) == 2):
            self._current[name] = (position[0], int(position[1]))

    def unfollow(self, topic: str) -> None:
        self._topics.discard(topic_log_name(topic))
        self._current.pop(topic_log_name(topic), None)

    def follows(self, topic: str) -> bool:
        return topic_log_name(topic) in self._topics

    def followed(self) -> list[str]:
        """The topics followed (joined, or being joined)."""
        return sorted(name[2:] for name in self._topics)

    def position(self, topic: str) -> tuple[str, int] | None:
        """Where the client stands in ``topic`` (None: nowhere yet)."""
        return self._current.get(topic_log_name(topic))
